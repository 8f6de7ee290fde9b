"""Per-map cost of the faithfulness family: salbench (batched) against Quantus 0.6.0 on the
same batch, in forward passes (counted by a hook) and seconds, in one run.

python -m benchmarks.faithfulness_cost [--images 2] [--out FILE]

EfficientNet-Lite0 at 224 px, the bundled photos, vg maps, one torch thread; salbench's
chunk ``--internal-batch-size`` (Quantus runs each step on the whole batch). Parameters are
reduced from the paper profiles where the defaults take tens of thousands of passes per map
(features_in_step 1); both libraries run the same number of steps (Quantus counts channel
values and wants its features_in_step to divide H x W, which 3 x salbench's cannot at
224 px: 1568 -> 96 steps, salbench 523 pixels -> 96 steps; 6272 -> 24, 2091 -> 24).
Quantus' IROF and ROAD only run on one-channel inputs: both get the image's grey version
(Quantus through a channel-repeating model).
Quantus has no Average Drop / Increase in Confidence and its Infidelity is another
estimator: those rows time salbench only.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.common import PassCounter, Settings, load_model, photos


class _Repeat(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z.expand(-1, 3, -1, -1))


def _cases() -> list[tuple[str, dict[str, Any], Callable[[], Any] | None, dict[str, Any],
                           bool]]:
    """(metric, our parameters, Quantus metric factory, Quantus call kwargs, grey)."""
    import quantus as q

    off = {"disable_warnings": True}
    return [
        ("faithfulness_correlation", {"nr_runs": 20, "subset_size": 224},
         lambda: [q.FaithfulnessCorrelation(nr_runs=20, subset_size=672,
                                            return_aggregate=False, **off)], {}, False),
        ("faithfulness_estimate", {"features_in_step": 523},
         lambda: [q.FaithfulnessEstimate(features_in_step=1568, **off)], {}, False),
        ("monotonicity", {"features_in_step": 523},
         lambda: [q.Monotonicity(features_in_step=1568, **off)], {"softmax": True}, False),
        ("monotonicity_correlation", {"features_in_step": 2091, "nr_samples": 5},
         lambda: [q.MonotonicityCorrelation(features_in_step=6272, nr_samples=5, **off)],
         {"softmax": True}, False),
        ("selectivity", {"patch_size": 16},
         lambda: [q.Selectivity(patch_size=16, **off)], {"softmax": True}, False),
        ("region_perturbation", {"patch_size": 8, "regions_evaluation": 20},
         lambda: [q.RegionPerturbation(patch_size=8, regions_evaluation=20, order=o, **off)
                  for o in ("morf", "lerf")], {"softmax": True}, False),
        ("irof", {}, lambda: [q.IROF(return_aggregate=False, **off)], {"softmax": True},
         True),
        ("road", {}, lambda: [q.ROAD(percentages=list(range(10, 100, 10)), **off)
                              for _ in range(2)], {"softmax": True}, True),
        ("infidelity", {}, None, {}, False),
        ("sufficiency", {}, lambda: [q.Sufficiency(**off)], {"softmax": True}, False),
        ("average_drop", {}, None, {}, False),
        ("increase_in_confidence", {}, None, {}, False),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--internal-batch-size", type=int, default=16,
                    help="salbench's chunk (16: the pipeline's CPU default)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    np.trapz = np.trapezoid  # Quantus 0.6.0 calls np.trapz (removed in NumPy 2.4)
    torch.set_num_threads(1)
    import salbench
    import salbench.metrics

    s = Settings(model="efficientnet_lite0", device="cpu")
    model = load_model(s)
    x, target = photos(model, args.images, s)
    attr = salbench.methods.attribute("vg", model, x, target)
    maps = salbench.methods.to_map(attr, reduce="abs_sum")
    grey = x.mean(1, keepdim=True)
    with torch.no_grad():  # warm-up at both libraries' batch sizes
        for n in (16, len(x)):
            model(x[:1].expand(n, -1, -1, -1))
    rows = []
    for name, ours_kw, make_q, call_kw, use_grey in _cases():
        if args.only and name not in args.only:
            continue
        spec = salbench.metrics.get(name)
        xi = grey.expand(-1, 3, -1, -1).contiguous() if use_grey else x
        extra = {"attr": attr} if spec.needs_attr else {}
        counter = PassCounter(model)
        t0 = time.perf_counter()
        params = spec.params(**ours_kw, internal_batch_size=args.internal_batch_size)
        spec.fn(model, xi, target, maps, **params, **extra)
        ours_s, ours_f = time.perf_counter() - t0, counter.f
        counter.remove()
        row = {"metric": name, "params": ours_kw, "images": len(x),
               "internal_batch_size": args.internal_batch_size,
               "ours_passes_per_map": ours_f / len(x), "ours_s_per_map": ours_s / len(x)}
        if make_q is not None:
            qmodel = _Repeat(model).eval() if use_grey else model
            xq = (grey if use_grey else x).numpy()
            a = maps[:, None].numpy()
            counter = PassCounter(model)
            t0 = time.perf_counter()
            for metric in make_q():
                metric(model=qmodel, x_batch=xq, y_batch=target.numpy(), a_batch=a,
                       device="cpu", batch_size=len(x), **call_kw)
            q_s, q_f = time.perf_counter() - t0, counter.f
            counter.remove()
            row.update({"quantus_passes_per_map": q_f / len(x),
                        "quantus_s_per_map": q_s / len(x), "ratio": q_s / ours_s})
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": "2-core Intel Xeon VM, no GPU, shared with other jobs",
                       "torch_threads": 1, "model": s.model, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
