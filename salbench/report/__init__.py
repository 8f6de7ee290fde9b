"""Reports people read (SPEC 1 ``report/``): paper-style tables, curve plots, a saliency
gallery, the manifest and errors of one run (:func:`write_report`), and a comparison page of
two runs (:func:`write_compare_report`). Everything is read from the runs' Parquet tables
and manifests, so a report can be rebuilt later on another machine.

Modules: ``data`` (reading a run, metric directions), ``tables`` (table model, markdown,
paper layouts), ``plots`` (curves), ``gallery`` (maps), ``html`` (rendering), ``build``
(the run report), ``compare`` (the comparison page).
"""

from salbench.report.build import write_report
from salbench.report.compare import write_compare_report

__all__ = ["write_compare_report", "write_report"]
