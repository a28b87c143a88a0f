"""Stopping a run cleanly: SIGTERM (a scheduler's pre-emption) and Ctrl-C end it at the next step boundary, with
a checkpoint, instead of killing it mid-step."""
from __future__ import annotations

import signal
import threading
from typing import Any


class SignalCatcher:
    """SIGTERM/SIGINT set a flag checked at the next step boundary; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalCatcher":
        if threading.current_thread() is threading.main_thread():  # signal handlers only install there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.received = name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
