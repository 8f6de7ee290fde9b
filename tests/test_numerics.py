"""Numeric settings (salbench.models.numerics): precision, channels-last, determinism, and
the model stage's torch threads: honoured where the model runs, recorded in the manifest and
the cell keys, and the same default for both executors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from salbench import keys, models
from salbench.config import parse_config
from salbench.errors import ConfigError
from salbench.models import numerics
from salbench.models.base import Classifier
from salbench.pipeline.plan import actor_config, in_process_config, local_resources, make_plan
from salbench.pipeline.run import run
from salbench.results.tables import read_samples

#: What the probe's forward (and its backward) saw, one dict per call.
SEEN: list[dict[str, Any]] = []


def _flags() -> dict[str, Any]:
    return {"cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "nan_fill": torch.utils.deterministic.fill_uninitialized_memory,
            "autocast": torch.is_autocast_enabled("cpu"),
            "autocast_dtype": torch.get_autocast_dtype("cpu")}


class _Probe(nn.Module):
    """Identity that records the flags, the autocast state and the dtype it sees, in the
    forward pass and (through a tensor hook) in the backward pass."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        SEEN.append({"pass": "forward", "dtype": h.dtype, **_flags()})
        if h.requires_grad:
            h.register_hook(lambda g: SEEN.append({"pass": "backward", "dtype": g.dtype,
                                                   **_flags()}))
        return h


def _probe_model(weights: str | None = None, **_: Any) -> Classifier:
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Probe(), nn.GELU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return Classifier(net, name="numerics_probe", input_size=(32, 32), num_classes=10,
                      mean=(0.5,) * 3, std=(0.5,) * 3, crop_fraction=1.0)


if "numerics_probe" not in models.names():
    models.register("numerics_probe")(_probe_model)

BASE = {
    "name": "n", "seed": 0, "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 3, "size": 32, "seed": 5},
    "models": ["numerics_probe"],
    "methods": ["vg", {"name": "ig", "steps": 4}],
    "metrics": ["insertion"],
    "resources": {"shard_size": 3, "batch_size": 3, "torch_threads": 1},
}


def _cfg(out: Path, **changes: Any) -> dict[str, Any]:
    cfg = json.loads(json.dumps(BASE))
    cfg.update(changes, out=str(out))
    return cfg


def _manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture
def known_flags():
    """TF32 on, determinism off and its NaN fill on before the test (torch's defaults for
    cuDNN and the fill), restored afterwards."""
    det = torch.utils.deterministic
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
           torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.use_deterministic_algorithms(False)
    det.fill_uninitialized_memory = True
    SEEN.clear()
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old[:2]
    torch.use_deterministic_algorithms(old[2])
    det.fill_uninitialized_memory = old[3]


def test_config_numerics_run_level_model_override_and_errors():
    cfg = parse_config({**BASE, "precision": "tf32", "channels_last": True,
                        "models": ["numerics_probe", {"name": "tiny_cnn", "precision": "bf16",
                                                      "deterministic": False}]})
    assert cfg.model_numerics(0) == numerics.Numerics("tf32", True, False, True)
    assert cfg.model_numerics(1) == numerics.Numerics("bf16", True, False, False)
    assert parse_config(cfg.to_dict()) == cfg
    assert parse_config(BASE).model_numerics(0) == numerics.Numerics()  # fp32 by default
    assert cfg.hash() != parse_config(BASE).hash()
    bad = [({"precision": "fp16"}, r"^precision: expected one of fp32, tf32, bf16"),
           ({"compile": "yes"}, r"^compile: expected true or false"),
           ({"channels_last": 1}, r"^channels_last: expected true or false"),
           ({"models": [{"name": "tiny_cnn", "precision": "half"}]},
            r"^models\[0\]: precision: expected one of"),
           ({"models": [{"name": "tiny_cnn", "tf32": True}]},
            r"^models\[0\]: unknown key\(s\) \['tf32'\]")]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_config({**BASE, **change})


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_precision_is_honoured_in_forward_and_backward_and_restored(precision, known_flags,
                                                                    tmp_path):
    result = run(parse_config(_cfg(tmp_path, precision=precision)), progress=None,
                 in_process=True)
    assert (result.samples["status"] == "ok").all()
    fwd = [s for s in SEEN if s["pass"] == "forward"]
    bwd = [s for s in SEEN if s["pass"] == "backward"]
    assert fwd and bwd  # vg / ig back-propagate; targets and insertion only forward
    tf32 = precision == "tf32"
    bf16 = precision == "bf16"
    for s in SEEN:
        assert s["cudnn_tf32"] is tf32 and s["matmul_tf32"] is tf32, s
        assert s["deterministic"] is True and s["nan_fill"] is False, s
        assert s["dtype"] == (torch.bfloat16 if bf16 else torch.float32), s
    for s in fwd:  # autocast is a forward-pass state; backward replays the casts it recorded
        assert s["autocast"] is bf16, s
        if bf16:
            assert s["autocast_dtype"] == torch.bfloat16
    # the process's own flags are back as they were
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is True
    man = _manifest(result.run_dir)
    assert man["config"]["precision"] == precision
    assert man["numerics"] == {"numerics_probe": {
        "precision": precision, "channels_last": False, "compile": False,
        "deterministic": True, "torch_threads": 1}}


