"""Config, plan, Ray Data graph, writers, manifests and aggregation (SPEC 6)."""

from salbench.config import RunConfig, load_config, parse_config
from salbench.pipeline.run import RunResult, resume, run

__all__ = ["RunConfig", "RunResult", "load_config", "parse_config", "resume", "run"]
