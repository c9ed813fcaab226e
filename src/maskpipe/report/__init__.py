"""The ``report`` step: a self-contained HTML summary of a run (data, folds, training, scores).

``inputs`` reads and checks the run's files (TensorBoard logs included), ``figures`` turns arrays
into PNG bytes, ``markup`` holds the HTML building blocks, ``sections`` the sections on the models
and ``html`` those on the data, and assembles the page, the figure files and ``history.csv``.
"""

from maskpipe.report.html import build_report
from maskpipe.report.inputs import ReportInputs

__all__ = ["ReportInputs", "build_report"]
