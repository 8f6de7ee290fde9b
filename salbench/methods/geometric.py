"""Geometrically guided saliency (paper 000: Rahman, Lewis, Plis, "Geometrically Guided
Saliency Maps"): ``g3`` (Alg. 1), ``ggig`` (Alg. 2) and ``geg`` (Alg. 3).

All three return float32 [B, 3, H, W] on x's device, for x float [B, 3, H, W] in [0, 1] and
target int64 [B]; gradients are taken w.r.t. the [0, 1] input (the model normalises inside).

G3, Algorithm 1 (``g3``): starting at x_0 = x, for k = 0 .. n-1: e_k = grad_x f(x_k),
x_{k+1} = x_k + lr * e_k; the result is the pixel-wise maximum of e_0 .. e_{n-1}. That is n
forward+backward passes per image (the point x_n reached by the last update is never
evaluated, as in the pseudo-code). Images advance together; each iteration is one chunked
pass through :func:`salbench.methods.engine.batched_gradients`.

GGIG, Algorithm 2 (``ggig``): the n + 1 points x_k = x' + k (x - x') / n, k = 0 .. n (both
the baseline and x included), each run through G3 with ``iterations`` iterations; the result
is the pixel-wise maximum over all (n + 1) * iterations gradients, with no (x - x') scaling
(paper section 4). All B * (n + 1) trajectories form one state [B * (n + 1), 3, H, W] that
advances together, chunked through ``internal_batch_size``: (n + 1) * iterations
forward+backward passes per image.

GEG, Algorithm 3 (``geg``): s = score of the target and p = top-1 class of the model on x;
draw ``samples`` perturbed models M' = M + N(0, sigma^2 I); keep M' where top-1'(x) = p and
s'(x) >= s; the result is the pixel-wise maximum of the kept models' input gradients.
The number kept per image is reported as ``geg_accepted``. Perturbed models are evaluated
with ``torch.func.functional_call`` over stacked perturbed parameters ([k, *shape] per
tensor, k perturbations per chunk), never by copying the model: ``vectorize="vmap"`` runs
``torch.func.vmap`` over the k stacked parameter sets (one batched forward+backward of k x b
points), ``"loop"`` runs one ``functional_call`` per parameter set on the whole image chunk,
``"auto"`` (default) picks vmap on accelerators and the loop on CPU (on CPU, vmap's batched
conv weights turn into grouped convolutions, slower than the loop; on a GPU, vmap is meant to
fill the device when the image batch is small). Both give the same result to float
tolerance. Cost: ``samples`` forward+backward passes per image, plus one forward pass (the
unperturbed scores), plus one forward+backward for an image that accepted nothing, plus
drawing the noise: one normal sample per parameter per draw, whatever the batch size, which
a small image batch does not amortise. Figures: docs/PERFORMANCE.md, "GEG noise and vmap".

Profiles (forward+backward passes per image): paper -- ``g3`` 200, ``ggig`` 51 * 200 =
10,200, ``geg`` 200 (+ 1 forward); fast (demo/tests, <= 25) -- ``g3`` iterations=25 (25),
``ggig`` steps=4, iterations=5 (5 points x 5 = 25), ``geg`` samples=8 (8, + 1 forward).

Decisions where the paper is silent or ambiguous (each one a parameter where it matters):

* Score. The ascent and all gradients use the target *logit* (``score="logit"``): the paper
  follows "the path that maximizes activation for the class-specific logit", and the
  authors' public code (TReNDS lab, ``interpretability.py``: ``get_grad_ascent_saliency``,
  ``get_multi_grad_ascent_max_saliency``, ``saliency_through_weight_perturbation``)
  differentiates the model output before softmax. GEG's acceptance test compares the
  softmax *probability* of the target (``accept_score="prob"``), as that code does
  ("prediction score" in the paper's text).
* Maximum. "pixel-wise maximum attribution" is the maximum of the *signed* gradients
  (``torch.max`` over the stacked signed gradients in the authors' code), not of their
  absolute values; reduce with :func:`salbench.methods.to_map` afterwards as for any method.
* Iterations. The paper's only setting is 200 gradient-ascent iterations (MNIST): the
  default for ``g3`` and ``ggig``. The learning rate 1e-4 is applied to the gradient w.r.t.
  the [0, 1] input (the paper does not say in which input space it stepped). The ascent is
  plain (no gradient normalisation; the authors' code has it commented out) and unclamped:
  the points may leave [0, 1], as in the pseudo-code.
* GGIG steps. The paper does not give n; the default 50 (51 points) is the authors' code's
  ``m_steps=50`` (``torch.linspace(0, 1, 51)``). The baseline is black (x' = 0, section 4).
  Paper profile cost: 51 * 200 = 10,200 forward+backward passes per image.
* GEG draws. Algorithm 3 is followed literally: ``samples`` = 200 draws, the rejected ones
  are dropped (the authors' code instead redraws until 200 are accepted, an unbounded cost).
  An image that accepts no draw gets the unperturbed model's input gradient (vanilla
  gradient) and ``geg_accepted`` = 0.
* GEG sigma. N(0, sigma I) is read as standard deviation sigma. The paper gives no value;
  the authors' code uses an absolute 0.001 on every float tensor. Per SPEC the default is
  relative: noise std = ``sigma`` * std(tensor), the std over the whole tensor (population
  std; the tensor's RMS when its std is 0 or it has one element; 1 when it is all zeros).
  ``sigma=0.005`` relative: on efficientnet_lite0 (two sample photos, 8 draws) it moved the
  target logit by 0.12 on average, about as much as the code's absolute 0.001 (0.14), kept
  the top-1 class in every draw and accepted ~70% of them; relative 0.01 flipped the top-1
  in 6% of draws, 0.05 in 69%. ``sigma_mode="absolute", sigma=0.001`` reproduces the code.
* What is perturbed: every tensor of ``model.named_parameters()`` -- convolution and linear
  weights and biases, and the affine weight and bias of normalisation layers (BatchNorm's
  gamma and beta: they are trained parameters of M, and the authors' code perturbs them).
  Buffers are not: BatchNorm running mean and variance (statistics of the data, left alone
  by the authors' code too; BatchNorm stays in eval mode), ``num_batches_tracked``, and the
  Classifier's normalisation ``mean`` and ``std``.
* GEG randomness: one ``torch.Generator`` on x's device seeded with ``seed``; draw j
  (j = 0 .. samples-1, in order) takes, for each (name, p) of ``model.named_parameters()`` in
  order, ``torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)``, scaled by
  sigma * scale(p). The stream does not depend on batch or chunk sizes, so the same seed gives
  the same perturbed models for a batch and for each image alone; CPU and CUDA streams differ.
* Acceptance: top-1 of M'(x) equals top-1 of M(x) (the prediction, not the target, as in
  Algorithm 3), and the target's ``accept_score`` under M' is >= its value under M
  (ties accepted).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch.func import functional_call, vmap

from salbench.methods.baselines import make_baseline
from salbench.methods.engine import batched_gradients, is_oom, target_scores
from salbench.methods.gradient import input_gradient
from salbench.methods.registry import Attribution, register
from salbench.models.base import Classifier

log = logging.getLogger(__name__)

VECTORIZE = ("auto", "vmap", "loop")
SIGMA_MODES = ("relative", "absolute")


# --------------------------------------------------------------------------- G3 / GGIG


def ascent_max(
    model: Classifier,
    start: torch.Tensor,
    targets: torch.Tensor,
    points_per_group: int,
    *,
    iterations: int,
    lr: float,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient ascent from every start point at once; pixel-wise max per group of points.

    Algorithm 1's loop, batched: the state x [N, 3, H, W] (N = G * points_per_group, point i
    belonging to group i // points_per_group) advances together; at iteration k = 0 .. n-1
    every e_k = grad f(x_k) is folded into the running max of its group and x_{k+1} =
    x_k + lr * e_k (no update after the last gradient).

    Args:
        start: float [N, 3, H, W], the starting points (not modified).
        targets: int64 [N], the class of each point.
        points_per_group: S; N must be a multiple of it.
        iterations: n >= 1, gradient evaluations per point.

    Returns:
        (max float32 [G, 3, H, W], first float32 [N], last float32 [N]): the pixel-wise max
        of all N / G * n gradients of each group, and every point's score at x_0 and at
        x_{n-1}.
    """
    n_iter = int(iterations)
    if n_iter < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    n, s = len(start), int(points_per_group)
    if s < 1 or n % s:
        raise ValueError(f"{n} points do not split into groups of {points_per_group}")
    state = start.detach().float().clone()
    out = torch.full((n // s, *start.shape[1:]), -math.inf, dtype=torch.float32,
                     device=start.device)
    first = torch.empty(n, dtype=torch.float32, device=start.device)
    last = torch.empty_like(first)

    for k in range(n_iter):
        def consume(idx: torch.Tensor, grad: torch.Tensor, sc: torch.Tensor, k: int = k) -> None:
            group = (idx // s).view(-1, 1, 1, 1).expand_as(grad)
            out.scatter_reduce_(0, group, grad, reduce="amax")
            if k + 1 < n_iter:
                state[idx] += lr * grad
            if k == 0:
                first[idx] = sc
            last[idx] = sc

        batched_gradients(
            model, n, lambda idx: state[idx], targets, consume,
            internal_batch_size=internal_batch_size, score=score,
        )
    return out, first, last


@register("g3", fast={"iterations": 25}, info_columns=("ascent_gain",))
def g3(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    iterations: int = 200,
    lr: float = 1e-4,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> Attribution:
    """G3 (paper 000, Alg. 1): pixel-wise max of the gradients along a gradient ascent from x.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. ``iterations`` gradients per image
    (x_0 = x, x_{k+1} = x_k + lr grad f(x_k), unclamped); the maximum is over the signed
    gradients. Reports ``ascent_gain`` = f(x_{n-1}) - f(x_0) per image (>= 0 when the ascent
    climbs). See the module docstring for the decisions taken.
    """
    out, first, last = ascent_max(
        model, x, target, 1, iterations=iterations, lr=lr, score=score,
        internal_batch_size=internal_batch_size,
    )
    return Attribution(out, {"ascent_gain": last - first})


def ggig_points(x: torch.Tensor, baseline: torch.Tensor, steps: int) -> torch.Tensor:
    """Algorithm 2's path: x_k = x' + k (x - x') / n for k = 0 .. n, as float [B * (n+1), 3,
    H, W], point b * (n + 1) + k (x, baseline: float [B, 3, H, W])."""
    n = int(steps)
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    alpha = (x - baseline) / n
    k = torch.arange(n + 1, device=x.device, dtype=x.dtype).view(1, -1, 1, 1, 1)
    return (baseline.unsqueeze(1) + k * alpha.unsqueeze(1)).flatten(0, 1)


@register("ggig", fast={"steps": 4, "iterations": 5}, info_columns=("ascent_gain",))
def ggig(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 50,
    iterations: int = 200,
    lr: float = 1e-4,
    baseline: str | float = "black",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> Attribution:
    """GGIG (paper 000, Alg. 2): G3 from every point of the straight path; pixel-wise max.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. ``steps`` = n gives the n + 1 points
    x' + k (x - x') / n, k = 0 .. n; each runs ``iterations`` gradient-ascent steps of size
    ``lr``; the result is the max of all (n + 1) * iterations signed gradients, not scaled by
    (x - x'). ``baseline``: see :func:`make_baseline` (paper: black). Reports ``ascent_gain``
    of the trajectory that starts at x. Cost: (n + 1) * iterations forward+backward passes
    per image, all B * (n + 1) trajectories batched.
    """
    base = make_baseline(x, baseline)
    pts = ggig_points(x, base, steps)
    per = int(steps) + 1
    out, first, last = ascent_max(
        model, pts, target.repeat_interleave(per), per, iterations=iterations, lr=lr,
        score=score, internal_batch_size=internal_batch_size,
    )
    at_x = torch.arange(len(x), device=x.device) * per + per - 1
    return Attribution(out, {"ascent_gain": last[at_x] - first[at_x]})


# --------------------------------------------------------------------------- GEG


def perturbation_scales(
    params: dict[str, torch.Tensor], sigma: float, sigma_mode: str = "relative"
) -> dict[str, float]:
    """Noise standard deviation of each parameter tensor.

    relative: sigma * std(p) over the whole tensor (population std), falling back to the
    tensor's RMS when the std is 0 or undefined (one element), and to sigma when p is all
    zeros. absolute: sigma for every tensor.
    """
    if sigma_mode not in SIGMA_MODES:
        raise ValueError(f"sigma_mode must be one of {SIGMA_MODES}, got {sigma_mode!r}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    out = {}
    for name, p in params.items():
        scale = 1.0
        if sigma_mode == "relative":
            q = p.detach().double()
            std = q.std(unbiased=False).item() if q.numel() > 1 else 0.0
            rms = q.pow(2).mean().sqrt().item() if q.numel() else 0.0
            scale = std if std > 0 else (rms if rms > 0 else 1.0)
        out[name] = float(sigma) * scale
    return out


def draw_perturbations(
    params: dict[str, torch.Tensor],
    scales: dict[str, float],
    count: int,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """``count`` perturbed copies of the parameters, stacked: name -> [count, *p.shape].

    Draw j takes, for each parameter in order, ``torch.randn(p.shape, generator=generator,
    device=p.device, dtype=p.dtype) * scales[name]`` (j-major order; see the module
    docstring), added to the detached parameter.
    """
    out = {name: torch.empty((count, *p.shape), device=p.device, dtype=p.dtype)
           for name, p in params.items()}
    for j in range(count):
        for name, p in params.items():
            # same numbers as torch.randn(p.shape, generator=generator, ...), written in place
            torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype,
                        out=out[name][j])
    for name, p in params.items():
        out[name].mul_(scales[name]).add_(p.detach().unsqueeze(0))
    return out


def geg_accept(
    logits: torch.Tensor,
    target: torch.Tensor,
    top1: torch.Tensor,
    reference: torch.Tensor,
    accept_score: str = "prob",
) -> torch.Tensor:
    """Algorithm 3's test: which perturbed models are kept (bool, logits' shape minus K).

    logits: float [..., N, K] of perturbed models on N images; target, top1 (the unperturbed
    model's prediction): int64 [N]; reference: float [N], the unperturbed ``accept_score`` of
    the target. Kept where argmax(logits) == top1 and the target's ``accept_score`` >=
    reference.
    """
    flat = logits.detach().reshape(-1, logits.shape[-1])
    reps = flat.shape[0] // len(target)
    s = target_scores(flat, target.repeat(reps), accept_score).view(logits.shape[:-1])
    return (logits.detach().argmax(-1) == top1) & (s >= reference)


def _resolve_vectorize(vectorize: str, device: torch.device) -> str:
    if vectorize not in VECTORIZE:
        raise ValueError(f"vectorize must be one of {VECTORIZE}, got {vectorize!r}")
    if vectorize == "auto":
        return "loop" if device.type == "cpu" else "vmap"
    return vectorize


def _perturbed_forward_backward(
    model: Classifier,
    stacked: dict[str, torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    score: str,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k perturbed models on b images: (logits float [k, b, K] detached, input gradients of
    the target ``score`` float32 [k, b, 3, H, W])."""
    k = next(iter(stacked.values())).shape[0]
    xs = x.detach().unsqueeze(0).expand(k, *x.shape).clone().requires_grad_(True)
    with torch.enable_grad():
        if mode == "vmap":
            def run(p: dict[str, torch.Tensor], xx: torch.Tensor) -> torch.Tensor:
                return functional_call(model, p, (xx,))

            logits = vmap(run)(stacked, xs)
        else:
            logits = torch.stack([
                functional_call(model, {n: v[j] for n, v in stacked.items()}, (xs[j],))
                for j in range(k)
            ])
        s = target_scores(logits.flatten(0, 1), target.repeat(k), score)
        (grad,) = torch.autograd.grad(s.sum(), xs)
    return logits.detach(), grad.float()


@register("geg", fast={"samples": 8}, info_columns=("geg_accepted",))
def geg(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    samples: int = 200,
    sigma: float = 0.005,
    sigma_mode: str = "relative",
    score: str = "logit",
    accept_score: str = "prob",
    seed: int = 0,
    vectorize: str = "auto",
    internal_batch_size: int = 64,
) -> Attribution:
    """GEG (paper 000, Alg. 3): max input gradient over accepted perturbed models.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. Draws ``samples`` perturbed parameter
    sets (noise std ``sigma`` x std of each tensor, or ``sigma`` with
    ``sigma_mode="absolute"``); keeps, per image, those with the unperturbed top-1 class and
    target ``accept_score`` >= the unperturbed one; returns the pixel-wise max of the kept
    models' gradients of the target ``score`` (signed). Images with nothing kept get the
    vanilla gradient. Reports ``geg_accepted`` (float [B], the number kept). Chunks hold
    about ``internal_batch_size`` (perturbation, image) pairs; chunks halve on out-of-memory.
    """
    n_samples = int(samples)
    if n_samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    mode = _resolve_vectorize(vectorize, x.device)
    params = dict(model.named_parameters())
    scales = perturbation_scales(params, sigma, sigma_mode)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    n_img = len(x)
    ibs = max(1, int(internal_batch_size))

    # unperturbed prediction and reference score (forward only, chunked)
    top1 = torch.empty(n_img, dtype=torch.long, device=x.device)
    reference = torch.empty(n_img, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        for b0 in range(0, n_img, ibs):
            lg = model(x[b0:b0 + ibs])
            top1[b0:b0 + ibs] = lg.argmax(1)
            reference[b0:b0 + ibs] = target_scores(lg, target[b0:b0 + ibs], accept_score)

    out = torch.full(x.shape, -math.inf, dtype=torch.float32, device=x.device)
    accepted = torch.zeros(n_img, dtype=torch.float32, device=x.device)
    sizes = {"b": min(n_img, ibs)}
    sizes["k"] = max(1, ibs // max(1, sizes["b"]))

    def fold(stacked: dict[str, torch.Tensor], b0: int, b1: int) -> None:
        logits, grad = _perturbed_forward_backward(
            model, stacked, x[b0:b1], target[b0:b1], score, mode)
        keep = geg_accept(logits, target[b0:b1], top1[b0:b1], reference[b0:b1], accept_score)
        masked = torch.where(keep.view(*keep.shape, 1, 1, 1), grad, -math.inf).amax(0)
        out[b0:b1] = torch.maximum(out[b0:b1], masked)
        accepted[b0:b1] += keep.sum(0).float()

    def run(stacked: dict[str, torch.Tensor], b0: int, b1: int) -> None:
        """Evaluate a block (its perturbations x images b0:b1); split it on out-of-memory."""
        k = next(iter(stacked.values())).shape[0]
        try:
            fold(stacked, b0, b1)
            return
        except RuntimeError as exc:
            if not is_oom(exc) or (k == 1 and b1 - b0 == 1):
                raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if k > 1:
            sizes["k"] = max(1, k // 2)
            log.warning("out of memory: GEG evaluates %d perturbations per chunk", sizes["k"])
            halves: list[Callable[[], None]] = [
                lambda: run({n: v[: k // 2] for n, v in stacked.items()}, b0, b1),
                lambda: run({n: v[k // 2:] for n, v in stacked.items()}, b0, b1),
            ]
        else:
            mid = (b0 + b1) // 2
            sizes["b"] = max(1, mid - b0)
            log.warning("out of memory: GEG evaluates %d images per chunk", sizes["b"])
            halves = [lambda: run(stacked, b0, mid), lambda: run(stacked, mid, b1)]
        for half in halves:
            half()

    done = 0
    while done < n_samples:
        count = min(sizes["k"], n_samples - done)
        stacked = draw_perturbations(params, scales, count, gen)
        b0 = 0
        while b0 < n_img:
            b1 = min(n_img, b0 + sizes["b"])
            run(stacked, b0, b1)
            b0 = b1
        done += count

    none = accepted == 0
    if none.any():
        idx = none.nonzero().squeeze(1)
        out[idx] = input_gradient(model, x[idx], target[idx], score=score,
                                  internal_batch_size=internal_batch_size)
    return Attribution(out, {"geg_accepted": accepted})
