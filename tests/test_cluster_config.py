"""The cluster deployment files: cluster.yaml, configs/imagenet.yaml, scripts/run_imagenet.py.

Fast and offline: no Ray cluster is started. cluster.yaml is checked against the installed
Ray's autoscaler schema (what `ray up` validates with) and against the other two files.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
IMAGENET_YAML = ROOT / "configs" / "imagenet.yaml"
DEMO_YAML = ROOT / "configs" / "demo.yaml"
SCRIPT = ROOT / "scripts" / "run_imagenet.py"
COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands",
                "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


@pytest.fixture(scope="module", autouse=True)
def script_runs() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The script's --help and --dry-run (demo config) as subprocesses, started first so that
    they run while the in-process tests import salbench."""
    procs = {
        "help": [sys.executable, str(SCRIPT), "--help"],
        "dry_run": [sys.executable, str(SCRIPT), "--config", str(DEMO_YAML), "--dry-run"],
    }
    started = {k: subprocess.Popen(v, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for k, v in procs.items()}
    yield started
    for p in started.values():
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    """cluster.yaml, parsed with safe_load."""
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(cfg, dict)
    return cfg


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """scripts/run_imagenet.py imported as a module."""
    spec = importlib.util.spec_from_file_location("run_imagenet", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_imagenet"] = module
    spec.loader.exec_module(module)
    return module


def _ray_schema() -> Path | None:
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "autoscaler" / "ray-schema.json"
    return path if path.is_file() else None


def _gpu_types(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in cluster["available_node_types"].items()
            if t.get("resources", {}).get("GPU", 0) >= 1}


def test_cluster_yaml_validates_against_the_ray_schema(cluster: dict[str, Any]) -> None:
    schema_path = _ray_schema()
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if schema_path is not None and jsonschema is not None:
        jsonschema.validate(cluster, json.loads(schema_path.read_text()))
    else:  # no schema to check against: the keys `ray up` cannot do without
        for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
            assert key in cluster, key
        assert "type" in cluster["provider"]
        for name, node_type in cluster["available_node_types"].items():
            assert {"resources", "node_config"} <= set(node_type), name


def test_cluster_yaml_passes_the_launchers_own_checks(cluster: dict[str, Any]) -> None:
    """What `ray up` runs before touching the cloud: fill in the defaults, then validate."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:
        pytest.skip("Ray's autoscaler helpers are not importable in this Ray version")
    validate_config(prepare_config(json.loads(json.dumps(cluster))))


def test_cluster_yaml_node_types(cluster: dict[str, Any]) -> None:
    types = cluster["available_node_types"]
    head = cluster["head_node_type"]
    assert head in types
    assert types[head]["resources"].get("GPU", 0) == 0, "the head is a CPU machine"
    gpu = _gpu_types(cluster)
    assert gpu and head not in gpu, "a GPU worker type"
    assert all(t.get("max_workers", 0) >= 1 for t in gpu.values())
    assert cluster["max_workers"] >= 1


def test_cluster_yaml_installs_the_project(cluster: dict[str, Any]) -> None:
    mounts = cluster["file_mounts"]
    project = [remote for remote, local in mounts.items() if local in (".", "./")]
    assert len(project) == 1, "file_mounts copy the repository (run `ray up` from the root)"
    installs = [c for c in cluster["setup_commands"] if c.startswith("pip install torch")]
    assert installs == [f"pip install torch==2.14.1 torchvision==0.29.1 {project[0]}"], (
        "the README's install command, on the mounted copy"
    )
    assert any("ray[default]" in c for c in cluster["setup_commands"]), "dashboard, job server"
    user = cluster["auth"]["ssh_user"]
    assert project[0].startswith(f"/home/{user}/")


def test_cluster_yaml_commands_are_whole_shell_lines(cluster: dict[str, Any]) -> None:
    """A ' #' in a plain YAML scalar starts a comment and silently cuts a command short."""
    for key in COMMAND_KEYS:
        for cmd in cluster.get(key) or []:
            shlex.split(cmd)  # balanced quotes
    assert any(">> ~/.bashrc" in c for c in cluster["setup_commands"])
    assert any("--head" in c for c in cluster["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in c for c in cluster["worker_start_ray_commands"])


def test_cluster_yaml_has_no_secrets() -> None:
    text = CLUSTER_YAML.read_text()
    for marker in ("BEGIN RSA", "BEGIN OPENSSH", "PRIVATE KEY-----", "aws_secret", "AKIA"):
        assert marker not in text


def test_imagenet_config_parses() -> None:
    from salbench.config import parse_config

    config = parse_config(yaml.safe_load(IMAGENET_YAML.read_text()))
    assert config.dataset["kind"] == "imagenet" and config.dataset["root"]
    assert config.profile == "paper"
    assert [m.name for m in config.models] == ["efficientnet_lite0", "resnet50"]
    assert config.models[1].params["weights"].endswith(".pth")
    assert config.resources.device == "cuda" and config.resources.address == "auto"
    assert Path(config.out).is_absolute(), "ray job submit runs in a temporary directory"
    assert {"insertion", "deletion", "sic", "aic", "wsol", "pointing_game"} <= {
        m.name for m in config.metrics}


def test_imagenet_config_fits_the_cluster(cluster: dict[str, Any], script: ModuleType) -> None:
    """GPU requests are not scaled down: the cluster must be able to grow to them."""
    from salbench.config import load_config

    config = load_config(IMAGENET_YAML)
    gpus = sum(min(t.get("max_workers", 0), cluster["max_workers"]) * t["resources"]["GPU"]
               for t in _gpu_types(cluster).values())
    assert 0 < script.gpu_demand(config) <= gpus
    assert config.out.startswith(f"/home/{cluster['auth']['ssh_user']}/")


def test_script_help(script_runs: dict[str, subprocess.Popen[str]]) -> None:
    out, err = script_runs["help"].communicate(timeout=60)
    assert script_runs["help"].returncode == 0, err
    assert "--dry-run" in out and "--config" in out


def test_script_dry_run_on_the_demo_config(script_runs: dict[str, subprocess.Popen[str]]) -> None:
    out, err = script_runs["dry_run"].communicate(timeout=120)
    assert script_runs["dry_run"].returncode == 0, err
    assert "rows: 7" in out and "efficientnet_lite0" in out
    assert "would run: salbench run" in out and "--address auto" in out


def test_dry_run_without_the_data_skips_counting(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "imagenet"
    argv = ["--config", str(IMAGENET_YAML), "--dry-run", "--set", f"dataset.root={missing}"]
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    assert "rows: not counted" in out and str(missing) in out
    assert "GPUs requested: 4" in out
    assert script.main([*argv, "--require-data"]) == 2
    assert "missing on this machine" in capsys.readouterr().err


def test_relative_config_is_found_in_the_project_copy(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # `ray submit` runs the script in the home directory
    assert script.resolve_config("configs/imagenet.yaml", str(ROOT)) == IMAGENET_YAML
    with pytest.raises(script.ScriptError, match="not found"):
        script.resolve_config("configs/nope.yaml", str(ROOT))


def test_bad_config_is_one_line_and_status_2(
    script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script.main(["--config", str(DEMO_YAML), "--dry-run", "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_clear_error_without_salbench(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(script.importlib.util, "find_spec",
                        lambda name, *a: None if name == "salbench" else real(name, *a))
    assert script.main(["--config", str(DEMO_YAML), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "salbench is not installed" in err and "pip install torch==2.14.1" in err


def test_salbench_argv(script: ModuleType) -> None:
    args = script.build_parser().parse_args(
        ["--set", "dataset.limit=5", "--address", "10.0.0.1:6379", "--out", "/tmp/o"])
    assert script.salbench_argv(Path("c.yaml"), args) == [
        "run", "c.yaml", "--address", "10.0.0.1:6379", "--set", "dataset.limit=5",
        "--out", "/tmp/o"]
    assert script.overrides(args) == [
        "dataset.limit=5", "resources.address=10.0.0.1:6379", "out=/tmp/o"]
    args = script.build_parser().parse_args(["--reuse", "/runs/prev"])
    assert script.salbench_argv(Path("c.yaml"), args)[-2:] == ["--reuse", "/runs/prev"]


def test_wait_for_gpus(script: ModuleType) -> None:
    now = [0.0]
    seen = iter([0.0, 1.0, 4.0])

    def sleep(s: float) -> None:
        now[0] += s

    assert script.wait_for_gpus(4, 100, lambda: next(seen), sleep=sleep, clock=lambda: now[0])
    assert now[0] == 20.0
    now[0] = 0.0
    assert not script.wait_for_gpus(4, 30, lambda: 1.0, sleep=sleep, clock=lambda: now[0])
