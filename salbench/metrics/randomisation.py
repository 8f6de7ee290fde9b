"""Randomisation and axiom metrics (Quantus 0.6.0's randomisation and axiomatic families,
docs/METRICS.md "Randomisation and axioms").

``random_logit``, ``smooth_mprt``, ``efficient_mprt`` and ``input_invariance`` re-run the
attribution method through their ``method`` argument (:mod:`salbench.metrics.rerun`): on
another class, on randomised copies of the model, on noisy copies of the batch or on a
shifted input with a model that undoes the shift; ``non_sensitivity`` needs forward passes
only. Layer randomisation follows Quantus' ``get_random_layer_generator``: every module
with ``reset_parameters`` in ``named_modules`` order ("bottom_up", reversed for
"top_down"), each reset right after ``torch.manual_seed(seed + 1)`` on a CPU copy of the
model (the global RNG is restored afterwards), so the randomised weights equal Quantus' and
do not depend on the device. Random draws per image come from
:func:`salbench.methods.seeding.image_generators`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from salbench.methods.baselines import make_baseline
from salbench.methods.engine import batched_scores
from salbench.methods.seeding import image_generators
from salbench.metrics.registry import register
from salbench.metrics.rerun import Method
from salbench.metrics.robustness import prepare_maps
from salbench.models.base import Classifier

LAYER_ORDERS = ("bottom_up", "top_down", "independent")


def _need(method: Method | None, name: str) -> Method:
    if method is None:
        raise ValueError(f"{name} re-runs the attribution method; call it with method= "
                         "(the pipeline passes it)")
    return method


def randomisable_layers(model: nn.Module, layer_order: str) -> list[tuple[str, nn.Module]]:
    """The modules with ``reset_parameters``, in the order ``layer_order`` resets them."""
    if layer_order not in LAYER_ORDERS:
        raise ValueError(f"layer_order must be one of {LAYER_ORDERS}, got {layer_order!r}")
    layers = [(n, m) for n, m in model.named_modules() if hasattr(m, "reset_parameters")]
    if not layers:
        raise ValueError("the model has no layers with reset_parameters to randomise")
    return layers[::-1] if layer_order == "top_down" else layers


def randomised_models(model: nn.Module, layer_order: str, seed: int, last_only: bool = False
                      ) -> Iterator[tuple[str, nn.Module]]:
    """(layer name, model) after each step of the layer randomisation (see the module
    docstring): cascading ("bottom_up" from the input side, "top_down" from the output
    side) or one layer at a time ("independent"); ``last_only``: only after the last step.
    The same copy is yielded each time, on the model's device."""
    device = next(iter(model.parameters())).device
    rand = copy.deepcopy(model).cpu()
    original = copy.deepcopy(rand.state_dict())
    layers = randomisable_layers(rand, layer_order)
    for j, (name, layer) in enumerate(layers):
        rand = rand.cpu()
        if layer_order == "independent":
            rand.load_state_dict(original)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + 1)
            layer.reset_parameters()
        if not last_only or j + 1 == len(layers):
            yield name, rand.to(device)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation (average ranks for ties) of the rows of a, b [B, D]."""
    from scipy.stats import rankdata  # imported when used: scipy.stats takes 0.25 s
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), np.nan)


def ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps [H, W] (scikit-image, 7 x 7 window, or the largest odd size <= the
    map side), data range max - min over both maps (as Quantus); NaN for maps under 3 px
    or a zero data range."""
    from skimage.metrics import structural_similarity
    rng = float(max(a.max(), b.max()) - min(a.min(), b.min()))
    side = min(7, *a.shape)
    win = side - (side % 2 == 0)
    if win < 3 or rng == 0:
        return float("nan")
    return float(structural_similarity(a, b, win_size=win, data_range=rng))


@register("random_logit", stage="model", columns={"random_logit": "float"},
          directions={"random_logit": "lower"})
