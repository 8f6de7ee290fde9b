"""The driver's live progress display: cells (sample x model x method) done, rate, ETA,
and a line per written shard.

A background thread polls the run's cell counter (:mod:`salbench.actors.progress`). On a
terminal it redraws one bar line in place a few times a second; otherwise (a log file, a
pipe, ``ray job submit``) it prints a plain line every ``interval`` seconds. Shard lines
(:class:`ShardProgress`, told of each shard the writer commits) go through
:meth:`ProgressMonitor.line` so that they never tear the bar.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TextIO

from salbench.pipeline import interrupt

log = logging.getLogger("salbench")

#: Seconds between plain progress lines when the output is not a terminal.
PLAIN_INTERVAL = 15.0
#: Seconds between redraws of the bar on a terminal.
BAR_INTERVAL = 0.5
BAR_WIDTH = 24


def cells_done(counts: dict[int, int], expected: dict[int, int], written: set[int]) -> int:
    """Cells finished: a written shard counts in full, any other shard its reported cells
    capped at its size (a retried batch reports its cells twice)."""
    return sum(n if s in written else min(counts.get(s, 0), n) for s, n in expected.items())


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3m05s``, ``1h02m``; ``?`` when unknown (inf or NaN)."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_text(done: int, total: int, elapsed: float, shards_written: int, shards: int,
                  bar: bool, since: tuple[float, int] | None = None) -> str:
    """One progress line: cells done of total (percent), cells/s, elapsed, ETA, shards.

    bar: prefix a text bar of :data:`BAR_WIDTH` characters (for a terminal).
    since: (elapsed, done) when work was first seen: the rate and ETA count from there, so
    that the start-up (Ray, actor pools, model loading) does not inflate the ETA; ETA ``?``
    until more work was seen. None: from the start. When every cell is done at the first
    sight of work (a short run), the rate is over the whole elapsed time and the ETA 0.
    """
    frac = done / total if total else 1.0
    e0, d0 = since if since is not None else (0.0, 0)
    finished = done >= total
    if elapsed > e0 and done > d0:
        rate = (done - d0) / (elapsed - e0)
    else:
        rate = done / elapsed if finished and elapsed > 0 else 0.0
    eta = 0.0 if finished else (total - done) / rate if rate > 0 else float("inf")
    head = "[salbench] "
    if bar:
        filled = int(round(frac * BAR_WIDTH))
        head += "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
    return (f"{head}{done}/{total} cells ({frac:.0%}), {rate:.2f} cells/s, "
            f"{format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)}, "
            f"{shards_written}/{shards} shards written")


class ProgressMonitor:
    """Polls ``poll`` (-> shard: cells reported) and shows progress on ``stream``.

    expected: shard -> cells (rows x models x methods) of the shards this run computes.
    interactive: redraw a bar in place (a terminal) instead of plain lines.
    """

    def __init__(self, stream: TextIO, expected: dict[int, int],
                 poll: Callable[[], dict[int, int]], interactive: bool,
                 interval: float = PLAIN_INTERVAL) -> None:
        self.stream, self.expected, self.poll = stream, expected, poll
        self.interactive, self.interval = interactive, interval
        self.total = sum(expected.values())
        self.written: set[int] = set()
        self.counts: dict[int, int] = {}
        self.t0 = time.time()
        #: (elapsed, cells done) when work was first seen: where the ETA's rate starts
        self.since: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar_shown = False
        self._logged = 0.0

    def start(self) -> None:
        """Start the polling thread (a daemon: it never keeps the process alive)."""
        self.t0 = time.time()
        self._thread = threading.Thread(target=self._loop, name="salbench-progress",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; show the final state once (the bar ends with a newline)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._show(final=True)

    def shard_written(self, shard: int, message: str) -> None:
        """Shard ``shard`` is on disk: count it in full and print ``message`` on its line."""
        with self._lock:
            self.written.add(shard)
        self.line(message)

    def line(self, message: str) -> None:
        """Print ``message`` on a line of its own (above the bar on a terminal)."""
        with self._lock:
            if self.interactive and self._bar_shown:
                self.stream.write("\r\033[K")
            self.stream.write(message + "\n")
            if self.interactive:
                self.stream.write(self._text())
                self._bar_shown = True
            self.stream.flush()

    def done(self) -> int:
        """Cells finished so far (see :func:`cells_done`)."""
        return cells_done(self.counts, self.expected, self.written)

    def _text(self, bar: bool | None = None) -> str:
        done, elapsed = self.done(), time.time() - self.t0
        if self.since is None and done > 0:
            self.since = (elapsed, done)
        return progress_text(done, self.total, elapsed, len(self.written), len(self.expected),
                             bar=self.interactive if bar is None else bar, since=self.since)

    def _refresh(self) -> None:
        try:
            counts = self.poll()
        except Exception as exc:  # a slow or lost counter: keep the last numbers
            log.info("progress counter not answering: %s", exc)
            return
        with self._lock:
            self.counts = counts

    def _show(self, final: bool = False) -> None:
        if not final:
            self._refresh()
        with self._lock:
            text = self._text()
            if self.interactive:
                self.stream.write("\r\033[K" + text + ("\n" if final else ""))
                self._bar_shown = not final
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        now = time.time()
        if final or now - self._logged >= self.interval:  # run.log: plain lines, no bar
            self._logged = now
            with self._lock:
                log.info(self._text(bar=False))

    def _loop(self) -> None:
        wait = BAR_INTERVAL if self.interactive else self.interval
        while not self._stop.wait(wait):
            self._show()


def shard_cells(pending: list[dict[str, int]], cells_per_image: int) -> dict[int, int]:
    """Shard -> its cells (images x models x methods), for the ``pending`` shards
    ({shard, start, stop}): what the writer waits for and the progress counts."""
    return {s["shard"]: (s["stop"] - s["start"]) * cells_per_image for s in pending}


def progress_line(shard: int, written: int, shards: int, cells: int, total_cells: int,
                  elapsed: float) -> str:
    """The line of a written shard: shards and cells (sample x model x method) done, and the
    elapsed time in the live progress lines' format (their ETA is the run's one ETA)."""
    return (f"[salbench] shard {shard} written: {written}/{shards} shards, {cells}/"
            f"{total_cells} cells, {format_seconds(elapsed)} elapsed")


class ShardProgress:
    """The driver's count of the shards written, and their lines: what the driver needs of
    the writer (which, in a Ray run, is an actor of its own: the driver holds no rows).

    Args:
        stream: where the lines go (None: the run's log only).
        pending: the shards this run computes ({shard, start, stop}).
        cells_per_image: models x methods.
    """

    def __init__(self, stream: TextIO | None, pending: list[dict[str, int]],
                 cells_per_image: int) -> None:
        self.stream = stream
        self.expected = shard_cells(pending, cells_per_image)
        self.total_cells = sum(self.expected.values())
        self.written, self.cells_done = 0, 0
        self.t0 = time.time()
        #: the live display, while it runs (None: shard lines are printed on ``stream``)
        self.monitor: ProgressMonitor | None = None

    def start(self, poll: Callable[[], dict[int, int]]) -> ProgressMonitor | None:
        """Start the live display polling ``poll`` (shard -> cells reported), or None when
        this run shows no progress. :meth:`stop` stops it."""
        if self.stream is None:
            return None
        interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.monitor = ProgressMonitor(self.stream, self.expected, poll, interactive)
        self.monitor.start()
        return self.monitor

    def stop(self) -> None:
        """Stop the live display, if it runs (it shows its final state)."""
        if self.monitor is not None:
            self.monitor.stop()

    def shard_written(self, shard: int) -> None:
        """Count ``shard`` as written and say so: in the run's log and on the live display,
        or as a line on ``stream``; its elapsed time on the live display's clock."""
        self.cells_done += self.expected[shard]
        self.written += 1
        t0 = self.monitor.t0 if self.monitor is not None else self.t0
        msg = progress_line(shard, self.written, len(self.expected), self.cells_done,
                            self.total_cells, time.time() - t0)
        log.info(msg)
        if self.monitor is not None:
            self.monitor.shard_written(shard, msg)
        elif self.stream is not None:
            print(msg, file=self.stream, flush=True)
        interrupt.checkpoint("mid_run")
