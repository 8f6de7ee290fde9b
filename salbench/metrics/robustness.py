"""Robustness metrics: how much the explanation moves when the input moves (Quantus 0.6.0's
robustness family, docs/METRICS.md "Robustness").

Each metric re-runs the attribution method on perturbed copies of its batch through its
``method`` argument (:mod:`salbench.metrics.rerun`): all ``nr_samples`` (or ``nr_steps``)
perturbations of the B images go in one call, which the pipeline runs in chunks of
``internal_batch_size`` images. Random perturbations come from per-image generators
(:func:`salbench.methods.seeding.image_generators`, the run's ``seed`` and the image's
content), so a sample's score does not depend on its batch or the executor. Maps are
compared as float64 vectors of H*W values after the optional ``abs`` and per-sample
``normalise`` (Quantus' switches; Quantus normalises over the whole batch by default).
With ``return_nan_when_prediction_changes`` a perturbation whose top-1 class differs from
the unperturbed image's is left out of the max / mean (NaN when none is left).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from salbench.methods.baselines import make_baseline
from salbench.methods.seeding import image_generators
from salbench.metrics.registry import register
from salbench.metrics.rerun import Method
from salbench.models.base import Classifier

#: vector norms [N, D] -> [N] by name ("fro" and "l2" are the same on vectors)
NORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "fro": lambda v: torch.linalg.vector_norm(v, 2, dim=-1),
    "l2": lambda v: torch.linalg.vector_norm(v, 2, dim=-1),
    "euclidean": lambda v: torch.linalg.vector_norm(v, 2, dim=-1),
    "manhattan": lambda v: v.abs().sum(-1),
    "linf": lambda v: v.abs().amax(-1),
}


def norm(v: torch.Tensor, kind: str) -> torch.Tensor:
    """Norm ``kind`` (a key of :data:`NORMS`) of the rows of v float [..., D] -> [...]."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {kind!r}")
    return NORMS[kind](v)


def prepare_maps(maps: torch.Tensor, abs: bool, normalise: bool,
                 how: str = "max") -> torch.Tensor:
    """maps float [N, H, W] -> float64 [N, H*W]: |a| if ``abs``, then, if ``normalise``,
    each map divided by its max |a| (``how`` "max", Quantus' normalise_by_max) or by the
    root of its mean square ("second_moment", Quantus'
    normalise_by_average_second_moment_estimate); an all-zero map is left as it is."""
    a = maps.detach().double().flatten(1)
    if abs:
        a = a.abs()
    if normalise:
        if how == "max":
            scale = a.abs().amax(1, keepdim=True)
        elif how == "second_moment":
            scale = a.pow(2).mean(1, keepdim=True).sqrt()
        else:
            raise ValueError(f"normalise how must be 'max' or 'second_moment', got {how!r}")
        a = a / torch.where(scale > 0, scale, torch.ones_like(scale))
    return a


def per_image(maps: torch.Tensor, new: torch.Tensor, k: int, abs: bool, normalise: bool,
              fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              how: str = "max") -> torch.Tensor:
    """fn(a float64 [1, D], ap float64 [k, D]) -> [k] for each image i of maps [B, H, W]:
    its map and its k perturbed maps (rows i*k .. i*k + k - 1 of new [B*k, H, W]), both
    through :func:`prepare_maps`, one image at a time (float64 copies of one image's maps
    only) -> [B, k]."""
    a = prepare_maps(maps, abs, normalise, how)
    return torch.stack([fn(a[i:i + 1], prepare_maps(new[i * k:(i + 1) * k], abs, normalise,
                                                    how)) for i in range(len(maps))])


def input_distances(x: torch.Tensor, xs: torch.Tensor, kind: str) -> torch.Tensor:
    """Norm ``kind`` of x_i - x' for each of image i's k perturbed copies (xs [B*k, 3, H, W],
    as :func:`noisy_copies` orders them), in float64, one image at a time -> [B, k]."""
    k = len(xs) // len(x)
    return torch.stack([norm((x[i].double() - xs[i * k:(i + 1) * k].double()).flatten(1), kind)
                        for i in range(len(x))])