def random_logit(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    num_classes: int | None = None,
    abs: bool = False,
    normalise: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Random logit test (Sixt et al. 2020): SSIM of the map of the target class and the
    map of a random other class (lower: the method tells classes apart)."""
    method = _need(method, "random_logit")
    k = int(num_classes or model.num_classes)
    off = []
    for g, t in zip(image_generators(x, seed), target.tolist(), strict=True):
        r = int(torch.randint(0, k - 1, (1,), generator=g))
        off.append(r + (r >= t))
    h, w = maps.shape[1:]
    a = prepare_maps(maps, abs, normalise).view(-1, h, w).cpu().numpy()
    ao = prepare_maps(method(model, x, torch.as_tensor(off, device=x.device)), abs,
                      normalise).view(-1, h, w).cpu().numpy()
    return {"random_logit": np.array([ssim_2d(p, q) for p, q in zip(a, ao, strict=True)])}


@register("smooth_mprt", stage="model", fast={"nr_samples": 5, "skip_layers": True},
          columns={"smooth_mprt": "float", "smooth_mprt_curve": "curve"},
          directions={"smooth_mprt": "lower"})
def smooth_mprt(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    layer_order: str = "bottom_up",
    nr_samples: int = 50,
    noise_magnitude: float = 0.1,
    skip_layers: bool = False,
    abs: bool = True,
    normalise: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Smooth MPRT (Hedstrom et al. 2023): Spearman correlation of the noise-averaged maps
    of the model and of its layer-randomised copies, averaged over the layers."""
    method = _need(method, "smooth_mprt")
    b, n = len(x), nr_samples
    std = noise_magnitude * (x.detach().flatten(1).amax(1) - x.detach().flatten(1).amin(1))
    noise = []
    for g, s in zip(image_generators(x, seed), std.tolist(), strict=True):
        eps = torch.randn((n, *x.shape[1:]), generator=g) * s
        eps[-1] = 0.0  # Quantus' last sample is the unperturbed image
        noise.append(eps)
    xs = (x.detach()[:, None] + torch.stack(noise).to(x.device, x.dtype)).flatten(0, 1)
    ts = target.repeat_interleave(n)

    def smoothed(m: nn.Module) -> np.ndarray:
        avg = method(m, xs, ts).double().view(b, n, *maps.shape[1:]).mean(1)
        return prepare_maps(avg, abs, normalise, "second_moment").cpu().numpy()

    orig = smoothed(model)
    corr = [spearman_rows(orig, smoothed(rand))
            for _, rand in randomised_models(model, layer_order, seed, skip_layers)]
    curves = np.stack(corr, 1)
    return {"smooth_mprt": curves.mean(1), "smooth_mprt_curve": list(curves.astype(np.float32))}


def discrete_entropy(a: np.ndarray, n_bins: int) -> float:
    """Entropy (nats) of the ``n_bins``-bin histogram of a's values (Quantus'
    discrete_entropy)."""
    from scipy.stats import entropy
    hist, _ = np.histogram(a, bins=n_bins)
    return float(entropy(hist))


@register("efficient_mprt", stage="model", columns={"efficient_mprt": "float"},
          directions={"efficient_mprt": "higher"})
def efficient_mprt(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    layer_order: str = "bottom_up",
    n_bins: int = 100,
    abs: bool = False,
    normalise: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Efficient MPRT (Hedstrom et al. 2023): relative rise of the map's discrete entropy
    from the model to its fully randomised copy, (H(rand) - H(orig)) / H(orig)."""
    method = _need(method, "efficient_mprt")
    _, rand = next(randomised_models(model, layer_order, seed, last_only=True))
    a = prepare_maps(maps, abs, normalise, "second_moment").cpu().numpy()
    ar = prepare_maps(method(rand, x, target), abs, normalise, "second_moment").cpu().numpy()
    h0 = np.array([discrete_entropy(v, n_bins) for v in a])
    h1 = np.array([discrete_entropy(v, n_bins) for v in ar])
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"efficient_mprt": (h1 - h0) / h0}


@register("non_sensitivity", stage="model", columns={"non_sensitivity": "float"},
          fast={"features_in_step": 1024}, directions={"non_sensitivity": "lower"})
def non_sensitivity(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    eps: float = 1e-5,
    features_in_step: int = 1,
    perturb_baseline: str | float = "black",
    abs: bool = True,
    normalise: bool = True,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Non-sensitivity (Nguyen & Rodriguez Martinez 2020): the number of input features
    where "zero attribution" and "the target probability does not move when the feature is
    set to the baseline" disagree (0 is best)."""
    b = len(x)
    h, w = maps.shape[1:]
    a = prepare_maps(maps, abs, normalise).view(b, 1, h, w).expand(b, x.shape[1], h, w)
    zero = (a.flatten(1) < eps).cpu()
    flat = x.detach().flatten(1)
    base = make_baseline(x, perturb_baseline).flatten(1)
    n_feat = flat.shape[1]
    k = max(1, int(features_in_step))
    steps = math.ceil(n_feat / k)
    feature = torch.arange(n_feat, device=x.device)

    def points(idx: torch.Tensor) -> torch.Tensor:
        i, s = idx // steps, idx % steps
        hit = (feature[None] // k) == s[:, None]
        return torch.where(hit, base[i], flat[i]).view(len(idx), *x.shape[1:])

    tgt = target.to(x.device)
    p0 = batched_scores(model, b, lambda i: x[i], tgt, score="prob",
                        internal_batch_size=internal_batch_size)
    p = batched_scores(model, b * steps, points, tgt.repeat_interleave(steps), score="prob",
                       internal_batch_size=internal_batch_size).view(b, steps)
    still = ((p - p0[:, None]).abs() < eps).cpu()
    still = still.repeat_interleave(k, 1)[:, :n_feat]
    return {"non_sensitivity": (still ^ zero).sum(1).double().numpy()}


@register("input_invariance", stage="model", columns={"input_invariance": "float"},
          directions={"input_invariance": "higher"})
def input_invariance(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    input_shift: float = -1.0,
    abs: bool = False,
    normalise: bool = False,
) -> dict[str, Any]:
    """Input invariance (Kindermans et al. 2019): 1 if the map of x + input_shift on a model
    that subtracts the shift first (bias of the first layer) equals the map of x on the
    model (np.isclose, atol 1e-4), else 0."""
    method = _need(method, "input_invariance")
    if not isinstance(getattr(model, "mean", None), torch.Tensor):
        raise ValueError("input_invariance needs a salbench Classifier (it shifts the "
                         "model's input normalisation, its `mean` buffer)")
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted.mean += float(input_shift)
    a = prepare_maps(maps, abs, normalise).cpu().numpy()
    a2 = prepare_maps(method(shifted, x + float(input_shift), target), abs,
                      normalise).cpu().numpy()
    return {"input_invariance": np.isclose(a, a2, atol=1e-4).all(1).astype(np.float64)}
