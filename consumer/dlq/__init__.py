"""Operating the dead-letter topic: `dlq stats` and `dlq replay`.

Replay progress lives in a small compacted topic of the deployment (`<dead-letter topic>.replays`),
one entry per replay request: the filters as the operator typed them, the window they resolved
to on the first run (`--since 2h` means two hours before the *first* run), the end offsets of
the dead-letter topic then, and how far the replay got. Repeating the same command resumes or
sends nothing; `--reset` starts over. Nothing else is left behind: no consumer group per run.
"""

from .filters import Request
from .progress import forget_finished
from .replay import ReplayReport, replay
from .stats import stats

__all__ = ["ReplayReport", "Request", "forget_finished", "replay", "stats"]
