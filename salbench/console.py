"""The command line's terminal output: Ray's own log lines go to the run's ``run.log``.

Ray writes to the process's stderr from several places: its Python loggers, the C++ core
worker of the driver (e.g. an error-level note that Ray Data's actors have constructor
arguments in the object store, which Ray Data itself puts there for every actor pool), the
forwarded output of worker processes, and Ray Data's resource warnings. None of them is
salbench's to reformat, so :func:`ray_output_to_run_log` sends file descriptors 1 and 2 as
a whole to a temporary file for the duration of a run and appends it to ``run.log`` after;
salbench's own progress, results and errors go to the terminal through a duplicate of the
original descriptor. ``--verbose`` leaves stderr alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

RAY_OUTPUT_HEADER = "---- Ray's own output during this command (stdout, stderr) ----\n"


class Console:
    """A text stream to the terminal (``write`` / ``flush`` / ``isatty``), and the run
    directory whose ``run.log`` takes Ray's output (set by the caller once known)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.run_dir: Path | str | None = None

    def write(self, text: str) -> int:
        """Write ``text`` to the terminal."""
        return self.stream.write(text)

    def flush(self) -> None:
        """Flush the terminal stream."""
        self.stream.flush()

    def isatty(self) -> bool:
        """True when the terminal stream is a terminal."""
        return self.stream.isatty()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (a run or resume), noting its run directory: the
        result's ``run_dir``, or on failure the ``salbench_run_dir`` that ``run`` puts on
        the exception once the directory exists."""
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.run_dir = getattr(exc, "salbench_run_dir", None)
            raise
        self.run_dir = result.run_dir
        return result


@contextlib.contextmanager
def ray_output_to_run_log(verbose: bool) -> Iterator[Console]:
    """Redirect stdout and stderr (fds 1 and 2) to a temporary file unless ``verbose``;
    yields the Console for salbench's own output (the original stderr).

    Both descriptors: Ray prints the forwarded lines of its workers and raylets
    (``(raylet) Task ... failed ... will be retried``) to stdout or stderr by their origin.
    On leaving, both are restored and the captured text is appended to
    ``console.run_dir / "run.log"``; when no run directory was set (the command failed
    before it had one), the file is kept and its path printed. When ``sys.stderr`` or
    ``sys.stdout`` is not the process's own (a test's capture, a notebook), nothing is
    redirected.
    """
    if verbose or sys.stderr is not sys.__stderr__ or sys.stdout is not sys.__stdout__:
        yield Console(sys.stderr)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd, capture = tempfile.mkstemp(prefix="salbench-ray-", suffix=".log")
    originals = {1: os.dup(1), 2: os.dup(2)}
    console = Console(os.fdopen(os.dup(2), "w", buffering=1))
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, saved in originals.items():
            os.dup2(saved, target)
            os.close(saved)
        _keep(Path(capture), console)
        console.stream.close()


def _keep(capture: Path, console: Console) -> None:
    """Append the captured Ray output to the run's log, or leave it and say where it is."""
    try:
        text = capture.read_text(errors="replace")
    except OSError as exc:  # e.g. a temp cleaner removed it: the run itself is done
        console.write(f"[salbench] Ray's output of this command is lost ({exc})\n")
        return
    local = isinstance(console.run_dir, Path)  # a URI run's log is uploaded by the run
    if local and (console.run_dir / "run.log").parent.is_dir():
        if text:
            with open(console.run_dir / "run.log", "a") as fh:
                fh.write(RAY_OUTPUT_HEADER + text)
        capture.unlink()
    elif text:
        console.write(f"[salbench] Ray's own output of this command: {capture}\n")
    else:
        capture.unlink()
