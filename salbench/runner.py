"""The model stage's work on one batch, with no Ray in it (SPEC 6).

:class:`ModelRunner` holds one model and the run's methods and model-stage metrics. Given the
decoded rows of a batch it decides which cells to compute (cell keys, ``--reuse``), finds the
targets, runs every method and every model-stage metric batched, and returns one output row
per (sample, method). The Ray actor (:class:`salbench.actors.attribute.AttributeActor`) and
the in-process executor both call it, so their tables agree by construction; the actor adds
the device, the crash journal and its placement.

A failure belongs to its sample: when a method or a metric raises on a batch, it is redone
one sample at a time and only the samples that fail again get ``method_error`` (no map) or a
``metric_error`` line for that metric (the row keeps its map and its other metrics). A map
that is constant or has non-finite pixels has no ranking: its row gets ``degenerate_map``
with the reason, keeps the method's diagnostics, and no metric is computed on it. With
``dataset.filter: correct`` an image whose top-1 class is not its label gets ``filtered``
rows (the papers that evaluate only correctly classified images).

Maps travel to the next stage as the float32 (or float64) bytes of ``methods.to_map``
(``map_dtype`` names the dtype), never cast down: the CPU stage's metrics rank the same map
as the model stage's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from salbench import keys, methods, metrics, models
from salbench.config import RunConfig
from salbench.methods.engine import default_chunk
from salbench.methods.registry import info_rows
from salbench.metrics.rerun import method_callable
from salbench.models import numerics
from salbench.models.base import to_tensor

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = [
    "shard", "index", "sample_id", "sample_key", "cell_key", "model", "method", "status",
    "error", "label", "target",
    "pred", "target_prob", "values", "map", "map_dtype", "crop", "boxes", "height", "width",
    "seconds", "placement",
]

class DeviceLost(RuntimeError):
    """The accelerator is unusable (a CUDA error or device-side assert): every later batch
    on this process would fail, so the process must be replaced, not the batch marked."""


def device_lost(exc: BaseException) -> bool:
    """True for errors after which a CUDA context is unusable."""
    text = str(exc)
    return "CUDA error" in text or "device-side assert" in text or "CUBLAS_STATUS" in text


def error_message(exc: BaseException) -> str:
    """``Type: message``, at most 2000 characters."""
    return f"{type(exc).__name__}: {exc}"[:2000]


def metric_error_line(label: str, exc: BaseException) -> str:
    """One line of a ``metric_error`` row's ``error``: ``<metric label>: Type: message``.
    A row's lines are joined by newlines; :func:`salbench.results.tables.failed_metrics`
    reads them back."""
    return f"{label}: {error_message(exc)}".replace("\n", " ")


def degenerate_reason(saliency_map: np.ndarray) -> str | None:
    """Why a map has no pixel ranking, or None: non-finite pixels, or a constant map.

    saliency_map: float [H, W] (any float dtype).
    """
    finite = np.isfinite(saliency_map)
    bad = int(finite.size - finite.sum())
    if bad:
        return f"{bad} of {finite.size} map pixels are NaN or inf"
    lo, hi = float(saliency_map.min()), float(saliency_map.max())
    if lo == hi:
        return f"constant map (every pixel {lo:.6g}): no pixel ranking"
    return None


class ModelRunner:
    """Every configured method and model-stage metric of one model, on batches of rows.

    Args:
        config: the validated run config.
        model_index: which entry of ``config.models`` this runner serves.
        device: where the model runs.
        reuse: sorted ``S16`` array of cell keys an earlier run has (emitted "reused").
        placement: a JSON string carried by this runner's rows (where it runs).
    """

    def __init__(self, config: RunConfig, model_index: int, device: torch.device,
                 reuse: np.ndarray | None = None, placement: str = "") -> None:
        self.config, self.device, self.placement = config, device, placement
        comp = config.models[model_index]
        self.model_label = comp.label
        self.model = models.load(comp.name, weights=comp.params.get("weights"), device=device)
        self.numerics = config.model_numerics(model_index)
        self.model_key = keys.model_key(comp.name, self.model, self.model.input_size,
                                        self.model.crop_fraction, self.numerics)
        numerics.apply(self.model, self.numerics)
        self.metrics_key = keys.metrics_key(config)
        self.method_specs = [(m, methods.get(m.name)) for m in config.methods]
        self.method_keys = {m.label: keys.method_key(config, m) for m in config.methods}
        self.reuse = np.asarray(reuse if reuse is not None else [], dtype=f"S{keys.KEY_CHARS}")
        self.metric_specs = [  # split metrics run on the Bokeh / Score / Finalize stages
            (m, spec) for m in config.metrics
            if (spec := metrics.get(m.name)).stage == "model" and spec.prepare is None
        ]
        self.correct_only = config.dataset.get("filter", "all") == "correct"
        #: told the rows (samples) of each method's finished batch (live progress)
        self.on_cells: Callable[[list[dict[str, Any]]], None] | None = None

    def plan(self, batch: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Split a batch: (rows to compute, each with its ``todo`` methods; finished output
        rows for bad images and reused cells)."""
        out: list[dict[str, Any]] = []
        todo = []
        for r in batch.to_dict("records"):
            r["cell_keys"] = {m.label: keys.cell_key(r["sample_key"], self.model_key,
                                                     self.method_keys[m.label], self.metrics_key)
                              for m, _ in self.method_specs}
            if r["status"] != "ok":
                out += [self.row(r, m.label, r["status"], r["error"])
                        for m, _ in self.method_specs]
                continue
            hit = keys.contains(self.reuse, list(r["cell_keys"].values()))
            reused = [label for label, h in zip(r["cell_keys"], hit, strict=True) if h]
            out += [self.row(r, label, "reused") for label in reused]
            r["todo"] = [(m, spec) for m, spec in self.method_specs if m.label not in reused]
            if r["todo"]:
                todo.append(r)
        return todo, out

    def run(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Output rows of planned ``rows``, batched ``resources.batch_size`` images at a time
        within each shard (a shard's images batch the same way however Ray bundled them)."""
        out: list[dict[str, Any]] = []
        size = self.config.resources.batch_size
        for shard in sorted({r["shard"] for r in rows}):
            mine = [r for r in rows if r["shard"] == shard]
            for start in range(0, len(mine), size):
                out += self.attribute(mine[start:start + size])
        return out

    @staticmethod
    def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Output rows as the stage's DataFrame, in a fixed order."""
        frame = pd.DataFrame(rows, columns=OUTPUT_COLUMNS)
        return frame.sort_values(["index", "method"], kind="stable").reset_index(drop=True)

    def row(self, r: dict[str, Any], method: str, status: str, error: str = "",
            **extra: Any) -> dict[str, Any]:
        """One output row of sample ``r`` and method label ``method``."""
        row = {
            "shard": r["shard"], "index": r["index"], "sample_id": r["sample_id"],
            "sample_key": r["sample_key"], "cell_key": r["cell_keys"][method],
            "model": self.model_label, "method": method, "status": status, "error": error,
            "label": r["label"], "target": -1, "pred": -1, "target_prob": float("nan"),
            "values": "{}", "map": b"", "map_dtype": "", "crop": b"", "boxes": r["boxes"],
            "height": 0, "width": 0, "seconds": 0.0, "placement": self.placement,
        }
        row.update(extra)
        return row

    def _targets(self, rows: list[dict[str, Any]], x: torch.Tensor) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            probs = torch.softmax(self.model(x), dim=1).cpu()
        pred = probs.argmax(1).numpy()
        labels = np.array([r["label"] for r in rows])
        target = np.where(labels >= 0, labels, pred)
        valid = target < probs.shape[1]
        p = probs.gather(1, torch.as_tensor(np.where(valid, target, 0)).view(-1, 1))
        return pred, target, p.squeeze(1).numpy(), valid

    def attribute(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Output rows of one batch of planned rows (every method in its ``todo``), under
        the model's numeric settings (its backward passes included)."""
        with numerics.numeric_mode(self.numerics):
            return self._attribute(rows)

    def _attribute(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        h, w = self.model.input_size
        x = torch.stack([
            to_tensor(np.frombuffer(r["crop"], np.uint8).reshape(h, w, 3)) for r in rows
        ]).to(self.device)
        pred, target, prob, valid = self._targets(rows, x)
        out = []
        for i, (r, t, v) in enumerate(zip(rows, target, valid, strict=True)):
            if not v:
                msg = f"label {t} is out of range for model {self.model_label} " \
                      f"({self.model.num_classes} classes)"
                out += [self.row(r, m.label, "bad_label", msg) for m, _ in r["todo"]]
            elif self.correct_only and r["label"] >= 0 and pred[i] != r["label"]:
                msg = (f"top-1 class {pred[i]} is not the label {r['label']} "
                       "(dataset.filter: correct)")
                out += [self.row(r, m.label, "filtered", msg, target=int(t), pred=int(pred[i]),
                                 target_prob=float(prob[i])) for m, _ in r["todo"]]
                valid[i] = False
        keep = np.flatnonzero(valid)
        if len(keep) == 0:
            return out
        rows = [rows[i] for i in keep]
        x, tgt = x[keep], torch.as_tensor(target[keep], device=self.device)
        per = [dict(target=int(target[i]), pred=int(pred[i]), target_prob=float(prob[i]))
               for i in keep]
        for comp, spec in self.method_specs:  # each method on the rows that need it
            todo = [i for i, r in enumerate(rows) if any(m is comp for m, _ in r["todo"])]
            if todo:
                out += self._method([rows[i] for i in todo], x[todo], tgt[todo], comp, spec,
                                    [per[i] for i in todo])
                if self.on_cells is not None:
                    self.on_cells([rows[i] for i in todo])
        return out

    def _params(self, comp: Any, spec: Any) -> dict[str, Any]:
        params = self.config.params_for(comp, spec, merged=False)  # merged by attribute_with_info
        ibs = self.config.resources.internal_batch_size
        if ibs and "internal_batch_size" in spec.defaults and "internal_batch_size" not in params:
            params["internal_batch_size"] = ibs
        return params

    def _maps(self, comp: Any, spec: Any, model: Any, x: torch.Tensor,
              target: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]], torch.Tensor]:
        """(maps float [B, H, W] as ``to_map`` returns them, per-sample method diagnostics,
        the attribution float32 [B, 3, H, W]); non-finite values are left for the caller."""
        res = methods.attribute_with_info(comp.name, model, x, target, finite=False,
                                          profile=self.config.profile, **self._params(comp, spec))
        reduce = self.config.map_reduce_for(comp, spec)
        return methods.to_map(res.attr, reduce), info_rows(spec, res.info, len(x)), res.attr

    def _method(self, rows: list[dict[str, Any]], x: torch.Tensor, target: torch.Tensor,
                comp: Any, spec: Any, per: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of one method on one batch; a batch that raises is redone sample by sample."""
        t0 = time.perf_counter()
        try:
            maps, values, attr = self._maps(comp, spec, self.model, x, target)
        except Exception as exc:
            if device_lost(exc):
                raise DeviceLost(error_message(exc)) from exc
            if len(rows) == 1:
                log.warning("method %s failed on sample %s: %s", comp.label,
                            rows[0]["sample_id"], exc)
                return [self.row(rows[0], comp.label, "method_error", error_message(exc),
                                 **per[0])]
            log.warning("method %s failed on a batch of %d; redoing it one sample at a time: "
                        "%s", comp.label, len(rows), exc)
            out = []
            for i in range(len(rows)):
                out += self._method(rows[i:i + 1], x[i:i + 1], target[i:i + 1], comp, spec,
                                    per[i:i + 1])
            return out
        seconds = (time.perf_counter() - t0) / len(rows)
        maps_np = maps.detach().cpu().numpy()
        reasons = [degenerate_reason(m) for m in maps_np]
        good = [i for i, why in enumerate(reasons) if why is None]
        errors: list[list[str]] = [[] for _ in rows]
        if good:
            idx = torch.as_tensor(good, device=x.device)
            self._metrics(x[idx], target[idx], maps[idx], attr[idx], comp, spec,
                          [values[i] for i in good], [errors[i] for i in good])
        out = []
        for i, r in enumerate(rows):
            status = "degenerate_map" if reasons[i] else ("metric_error" if errors[i] else "ok")
            out.append(self.row(
                r, comp.label, status, reasons[i] or "\n".join(errors[i]),
                values=json.dumps(values[i]), map=maps_np[i].tobytes(),
                map_dtype=maps_np.dtype.name, crop=r["crop"], height=maps_np.shape[1],
                width=maps_np.shape[2], seconds=seconds, **per[i]))
        return out

    def _metrics(self, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
                 attr: torch.Tensor, comp: Any, spec: Any, values: list[dict[str, Any]],
                 errors: list[list[str]]) -> None:
        """Every model-stage metric on a batch of usable maps, into ``values`` (per sample);
        a metric that raises on the batch is redone per sample, and each sample it still
        fails on gets a line in ``errors``."""

        def maps_fn(model: Any, xs: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
            return self._maps(comp, spec, model, xs, ts)[0]

        chunk = self.config.resources.internal_batch_size or default_chunk(64, x.device)

        for mcomp, mspec in self.metric_specs:
            kw = self.config.params_for(mcomp, mspec)
            groups = [list(range(len(x)))]
            while groups:
                sel = groups.pop()
                idx = torch.as_tensor(sel, device=x.device)
                args = dict(kw)
                if mspec.needs_attr:
                    args["attr"] = attr[idx]
                if mspec.needs_method:
                    args["method"] = method_callable(maps_fn, x[idx], target[idx], chunk)
                try:
                    cols = mspec.fn(self.model, x[idx], target[idx], maps[idx], **args)
                except Exception as exc:
                    if device_lost(exc):
                        raise DeviceLost(error_message(exc)) from exc
                    if len(sel) > 1:
                        log.warning("metric %s failed on a batch of %d; redoing it one sample "
                                    "at a time: %s", mcomp.label, len(sel), exc)
                        groups += [[i] for i in reversed(sel)]
                    else:
                        log.warning("metric %s failed on one sample: %s", mcomp.label, exc)
                        errors[sel[0]].append(metric_error_line(mcomp.label, exc))
                    continue
                for j, i in enumerate(sel):
                    for col, v in cols.items():
                        values[i][col] = np.asarray(v[j], np.float64).tolist()
