"""PIC's engine: bokeh images and information levels of many (image, map) pairs, threaded and
cached.

Bokeh images and WebP encodings release the GIL, so a thread pool runs them in parallel; an
LRU cache (:data:`BOKEH_CACHE`) keyed by content hashes lets ``sic`` and ``aic`` (or several
methods' fully blurred images) share the work. Neither changes a result.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from salbench.metrics.pic.images import (
    blur_base,
    bokeh_image,
    content_hash,
    count_masks,
    expand_mask,
    fast_bokeh_image,
    single_threaded_blas,
    threshold_masks,
)
from salbench.metrics.pic.levels import msssim_levels, webp_bytes
from salbench.metrics.pic.settings import INTERPOLATED, PicSettings


class LRU:
    """Thread-safe LRU of computed bokeh images / levels, bounded by a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: tuple[Any, ...], value: Any, nbytes: int) -> None:
        with self._lock:
            if nbytes > self.max_bytes:
                return
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._data[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and self._data:
                _, (_, nb) = self._data.popitem(last=False)
                self._bytes -= nb

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
            self._bytes = 0


#: Bokeh images and information levels, keyed by content hashes (results never change; set
#: ``BOKEH_CACHE.max_bytes = 0`` to disable, ``BOKEH_CACHE.clear()`` to free).
BOKEH_CACHE = LRU(int(os.environ.get("SALBENCH_PIC_CACHE_MB", "256")) * 2**20)


def default_workers() -> int:
    """Threads for bokeh images / WebP sizes: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def run_threads(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """[fn(item) for item in items] in up to ``workers`` threads (BLAS single-threaded)."""
    with single_threaded_blas():
        if workers <= 1 or len(items) <= 1:
            return [fn(it) for it in items]
        with ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(fn, items))


@dataclass
class Job:
    """One (image, map) pair's CPU work; filled in stages by :class:`PicEngine`."""

    image: np.ndarray
    saliency_map: np.ndarray | None
    random_mask: np.ndarray | None
    valid: bool = True
    message: str = ""
    image_key: bytes = b""
    base: np.ndarray | None = None
    level_original: float = float("nan")
    level_blurred: float = float("nan")
    bokeh: list[np.ndarray] = field(default_factory=list)
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: lossless WebP of [original, base, *bokeh] where the WebP level computed it (else b"")
    webp: list[bytes] = field(default_factory=list)

    def state(self, settings: PicSettings) -> dict[str, Any]:
        """What the curve needs besides the predictions (picklable; the split form's state):
        thresholds, whether levels are normalised, the invalid-input message, and the levels
        (empty where not computed: a skipped sample has no bokeh images)."""
        state: dict[str, Any] = {"thresholds": settings.thresholds,
                                 "normalize": settings.normalize_levels, "message": self.message}
        if self.valid:
            state.update(level_original=self.level_original, level_blurred=self.level_blurred,
                         levels=np.asarray(self.levels, np.float64))
        return state


class PicEngine:
    """Bokeh images and information levels for many (image, map) pairs, threaded + cached."""

    def __init__(self, settings: PicSettings) -> None:
        self.info, self.bokeh = settings.info, settings.bokeh
        self.thresholds = settings.thresholds
        self.blur_radius = float(settings.blur_radius)
        self.workers = (default_workers() if settings.num_workers is None
                        else max(1, int(settings.num_workers)))

    def _mode_key(self) -> tuple[Any, ...]:
        return (self.bokeh,) if self.bokeh in INTERPOLATED else ("blur", self.blur_radius)

    def _interpolate(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The interpolated bokeh image of ``mask`` ("interp": every kept pixel triangulated,
        "fast": the boundary only)."""
        return (fast_bokeh_image if self.bokeh == "fast" else bokeh_image)(image, mask)

    def prepare(self, jobs: list[Job]) -> None:
        """Base ("fully blurred") image and the original's and base's levels of each job."""
        todo = []
        for job in jobs:
            if not job.valid:
                continue
            mask_key = (content_hash(job.random_mask) if self.bokeh in INTERPOLATED else b"")
            job.image_key = content_hash(job.image) + mask_key
            hit = BOKEH_CACHE.get(("base", self._mode_key(), job.image_key, self.info))
            if hit is not None:
                job.base, job.level_original, job.level_blurred, webp = hit
                job.webp = list(webp)
            else:
                todo.append(job)

        def base_of(job: Job) -> np.ndarray:
            if self.bokeh in INTERPOLATED:
                return self._interpolate(job.image, job.random_mask)
            return blur_base(job.image, self.blur_radius)

        bases = run_threads(base_of, todo, self.workers)
        for job, base in zip(todo, bases, strict=True):
            job.base = base
        if self.info == "webp":
            enc = run_threads(webp_bytes, [im for j in todo for im in (j.image, j.base)],
                              self.workers)
            for i, job in enumerate(todo):
                job.webp = [enc[2 * i], enc[2 * i + 1]]
            pairs = [(len(j.webp[0]), len(j.webp[1])) for j in todo]
        else:
            pairs = [(float(lv[0]), float(lv[1]))
                     for lv in (msssim_levels([j.image, j.base], j.image) for j in todo)]
        for job, (lo, lb) in zip(todo, pairs, strict=True):
            job.level_original, job.level_blurred = float(lo), float(lb)
            BOKEH_CACHE.put(("base", self._mode_key(), job.image_key, self.info),
                            (job.base, job.level_original, job.level_blurred, tuple(job.webp)),
                            job.base.nbytes + sum(map(len, job.webp)) + 16)

    def bokeh_images(self, jobs: list[Job]) -> None:
        """The bokeh image and raw level of every threshold of every job."""
        todo: list[tuple[Job, tuple[Any, ...]]] = []
        for job in jobs:
            key = (self._mode_key(), self.thresholds, job.image_key,
                   content_hash(np.asarray(job.saliency_map)))
            imgs = BOKEH_CACHE.get(("bokeh", *key))
            lv = BOKEH_CACHE.get(("levels", self.info, *key))
            enc = BOKEH_CACHE.get(("webp", *key)) if self.info == "webp" else ()
            if imgs is not None and lv is not None and enc is not None:
                job.bokeh, job.levels = imgs, lv
                job.webp = job.webp[:2] + list(enc)
            else:
                todo.append((job, key))
        tasks: list[tuple[int, int, np.ndarray]] = []
        for i, (job, key) in enumerate(todo):
            cached = BOKEH_CACHE.get(("bokeh", *key))
            if cached is not None:
                job.bokeh = cached
                continue
            if self.bokeh in INTERPOLATED:
                masks = threshold_masks(job.saliency_map, job.random_mask, self.thresholds)
            else:
                masks = count_masks(job.saliency_map, self.thresholds)
            job.bokeh = [None] * len(masks)  # type: ignore[list-item]
            tasks += [(i, k, m) for k, m in enumerate(masks)]
        # most revealed pixels first: those triangulations are the slowest (load balancing)
        tasks.sort(key=lambda t: -int(t[2].sum()) if self.bokeh in INTERPOLATED else 0)

        def build(task: tuple[int, int, np.ndarray]) -> tuple[int, int, np.ndarray, bytes]:
            i, k, mask = task
            job = todo[i][0]
            if self.bokeh in INTERPOLATED:
                img = self._interpolate(job.image, mask)
            else:
                img = np.where(expand_mask(mask, job.image), job.image, job.base)
            return i, k, img, (webp_bytes(img) if self.info == "webp" else b"")

        built = run_threads(build, tasks, self.workers)
        for i, k, img, _ in built:
            todo[i][0].bokeh[k] = img
        encoded: dict[tuple[int, int], bytes] = {(i, k): e for i, k, _, e in built}
        for i, (job, key) in enumerate(todo):
            BOKEH_CACHE.put(("bokeh", *key), job.bokeh, sum(im.nbytes for im in job.bokeh))
            if self.info == "webp":
                missing = [k for k in range(len(job.bokeh)) if (i, k) not in encoded]
                if missing:  # bokeh images came from the cache, their encodings did not
                    for k, e in zip(missing, run_threads(webp_bytes, [job.bokeh[k] for k in
                                                                      missing], self.workers),
                                    strict=True):
                        encoded[(i, k)] = e
                enc = [encoded[(i, k)] for k in range(len(job.bokeh))]
                job.webp = job.webp[:2] + enc
                job.levels = np.asarray([float(len(e)) for e in enc])
                BOKEH_CACHE.put(("webp", *key), tuple(enc), sum(map(len, enc)))
            else:
                job.levels = msssim_levels(job.bokeh, job.image)
            BOKEH_CACHE.put(("levels", self.info, *key), job.levels, job.levels.nbytes)
