"""The observer routes each transition only to the hooks that handle its type, in order."""

from __future__ import annotations

from typing import Any

from consumer.hooks.logs import RetrySummary, TransitionLog
from consumer.hooks.readiness import Readiness
from consumer.observer import (
    DETAILS_TYPES,
    Attempted,
    CircuitChanged,
    Committed,
    Delivered,
    Details,
    Handler,
    Lifecycle,
    Observer,
    Stage,
)

CIRCUIT = CircuitChanged("a", "open", 5, 30.0)
COMMITTED = Committed(0.01, 3)
STOPPED = Lifecycle(Stage.STOPPED)


class CircuitsOnly:
    """A subscriber with one handler, recording into a log shared with other hooks."""

    def __init__(self, heard: list[tuple[str, Any]]) -> None:
        self._heard = heard
        self.subscriptions: dict[type, Handler] = {CircuitChanged: self._circuit}

    def _circuit(self, details: CircuitChanged) -> None:
        self._heard.append(("circuits", details))


def test_a_subscriber_hears_only_its_types_and_a_plain_hook_hears_everything() -> None:
    heard: list[tuple[str, Any]] = []

    def plain(details: Details) -> None:
        heard.append(("plain", details))

    observer = Observer([plain, CircuitsOnly(heard)])
    for details in (CIRCUIT, COMMITTED, STOPPED):
        observer.emit(details)
    assert heard == [
        ("plain", CIRCUIT),
        ("circuits", CIRCUIT),  # after the hook added before it
        ("plain", COMMITTED),
        ("plain", STOPPED),
    ]


def test_a_hook_added_later_is_routed_after_the_others() -> None:
    heard: list[tuple[str, Any]] = []
    observer = Observer([CircuitsOnly(heard)])
    observer.emit(CIRCUIT)
    observer.add(lambda details: heard.append(("late", details)))
    observer.emit(CIRCUIT)
    observer.emit(COMMITTED)
    assert heard == [
        ("circuits", CIRCUIT),
        ("circuits", CIRCUIT),
        ("late", CIRCUIT),
        ("late", COMMITTED),
    ]


def test_every_details_type_can_be_emitted_with_no_hooks() -> None:
    assert len(set(DETAILS_TYPES)) == len(DETAILS_TYPES) > 20
    Observer().emit(COMMITTED)  # a dict look-up and nothing else


def test_below_debug_the_log_hook_never_hears_a_deliverys_transitions() -> None:
    quiet = set(TransitionLog(debug=False).subscriptions)
    assert CircuitChanged in quiet
    assert not quiet & {Attempted, Delivered}
    assert set(TransitionLog(debug=True).subscriptions) == set(DETAILS_TYPES)


def test_hooks_subscribe_to_what_they_count_and_nothing_on_every_delivery_they_ignore() -> None:
    assert {Attempted, Delivered} <= set(RetrySummary().subscriptions)
    assert set(Readiness().subscriptions).isdisjoint({Attempted, Delivered, CircuitChanged})
