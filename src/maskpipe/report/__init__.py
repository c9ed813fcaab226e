"""The ``report`` step: a self-contained HTML summary of a run (data, folds, training, scores).

``figures`` turns arrays into PNG bytes; ``html`` reads the run's files and assembles the page.
"""

from maskpipe.report.html import ReportInputs, build_report

__all__ = ["ReportInputs", "build_report"]
