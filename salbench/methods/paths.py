"""Path machinery shared by the path-integral methods (Guided IG, Blur IG, IDGI on IG/GIG/BlurIG).

A *path* is, for every image b, a sequence of points x_0 (the reference) ... x_S (the input),
float [3, H, W] each; segment j goes from x_j to x_{j+1} (j = 0 .. S-1). Along it the model
gives a gradient g_j = grad f(x_j) and a score f_j = f(x_j) of the target (logit or softmax
probability, see :func:`salbench.methods.engine.target_scores`). A *rule* turns each segment
into a contribution to the attribution; the attribution is the sum over segments:

- ``"riemann"``: g ⊙ v_j, the Riemann sum of a path integral. v_j is the segment vector
  x_{j+1} - x_j unless the path supplies its own (Blur IG uses the scale-space derivative),
  and g is the gradient at the segment's start (``grad_at="left"``, IG and Guided IG) or end
  (``grad_at="right"``, Blur IG as in PAIR's implementation).
- ``"idgi"``: g_j² · (f_{j+1} - f_j) / Σ g_j² (IDGI, Yang et al. CVPR 2023, Algorithm 1),
  always with the gradient at the segment's start x_j as in the paper. The contributions of
  each segment sum to f_{j+1} - f_j, so the attribution sums to f(x_S) - f(x_0) exactly (up to
  float rounding) whatever the path. A segment whose gradient is exactly zero (Σ g² = 0)
  contributes nothing; it then shows up as ``completeness_error``.

IDGI is implemented once, here, as a rule; ``idgi_ig``, ``idgi_gig`` and ``idgi_blurig`` are
the IG, Guided IG and Blur IG paths integrated with it.

IG's quadrature rules (``riemann_left/right/middle``, ``trapezoid``, ``gausslegendre``,
:func:`salbench.methods.engine.quadrature`) are :class:`Nodes` on the straight path: the
riemann rule then takes the gradient at x' + a_k (x - x') and sums w_k g_k, times (x - x')
once, the factorisation of a straight path (:func:`straight_path` with ``quadrature``).

Two kinds of path:

- :class:`Path` (straight IG paths, Blur IG): every point is known upfront, so all images x
  points are evaluated in chunks of ``internal_batch_size`` by
  :func:`salbench.methods.engine.batched_gradients`; :func:`integrate` pairs consecutive
  points in its consumer and keeps at most one pending gradient per image (memory: one chunk
  plus one [3, H, W] tensor per image).
- adaptive paths (Guided IG): each step depends on the gradient at the current point, so the
  caller loops over steps, evaluates all images of a step in one batch
  (:func:`gradients_at`) and feeds the segments to a :class:`RuleAccumulator`; under the IDGI
  rule the score f_{j+1} it needs arrives with the next step's gradient pass, so the only
  extra model call is one forward pass at the input.

Every method reports ``completeness_error`` = |Σ attr - (f(x_S) - f(x_0))| and
``score_delta`` = f(x_S) - f(x_0), per image (:meth:`PathResult.attribution`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from salbench.methods.engine import batched_gradients, batched_scores, quadrature
from salbench.methods.registry import Attribution
from salbench.models.base import Classifier

RULES = ("riemann", "idgi")
INFO_COLUMNS = ("completeness_error", "score_delta")


def check_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`RULES`, else ValueError naming the valid ones."""
    if rule not in RULES:
        raise ValueError(f"unknown path rule {rule!r}; valid: {', '.join(RULES)}")
    return rule


