"""Ctrl-C during training stops at the next step boundary, where a checkpoint can be written safely.

The first SIGINT only sets a flag that the loop reads after each optimizer step; a second one
interrupts at once (Python's default), for a user who does not want to wait for the step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class StopRequest:
    requested: bool = False


@contextmanager
def sigint_stops_at_step_boundary() -> Iterator[StopRequest]:
    """A `StopRequest` that the first SIGINT sets; the previous handler is restored afterwards. Outside the
    main thread (where signals cannot be handled) nothing is installed."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum, frame) -> None:
        stop.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
