"""Every configs/*.yaml parses and names only registered methods / metrics and their real
parameters; the paper-protocol configs (configs/paper-*.yaml) are documented in
docs/REPRODUCTION.md. No model runs: this only validates the configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from salbench import methods, metrics
from salbench.config import load_config, parse_config
from salbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
PAPER_CONFIGS = sorted((ROOT / "configs").glob("paper-*.yaml"))


def _raw(path: Path) -> dict:
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), f"{path.name}: not a mapping"
    return raw


def _items(raw: dict, key: str) -> list[dict]:
    value = raw[key]
    if value == "all":
        return [{"name": n} for n in methods.names()]
    if isinstance(value, (str, dict)):
        value = [value]
    return [{"name": v} if isinstance(v, str) else v for v in value]


def test_configs_found():
    names = {p.name for p in PAPER_CONFIGS}
    assert {"paper-ggsm-digits.yaml", "paper-idgi.yaml", "paper-igos.yaml", "paper-dga.yaml",
            "paper-samp.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses(path):
    config = parse_config(_raw(path))
    # the CLI's path (salbench run CONFIG) gives the same config
    assert load_config(path) == config
    assert config.methods and config.metrics


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("profile", ["paper", "fast"])
def test_names_and_params_resolve(path, profile):
    """Each method and metric resolves in its registry and every parameter the config gives
    is one of the spec's parameters, in both profiles (MethodSpec / MetricSpec.params raise
    ConfigError on an unknown key)."""
    raw = _raw(path)
    for key, registry in (("methods", methods), ("metrics", metrics)):
        if key not in raw:
            continue
        for item in _items(raw, key):
            spec = registry.get(item["name"])
            params = {k: v for k, v in item.items()
                      if k not in ("name", "alias", "map_reduce")}
            merged = spec.params(profile, **params)
            assert set(params) <= set(spec.defaults), (path.name, item)
            for k, v in params.items():
                assert merged[k] == v


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_configs_use_paper_profile(path):
    config = parse_config(_raw(path))
    assert config.profile == "paper"
    assert config.name.startswith(("paper-", "ggsm-"))


def _typo_cases() -> list[tuple[Path, str, int]]:
    cases = []
    for path in CONFIGS:
        raw = _raw(path)
        for key in ("methods", "metrics"):
            if key in raw and raw[key] != "all":
                cases.append((path, key, len(_items(raw, key)) - 1))
    return cases


@pytest.mark.parametrize("path,key,index", _typo_cases(),
                         ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_typo_in_param_fails(path, key, index):
    """A misspelt parameter in any config entry is a ConfigError naming the entry."""
    raw = _raw(path)
    items = copy.deepcopy(_items(raw, key))
    items[index] = {**items[index], "stpes": 3}
    bad = {**raw, key: items}
    with pytest.raises(ConfigError, match=rf"{key}\[{index}\].*stpes"):
        parse_config(bad)


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_typo_in_name_fails(path):
    raw = _raw(path)
    items = copy.deepcopy(_items(raw, "methods"))
    items[0] = {**items[0], "name": items[0]["name"] + "_typo"}
    with pytest.raises(ConfigError, match=r"methods\[0\]"):
        parse_config({**raw, "methods": items})


def test_enumerated_values_are_valid():
    """String choices the configs set that are only checked when the method runs."""
    from salbench.methods.dga import MASKS
    from salbench.methods.samp import DIRECTIONS

    for path in PAPER_CONFIGS:
        for item in _items(_raw(path), "methods"):
            if item["name"] == "dga" and "mask" in item:
                assert item["mask"] in MASKS, (path.name, item)
            if item["name"] in ("samp", "samp_pp") and "direction" in item:
                assert item["direction"] in DIRECTIONS, (path.name, item)


def test_reproduction_doc_covers_paper_configs():
    doc = (ROOT / "docs" / "REPRODUCTION.md").read_text()
    for path in PAPER_CONFIGS:
        assert f"configs/{path.name}" in doc, path.name
