"""``salbench`` command line: run, demo, resume, report, compare, list, shard (SPEC 6)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from salbench.errors import SalbenchError

if TYPE_CHECKING:
    from salbench.config import RunConfig

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

KEY_METRICS = ("insertion_auc", "deletion_auc", "pointing_game_hit", "completeness_error")
MAX_COLUMNS = 6


def results_table(summary: pd.DataFrame) -> str:
    """A short text table: per model x method, the mean of up to six metrics (the key ones
    first), with the row and error counts."""
    if summary.empty:
        return "(no results)"
    import salbench

    metric_columns = {c for n in salbench.metrics.names() for c in salbench.metrics.get(n).columns}
    present = [m for m in summary["metric"].unique() if m != "target_prob"]
    rest = [m for m in present if m not in KEY_METRICS]
    ordered = ([m for m in KEY_METRICS if m in present] + [m for m in rest if m in metric_columns]
               + [m for m in rest if m not in metric_columns])
    keep = summary[summary["metric"].isin(ordered[:MAX_COLUMNS])]
    table = keep.pivot_table(index=["model", "method"], columns="metric", values="mean",
                             dropna=False)
    table = table[[c for c in ordered[:MAX_COLUMNS] if c in table.columns]]
    n = summary.groupby(["model", "method"])[["n_rows", "n_error"]].max()
    return n.join(table).to_string(float_format=lambda v: f"{v:.4f}")


def _run(config: RunConfig, quiet: bool = False, reuse: str | None = None,
         report: bool = False) -> int:
    from salbench.pipeline import run

    result = run(config, progress=None if quiet else sys.stderr, reuse=reuse)
    print(results_table(result.summary))
    print(f"run directory: {result.run_dir}")
    if report:
        from salbench.report import write_report

        print(f"report: {write_report(result.run_dir)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from salbench.pipeline import load_config

    config = load_config(args.config, _overrides(args))
    return _run(config, args.quiet, args.reuse)


def _overrides(args: argparse.Namespace) -> list[str]:
    sets = list(args.set or [])
    if getattr(args, "address", None):
        sets.append(f"resources.address={args.address}")
    if getattr(args, "out", None):
        sets.append(f"out={args.out}")
    return sets


def cmd_demo(args: argparse.Namespace) -> int:
    from salbench.config import apply_overrides, parse_config

    return _run(parse_config(apply_overrides(DEMO_CONFIG, _overrides(args))), args.quiet,
                args.reuse, report=True)


def cmd_resume(args: argparse.Namespace) -> int:
    from salbench.pipeline import resume

    result = resume(args.run_dir, progress=None if args.quiet else sys.stderr)
    print(results_table(result.summary))
    print(f"run directory: {result.run_dir}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from salbench.report import write_report

    print(f"report: {write_report(args.run_dir, max_samples=args.gallery_samples)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import salbench

    registry = {"models": salbench.models, "methods": salbench.methods,
                "metrics": salbench.metrics, "datasets": salbench.datasets}[args.what]
    for name in registry.names():
        print(name)
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    from salbench.datasets.parquet import shard_command

    shard_command(args.src, args.dst, args.rows_per_shard, kind=args.kind)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from salbench import storage
    from salbench.errors import ConfigError
    from salbench.pipeline.compare import compare_runs, comparison_report

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``salbench`` command."""
    p = argparse.ArgumentParser(prog="salbench", description=__doc__)
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
    r.add_argument("--reuse", metavar="PREVIOUS_RUN",
                   help="copy the results an earlier run already has (same sample, model "
                   "weights, method and metric parameters and code); compute only the rest")
    r.set_defaults(fn=cmd_run)

    d = sub.add_parser("demo", help="the embedded default: sample photos, EfficientNet-Lite0")
    d.add_argument("--out", help="output directory (default ./runs)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    d.add_argument("--address", help="Ray address: 'auto' joins a running `ray start --head`")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.add_argument("--reuse", metavar="PREVIOUS_RUN",
                   help="copy the results an earlier run already has (same sample, model "
                   "weights, method and metric parameters and code); compute only the rest")
    d.set_defaults(fn=cmd_demo)

    s = sub.add_parser("resume", help="finish an interrupted run")
    s.add_argument("run_dir", help="the run directory (a path or a URI such as s3://...)")
    s.add_argument("--quiet", action="store_true", help="no progress output")
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
    ls.set_defaults(fn=cmd_list)

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


def main(argv: list[str] | None = None) -> int:
    """Entry point; a SalbenchError prints one clear line and exits with status 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    try:
        return int(args.fn(args) or 0)
    except SalbenchError as exc:
        print(f"salbench: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"salbench: error: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"salbench: error: cannot reach the Ray cluster ({exc}); start one with "
              "`ray start --head` or drop --address to run a local Ray", file=sys.stderr)
        return 2
    except OSError as exc:  # storage: permission denied, an unreachable object store
        print(f"salbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["DEMO_CONFIG", "build_parser", "main", "results_table"]
