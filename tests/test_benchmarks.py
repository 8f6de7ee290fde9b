"""The benchmark harness runs end to end (quick workloads on the tiny model) and writes what
BENCHMARKS.md is made from: every case's rows, finite timings, the machine and date."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import __main__ as harness
from benchmarks.common import PassCounter, chunk_sizes, floor_loop, interleaved
from salbench.models import load

pytest.importorskip("captum")
pytest.importorskip("saliency")


def test_pass_counter_counts_gradient_and_forward_samples():
    import torch

    model = load("tiny_cnn")
    x = torch.rand(1, 3, 32, 32)
    counter = PassCounter(model)
    floor_loop(model, x, n_fb=10, n_f=3, batch=4)
    counter.remove()
    assert (counter.fb, counter.f) == (10, 3)
    counter = PassCounter(model)
    with torch.enable_grad():
        model(torch.rand(5, 3, 32, 32))                       # recorded, never back-propagated
        pts = torch.rand(2, 3, 32, 32, requires_grad=True)
        out = model(pts)[:, 0].sum()
        torch.autograd.grad(out, pts, retain_graph=True)
        torch.autograd.grad(out, pts)                          # same pass, second backward
    counter.remove()
    assert (counter.fb, counter.f) == (2, 5)
    assert chunk_sizes(10, 4) == [4, 4, 2] and chunk_sizes(0, 4) == []


def test_interleaved_runs_each_callable_reps_times_in_turn():
    calls: list[str] = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # warm-up, then two interleaved rounds
    assert [len(v) for v in times.values()] == [2, 2]


def test_quick_harness_writes_json_and_markdown(tmp_path, capsys):
    cases = ["floor", "refs", "scaling", "bokeh"]
    rc = harness.main([*cases, "--quick", "--model", "tiny_cnn", "--reps", "1",
                       "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert list(res["cases"]) == cases
    assert res["machine"]["cores"] >= 1 and res["machine"]["date"]
    import salbench.methods as methods

    floor = res["cases"]["floor"]["rows"]
    assert sorted(r["method"] for r in floor) == sorted(methods.names())
    for r in floor:
        assert r["fb_passes"] + r["f_passes"] > 0, r["method"]
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
    refs = res["cases"]["refs"]["rows"]
    assert [r["method"] for r in refs] == ["ig", "ig", "gig", "blurig"]
    assert all(r["speedup"] > 0 for r in refs) and "at the same" in refs[1]["reference"]
    scaling = res["cases"]["scaling"]["rows"]
    assert {r["sweep"] for r in scaling} == {"internal_batch_size", "images_per_call"}
    assert all(r["peak_extra_mib"] >= 0 and r["images_per_s"] > 0 for r in scaling)
    bokeh = {r["info"]: r for r in res["cases"]["bokeh"]["rows"]}
    # the CPU stage agrees with PAIR (WebP AUC) and the PAIR+pytorch_msssim loop (levels)
    assert bokeh["webp"]["agree_1e-3"] and bokeh["msssim"]["agree_1e-3"]
    # the floor: PAIR's bokeh images (+ WebP sizes for SIC/AIC), timed on their own
    assert all(r["floor_s_per_pair"] > 0 and r["max_speedup_1_core"] > 0 for r in bokeh.values())
    md = (tmp_path / "results.md").read_text()
    for title in ("1. Method", "2. Versus", "3. Batch", "4. CPU stage"):
        assert title in md
    assert "QUICK" in md and md in capsys.readouterr().out


def test_unknown_case_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        harness.parse(["flor"])
    assert "unknown case(s) ['flor']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        harness.parse(["floor", "--methods", "ig,igg"])
    assert "--methods: unknown ['igg']" in capsys.readouterr().err


def test_autocast_and_channels_last_options_run_and_check_completeness(tmp_path):
    """The GPU options run on CPU too (bf16 autocast, channels_last); the floor case then
    reports IG's completeness error in float32 and under autocast against its bound."""
    # bf16 convolutions are slow on CPU (I-GOS's 51 x 51 blur takes minutes): two methods
    assert harness.main(["floor", "--quick", "--model", "tiny_cnn", "--reps", "1",
                         "--autocast", "bf16", "--channels-last", "--methods", "vg,ig",
                         "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in res["cases"]["floor"]["rows"]] == ["ig", "vg"]
    check = res["cases"]["floor"]["autocast_check"]
    assert 0 <= check["fp32"] < 1 and math.isfinite(check["autocast"])
    assert check["within_bound"] == (abs(check["autocast"] - check["fp32"]) <= check["bound"])
    md = (tmp_path / "results.md").read_text()
    assert "autocast bf16" in md and "channels_last" in md and "Autocast check" in md


def test_quick_pipeline_case_compares_both_workloads(ray_session):
    from benchmarks import pipeline
    from benchmarks.common import Settings

    res = pipeline.run_case(Settings(model="tiny_cnn", quick=True, reps=1))
    assert list(res["workloads"]) == ["demo", "short"]
    for w in res["workloads"].values():
        assert w["loop_s"] > 0 and w["pipeline_s"] >= w["pipeline_after_startup_s"] > 0
        t = w["times"]
        assert w["ratio"] == pytest.approx(t["loop"][0] / t["pipeline"][0], abs=1e-3)
    assert res["ratio"] == res["workloads"]["demo"]["ratio"]
    assert [r["attribute_actors"] for r in res["scaling"]] == list(
        range(1, len(res["scaling"]) + 1))
    # one actor is the short workload's config: its runs are not repeated
    assert pipeline.config(Settings(model="tiny_cnn", quick=True), 1) == pipeline.config(
        Settings(model="tiny_cnn", quick=True), 1, "short")
    assert res["scaling"][0]["times"] == res["workloads"]["short"]["times"]["pipeline"]
    md = pipeline.markdown(res)
    assert "| demo |" in md and "| short |" in md


def test_quick_throughput_case_times_both_executors(ray_session):
    from benchmarks import throughput
    from benchmarks.common import Settings

    res = throughput.run_case(Settings(model="tiny_cnn", quick=True, reps=1))
    assert res["rows"] == throughput.QUICK_ROWS
    for name in ("ray", "in_process"):
        (r,) = res["runs"][name]
        assert r["rows"] == throughput.QUICK_ROWS and r["execute_s"] > 0
        assert r["rows_per_s"] == pytest.approx(r["rows"] / r["execute_s"], rel=1e-9)
        assert 0 < r["driver_cpu_share"] and r["driver_cpu_s"] > 0
    ratio = res["runs"]["ray"][0]["rows_per_s"] / res["runs"]["in_process"][0]["rows_per_s"]
    assert res["ratio"] == pytest.approx(ratio, rel=1e-9)
    assert res["met"] == (res["ratio"] >= 0.8)
    md = throughput.markdown(res)
    assert "| ray |" in md and "| in_process |" in md


def test_gpu_case_runs_on_cpu_with_a_tiny_model(tmp_path, monkeypatch):
    """``python -m benchmarks gpu`` is written for a lent GPU; ``--device cpu --tiny`` runs
    the same code (cases 1-3 for real; case 5's Ray runs stubbed here, they are the
    pipeline case's, tested above) so that it cannot rot."""
    from benchmarks import gpu
    from salbench.config import parse_config

    configs: list[dict] = []

    def case5(s, cfg, out):
        configs.append(cfg)
        parse_config(cfg)  # a valid run config
        return {"loop_s": 1.0, "pipeline_s": 2.0, "ratio": 0.5, "ratio_after_startup": 0.6,
                "images": 2}

    monkeypatch.setattr(gpu, "_case5", case5)
    monkeypatch.setattr(gpu, "BUDGET_S", 1e9)  # a loaded CPU may take minutes; no deadline
    assert harness.main(["gpu", "--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())["cases"]["gpu"]
    rows = res["rows"]
    assert not [r for r in rows if "error" in r] and not res["skipped"]
    floor = {(r["precision"], r["what"]) for r in rows if r["case"] == "1"}
    assert floor == {(p, f"{m} (fast)") for p in gpu.PRECISIONS for m in ("vg", "ig")}
    assert {r["case"] for r in rows} == {"1", "2", "3", "5"}
    assert all(r["images_per_s"] > 0 and r["share_of_bf16_peak"] is None for r in rows)
    assert [c["precision"] for c in configs] == ["bf16"]
    assert configs[0]["resources"]["device"] == "cpu"
    flops = res["flops"]["tiny_cnn"]
    assert 1.5 < flops["fb"] / flops["forward"] < 2.5  # input gradients: ~2x a forward pass
    assert res["ig_passes"]["tiny_cnn"][0] >= 16  # IG's 16 steps, counted
    md = (tmp_path / "results.md").read_text()
    assert "GPU: cases 1-3 and 5" in md and "TINY" in md


def test_gpu_case_past_its_deadline_lists_every_step_as_skipped(tmp_path, monkeypatch):
    from benchmarks import gpu

    monkeypatch.setattr(gpu, "BUDGET_S", 0.0)
    assert harness.main(["gpu", "--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())["cases"]["gpu"]
    assert res["rows"] == []
    assert res["skipped"] == ["case 1 tiny_cnn fp32", "case 3 tiny_cnn fp32",
                              "case 1 tiny_cnn tf32", "case 1 tiny_cnn bf16",
                              "case 5 tiny_cnn bf16", "case 2 tiny_cnn fp32"]
    assert "Skipped (past the deadline)" in (tmp_path / "results.md").read_text()


def test_gpu_peak_table_share_formula_and_precision_setting():
    from benchmarks import gpu
    from benchmarks.common import Settings, load_model

    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA H200") == 989.4
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("NVIDIA L40S") == 362.1 and gpu.peak_tflops("NVIDIA L4") == 121.0
    assert gpu.peak_tflops("Tesla T4") is None and gpu.peak_tflops(None) is None
    # 10 f+b passes of 4 GFLOP + 2 forwards of 1 GFLOP per image, 100 images/s, 100 TFLOP/s
    assert math.isclose(gpu.share(10, 2, 100.0, {"fb": 4e9, "forward": 1e9}, 100.0), 0.042)
    assert load_model(Settings(model="tiny_cnn", precision="bf16")).numerics.precision == "bf16"
    assert load_model(Settings(model="tiny_cnn")).numerics is None


def test_quick_precision_case_compares_each_setting_with_fp32(tmp_path):
    import numpy as np

    from benchmarks import precision

    assert harness.main(["precision", "--quick", "--model", "tiny_smooth",
                         "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())["cases"]["precision"]
    rows = {(r["setting"], r["method"]): r for r in res["rows"]}
    assert set(rows) == {(s, m) for s in ("bf16", "channels_last")
                         for m in precision.QUICK_METHODS}
    assert not [r for r in rows.values() if "error" in r]
    for m in precision.QUICK_METHODS:
        bf16, cl = rows[("bf16", m)], rows[("channels_last", m)]
        # bfloat16 keeps 8 bits of mantissa: maps move, but not beyond recognition here
        assert 1e-4 < bf16["map_rel_l2_median"] < 0.1 and bf16["rank_spearman_min"] > 0.99
        assert cl["map_rel_l2_max"] < 1e-5  # a memory layout: float32 rounding only
        assert (bf16["completeness"] is None) == (m != "ig")
    assert "| bf16 | ig |" in (tmp_path / "results.md").read_text()
    # PAIR's dataset-level SIC: the AUC of the median of the usable curves
    sic = {"x": np.array([0.0, 0.5, 1.0]),
           "y": np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.5, 1.0],
                          [np.nan] * 3])}
    assert precision._aggregate(sic) == 0.5  # median curve (0, 0.5, 1)