def idgi_contribution(g: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """IDGI (paper 001, Algorithm 1, line 5) for a batch of segments: g² d / Σ g², float64.

    g: gradients float [c, 3, H, W] at the segments' start points; d: float [c], the score
    change f(x_{j+1}) - f(x_j) of each segment. Where Σ g² = 0 the contribution is zero.
    Computed in float64 so that each segment's contributions sum to d to ~1e-15 relative.
    """
    w = g.double().square()
    norm = w.flatten(1).sum(1)
    scale = torch.where(norm > 0, d.double() / torch.where(norm > 0, norm, 1.0), 0.0)
    return w * scale.view(-1, *([1] * (w.ndim - 1)))


class RuleAccumulator:
    """Accumulates segment contributions of B images' paths under one rule.

    Feed it, in increasing point order per image, gradients (:meth:`add_gradients`) and
    scores of points where no gradient is needed (:meth:`add_scores`). Under ``"idgi"`` a
    gradient g_j waits (at most one per image) until f_{j+1} is known.

    Args:
        rule: "riemann" or "idgi".
        like: float [B, 3, H, W], gives the shape and device.
        steps: S, the number of segments (points 0 .. S).
    """

    def __init__(self, rule: str, like: torch.Tensor, steps: int) -> None:
        self.rule = check_rule(rule)
        self.steps = int(steps)
        self.attr = torch.zeros(like.shape, dtype=torch.float64, device=like.device)
        #: f(x_j) for every image and point, float64 [B, S + 1]; NaN while unknown.
        self.scores = torch.full((len(like), self.steps + 1), float("nan"), dtype=torch.float64,
                                 device=like.device)
        # at most one gradient per image waits for the score of the next point
        self._pending_j = torch.full((len(like),), -1, dtype=torch.long, device=like.device)
        self._pending_g: torch.Tensor | None = None

    def add_scores(self, b: torch.Tensor, j: torch.Tensor, f: torch.Tensor) -> None:
        """Scores f float [c] of points j int64 [c] of images b int64 [c] (no gradient)."""
        self.scores[b, j] = f.double()
        self._resolve_pending()

    def add_gradients(
        self,
        b: torch.Tensor,
        j: torch.Tensor,
        g: torch.Tensor,
        f: torch.Tensor,
        displacement: torch.Tensor | None = None,
    ) -> None:
        """Gradients g float [c, 3, H, W] and scores f [c] at points j [c] of images b [c].

        ``displacement`` float [c, 3, H, W]: under "riemann", the segment vector each gradient
        multiplies (required); ignored under "idgi", where g at point j serves segment j.
        """
        self.scores[b, j] = f.double()
        if self.rule == "riemann":
            if displacement is None:
                raise ValueError("the riemann rule needs the segment displacement")
            self.attr.index_add_(0, b, g.double() * displacement.double())
            return
        self._resolve_pending()
        if (j >= self.steps).any():
            raise ValueError("under the idgi rule no gradient is used at the last point x_S")
        f_next = self.scores[b, j + 1]
        ready = ~torch.isnan(f_next)
        if ready.any():
            d = f_next[ready] - self.scores[b[ready], j[ready]]
            self.attr.index_add_(0, b[ready], idgi_contribution(g[ready], d))
        wait = ~ready
        if wait.any():
            bw = b[wait]
            if (self._pending_j[bw] >= 0).any() or len(torch.unique(bw)) < len(bw):
                raise RuntimeError("two gradients of one image wait for their next point "
                                   "(points must arrive in increasing order)")
            if self._pending_g is None:
                self._pending_g = torch.zeros((len(self.attr), *g.shape[1:]), dtype=g.dtype,
                                              device=g.device)
            self._pending_g[bw] = g[wait].detach()
            self._pending_j[bw] = j[wait]

    def _resolve_pending(self) -> None:
        """Add the IDGI term of every waiting gradient whose next score is now known."""
        waiting = self._pending_j >= 0
        nxt = (self._pending_j + 1).clamp(1, self.steps).view(-1, 1)
        ready = waiting & ~torch.isnan(self.scores.gather(1, nxt).squeeze(1))
        if self._pending_g is None or not ready.any():
            return
        b = torch.nonzero(ready).flatten()
        j = self._pending_j[b]
        d = self.scores[b, j + 1] - self.scores[b, j]
        self.attr[b] += idgi_contribution(self._pending_g[b], d)
        self._pending_j[b] = -1

    def result(self) -> PathResult:
        """The attribution and endpoint scores; fails if a gradient still waits."""
        if (self._pending_j >= 0).any():
            waiting = torch.nonzero(self._pending_j >= 0).flatten().tolist()
            raise RuntimeError(f"images {waiting}: the score of the point after their last "
                               "gradient never arrived")
        f0, fs = self.scores[:, 0], self.scores[:, -1]
        if torch.isnan(f0).any() or torch.isnan(fs).any():
            raise RuntimeError("the path's endpoint scores f(x_0), f(x_S) were not evaluated")
        attr = self.attr.float()
        err = (attr.double().flatten(1).sum(1) - (fs - f0)).abs().float()
        return PathResult(attr, fs.float(), f0.float(), err)


@dataclass
class PathResult:
    """What a path integration gives, per image.

    attr: float32 [B, 3, H, W]. f_input, f_reference: float32 [B], the score at x_S and x_0.
    completeness_error: float32 [B], |Σ attr - (f_input - f_reference)| (sum in float64).
    """

    attr: torch.Tensor
    f_input: torch.Tensor
    f_reference: torch.Tensor
    completeness_error: torch.Tensor

    def attribution(self) -> Attribution:
        """As an :class:`Attribution` with ``completeness_error`` and ``score_delta`` info."""
        return Attribution(self.attr, {
            "completeness_error": self.completeness_error,
            "score_delta": self.f_input - self.f_reference,
        })


@dataclass
class Nodes:
    """Quadrature nodes on the straight path from ``origin`` x' along ``direction`` x - x'.

    alphas, weights: float32 [K], a rule of :func:`salbench.methods.engine.quadrature`.
    The riemann rule evaluates the gradient g_k at x' + alpha_k (x - x') and gives
    (x - x') * sum_k w_k g_k: one direction for every node, so the weighted gradients are
    summed first (float32) and multiplied by it once.
    """

    origin: torch.Tensor
    direction: torch.Tensor
    alphas: torch.Tensor
    weights: torch.Tensor


@dataclass
class Path:
    """A path whose points are all known upfront, for B images and S segments.

    x: the input float [B, 3, H, W] (= x_S; gives B, the shape and the device).
    point: (b int64 [c], j int64 [c]) -> float32 [c, 3, H, W], point x_j of image b
        (j = 0 is the reference, j = S the input), built lazily per chunk.
    displacement: (b [c], j [c]) -> float32 [c, 3, H, W], the vector the riemann rule
        multiplies the gradient with on segment j; None means x_{j+1} - x_j.
    grad_at: where the riemann rule takes segment j's gradient: "left" (x_j) or "right"
        (x_{j+1}). The idgi rule always uses x_j.
    nodes: quadrature nodes (straight paths only); the riemann rule then integrates at them
        instead of at the points, which give only the endpoints x_0 and x_S.
    """

    x: torch.Tensor
    steps: int
    point: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    displacement: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    grad_at: str = "left"
    nodes: Nodes | None = None

    def segment(self, b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The riemann rule's vector for segment j of images b: float32 [c, 3, H, W]."""
        if self.displacement is not None:
            return self.displacement(b, j)
        return self.point(b, j + 1) - self.point(b, j)


def straight_path(
    x: torch.Tensor, baseline: torch.Tensor, steps: int, quadrature_rule: str | None = None
) -> Path:
    """The IG path x_j = x' + (j / S)(x - x'), j = 0 .. S (x_0 = x' and x_S = x exactly).

    x, baseline: float [B, 3, H, W]. Riemann rule: gradient at x_j times (x - x') / S, i.e.
    IG's left Riemann sum; the idgi rule integrates these points too. With
    ``quadrature_rule`` (a rule of :func:`salbench.methods.engine.quadrature`, ``steps``
    nodes) the riemann rule integrates at that rule's :class:`Nodes` instead.
    """
    nodes = None
    if quadrature_rule is not None:
        a, w = quadrature(quadrature_rule, steps)
        nodes = Nodes(baseline, x - baseline,
                      torch.as_tensor(a, dtype=torch.float32, device=x.device),
                      torch.as_tensor(w, dtype=torch.float32, device=x.device))
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    delta = x - baseline

    def point(b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        alpha = (j.to(x.dtype) / steps).view(-1, 1, 1, 1)
        p = baseline[b] + alpha * delta[b]
        return torch.where((j == steps).view(-1, 1, 1, 1), x[b], p)

    return Path(x, steps, point, lambda b, j: delta[b] / steps, "left", nodes)


def endpoint_scores(
    model: Classifier, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor, score: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target scores float32 [B] at x and at the baseline (one batched forward pass)."""
    both = torch.cat([x, baseline])
    s = batched_scores(model, len(both), lambda i: both[i], target.repeat(2), score=score,
                       internal_batch_size=len(both))
    return s[: len(x)], s[len(x):]


def integrate_nodes(
    model: Classifier,
    path: Path,
    target: torch.Tensor,
    *,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> PathResult:
    """The riemann rule at a straight path's quadrature :class:`Nodes` (IG's rules).

    B x K gradients in chunks of ``internal_batch_size`` and one forward pass of both
    endpoints. target: int64 [B]. Returns a :class:`PathResult`.
    """
    nodes = path.nodes
    if nodes is None:
        raise ValueError("integrate_nodes needs a path with quadrature nodes")
    k = len(nodes.alphas)
    total = torch.zeros_like(path.x, dtype=torch.float32)

    def points(idx: torch.Tensor) -> torch.Tensor:
        b, s = idx // k, idx % k
        return nodes.origin[b] + nodes.alphas[s].view(-1, 1, 1, 1) * nodes.direction[b]

    def consume(idx: torch.Tensor, grad: torch.Tensor, _s: torch.Tensor) -> None:
        total.index_add_(0, idx // k, grad * nodes.weights[idx % k].view(-1, 1, 1, 1))

    batched_gradients(model, len(path.x) * k, points, target.repeat_interleave(k), consume,
                      internal_batch_size=internal_batch_size, score=score)
    attr = nodes.direction * total
    f_input, f_reference = endpoint_scores(model, path.x, nodes.origin, target, score)
    delta = f_input - f_reference
    err = (attr.flatten(1).double().sum(1) - delta.double()).abs().float()
    return PathResult(attr, f_input, f_reference, err)


def integrate(
    model: Classifier,
    path: Path,
    target: torch.Tensor,
    *,
    rule: str = "riemann",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> PathResult:
    """Integrate a precomputed path under ``rule``, batched over images x points.

    Gradients are taken at S points per image (x_0 .. x_{S-1}, or x_1 .. x_S for the riemann
    rule with ``grad_at="right"``), flattened as b * S + k and evaluated in chunks of
    ``internal_batch_size`` by :func:`batched_gradients`; the one remaining endpoint per image
    needs only its score (one batched forward pass, done first). Cost per image: S
    forward+backward passes and one forward pass.

    A path with quadrature :class:`Nodes` is integrated at them (:func:`integrate_nodes`,
    riemann rule only).

    target: int64 [B]. Returns a :class:`PathResult`.
    """
    check_rule(rule)
    if path.nodes is not None:
        if rule != "riemann":
            raise ValueError(f"quadrature nodes are integrated by the riemann rule, not {rule!r}")
        return integrate_nodes(model, path, target, score=score,
                               internal_batch_size=internal_batch_size)
    if path.grad_at not in ("left", "right"):
        raise ValueError(f"grad_at must be 'left' or 'right', got {path.grad_at!r}")
    steps, n_img = path.steps, len(path.x)
    device = path.x.device
    right = rule == "riemann" and path.grad_at == "right"
    offset = 1 if right else 0
    acc = RuleAccumulator(rule, path.x, steps)

    images = torch.arange(n_img, device=device)
    other = torch.full_like(images, 0 if right else steps)
    f_other = batched_scores(model, n_img, lambda i: path.point(images[i], other[i]),
                             target, internal_batch_size=internal_batch_size, score=score)
    acc.add_scores(images, other, f_other)

    def points(idx: torch.Tensor) -> torch.Tensor:
        return path.point(idx // steps, idx % steps + offset)

    def consume(idx: torch.Tensor, grad: torch.Tensor, s: torch.Tensor) -> None:
        b, k = idx // steps, idx % steps
        disp = path.segment(b, k) if rule == "riemann" else None
        acc.add_gradients(b, k + offset, grad, s, disp)

    batched_gradients(model, n_img * steps, points, target.repeat_interleave(steps), consume,
                      internal_batch_size=internal_batch_size, score=score)
    return acc.result()


def gradients_at(
    model: Classifier,
    pts: torch.Tensor,
    target: torch.Tensor,
    *,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients float32 [N, 3, H, W] and scores float32 [N] of the target at points pts [N].

    One step of an adaptive path: all images' current points, in chunks.
    """
    grads = torch.empty(pts.shape, dtype=torch.float32, device=pts.device)
    scores = torch.empty(len(pts), dtype=torch.float32, device=pts.device)

    def consume(idx: torch.Tensor, g: torch.Tensor, s: torch.Tensor) -> None:
        grads[idx] = g
        scores[idx] = s

    batched_gradients(model, len(pts), lambda i: pts[i], target, consume,
                      internal_batch_size=internal_batch_size, score=score)
    return grads, scores
