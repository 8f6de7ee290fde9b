"""A live run is told from a dead one: the driver's heartbeat beside the manifest.

While a driver runs a run directory it owns ``heartbeat.json`` there (local path or object
store): its host, PID, a driver id, the refresh interval and the time of the last beat,
rewritten every ``interval_s`` seconds by a daemon thread, and removed when the run ends
(complete or failed). A SIGKILLed driver (the OOM killer, a preempted node, ``kill -9``)
leaves a manifest that says "running" and a heartbeat that stops moving: once the beat is
older than ``STALE_INTERVALS`` intervals, or at once when the driver's PID is gone from
the host the reader runs on, readers (``resume``, ``report``, ``compare``,
``Results.load``) treat the run as interrupted, and ``resume`` takes it over. A second
driver on a live run is refused (:class:`LiveRunError`).

Claiming is write-then-read-back: of two drivers that claim a stale run in the same
instant, the one whose write lands second wins, and the other sees a foreign driver id and
stops. ``SALBENCH_HEARTBEAT_S`` sets the interval (tests use a fraction of a second).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from salbench import storage
from salbench.errors import ConfigError

FILE = "heartbeat.json"
#: Seconds between beats (``SALBENCH_HEARTBEAT_S`` overrides).
DEFAULT_INTERVAL_S = 30.0
#: A beat older than this many intervals means the driver is gone.
STALE_INTERVALS = 4


class LiveRunError(ConfigError):
    """Another driver is running this run directory now."""


@dataclass(frozen=True)
class Beat:
    """The content of ``heartbeat.json``; ``beat`` and ``started`` are Unix times."""

    driver: str
    host: str
    pid: int
    started: float
    beat: float
    interval_s: float

    def age(self, now: float | None = None) -> float:
        """Seconds since the last beat."""
        return (time.time() if now is None else now) - self.beat

    def process_gone(self) -> bool:
        """The driver's PID no longer exists on this host (False for another host)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def alive(self, now: float | None = None) -> bool:
        """Its beat is fresh and its process (when on this host) exists."""
        return self.age(now) <= STALE_INTERVALS * self.interval_s and not self.process_gone()

    def describe(self, now: float | None = None) -> str:
        """'last heartbeat 14 min ago on host X (PID 123)', for messages."""
        when = _ago(self.age(now))
        gone = "; that process is gone" if self.process_gone() else ""
        return f"last heartbeat {when} on host {self.host} (PID {self.pid}{gone})"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def interval() -> float:
    """The beat interval in seconds: ``SALBENCH_HEARTBEAT_S`` or the default."""
    raw = os.environ.get("SALBENCH_HEARTBEAT_S")
    if raw is None:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"SALBENCH_HEARTBEAT_S must be a number of seconds, got {raw!r}"
                          ) from exc
    if not value > 0:
        raise ConfigError(f"SALBENCH_HEARTBEAT_S must be > 0, got {raw!r}")
    return value


def read(run_dir: storage.Location) -> Beat | None:
    """The run's heartbeat, or None when there is none (or it is unreadable)."""
    path = storage.join(run_dir, FILE)
    try:
        if not storage.is_file(path):
            return None
        raw = json.loads(storage.read_text(path))
        return Beat(driver=str(raw["driver"]), host=str(raw["host"]), pid=int(raw["pid"]),
                    started=float(raw["started"]), beat=float(raw["beat"]),
                    interval_s=float(raw["interval_s"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def status(run_dir: storage.Location, manifest: dict[str, Any]) -> tuple[str, str | None]:
    """The run's status as a reader should take it, and a note when it differs from the
    manifest's: a "running" run whose driver is gone is ``interrupted``."""
    recorded = str(manifest.get("status", "unknown"))
    if recorded != "running":
        return recorded, None
    beat = read(run_dir)
    resume = f"resume with `salbench resume {storage.display(run_dir)}`"
    if beat is None:
        if manifest.get("driver"):  # it had one, and it is gone: the run ended uncleanly
            return "interrupted", f"no heartbeat left by its driver; {resume}"
        return recorded, None  # written before heartbeats existed: cannot tell
    if beat.alive():
        return recorded, None
    return "interrupted", f"the run's driver stopped ({beat.describe()}); {resume}"


class Heartbeat:
    """This driver's claim on a run directory, refreshed by a daemon thread until
    :meth:`stop`."""

    def __init__(self, run_dir: storage.Location, every: float | None = None) -> None:
        self.run_dir = run_dir
        self.path = storage.join(run_dir, FILE)
        self.every = interval() if every is None else every
        self.beat = Beat(driver=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(),
                         started=time.time(), beat=time.time(), interval_s=self.every)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        self.beat = Beat(**{**asdict(self.beat), "beat": time.time()})
        storage.write_text(self.path, json.dumps(asdict(self.beat), indent=1))

    def claim(self) -> Heartbeat:
        """Take the run directory (refusing a live driver's), then beat every ``every`` s.

        Raises LiveRunError naming the other driver's host, PID and last beat.
        """
        other = read(self.run_dir)
        if other is not None and other.driver != self.beat.driver and other.alive():
            raise LiveRunError(
                f"{storage.display(self.run_dir)} is being run by another driver now "
                f"({other.describe()}); wait for it, or stop it first")
        self._write()
        landed = read(self.run_dir)
        if landed is None or landed.driver != self.beat.driver:
            who = landed.describe() if landed is not None else "its heartbeat is unreadable"
            raise LiveRunError(f"{storage.display(self.run_dir)} was claimed by another "
                               f"driver at the same time ({who})")
        self._thread = threading.Thread(target=self._loop, name="salbench-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self._write()
            except OSError:  # a store hiccup: the next beat tries again
                continue

    def record(self) -> dict[str, Any]:
        """What the manifest records of this driver."""
        return {"host": self.beat.host, "pid": self.beat.pid, "driver": self.beat.driver,
                "heartbeat_s": self.every,
                "started": dt.datetime.fromtimestamp(self.beat.started,
                                                     dt.timezone.utc).isoformat()}

    def stop(self) -> None:
        """Stop beating and remove the heartbeat (the run's manifest now says how it
        ended). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every + 5)
            self._thread = None
        current = read(self.run_dir)
        if current is not None and current.driver == self.beat.driver:
            storage.delete(self.path)


__all__ = ["DEFAULT_INTERVAL_S", "FILE", "STALE_INTERVALS", "Beat", "Heartbeat",
           "LiveRunError", "interval", "read", "status"]
