"""Ctrl-C during a long training run: finish the step, save the run's state, then stop.

Inside ``with StopOnInterrupt() as stop:`` the first SIGINT only sets ``stop.requested``; the
training loop checks it after each step, saves the state (so the same command resumes from that
exact step, as if never stopped) and calls :meth:`StopOnInterrupt.stop`, which raises
:class:`~lookalike.errors.Interrupted` with what was saved and how to go on. A second Ctrl-C stops
at once. Outside the main thread (where Python delivers signals) it does nothing.
"""

from __future__ import annotations

import signal
import threading

from lookalike.errors import Interrupted


class StopOnInterrupt:
    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # asked twice: do not wait for the step
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    @staticmethod
    def stop(step: int, steps: int, saved_to) -> None:
        raise Interrupted(
            f"stopped after step {step}/{steps}; the run is saved in {saved_to}: run the same command "
            "again to go on from there"
        )
