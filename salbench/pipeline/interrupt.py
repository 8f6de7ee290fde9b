"""SIGTERM and SIGINT during a run: unwind so that the run's manifest says why it stopped.

A scheduler (``timeout``, Slurm, Kubernetes) stops a job with SIGTERM; a user with Ctrl-C
(SIGINT). Either raises :class:`RunInterrupted` in the driver's main thread, which
:func:`salbench.pipeline.run.run` records in the manifest (``status: failed``, the signal
and the resume command) before the process exits.

What bypassed this before (2026-12-06, Ray 2.60): ``ray.init`` in the driver replaces the
SIGTERM handler twice. Its Python handler (``sys.exit(signum)``) is harmless, but the
driver's core worker then installs absl's C-level failure-signal handler for SIGTERM, which
logs "*** SIGTERM received ***", arms ``alarm(3)`` with a handler that calls ``abort()``,
and only then passes the signal on to Python. When the unwinding (Ray Data stopping its
executor and actor pools, the writer actor closing its parts) took more than 3 s, the alarm
killed the driver with SIGABRT (exit status 134) before the manifest was written: it stayed
"running". :func:`reinstall` puts this module's handler back at the C level right after
``ray.init`` (so absl never sees SIGTERM), and the handler cancels any alarm already armed.

A second signal while the first one unwinds is ignored (with a message): the handler must
not interrupt its own bookkeeping. A SIGKILL cannot be caught; a killed driver's run is told
apart from a live one by its heartbeat (:mod:`salbench.heartbeat`).

:func:`checkpoint` is the fault-injection point of the tests: with ``SALBENCH_SIGNAL_AT``
set to a phase name (``PHASES``; ``mid_run:KILL`` for another signal) the driver sends
itself SIGTERM when it reaches that phase, so that a test interrupts each phase without
timing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: The driver's phases where tests inject a signal (``SALBENCH_SIGNAL_AT``), in run order.
PHASES = ("checks", "ray_init", "run_dir", "actor_pools", "mid_run", "summary")

_ENV = "SALBENCH_SIGNAL_AT"


class RunInterrupted(SystemExit):
    """A signal stopped the run; the exit status is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name} (signal {self.signum})"


class _State:
    active = 0  # nesting depth of handling()
    received: int | None = None


def _handler(signum: int, _frame: FrameType | None) -> None:
    signal.alarm(0)  # an alarm armed by a C-level handler that saw the signal first
    if _State.received is not None:
        print(f"salbench: {signal.Signals(signum).name} received while stopping; still "
              "recording the run's state (SIGKILL stops at once)", file=sys.stderr, flush=True)
        return
    _State.received = signum
    raise RunInterrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`RunInterrupted` (main thread only;
    elsewhere a no-op). The previous handlers come back afterwards."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    if _State.active == 0:
        _State.received = None
    _State.active += 1
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        _State.active -= 1
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def reinstall() -> None:
    """Put this module's handlers back after a library replaced them (``ray.init``), and
    cancel the abort alarm that absl's handler arms when a signal reached it first; a no-op
    outside :func:`handling`."""
    if _State.active and _main_thread():
        signal.alarm(0)
        for s in SIGNALS:
            signal.signal(s, _handler)


def interrupted(exc: BaseException) -> RunInterrupted | None:
    """``exc`` as a RunInterrupted when a signal caused it: ours, or the ``SystemExit`` of
    a library's handler (Ray's) that ran before ours was back."""
    if isinstance(exc, RunInterrupted):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return RunInterrupted(int(signal.SIGINT))
    if isinstance(exc, SystemExit) and exc.code in tuple(int(s) for s in SIGNALS):
        return RunInterrupted(int(exc.code))
    return None


def checkpoint(phase: str) -> None:
    """Send this process SIGTERM when ``SALBENCH_SIGNAL_AT`` names ``phase`` (tests only;
    ``phase:INT`` or ``phase:KILL`` send that signal instead;
    only in a driver inside :func:`handling`, never in the Ray workers that inherit the
    variable)."""
    where, _, name = os.environ.get(_ENV, "").partition(":")
    if _State.active and where == phase:
        os.kill(os.getpid(), signal.Signals[f"SIG{name or 'TERM'}"])


__all__ = ["PHASES", "RunInterrupted", "checkpoint", "handling", "interrupted", "reinstall"]
