"""AttributeActor: holds one model; computes every configured method and model-stage metric.

Ray Data calls it with a pandas batch of decoded rows (see ``salbench.datasets.shards``) and
gets one output row per (sample, method), with ``status`` "ok" or an error code. Errors of
one sample or one method never fail the batch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from salbench import methods, metrics, models
from salbench.actors.journal import Journal
from salbench.actors.memory import keep_freed_memory
from salbench.actors.progress import report_cells
from salbench.methods.registry import info_rows
from salbench.models.base import to_tensor
from salbench.pipeline import keys
from salbench.pipeline.config import RunConfig, parse_config

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = [
    "shard", "index", "sample_id", "sample_key", "cell_key", "model", "method", "status",
    "error", "label", "target",
    "pred", "target_prob", "values", "map", "crop", "boxes", "height", "width", "seconds",
    "placement",
]


def pick_device(requested: str) -> torch.device:
    """"auto" -> CUDA when this process sees a GPU, else CPU; "cpu"/"cuda" as asked."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("resources.device is 'cuda' but this worker sees no CUDA device")
    return torch.device(requested)


def placement(model: str, device: torch.device) -> str:
    """Where this actor runs (JSON: model, pid, Ray's GPU ids, device), carried by its rows
    through the stages (not written to the tables, whose rows must not depend on it)."""
    import ray

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []  # never start Ray for this
    return json.dumps({"model": model, "pid": os.getpid(), "gpu_ids": gpu_ids,
                       "device": str(device)})


def set_threads(config: RunConfig, device: torch.device) -> None:
    """torch threads of a model actor: ``resources.torch_threads``, or on CPU the node's
    cores divided among the model actors (on a 2-core laptop the one model actor gets
    both). Also keeps freed memory in the process (see ``salbench.actors.memory``)."""
    keep_freed_memory()
    res = config.resources
    if res.torch_threads:
        torch.set_num_threads(res.torch_threads)
    elif device.type == "cpu":
        actors = res.attribute_actors * len(config.models)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // actors))


def _resolve(reuse: Any) -> Any:
    """The reusable cell keys themselves, fetching them from Ray's object store if needed."""
    import ray

    return ray.get(reuse) if isinstance(reuse, ray.ObjectRef) else reuse


