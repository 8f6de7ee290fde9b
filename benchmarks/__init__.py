"""salbench's benchmark harness (SPEC 8): ``python -m benchmarks``; see ``__main__``."""
