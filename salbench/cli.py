"""``salbench`` command line: run, demo, resume, report, compare, list, shard (SPEC 6)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from salbench.console import ray_output_to_run_log
from salbench.errors import SalbenchError
from salbench.memory import use_system_allocator
from salbench.pipeline import interrupt

if TYPE_CHECKING:
    from salbench.config import RunConfig
    from salbench.pipeline.run import RunResult

#: The demo's config; ``configs/demo.yaml`` in the repository holds the same (a test checks).
DEMO_CONFIG = {
    "name": "demo",
    "out": "runs",
    "seed": 0,
    "profile": "fast",
    "dataset": {"kind": "sample"},
    "models": ["efficientnet_lite0"],
    "methods": "all",
    "metrics": ["insertion", "deletion", "pointing_game", "wsol"],
    "save_maps": True,
    "resources": {"shard_size": 4},
}

#: Method diagnostics the console table shows when some method reports them.
KEY_DIAGNOSTICS = ("completeness_error",)


def headline_columns(config: RunConfig | None, summary: pd.DataFrame) -> list[str]:
    """The summary column that stands for each configured metric, in config order.

    A metric's headline column is its first column in the report's headline order
    (``salbench.report.data.HEADLINE``; e.g. ``sic`` -> ``sic_aggregate_auc``), else its
    first scalar column. Without a config: every metric present in ``summary``.
    """
    import salbench
    from salbench.report.data import HEADLINE

    if config is None:
        names = sorted({m for m in salbench.metrics.names()})
    else:
        names = list(dict.fromkeys(c.name for c in config.metrics))
    present = set(summary["metric"].unique())
    out = []
    for name in names:
        spec = salbench.metrics.get(name)
        cols = [c for c, kind in spec.columns.items()
                if kind == "float" and not c.endswith("_skipped")]
        if spec.summary is not None:
            cols.insert(0, f"{name}_aggregate_auc")
        cols = [c for c in cols if c in present]
        head = [c for c in HEADLINE if c in cols] or cols[:1]
        out += [c for c in head[:1] if c not in out]
    return out


def results_table(summary: pd.DataFrame, config: RunConfig | None = None,
                  width: int | None = None) -> str:
    """A text table: per model x method, the rows and errors, the mean of every configured
    metric's headline column and of the key diagnostics that have values; wrapped into
    blocks of at most ``width`` characters (default: the terminal's width)."""
    if summary.empty:
        return "(no results)"
    columns = headline_columns(config, summary)
    for diag in KEY_DIAGNOSTICS:
        values = summary.loc[summary["metric"] == diag, "mean"]
        if values.notna().any():
            columns.append(diag)
    keep = summary[summary["metric"].isin(columns)]
    table = keep.pivot_table(index=["model", "method"], columns="metric", values="mean",
                             dropna=False)
    table = table[[c for c in columns if c in table.columns]]
    n = summary.groupby(["model", "method"])[["n_rows", "n_error"]].max()
    width = width or shutil.get_terminal_size((120, 24)).columns
    text = n.join(table).to_string(float_format=lambda v: f"{v:.4f}", line_width=width)
    rest = summary.loc[~summary["metric"].isin([*columns, "target_prob"]), "metric"].nunique()
    if rest:
        text += (f"\n(means; {rest} more columns - per-sample AUCs, diagnostics - with 95% "
                 "intervals in the report)")
    return text


def _print_results(result: RunResult, config: RunConfig | None) -> None:
    print(results_table(result.summary, config))
    print(f"run directory: {result.run_dir}")


def _run(config: RunConfig, args: argparse.Namespace, report: bool = False) -> int:
    from salbench.pipeline.run import run

    with ray_output_to_run_log(args.verbose) as console:
        result = console.call(run, config, progress=None if args.quiet else console,
                              reuse=args.reuse,
                              ray_progress_bars=args.verbose and console.isatty())
    _print_results(result, config)
    if report:
        from salbench.report import write_report

        print(f"report: {write_report(result.run_dir)}")
    else:
        print(f"report: `salbench report {result.run_dir}` writes it")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from salbench.config import load_config

    config = load_config(args.config, _overrides(args))
    return _run(config, args)


def _overrides(args: argparse.Namespace) -> list[str]:
    sets = list(args.set or [])
    if getattr(args, "address", None):
        sets.append(f"resources.address={args.address}")
    if getattr(args, "out", None):
        sets.append(f"out={args.out}")
    return sets


def cmd_demo(args: argparse.Namespace) -> int:
    from salbench.config import apply_overrides, parse_config

    return _run(parse_config(apply_overrides(DEMO_CONFIG, _overrides(args))), args,
                report=True)


def cmd_resume(args: argparse.Namespace) -> int:
    from salbench.config import parse_config
    from salbench.pipeline.manifest import read_manifest
    from salbench.pipeline.run import resume

    with ray_output_to_run_log(args.verbose) as console:
        result = console.call(resume, args.run_dir, progress=None if args.quiet else console,
                              ray_progress_bars=args.verbose and console.isatty())
    _print_results(result, parse_config(read_manifest(result.run_dir)["config"]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from salbench.report import write_report

    print(f"report: {write_report(args.run_dir, max_samples=args.gallery_samples)}")
    _warn_if_interrupted(args.run_dir)
    return 0


def _warn_if_interrupted(run_dir: str) -> None:
    """Say so when ``run_dir``'s manifest says running but its driver is gone."""
    from salbench import heartbeat
    from salbench.pipeline.manifest import read_manifest

    status, note = heartbeat.status(run_dir, read_manifest(run_dir))
    if note is not None:
        print(f"salbench: run {run_dir} is {status}: {note}", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    import json

    from salbench.catalog import entries

    rows = entries(args.what)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = [c for c in ("description", "cost", "needs") if any(r[c] for r in rows)]
    width = max(len(r["name"]) for r in rows) + 2
    for r in rows:
        parts = [r[c] for c in cols if r[c]]
        cost = f"[{r['cost']}]" if r["cost"] else ""
        needs = f"needs {r['needs']}" if r["needs"] else ""
        text = "  ".join(p for p in (r["description"], cost, needs) if p)
        print(f"{r['name']:<{width}}{text}".rstrip() if parts else r["name"])
    return 0


def cmd_weights_pull(args: argparse.Namespace) -> int:
    from salbench.models.pull import pull

    if args.url is not None and args.sha256 is None:
        raise SalbenchError("--url needs --sha256 (the hash to check the file against)")
    pull(args.name, args.to, mirror=args.mirror, url=args.url, sha256=args.sha256,
         say=lambda line: print(f"[salbench] {line}", file=sys.stderr, flush=True))
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    from salbench.datasets.parquet import shard_command

    shard_command(args.src, args.dst, args.rows_per_shard, kind=args.kind)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from salbench import storage
    from salbench.errors import ConfigError
    from salbench.report.text import comparison_report
    from salbench.results.compare import compare_runs

    if args.report and (storage.is_uri(args.run_a) or storage.is_uri(args.run_b)):
        raise ConfigError("compare --report needs local run directories (the page links the "
                          "runs' reports by relative path); compare URIs without --report")
    table = compare_runs(args.run_a, args.run_b, metrics=args.metric)
    print(comparison_report(table, str(args.run_a), str(args.run_b)))
    if args.csv:
        try:
            table.to_csv(args.csv, index=False)
        except OSError as exc:
            raise ConfigError(f"cannot write --csv {args.csv}: {exc}") from exc
        print(f"wrote {args.csv}")
    if args.report:
        from salbench.report import write_compare_report

        print(f"comparison report: {write_compare_report(args.run_a, args.run_b)}")
    worse = int((table["change"] == "worse").sum())
    if args.fail_on_change and worse:
        print(f"{worse} significant changes for the worse (--fail-on-change): exit 1",
              file=sys.stderr)
        return 1
    return 0


VERBOSE_HELP = ("show Ray's own log lines and Ray Data's progress bars on the terminal "
                "(default: they go to the run directory's run.log)")


def address_source(args: argparse.Namespace) -> tuple[str, str] | None:
    """Where this command's Ray address came from: (address, how the user set it), or
    None when no address was set (a local Ray is started)."""
    if getattr(args, "address", None):
        return args.address, f"--address {args.address}"
    for item in reversed(getattr(args, "set", None) or []):
        key, _, value = item.partition("=")
        if key.strip() == "resources.address" and value.strip() not in ("", "null"):
            return value.strip(), f"--set {item}"
    config: dict = {}
    where = ""
    try:
        if args.command == "run":
            import yaml

            config = yaml.safe_load(Path(args.config).read_text()) or {}
            where = args.config
        elif args.command == "resume":
            from salbench.pipeline.manifest import read_manifest

            config = read_manifest(Path(args.run_dir)).get("config") or {}
            where = f"the run's recorded config ({Path(args.run_dir) / 'manifest.json'})"
    except (OSError, ValueError):
        return None
    address = (config.get("resources") or {}).get("address") if isinstance(config, dict) else None
    return (str(address), f"resources.address: {address} in {where}") if address else None


def address_hint(args: argparse.Namespace, exc: BaseException) -> str:
    """The error line for an unreachable Ray cluster, naming where the address came from."""
    source = address_source(args)
    if source is None:
        return f"cannot start or reach a local Ray ({exc})"
    address, how = source
    if how.startswith("--address"):
        fix = "drop --address to run a local Ray"
    elif how.startswith("--set"):
        fix = "drop that --set to run a local Ray"
    elif args.command == "resume":
        fix = "start the cluster again to resume this run"
    else:
        fix = f"remove resources.address from {args.config} to run a local Ray"
    return (f"cannot reach the Ray cluster at {address!r} ({exc}); the address came from "
            f"{how}: start a cluster with `ray start --head`, or {fix}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``salbench`` command."""
    p = argparse.ArgumentParser(prog="salbench", description=(
        "Evaluate saliency (attribution) methods on image classifiers: run a config's "
        "models x methods x metrics on a dataset (locally or on a Ray cluster), then read the "
        "results as a report or compare two runs."))
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a config file")
    r.add_argument("config", help="YAML config (see configs/)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set profile=paper (repeatable)")
    r.add_argument("--address", help="Ray address: 'auto' joins a running `ray start --head`")
    r.add_argument("--out", help="output directory or URI, e.g. s3://bucket/runs (default: "
                   "the config's 'out')")
    r.add_argument("--quiet", action="store_true", help="no progress output (logs still go "
                   "to the run directory's run.log)")
    r.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    r.add_argument("--reuse", metavar="PREVIOUS_RUN",
                   help="copy the results an earlier run already has (same sample, model "
                   "weights, method and metric parameters and code); compute only the rest")
    r.set_defaults(fn=cmd_run)

    d = sub.add_parser("demo", help="the embedded default: sample photos, EfficientNet-Lite0")
    d.add_argument("--out", help="output directory (default ./runs)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    d.add_argument("--address", help="Ray address: 'auto' joins a running `ray start --head`")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    d.add_argument("--reuse", metavar="PREVIOUS_RUN",
                   help="copy the results an earlier run already has (same sample, model "
                   "weights, method and metric parameters and code); compute only the rest")
    d.set_defaults(fn=cmd_demo)

    s = sub.add_parser("resume", help="finish an interrupted run")
    s.add_argument("run_dir", help="the run directory (a path or a URI such as s3://...)")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    s.set_defaults(fn=cmd_resume)

    c = sub.add_parser("compare", help="compare two runs: per-metric deltas with 95%% CIs")
    c.add_argument("run_a", metavar="RUN_A", help="the reference run directory (A; a path or "
                   "a URI such as s3://...)")
    c.add_argument("run_b", metavar="RUN_B",
                   help="the run compared with it (B); delta = B - A")
    c.add_argument("--metric", action="extend", nargs="+", metavar="NAME",
                   help="only these metric columns or registered metrics (repeatable)")
    c.add_argument("--csv", type=Path, metavar="PATH", help="also write the table as CSV")
    c.add_argument("--fail-on-change", action="store_true",
                   help="exit 1 when a metric got significantly worse (its registry "
                        "direction; improvements and diagnostics never fail): for cron / CI "
                        "reruns")
    c.add_argument("--report", action="store_true",
                   help="also write a comparison page (RUN_B/report/compare-<A>/index.html)")
    c.set_defaults(fn=cmd_compare)

    rp = sub.add_parser("report", help="write RUN_DIR/report/: HTML page, markdown tables, "
                        "curve plots, saliency gallery")
    rp.add_argument("run_dir", metavar="RUN_DIR",
                    help="the run directory (a path or a URI such as s3://...)")
    rp.add_argument("--gallery-samples", type=int, default=12, metavar="N",
                    help="samples shown in the gallery (default 12; the first by dataset order)")
    rp.set_defaults(fn=cmd_report)

    ls = sub.add_parser("list", help="list registered names")
    ls.add_argument("what", choices=["models", "methods", "metrics", "datasets"])
    ls.add_argument("--json", action="store_true", help="one JSON object per entry (name, "
                    "description, cost, needs), for scripts")
    ls.set_defaults(fn=cmd_list)

    wp = sub.add_parser("weights", help="fetch a model's published weights on purpose "
                        "(runs never download)")
    wsub = wp.add_subparsers(dest="weights_cmd", required=True)
    pull = wsub.add_parser("pull", help="download the weights torchvision or timm publish "
                           "for NAME, check their hash, write them where runs look")
    pull.add_argument("name", metavar="NAME", help="a torchvision model (resnet50, vgg16, "
                      "...) or timm:<name>")
    pull.add_argument("--to", metavar="DIR_OR_URI", help="a directory or object-store prefix "
                      "(default: $SALBENCH_WEIGHTS)")
    pull.add_argument("--mirror", metavar="URL", help="fetch from this host instead of the "
                      "published one (same path)")
    pull.add_argument("--url", help="fetch this file instead (needs --sha256)")
    pull.add_argument("--sha256", metavar="HEX", help="the expected SHA-256 (or a prefix of "
                      "at least 8 digits)")
    pull.set_defaults(fn=cmd_weights_pull)

    sh = sub.add_parser("shard", help="convert a folder or dataset into Parquet shards")
    sh.add_argument("src", help="an ImageNet root or image folder (a path or a URI such as "
                    "s3://...), or a dataset kind such as 'sample'")
    sh.add_argument("--kind", choices=["imagenet", "folder"],
                    help="how to read the directory SRC (default: imagenet when SRC has the "
                    "ImageNet validation layout, else folder)")
    sh.add_argument("dst", help="output directory or URI (s3://bucket/shards) for "
                    "shard-NNNNN.parquet files")
    sh.add_argument("--rows-per-shard", type=int, default=256)
    sh.set_defaults(fn=cmd_shard)
    return p


def _interrupted_line(exc: BaseException) -> str:
    """What a signal stopped, for the one line the CLI prints."""
    run_dir = getattr(exc, "salbench_run_dir", None)
    if run_dir is None:
        return f"{exc} before a run directory was created; nothing was written"
    return (f"{exc}; {run_dir} is marked failed and keeps its finished shards; "
            f"continue with `salbench resume {run_dir}`")


def main(argv: list[str] | None = None) -> int:
    """Entry point; a SalbenchError prints one clear line and exits with status 2."""
    args = build_parser().parse_args(argv)
    use_system_allocator()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    try:
        # SIGTERM (``timeout``, a job scheduler) and Ctrl-C unwind, so that a run's
        # manifest is marked failed with the reason instead of staying "running"
        with interrupt.handling():
            return int(args.fn(args) or 0)
    except interrupt.RunInterrupted as exc:
        print(f"salbench: {_interrupted_line(exc)}", file=sys.stderr)
        return int(exc.code)
    except BrokenPipeError:  # `salbench list methods | head`: the reader left
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (flushed at exit, never read)
        return 0
    except SalbenchError as exc:
        print(f"salbench: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"salbench: error: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"salbench: error: {address_hint(args, exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["DEMO_CONFIG", "build_parser", "main", "results_table"]
