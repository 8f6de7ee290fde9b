"""Batched gradient engine: evaluates the model and its input gradient on many points.

Every gradient-based method funnels its model calls through :func:`batched_gradients`, which
evaluates ``n`` points (e.g. B images x S path points, flattened) in chunks of
``internal_batch_size``, halving the chunk on CUDA out-of-memory, and hands each chunk's
gradients to a consumer that reduces them immediately (memory stays bounded by one chunk).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

log = logging.getLogger(__name__)

SCORES = ("logit", "prob", "log_prob")
T = TypeVar("T")

#: ``internal_batch_size`` on CPU when the caller sets none (:func:`salbench.methods.attribute`
#: and the pipeline's model actors; a method's own smaller default is kept). The methods'
#: defaults (64) are sized for GPUs; on CPU a larger chunk is no faster but its memory (heap
#: and page faults) grows with it. Figures: docs/PERFORMANCE.md, "CPU chunk size".
CPU_INTERNAL_BATCH_SIZE = 16


def default_chunk(internal_batch_size: T, device: torch.device) -> T | int:
    """A method's default ``internal_batch_size`` as a call on ``device`` uses it: at most
    :data:`CPU_INTERNAL_BATCH_SIZE` on CPU; unchanged elsewhere or if not an int."""
    if device.type == "cpu" and isinstance(internal_batch_size, int):
        return min(internal_batch_size, CPU_INTERNAL_BATCH_SIZE)
    return internal_batch_size


def target_scores(logits: torch.Tensor, target: torch.Tensor, score: str = "logit") -> torch.Tensor:
    """logits [N, K], target int64 [N] -> the target's score [N] (logit, softmax prob, log-prob)."""
    if score == "logit":
        out = logits
    elif score == "prob":
        out = torch.softmax(logits, dim=1)
    elif score == "log_prob":
        out = torch.log_softmax(logits, dim=1)
    else:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    return out.gather(1, target.view(-1, 1)).squeeze(1)


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def for_chunks(
    n: int,
    size: int,
    compute: Callable[[torch.Tensor], T],
    done: Callable[[torch.Tensor, T], None],
    *,
    device: torch.device | str = "cpu",
    min_size: int = 1,
) -> None:
    """Run ``compute`` on index chunks int64 [c] of range(n), in order, then ``done``.

    Chunks hold ``size`` indices; on out-of-memory in ``compute`` the chunk is halved (not
    below ``min_size``) and retried. ``done(idx, result)`` runs outside the retry, so a
    consumer that accumulates is never applied twice to one chunk.
    """
    start, chunk = 0, max(1, int(size))
    while start < n:
        idx = torch.arange(start, min(n, start + chunk), device=device)
        try:
            result = compute(idx)
        except RuntimeError as exc:
            if not is_oom(exc) or chunk <= min_size:
                raise
            chunk = max(min_size, chunk // 2)
            log.warning("out of memory: internal_batch_size reduced to %d", chunk)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        done(idx, result)
        start += len(idx)


def batched_gradients(
    model: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    points: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    consume: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None],
    *,
    internal_batch_size: int = 64,
    score: str = "logit",
    min_batch_size: int = 1,
) -> None:
    """Evaluate input gradients of the target score on ``n`` points, chunk by chunk.

    Args:
        model: float [N, 3, H, W] in [0, 1] -> logits [N, K].
        n: number of points.
        points: index tensor int64 [c] -> the points float [c, 3, H, W] (built lazily).
        targets: int64 [n], the class of each point.
        consume: called with (index int64 [c], gradients float32 [c, 3, H, W],
            scores float32 [c]) for every chunk, in increasing index order.
        internal_batch_size: points per forward/backward pass; halved on out-of-memory.
        score: "logit", "prob" or "log_prob" (see :func:`target_scores`).
    """

    def compute(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pts = points(idx).detach().requires_grad_(True)
        s = target_scores(model(pts), targets[idx], score)
        (grad,) = torch.autograd.grad(s.sum(), pts)
        return grad.float(), s.detach().float()

    with torch.enable_grad():
        for_chunks(n, internal_batch_size, compute, lambda idx, r: consume(idx, *r),
                   device=targets.device, min_size=min_batch_size)


@torch.no_grad()
def batched_scores(
    model: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    points: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    *,
    internal_batch_size: int = 64,
    score: str = "logit",
) -> torch.Tensor:
    """Target scores float32 [n] of ``n`` lazily built points, forward only, chunked."""
    out = torch.empty(n, dtype=torch.float32, device=targets.device)

    def compute(idx: torch.Tensor) -> torch.Tensor:
        return target_scores(model(points(idx)), targets[idx], score).float()

    def done(idx: torch.Tensor, s: torch.Tensor) -> None:
        out[idx] = s

    for_chunks(n, internal_batch_size, compute, done, device=targets.device)
    return out


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] and weights of an integration rule over [0, 1], float64 [steps].

    riemann_left/right/middle: alpha = i/n, (i+1)/n, (i+0.5)/n, weights 1/n (as Captum).
    trapezoid: the textbook composite rule on alpha = linspace(0, 1, n), h = 1/(n-1),
    end weights h/2 (weights sum to 1; Captum's "riemann_trapezoid" uses 1/n and 1/(2n), which
    sum to (n-1)/n). gausslegendre: Gauss-Legendre nodes and weights mapped to [0, 1].
    """
    n = int(steps)
    if n < 1 or (rule == "trapezoid" and n < 2):
        raise ValueError(f"rule {rule!r} needs more steps, got {steps}")
    i = np.arange(n, dtype=np.float64)
    if rule == "riemann_left":
        return i / n, np.full(n, 1.0 / n)
    if rule == "riemann_right":
        return (i + 1) / n, np.full(n, 1.0 / n)
    if rule == "riemann_middle":
        return (i + 0.5) / n, np.full(n, 1.0 / n)
    if rule == "trapezoid":
        h = 1.0 / (n - 1)
        w = np.full(n, h)
        w[0] = w[-1] = h / 2
        return np.linspace(0.0, 1.0, n), w
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return (x + 1) / 2, w / 2
    raise ValueError(
        f"unknown rule {rule!r}; valid: riemann_left, riemann_right, riemann_middle, "
        "trapezoid, gausslegendre"
    )
