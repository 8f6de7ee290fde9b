"""SAMP and SAMP++: Salient Manipulation Path (Zhang, Zheng, Zhou, Lu, ICLR 2024; paper 004).

A path method whose path is built greedily. From the start point x^S the path moves towards the
end point x^E in segments dx^k; segment k moves the ``s`` not yet finished pixels with the
largest first-order attribution g_i (x^E_i - x^k_i) (paper Eq. 8, "top_s") all the way to
their end value. The attribution is the left Riemann sum of the path integral,

    a = sign * sum_k grad f(x^{k-1}) * dx^k,        x^k = x^{k-1} + dx^k,

so that sum(a) ~ f(x) - f(x') (completeness, Eq. 2-3). One gradient per segment serves both
the selection of segment k and its attribution, so a path of K segments costs K forward +
backward passes per image (plus one batched forward of x and x' for the diagnostics).

SAMP++ (Algorithm 1) adds

* the infinitesimal constraint (IC, Eq. 9): a segment whose L1 norm exceeds ``eta`` is scaled
  down to L1 norm ``eta`` (the selected pixels move the same fraction of the way); they stay
  unfinished and the next segment re-selects among all unfinished pixels with a fresh
  gradient. The paper sets eta = 0.1 ||x||_1 (the ratio is the parameter ``eta``; ||x||_1 of
  the explained image in [0, 1]). The number of segments is therefore not fixed: at most
  ceil(P / s) unconstrained segments (each finishes min(s, remaining) pixels) plus at most
  ||x^E - x^S||_1 / eta constrained ones (each moves exactly eta), i.e. <= 14 + 10 = 24 for
  deletion at the paper's settings and usually fewer for insertion (||x - blur(x)||_1 is
  much smaller than ||x||_1, so the cap rarely binds there);
* the momentum strategy (MS, Eq. 10): the selection uses g^k = lambda g^{k-1} +
  (1 - lambda) grad f(x^{k-1}), g^1 = grad f(x^S), lambda = ``momentum`` (0.5).

Directions and baselines (paper Sec. 4.1, Petsiuk's configuration): ``"deletion"`` goes from
the image to a black (zero) image, ``"insertion"`` from a Gaussian-blurred image (sigma 5,
kernel 31) to the image. ``baseline="auto"`` picks these; any :func:`make_baseline` kind can
be given instead. In both directions the attribution is signed so that it sums to
f(x) - f(x') and the segment chosen first receives the largest attribution: for insertion
(x^S = x', x^E = x, sign +1) segment k takes the pixels that raise the score most; for
deletion (x^S = x, x^E = x', sign -1) the pixels whose removal lowers it most.

Decisions where the paper is silent or ambiguous (all documented deviations):

* ``unit="pixel"`` (default): a "pixel" is a spatial location; its three channels move
  together and its selection score is the sum of the channel scores. ``unit="element"``
  treats every colour value as its own feature (the paper's "d features").
* ``step_size``: an int is a number of units per segment; a float in (0, 1] a fraction of
  all units, rounded. The default 16/224 is the paper's s = 224 * 16 pixels at 224 x 224
  (s = round(16 H W / 224) at H x W, i.e. 14 segments without IC). The fast profile uses
  1/7: 7 forward + backward passes per image for ``samp``, at most 7 + 10 = 17 for
  ``samp_pp`` (deletion; paper profile: 14 and at most 24).
* ``samp`` is the paper's "SAMP" of Table 1: Eq. 8, with neither IC nor MS (``eta=None``);
  ``samp_pp`` is Algorithm 1 with IC (``eta=0.1``) and MS (``momentum=0.5``).
  ``samp_pp(momentum=0, eta=e) == samp(eta=e)``.
* Algorithm 1 line 11 accumulates the attribution with the momentum g^k. We accumulate it
  with the true gradient by default (``attribution_grad="gradient"``): only that is the
  path integral of Eq. 2-3 whose completeness the IC is meant to protect;
  ``attribution_grad="momentum"`` reproduces the literal line 11.
* The score is the target logit (the paper evaluates logits); ``score="prob"`` is available.
* Ties in the selection are broken by the lower unit index (stable sort), so results are
  deterministic and independent of the batch.
* If ||x||_1 = 0 the IC bound falls back to ``eta`` * ||x^E - x^S||_1.

Tensors: x float32 [B, 3, H, W] in [0, 1]; target int64 [B]; the attribution float32
[B, 3, H, W], signed, zero where x^S == x^E. Per-image diagnostics: ``completeness_error`` =
|sum(a) - (f(x) - f(x'))|, ``score_delta`` = f(x) - f(x'), ``path_steps`` (segments = forward
+ backward passes), ``constrained_steps`` (segments shortened by the IC).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any

import torch

from salbench.methods.baselines import make_baseline
from salbench.methods.engine import batched_gradients
from salbench.methods.paths import endpoint_scores
from salbench.methods.registry import Attribution, register
from salbench.models.base import Classifier

DIRECTIONS = ("deletion", "insertion")
UNITS = ("pixel", "element")
ATTRIBUTION_GRADS = ("gradient", "momentum")
INFO_COLUMNS = ("completeness_error", "score_delta", "path_steps", "constrained_steps")
PAPER_STEP = 16 / 224  # s = 224 * 16 pixels of 224 * 224


@dataclass(frozen=True)
class SampSettings:
    """The settings of one SAMP / SAMP++ path (the module docstring gives each one's meaning).

    The registered ``samp`` and ``samp_pp`` methods take them as keyword parameters.
    """

    direction: str = "deletion"
    baseline: str | float | torch.Tensor = "auto"
    step_size: int | float = PAPER_STEP
    unit: str = "pixel"
    eta: float | None = 0.1
    momentum: float = 0.5
    attribution_grad: str = "gradient"
    score: str = "logit"
    internal_batch_size: int = 64
    record: bool = True


@dataclass
class SampPath:
    """A constructed manipulation path and its attribution.

    attr: float32 [B, 3, H, W], sign * sum_k grad_k * dx^k.
    start, end: float32 [B, 3, H, W], x^S and x^E (the path runs from start to end).
    sign: +1 (insertion) or -1 (deletion).
    steps: int64 [B], number of segments of each image's path.
    constrained: int64 [B], segments whose L1 norm the IC scaled down to eta.
    selected: bool [K, B, P] (K = max(steps), P = units per image: H*W pixels or 3*H*W
        elements, row-major), the units moved by segment k; all False once an image is done.
        None unless recorded.
    scale: float32 [K, B], the fraction of the remaining way the selected units moved in
        segment k (1 unless the IC bound it; 0 once the image is done). None unless recorded.
    """

    attr: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    sign: float
    steps: torch.Tensor
    constrained: torch.Tensor
    selected: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def order(self) -> torch.Tensor:
        """int64 [B, P]: the segment (0-based) in which each unit is first moved; -1: never."""
        if self.selected is None:
            raise ValueError("the path was not recorded (record=False)")
        k, b, p = self.selected.shape
        first = torch.full((b, p), -1, dtype=torch.long, device=self.selected.device)
        for i in range(k - 1, -1, -1):
            first[self.selected[i]] = i
        return first


def resolve_step_size(step_size: int | float, units: int) -> int:
    """Units per segment: an int is a count, a float in (0, 1] a fraction of ``units``."""
    if isinstance(step_size, bool) or not isinstance(step_size, numbers.Real):
        raise ValueError(f"step_size must be an int >= 1 or a float in (0, 1], got {step_size!r}")
    if isinstance(step_size, numbers.Integral):
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1 units, got {step_size}")
        return int(step_size)
    if not 0.0 < float(step_size) <= 1.0:
        raise ValueError(f"a float step_size is a fraction in (0, 1], got {step_size}")
    return max(1, round(float(step_size) * units))


def _check(direction: str, unit: str, attribution_grad: str, momentum: float,
           eta: float | None) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if attribution_grad not in ATTRIBUTION_GRADS:
        raise ValueError(
            f"attribution_grad must be one of {ATTRIBUTION_GRADS}, got {attribution_grad!r}")
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if eta is not None and not float(eta) > 0.0:
        raise ValueError(f"eta must be > 0 (a fraction of ||x||_1) or None, got {eta}")


def samp_path(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    settings: SampSettings | None = None,
    **overrides: Any,
) -> SampPath:
    """Build the SAMP / SAMP++ path of every image (Algorithm 1) and its attribution.

    Sequential over segments, batched over images: segment k evaluates the gradients of all
    images whose path is not finished in one call of the batched engine (chunks of
    ``internal_batch_size``). Parameters as in the module docstring; ``record`` keeps the
    per-segment selections (bool [K, B, P]) for inspection (:meth:`SampPath.order`).
    ``settings`` (default :class:`SampSettings`) with ``overrides`` (its field names).
    """
    st = replace(settings or SampSettings(), **overrides)
    direction, baseline, unit, eta = st.direction, st.baseline, st.unit, st.eta
    momentum, attribution_grad, score = st.momentum, st.attribution_grad, st.score
    _check(direction, unit, attribution_grad, momentum, eta)
    x = x.float()
    b, c, h, w = x.shape
    if isinstance(baseline, str) and baseline == "auto":
        baseline = "black" if direction == "deletion" else "blur"
    base = make_baseline(x, baseline).float()
    sign = 1.0 if direction == "insertion" else -1.0
    start, end = (base, x) if direction == "insertion" else (x, base)
    n_units = h * w if unit == "pixel" else c * h * w
    s = min(resolve_step_size(st.step_size, n_units), n_units)

    def per_unit(t: torch.Tensor) -> torch.Tensor:  # [n, 3, H, W] -> [n, P]
        return t.sum(1).flatten(1) if unit == "pixel" else t.flatten(1)

    def spread(m: torch.Tensor) -> torch.Tensor:  # bool [n, P] -> bool [n, 3, H, W]
        n = len(m)
        return m.view(n, 1, h, w).expand(n, c, h, w) if unit == "pixel" else m.view(n, c, h, w)

    def finished(cur: torch.Tensor, fin: torch.Tensor) -> torch.Tensor:  # -> bool [n, P]
        eq = cur == fin
        return eq.all(1).flatten(1) if unit == "pixel" else eq.flatten(1)

    total = (end - start).abs().flatten(1).double().sum(1)  # ||x^E - x^S||_1, [B]
    if eta is None:
        bound = torch.full((b,), math.inf, dtype=torch.float64, device=x.device)
        max_steps = math.ceil(n_units / s)
    else:
        bound = float(eta) * x.abs().flatten(1).double().sum(1)
        bound = torch.where(bound > 0, bound, float(eta) * total)
        ratio = (total / bound.clamp_min(1e-300)).max().item() if b else 0.0
        max_steps = math.ceil(n_units / s) + math.ceil(ratio * (1 + 1e-3)) + 2

    cur = start.clone()
    attr = torch.zeros_like(x)
    mom = torch.zeros_like(x)
    steps = torch.zeros(b, dtype=torch.long, device=x.device)
    constrained = torch.zeros(b, dtype=torch.long, device=x.device)
    sel_log: list[torch.Tensor] = []
    scale_log: list[torch.Tensor] = []
    k = 0
    while True:
        done = finished(cur, end)  # [B, P]
        active = (~done).any(1).nonzero().squeeze(1)
        if len(active) == 0:
            break
        if k >= max_steps:  # cannot happen in exact arithmetic (see the module docstring)
            raise RuntimeError(f"SAMP path did not finish within {max_steps} segments")
        cur_a, end_a = cur[active], end[active]
        grad = torch.empty_like(cur_a)

        def consume(idx: torch.Tensor, g: torch.Tensor, _s: torch.Tensor,
                    grad: torch.Tensor = grad) -> None:
            grad[idx] = g

        batched_gradients(model, len(active), lambda i, pts=cur_a: pts[i], target[active],
                          consume, internal_batch_size=st.internal_batch_size, score=score)
        if k == 0:
            mom_a = grad  # g^1 = grad f(x^S)
        else:
            mom_a = momentum * mom[active] + (1.0 - momentum) * grad
        mom[active] = mom_a

        rest = end_a - cur_a
        key = per_unit(sign * mom_a * rest).masked_fill(done[active], -math.inf)
        top = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :s]
        sel = torch.zeros_like(key, dtype=torch.bool).scatter_(1, top, True) & ~done[active]
        sel_x = spread(sel)
        l1 = torch.where(sel_x, rest, 0.0).abs().flatten(1).double().sum(1)
        cap = l1 > bound[active]
        frac = torch.where(cap, bound[active] / l1.clamp_min(1e-300), 1.0).float()
        partial = cur_a + frac.view(-1, 1, 1, 1) * rest
        new = torch.where(sel_x, torch.where(cap.view(-1, 1, 1, 1), partial, end_a), cur_a)
        weight = mom_a if attribution_grad == "momentum" else grad
        attr[active] += sign * weight * (new - cur_a)
        cur[active] = new
        steps[active] += 1
        constrained[active] += cap.long()
        if st.record:
            full_sel = torch.zeros_like(done)
            full_sel[active] = sel
            full_scale = torch.zeros(b, dtype=torch.float32, device=x.device)
            full_scale[active] = frac
            sel_log.append(full_sel)
            scale_log.append(full_scale)
        k += 1

    selected = scale = None
    if st.record:
        selected = (torch.stack(sel_log) if sel_log
                    else torch.zeros((0, b, n_units), dtype=torch.bool, device=x.device))
        scale = (torch.stack(scale_log) if scale_log
                 else torch.zeros((0, b), dtype=torch.float32, device=x.device))
    return SampPath(attr, start, end, sign, steps, constrained, selected, scale)


def _attribution(model: Classifier, x: torch.Tensor, target: torch.Tensor, path: SampPath,
                 score: str) -> Attribution:
    base = path.start if path.sign > 0 else path.end
    fx, fb = endpoint_scores(model, x.float(), base, target, score)
    delta = fx - fb
    err = (path.attr.flatten(1).double().sum(1) - delta.double()).abs().float()
    return Attribution(path.attr, {
        "completeness_error": err,
        "score_delta": delta,
        "path_steps": path.steps.float(),
        "constrained_steps": path.constrained.float(),
    })


@register("samp", fast={"step_size": 1 / 7}, info_columns=INFO_COLUMNS, map_reduce="sum")
def samp(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    direction: str = "deletion",
    baseline: str | float = "auto",
    step_size: int | float = PAPER_STEP,
    unit: str = "pixel",
    eta: float | None = None,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> Attribution:
    """SAMP (paper 004, Eq. 8): greedy top-s Salient Manipulation Path, left-Riemann attribution.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. ``direction``: "deletion" (x -> black)
    or "insertion" (blur(x) -> x); ``step_size``: units per segment (int) or fraction (float;
    default 16/224 = the paper's 224*16 pixels at 224x224); ``eta``: None (the paper's SAMP,
    no infinitesimal constraint) or the IC bound as a fraction of ||x||_1. Returns float32
    [B, 3, H, W] with completeness_error, score_delta, path_steps, constrained_steps.
    """
    path = samp_path(model, x, target, SampSettings(
        direction=direction, baseline=baseline, step_size=step_size, unit=unit, eta=eta,
        momentum=0.0, score=score, internal_batch_size=internal_batch_size, record=False))
    return _attribution(model, x, target, path, score)


@register("samp_pp", fast={"step_size": 1 / 7}, info_columns=INFO_COLUMNS, map_reduce="sum")
def samp_pp(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    direction: str = "deletion",
    baseline: str | float = "auto",
    step_size: int | float = PAPER_STEP,
    unit: str = "pixel",
    eta: float | None = 0.1,
    momentum: float = 0.5,
    attribution_grad: str = "gradient",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> Attribution:
    """SAMP++ (paper 004, Algorithm 1): SAMP with infinitesimal constraint and momentum.

    As :func:`samp`, plus ``eta`` (default 0.1: each segment's L1 norm <= 0.1 ||x||_1),
    ``momentum`` (0.5; 0 gives SAMP) and ``attribution_grad`` ("gradient": path integral,
    default; "momentum": Algorithm 1 line 11 literally). Returns float32 [B, 3, H, W].
    """
    path = samp_path(model, x, target, SampSettings(
        direction=direction, baseline=baseline, step_size=step_size, unit=unit, eta=eta,
        momentum=momentum, attribution_grad=attribution_grad, score=score,
        internal_batch_size=internal_batch_size, record=False))
    return _attribution(model, x, target, path, score)