def _error_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class AttributeActor:
    """Model stage of the pipeline for one model (GPU when available, else CPU).

    Args:
        config: the run config as a dict (``RunConfig.to_dict()``).
        model_index: which entry of ``config.models`` this actor serves.
        reuse: the cell keys (see ``salbench.pipeline.keys``) whose results an earlier run
            already has, a sorted ``S16`` array or a Ray ObjectRef to one; those cells are
            not computed but emitted with status "reused", for the driver to copy.
        journal: the run's CrashJournal actor handle (see ``salbench.actors.journal``), which
            bounds the retries of a sample that kills this actor's process; None: no bound.
        progress: the run's cell counter (``salbench.actors.progress``), told after each
            method's batch; None: no live progress.
    """

    def __init__(self, config: dict[str, Any], model_index: int, reuse: Any = None,
                 journal: Any = None, progress: Any = None) -> None:
        self.progress = progress
        self.config: RunConfig = parse_config(config)
        self.device = pick_device(self.config.resources.device)
        set_threads(self.config, self.device)
        comp = self.config.models[model_index]
        self.model_label = comp.label
        self.placement = placement(self.model_label, self.device)
        self.model = models.load(comp.name, weights=comp.params.get("weights"),
                                 device=self.device)
        self.model_key = keys.model_key(comp.name, self.model, self.model.input_size,
                                        self.model.crop_fraction)
        self.metrics_key = keys.metrics_key(self.config)
        self.journal = Journal(journal)
        self.method_specs = [(m, methods.get(m.name)) for m in self.config.methods]
        # None: methods.attribute_with_info's device default (at most 16 on CPU)
        self.internal_batch_size = self.config.resources.internal_batch_size
        self.method_keys = {m.label: keys.method_key(self.config, m) for m in self.config.methods}
        self.reuse = np.asarray(_resolve(reuse) if reuse is not None else [],
                                dtype=f"S{keys.KEY_CHARS}")
        self.metric_specs = [  # split metrics run on the Bokeh / Score / Finalize stages
            (m, spec) for m in self.config.metrics
            if (spec := metrics.get(m.name)).stage == "model" and spec.prepare is None
        ]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict("records")
        out: list[dict[str, Any]] = []
        ok = []
        for r in rows:
            r["cell_keys"] = {m.label: keys.cell_key(r["sample_key"], self.model_key,
                                                     self.method_keys[m.label], self.metrics_key)
                              for m, _ in self.method_specs}
            if r["status"] != "ok":
                out += [self._row(r, m.label, r["status"], r["error"]) for m, _ in
                        self.method_specs]
                continue
            hit = keys.contains(self.reuse, list(r["cell_keys"].values()))
            reused = [label for label, h in zip(r["cell_keys"], hit, strict=True) if h]
            out += [self._row(r, label, "reused") for label in reused]
            r["todo"] = [(m, spec) for m, spec in self.method_specs if m.label not in reused]
            if r["todo"]:
                ok.append(r)
        # batch and sample keys live in separate namespaces: a one-sample batch must not
        # share its count with the sample's own attempts
        batch_key = f"{self.model_label}/batch/" + ",".join(str(r["index"]) for r in ok)
        if ok and self.journal.begin(batch_key):  # this batch's work killed the process
            out += self._one_at_a_time(ok)
        else:
            size = self.config.resources.batch_size
            for shard in sorted({r["shard"] for r in ok}):  # a shard's images batch the same
                mine = [r for r in ok if r["shard"] == shard]  # way whatever Ray bundled
                for start in range(0, len(mine), size):
                    out += self._attribute(mine[start:start + size])
        if ok:
            self.journal.end(batch_key)
        frame = pd.DataFrame(out, columns=OUTPUT_COLUMNS)
        return frame.sort_values(["index", "method"], kind="stable").reset_index(drop=True)

    def _one_at_a_time(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of a batch whose work died before, one sample at a time; a sample that died
        ``max_sample_crashes`` times alone becomes ``worker_crash`` rows."""
        limit = self.config.resources.max_sample_crashes
        out: list[dict[str, Any]] = []
        for r in rows:
            key = f"{self.model_label}/sample/{r['index']}"
            died = self.journal.begin(key)
            if died >= limit:
                log.warning("sample %s killed its worker %d times; error row", r["sample_id"],
                            died)
                msg = (f"the worker process died {died} times on this sample alone (a crash "
                       "in native code or the OS's out-of-memory killer); not retried further")
                out += [self._row(r, m.label, "worker_crash", msg) for m, _ in r["todo"]]
            else:
                out += self._attribute([r])
            self.journal.end(key)
        return out

    def _row(self, r: dict[str, Any], method: str, status: str, error: str = "",
             **extra: Any) -> dict[str, Any]:
        row = {
            "shard": r["shard"], "index": r["index"], "sample_id": r["sample_id"],
            "sample_key": r["sample_key"], "cell_key": r["cell_keys"][method],
            "model": self.model_label, "method": method, "status": status, "error": error,
            "label": r["label"], "target": -1, "pred": -1, "target_prob": float("nan"),
            "values": "{}", "map": b"", "crop": b"", "boxes": r["boxes"], "height": 0,
            "width": 0, "seconds": 0.0, "placement": self.placement,
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

    def _attribute(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        h, w = self.model.input_size
        x = torch.stack([
            to_tensor(np.frombuffer(r["crop"], np.uint8).reshape(h, w, 3)) for r in rows
        ]).to(self.device)
        pred, target, prob, valid = self._targets(rows, x)
        out = []
        for r, t, v in zip(rows, target, valid, strict=False):
            if not v:
                msg = f"label {t} is out of range for model {self.model_label} " \
                      f"({self.model.num_classes} classes)"
                out += [self._row(r, m.label, "bad_label", msg) for m, _ in self.method_specs]
        keep = np.flatnonzero(valid)
        if len(keep) == 0:
            return out
        rows = [rows[i] for i in keep]
        x, tgt = x[keep], torch.as_tensor(target[keep], device=self.device)
        common = {"target": target[keep], "pred": pred[keep], "target_prob": prob[keep]}
        for comp, spec in self.method_specs:  # each method on the rows that need it
            todo = [i for i, r in enumerate(rows) if any(m is comp for m, _ in r["todo"])]
            if len(todo) == len(rows):
                out += self._one_method(rows, x, tgt, comp, spec, common)
            elif todo:
                out += self._one_method([rows[i] for i in todo], x[todo], tgt[todo], comp,
                                        spec, {k: v[todo] for k, v in common.items()})
            report_cells(self.progress, [rows[i] for i in todo])
        return out

    def _one_method(self, rows: list[dict[str, Any]], x: torch.Tensor, target: torch.Tensor,
                    comp: Any, spec: Any, common: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        params = self.config.params_for(comp, spec, merged=False)  # merged by attribute_with_info
        if (self.internal_batch_size and "internal_batch_size" in spec.defaults
                and "internal_batch_size" not in params):
            params["internal_batch_size"] = self.internal_batch_size
        per = [dict(target=int(common["target"][i]), pred=int(common["pred"][i]),
                    target_prob=float(common["target_prob"][i])) for i in range(len(rows))]
        reduce = spec.map_reduce or self.config.map_reduce

        def rerun(model: Any) -> torch.Tensor:
            res = methods.attribute_with_info(comp.name, model, x, target,
                                              profile=self.config.profile, **params)
            return methods.to_map(res.attr, reduce)

        t0 = time.perf_counter()
        try:
            res = methods.attribute_with_info(comp.name, self.model, x, target,
                                              profile=self.config.profile, **params)
            maps = methods.to_map(res.attr, reduce)
            values: list[dict[str, Any]] = info_rows(spec, res.info, len(rows))
        except Exception as exc:
            log.warning("method %s failed on %d samples: %s", comp.label, len(rows), exc)
            return [self._row(r, comp.label, "method_error", _error_message(exc), **p)
                    for r, p in zip(rows, per, strict=False)]
        seconds = (time.perf_counter() - t0) / len(rows)
        status, error = ["ok"] * len(rows), [""] * len(rows)
        for mcomp, mspec in self.metric_specs:
            try:
                kw = self.config.params_for(mcomp, mspec)
                if mspec.needs_attr:
                    kw["attr"] = res.attr
                if mspec.needs_method:
                    kw["method"] = rerun
                cols = mspec.fn(self.model, x, target, maps, **kw)
            except Exception as exc:
                log.warning("metric %s failed: %s", mcomp.label, exc)
                status, error = ["metric_error"] * len(rows), [
                    f"{mcomp.label}: {_error_message(exc)}"] * len(rows)
                continue
            for i in range(len(rows)):
                for col, v in cols.items():
                    values[i][col] = np.asarray(v[i], np.float64).tolist()
        maps_np = maps.detach().cpu().numpy().astype(np.float16)
        return [
            self._row(r, comp.label, status[i], error[i], values=json.dumps(values[i]),
                      map=maps_np[i].tobytes(), crop=r["crop"], height=maps_np.shape[1],
                      width=maps_np.shape[2], seconds=seconds, **per[i])
            for i, r in enumerate(rows)
        ]