def noisy_copies(x: torch.Tensor, seed: int, k: int, kind: str, **kw: float) -> torch.Tensor:
    """x float [B, 3, H, W] -> [B * k, 3, H, W]: k noisy copies of each image, image i's at
    rows i*k .. i*k + k - 1, the noise from image i's generator (not clipped to [0, 1]).

    kind "uniform": U[-lower_bound, lower_bound] if ``upper_bound`` is None, else
    U[lower_bound, upper_bound] (Quantus' batch_uniform_noise); "gaussian":
    N(perturb_mean, perturb_std^2) (batch_gaussian_noise).
    """
    shape = (k, *x.shape[1:])
    noise = []
    for g in image_generators(x, seed):
        if kind == "uniform":
            lo, hi = kw["lower_bound"], kw.get("upper_bound")
            if hi is None:
                lo, hi = -lo, lo
            elif hi <= lo:
                raise ValueError(f"upper_bound ({hi}) must be larger than lower_bound ({lo})")
            noise.append(torch.rand(shape, generator=g) * (hi - lo) + lo)
        elif kind == "gaussian":
            noise.append(torch.randn(shape, generator=g) * kw["perturb_std"]
                         + kw["perturb_mean"])
        else:
            raise ValueError(f"noise kind must be 'uniform' or 'gaussian', got {kind!r}")
    return (x.detach()[:, None] + torch.stack(noise).to(x.device, x.dtype)).flatten(0, 1)


