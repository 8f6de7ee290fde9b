"""A run's results, read back from its directory: what the report, ``salbench compare``,
``salbench.Results`` and the end of a run use.

Modules (each imports only those listed before it, and nothing of the execution side:
``salbench.pipeline``, ``salbench.actors``, Ray):

- ``tables``: the per-sample table's schema, its rows' statuses, its shard files and their
  completion markers (the writer commits shards with these functions).
- ``scan``: a run's rows read file by file, batch by batch (:class:`~.scan.Shards`).
- ``groups``: a run split by model x method in one scan, each group read back on its own.
- ``summary``: statistics per model x method x metric (``summary.parquet``).
- ``rankings``: methods ranked per metric, and the metrics' agreement (``rankings.parquet``).
- ``samples``: rows read on demand, and :func:`~.samples.load_run` (one run directory).
- ``compare``: the statistics of two runs.
- ``reuse``: an earlier run's finished cells by cell key (``--reuse``).

``tables``, ``scan``, ``groups``, ``samples`` and ``reuse`` import no torch; ``summary``,
``rankings`` and ``compare`` read the metric registry (directions, ranges, dataset-level
figures), which does.
"""
