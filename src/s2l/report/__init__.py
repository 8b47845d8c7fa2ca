"""The selection report: one self-contained HTML file with plots, from a run and its selections.

    >>> from s2l.report import build_report
    >>> build_report("runs/proxy", ["sel/s2l-10", "sel/lp-10"], out="report", target_run="runs/target")
    PosixPath('report/report.html')

Sections (their HTML ids): header, pool, trajectories, learning-percentage, data-map, selections,
overlap, agreement. See docs/report.md for what each shows and how to read it.
"""

from s2l.report.build import SECTIONS, build_report

__all__ = ["SECTIONS", "build_report"]