def logits(model: Classifier, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """The model's logits float [N, K] of x float [N, 3, H, W], in chunks, no gradients."""
    with torch.no_grad():
        parts = [model(x[i:i + chunk]) for i in range(0, len(x), max(1, chunk))]
    return torch.cat(parts) if parts else x.new_zeros((0, 0))


def changed(model: Classifier, x: torch.Tensor, xs: torch.Tensor, chunk: int,
            known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """bool [B, K]: perturbation k of image i (xs [B*K, 3, H, W]) changes its top-1 class
    (``known``: the logits of x and xs when already computed)."""
    k = len(xs) // len(x)
    h, hs = known if known is not None else (logits(model, x, chunk), logits(model, xs, chunk))
    return (hs.argmax(1).view(len(x), k) != h.argmax(1)[:, None]).cpu()


def reduce_scores(s: torch.Tensor, how: str, drop: torch.Tensor | None) -> np.ndarray:
    """Per-sample max or mean of s [B, K] over the perturbations not in ``drop``
    (bool [B, K]); NaN where none is left. -> float64 [B]."""
    s = s.detach().cpu().double().clone()
    if drop is not None:
        s[drop] = float("nan")
    arr = s.numpy()
    out = np.full(len(arr), np.nan)
    for i, row in enumerate(arr):
        ok = row[~np.isnan(row)]
        if len(ok):
            out[i] = ok.max() if how == "max" else ok.mean()
    return out


def _need(method: Method | None, name: str) -> Method:
    if method is None:
        raise ValueError(f"{name} re-runs the attribution method on perturbed inputs; call it "
                         "with method= (the pipeline passes it)")
    return method


def _sensitivity(name: str, how: str, model: Classifier, x: torch.Tensor,
                 target: torch.Tensor, maps: torch.Tensor, method: Method | None,
                 nr_samples: int, lower_bound: float, upper_bound: float | None,
                 norm_numerator: str, norm_denominator: str | None, abs: bool,
                 normalise: bool, return_nan_when_prediction_changes: bool, seed: int,
                 internal_batch_size: int) -> dict[str, Any]:
    method = _need(method, name)
    xs = noisy_copies(x, seed, nr_samples, "uniform", lower_bound=lower_bound,
                      upper_bound=upper_bound)
    new = method(model, xs, target.repeat_interleave(nr_samples))

    def score(a: torch.Tensor, ap: torch.Tensor) -> torch.Tensor:
        s = norm(a - ap, norm_numerator)
        return s if norm_denominator in (None, "none") else s / norm(a, norm_denominator)

    s = per_image(maps, new, nr_samples, abs, normalise, score)
    drop = changed(model, x, xs, internal_batch_size) \
        if return_nan_when_prediction_changes else None
    return {name: reduce_scores(s, how, drop)}


@register("max_sensitivity", stage="model", columns={"max_sensitivity": "float"},
          fast={"nr_samples": 10}, directions={"max_sensitivity": "lower"})
def max_sensitivity(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    norm_numerator: str = "fro",
    norm_denominator: str | None = None,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = False,
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Max-sensitivity (Yeh et al. 2019): max over uniform input noise of ||a(x+d) - a(x)||."""
    return _sensitivity("max_sensitivity", "max", model, x, target, maps, method, nr_samples,
                        lower_bound, upper_bound, norm_numerator, norm_denominator, abs,
                        normalise, return_nan_when_prediction_changes, seed,
                        internal_batch_size)


@register("avg_sensitivity", stage="model", columns={"avg_sensitivity": "float"},
          fast={"nr_samples": 10}, directions={"avg_sensitivity": "lower"})
def avg_sensitivity(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    norm_numerator: str = "fro",
    norm_denominator: str | None = None,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = False,
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Avg-sensitivity (Yeh et al. 2019): mean over uniform input noise of ||a(x+d) - a(x)||."""
    return _sensitivity("avg_sensitivity", "mean", model, x, target, maps, method, nr_samples,
                        lower_bound, upper_bound, norm_numerator, norm_denominator, abs,
                        normalise, return_nan_when_prediction_changes, seed,
                        internal_batch_size)


@register("local_lipschitz", stage="model", columns={"local_lipschitz": "float"},
          fast={"nr_samples": 10}, directions={"local_lipschitz": "lower"})
def local_lipschitz(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    nr_samples: int = 200,
    perturb_mean: float = 0.0,
    perturb_std: float = 0.1,
    norm_numerator: str = "euclidean",
    norm_denominator: str = "euclidean",
    abs: bool = False,
    normalise: bool = True,
    return_nan_when_prediction_changes: bool = False,
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max ||a(x') - a(x)|| /
    ||x' - x|| over Gaussian neighbours x'."""
    method = _need(method, "local_lipschitz")
    xs = noisy_copies(x, seed, nr_samples, "gaussian", perturb_mean=perturb_mean,
                      perturb_std=perturb_std)
    new = method(model, xs, target.repeat_interleave(nr_samples))
    s = per_image(maps, new, nr_samples, abs, normalise,
                  lambda a, ap: norm(a - ap, norm_numerator))
    s = s / (input_distances(x, xs, norm_denominator).to(s.device) + 1e-10)
    drop = changed(model, x, xs, internal_batch_size) \
        if return_nan_when_prediction_changes else None
    return {"local_lipschitz": reduce_scores(s, "max", drop)}


def translate_x(x: torch.Tensor, shift: int, base: torch.Tensor) -> torch.Tensor:
    """x float [B, C, H, W] moved ``shift`` pixels right (left if negative) along the
    width; the uncovered columns come from ``base`` (same shape)."""
    w = x.shape[-1]
    out = base.clone()
    s = min(abs(shift), w)
    if shift >= 0:
        out[..., s:] = x[..., :w - s]
    else:
        out[..., :w - s] = x[..., s:]
    return out


@register("continuity", stage="model", columns={"continuity": "float"},
          fast={"nr_steps": 9}, directions={"continuity": "lower"})
def continuity(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    nr_steps: int = 28,
    perturb_baseline: str | float = "black",
    abs: bool = True,
    normalise: bool = True,
    return_nan_when_prediction_changes: bool = False,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Explanation continuity (Montavon et al. 2018): max over horizontal translations x'
    of ||a(x) - a(x')||_1 / ||x - x'||_2."""
    method = _need(method, "continuity")
    w = x.shape[-1]
    dx = (2 * w + 1) // nr_steps
    shifts = [-w + (s + 1) * dx for s in range(nr_steps)]
    base = make_baseline(x, perturb_baseline)
    xs = torch.stack([translate_x(x, t, base) for t in shifts], 1).flatten(0, 1)
    new = method(model, xs, target.repeat_interleave(nr_steps))
    s = per_image(maps, new, nr_steps, abs, normalise, lambda a, ap: norm(a - ap, "manhattan"))
    s = s / (input_distances(x, xs, "euclidean").to(s.device) + 1e-9)
    drop = changed(model, x, xs, internal_batch_size) \
        if return_nan_when_prediction_changes else None
    return {"continuity": reduce_scores(s, "max", drop)}


def hidden_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs make the internal representation (Quantus'
    get_hidden_representations): every module but the model's own class and containers
    of type nn.Sequential, in ``named_modules`` order."""
    return [(n, m) for n, m in model.named_modules()
            if not isinstance(m, (type(model), nn.Sequential))]


def chosen_layers(model: nn.Module, layer_names: Sequence[str] | None = None,
                  layer_indices: Sequence[int] | None = None) -> list[nn.Module]:
    """The layers of :func:`hidden_layers` named in ``layer_names`` or at ``layer_indices``
    (negative counts from the end); all of them if neither is given."""
    if layer_names is not None and layer_indices is not None:
        raise ValueError("give layer_names or layer_indices, not both")
    layers = hidden_layers(model)
    names = {n for n, _ in layers}
    unknown = sorted(set(layer_names or ()) - names)
    if unknown:
        raise ValueError(f"layer_names {unknown} are not layers of the model; its layers: "
                         f"{sorted(names)}")
    idx = {i % len(layers) for i in (layer_indices or ())}
    return [m for i, (n, m) in enumerate(layers)
            if (not layer_names and not layer_indices) or n in (layer_names or ()) or i in idx]


def layer_outputs(model: nn.Module, x: torch.Tensor, chunk: int, layers: list[nn.Module],
                  each: Callable[[int, int, torch.Tensor], None]) -> None:
    """Run the model on x float [N, 3, H, W] in chunks (no gradients) and hand each output
    of ``layers`` to ``each(first_row, j, out [c, d_j])`` as it is produced (j: its place in
    the forward pass's order of outputs), so that one layer's output is held at a time."""
    state = {"start": 0, "j": 0}

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        each(state["start"], state["j"], out.detach().flatten(1))
        state["j"] += 1

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            for i in range(0, len(x), max(1, chunk)):
                state.update(start=i, j=0)
                model(x[i:i + chunk])
    finally:
        for h in handles:
            h.remove()


def representations(model: nn.Module, x: torch.Tensor, chunk: int,
                    layer_names: Sequence[str] | None = None,
                    layer_indices: Sequence[int] | None = None) -> list[torch.Tensor]:
    """The chosen layers' outputs of x float [N, 3, H, W] (:func:`chosen_layers`), each
    flattened, in the order they run: a list of [N, d_j]; concatenated they are Quantus'
    internal representation [N, D]."""
    parts: dict[int, list[torch.Tensor]] = {}
    layer_outputs(model, x, chunk, chosen_layers(model, layer_names, layer_indices),
                  lambda _s, j, out: parts.setdefault(j, []).append(out))
    return [torch.cat(parts[j]) for j in sorted(parts)]


def relative_representation_change(model: nn.Module, xs: torch.Tensor, chunk: int,
                                   ref: list[torch.Tensor], k: int, eps_min: float,
                                   layer_names: Sequence[str] | None = None,
                                   layer_indices: Sequence[int] | None = None
                                   ) -> torch.Tensor:
    """||(L_i - L') / L_i||_2 over the whole representation for each row of xs [N, 3, H, W]
    (i = row // k; ``ref``: :func:`representations` of the B images; a zero in L_i counts
    as ``eps_min``), summed layer by layer in float64 -> float64 [N]."""
    sq = torch.zeros(len(xs), dtype=torch.float64, device=xs.device)

    def each(start: int, j: int, out: torch.Tensor) -> None:
        rows = torch.arange(start, start + len(out), device=out.device)
        v = ref[j][rows // k].to(out.dtype)
        d = (out - v).div_(v + (v == 0) * eps_min)
        sq[start:start + len(out)] += torch.linalg.vector_norm(d, 2, dim=-1,
                                                               dtype=torch.float64) ** 2

    layer_outputs(model, xs, chunk, chosen_layers(model, layer_names, layer_indices), each)
    return sq.sqrt()


def _relative_stability(kind: str, model: Classifier, x: torch.Tensor, target: torch.Tensor,
                        maps: torch.Tensor, method: Method | None, nr_samples: int,
                        lower_bound: float, upper_bound: float | None, eps_min: float,
                        abs: bool, normalise: bool, return_nan_when_prediction_changes: bool,
                        seed: int, internal_batch_size: int,
                        layer_names: Sequence[str] | None = None,
                        layer_indices: Sequence[int] | None = None) -> dict[str, Any]:
    name = f"relative_{kind}_stability"
    method = _need(method, name)
    b, k = len(x), nr_samples
    xs = noisy_copies(x, seed, k, "uniform", lower_bound=lower_bound, upper_bound=upper_bound)
    new = method(model, xs, target.repeat_interleave(k))
    num = per_image(maps, new, k, abs, normalise,
                    lambda e, ep: norm((e - ep) / (e + (e == 0) * eps_min), "l2"),
                    "second_moment")

    known = None
    if kind == "input":
        den = torch.stack([  # ||(x - x') / x||, one image's copies at a time
            norm(((xs[i * k:(i + 1) * k] - x[i]) / (x[i] + (x[i] == 0) * eps_min)).flatten(1)
                 .double(), "l2") for i in range(b)])
    elif kind == "output":
        h, hs = logits(model, x, internal_batch_size), logits(model, xs, internal_batch_size)
        den = norm(h.double()[:, None] - hs.double().view(b, k, -1), "l2")
        known = (h, hs)
    else:
        ref = representations(model, x, internal_batch_size, layer_names, layer_indices)
        den = relative_representation_change(model, xs, internal_batch_size, ref, k, eps_min,
                                             layer_names, layer_indices).view(b, k)
    s = num / den.to(num.device).clamp_min(eps_min)
    drop = changed(model, x, xs, internal_batch_size, known) \
        if return_nan_when_prediction_changes else None
    return {name: reduce_scores(s, "max", drop)}


@register("relative_input_stability", stage="model",
          columns={"relative_input_stability": "float"}, fast={"nr_samples": 10},
          directions={"relative_input_stability": "lower"})
def relative_input_stability(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.02,
    upper_bound: float | None = 0.2,
    eps_min: float = 1e-6,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = True,
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Relative input stability (Agarwal et al. 2022): max ||(e_x - e_x')/e_x|| /
    max(||(x - x')/x||, eps_min) over noisy x' with the same prediction."""
    return _relative_stability("input", model, x, target, maps, method, nr_samples,
                               lower_bound, upper_bound, eps_min, abs, normalise,
                               return_nan_when_prediction_changes, seed, internal_batch_size)


@register("relative_output_stability", stage="model",
          columns={"relative_output_stability": "float"}, fast={"nr_samples": 10},
          directions={"relative_output_stability": "lower"})
def relative_output_stability(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.02,
    upper_bound: float | None = 0.2,
    eps_min: float = 1e-6,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = True,
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Relative output stability (Agarwal et al. 2022): max ||(e_x - e_x')/e_x|| /
    max(||h(x) - h(x')||, eps_min), h the logits, over noisy x' with the same prediction."""
    return _relative_stability("output", model, x, target, maps, method, nr_samples,
                               lower_bound, upper_bound, eps_min, abs, normalise,
                               return_nan_when_prediction_changes, seed, internal_batch_size)


@register("relative_representation_stability", stage="model",
          columns={"relative_representation_stability": "float"}, fast={"nr_samples": 10},
          directions={"relative_representation_stability": "lower"})
def relative_representation_stability(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Method | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.02,
    upper_bound: float | None = 0.2,
    eps_min: float = 1e-6,
    layer_names: list[str] | None = None,
    layer_indices: list[int] | None = None,
    abs: bool = False,
    normalise: bool = False,
    return_nan_when_prediction_changes: bool = True,
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Relative representation stability (Agarwal et al. 2022): max ||(e_x - e_x')/e_x|| /
    max(||(L_x - L_x')/L_x||, eps_min), L the internal representation, over noisy x' with
    the same prediction."""
    return _relative_stability("representation", model, x, target, maps, method, nr_samples,
                               lower_bound, upper_bound, eps_min, abs, normalise,
                               return_nan_when_prediction_changes, seed, internal_batch_size,
                               layer_names, layer_indices)


def sign_code(a: torch.Tensor, n: int) -> np.ndarray:
    """Quantus' top_n_sign discretisation as a number: the signs (-1, 0, 1) of the first
    ``n`` values of each row of a float [B, D], read as a base-3 integer -> float64 [B]."""
    signs = torch.sign(a[:, :n]).cpu().numpy().astype(np.int64) + 1
    return (signs * 3 ** np.arange(signs.shape[1])).sum(1).astype(np.float64)


def consistency_summary(rows: Any) -> dict[str, tuple[float, int]]:
    """Consistency (Dasgupta et al. 2022) of one model x method over all its rows: for
    each sample, among the other samples whose discretised explanation equals its own, the
    fraction with its predicted class (0 when there is none: Quantus' 1e-9 in the
    denominator); the mean over samples."""
    ok = rows[["consistency_code", "consistency_pred"]].dropna()
    if ok.empty:
        return {"consistency": (float("nan"), 0)}
    code_n = ok.groupby("consistency_code")["consistency_pred"].transform("size")
    pair_n = ok.groupby(["consistency_code", "consistency_pred"])["consistency_code"] \
        .transform("size")
    frac = (pair_n - 1) / (code_n - 1 + 1e-9)
    return {"consistency": (float(frac.mean()), len(ok))}


@register("consistency", stage="model",
          columns={"consistency_code": "float", "consistency_pred": "float"},
          summary=consistency_summary, directions={"consistency": "higher"})
def consistency(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    n: int = 5,
    abs: bool = True,
    normalise: bool = True,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Consistency (Dasgupta et al. 2022): do samples with the same discretised explanation
    get the same prediction? Per sample the explanation's code and the top-1 class; the
    score is the model x method's dataset-level ``consistency`` summary row."""
    a = prepare_maps(maps, abs, normalise)
    pred = logits(model, x, internal_batch_size).argmax(1).cpu().numpy().astype(np.float64)
    return {"consistency_code": sign_code(a, n), "consistency_pred": pred}
