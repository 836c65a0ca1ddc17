"""Channel state for the whole deployment: disabled by a 410 or by an operator, circuits reset,
kept in the compacted topic `<group_id>.channels` that every replica follows."""

from .records import RECEIVER, ChannelRecord, RecordKind
from .state import ChannelControl, ChannelState, Disabled

__all__ = ["RECEIVER", "ChannelControl", "ChannelRecord", "ChannelState", "Disabled", "RecordKind"]