def test_bf16_forward_returns_float32_logits_and_input_gradients():
    model = numerics.apply(_probe_model(), numerics.Numerics("bf16"))
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    SEEN.clear()
    logits = model(x)
    assert logits.dtype == torch.float32 and SEEN[0]["dtype"] == torch.bfloat16
    (g,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert g.dtype == torch.float32 and torch.isfinite(g).all()
    plain = _probe_model()(x)  # the same weights without the settings: float32 throughout
    # bf16 keeps 8 bits of mantissa: the logits agree to ~1e-2 relative, not exactly
    assert not torch.equal(plain, logits)
    torch.testing.assert_close(logits, plain, rtol=5e-2, atol=5e-2)


def test_channels_last_moves_weights_and_input_and_keeps_logits():
    plain, cl = _probe_model(), numerics.apply(_probe_model(), numerics.Numerics(
        channels_last=True))
    assert cl.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(cl(x), plain(x), rtol=1e-5, atol=1e-6)


def test_model_key_depends_on_every_numeric_setting():
    m = _probe_model()
    base = keys.model_key("numerics_probe", m, m.input_size, m.crop_fraction)
    assert base == keys.model_key("numerics_probe", m, m.input_size, m.crop_fraction,
                                  numerics.Numerics())
    others = [numerics.Numerics(precision="bf16"), numerics.Numerics(precision="tf32"),
              numerics.Numerics(channels_last=True), numerics.Numerics(compile=True),
              numerics.Numerics(deterministic=False)]
    ks = {keys.model_key("numerics_probe", m, m.input_size, m.crop_fraction, n)
          for n in others}
    assert len(ks) == len(others) and base not in ks


def test_a_bf16_run_does_not_reuse_fp32_cells(tmp_path):
    first = run(parse_config(_cfg(tmp_path / "a")), progress=None, in_process=True)
    bf16 = run(parse_config(_cfg(tmp_path / "b", precision="bf16")), progress=None,
               in_process=True, reuse=first.run_dir)
    again = run(parse_config(_cfg(tmp_path / "c")), progress=None, in_process=True,
                reuse=first.run_dir)
    man_a, man_b, man_c = (_manifest(r.run_dir) for r in (first, bf16, again))
    assert man_b["counts"]["cells_reused_now"] == 0  # 3 samples x 2 methods computed anew
    assert man_c["counts"]["cells_reused_now"] == 6  # the same fp32 config reuses all
    assert man_a["keys"]["models"] != man_b["keys"]["models"]
    assert man_a["keys"]["models"] == man_c["keys"]["models"]
    a, b = read_samples(first.run_dir), read_samples(bf16.run_dir)
    assert set(a["cell_key"]).isdisjoint(b["cell_key"])
    # the cells differ for a reason: at bf16 the probe's probabilities move
    order = ["sample_id", "method"]
    pa, pb = (t.sort_values(order)["target_prob"].to_numpy() for t in (a, b))
    assert (pa != pb).any() and abs(pa - pb).max() < 0.05


def test_default_threads_are_the_plans_for_both_executors():
    cfg = parse_config({**BASE, "resources": {"shard_size": 3}})
    local = in_process_config(cfg)["resources"]["torch_threads"]
    ray_local = actor_config(cfg, make_plan(cfg, local_resources()))["resources"]
    assert local == ray_local["torch_threads"] >= 1
    # a fixed pool of one model actor on 8 CPUs gets 7 (the CPU stage keeps 0.5 + reading)
    assert actor_config(cfg, make_plan(cfg, {"CPU": 8.0}))["resources"]["torch_threads"] == 7
    auto = parse_config({**BASE, "resources": {"attribute_actors": "auto"}})
    assert actor_config(auto, make_plan(auto, {"CPU": 8.0}))["resources"]["torch_threads"] == 1
    fixed = parse_config({**BASE, "resources": {"torch_threads": 3}})
    assert in_process_config(fixed)["resources"]["torch_threads"] == 3
    assert actor_config(fixed, make_plan(fixed, {"CPU": 8.0}))["resources"][
        "torch_threads"] == 3
    gpu = parse_config({**BASE, "resources": {"device": "cuda"}})
    assert actor_config(gpu, make_plan(gpu, {"CPU": 8.0, "GPU": 1.0}))["resources"][
        "torch_threads"] is None


NEAR_TIES = {
    "name": "t", "seed": 0, "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 2, "size": 224, "seed": 1},
    "models": ["efficientnet_lite0"],
    "methods": [{"name": "ig", "steps": 4}],
    "metrics": ["insertion", "deletion"],
    "resources": {"shard_size": 2, "batch_size": 2},
}


@pytest.mark.usefixtures("ray_session")
def test_ray_and_in_process_write_equal_tables_by_default(tmp_path):
    """EfficientNet-Lite0's IG maps move at float rounding with torch's thread count (its
    input gradients by ~1e-4 relative between 1 and 2 threads at a chunk of 8 path points)
    and insertion / deletion rank the pixels: equal tables need equal threads, which the
    defaults now give both executors (the plan's model-actor CPUs)."""
    cfg = json.loads(json.dumps(NEAR_TIES))
    cfg["out"] = str(tmp_path)
    in_proc = run(parse_config(cfg), progress=None, in_process=True)
    on_ray = run(parse_config(cfg), progress=None)
    a = read_samples(in_proc.run_dir).drop(columns=["run_id"])
    b = read_samples(on_ray.run_dir).drop(columns=["run_id"])
    assert (a["status"] == "ok").all() and len(a) == 2
    pd.testing.assert_frame_equal(a, b)
    num_a, num_b = (_manifest(r.run_dir)["numerics"] for r in (in_proc, on_ray))
    assert num_a == num_b


def test_the_report_shows_the_precision(tmp_path):
    from salbench.report.build import write_report

    result = run(parse_config(_cfg(tmp_path, precision="bf16",
                                   models=[{"name": "numerics_probe", "channels_last": True}])),
                 progress=None, in_process=True)
    index = Path(write_report(result.run_dir))
    html = index.read_text()
    md = (index.parent / "tables.md").read_text()
    for text in (html, md):
        assert "precision bf16, channels-last, torch threads 1" in text
