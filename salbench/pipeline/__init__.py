"""Running a benchmark: the placement plan, the Ray Data graph or the in-process executor,
the writer of the shards, the manifest and the driver's progress (SPEC 6).

The entry points are :func:`salbench.pipeline.run.run` and :func:`salbench.pipeline.run.resume`
(``salbench.evaluate`` and ``salbench run`` call them); a run's results are read back
through :mod:`salbench.results`. Importing this package imports nothing else, so that the
writer actor (:mod:`salbench.pipeline.writer_actor`) starts without torch.
"""
