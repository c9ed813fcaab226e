"""The ``report`` step: a self-contained HTML summary of a run (data, folds, training, scores).

``inputs`` reads and checks the run's files, ``figures`` turns arrays into PNG bytes, ``html``
assembles the page.
"""

from maskpipe.report.html import build_report
from maskpipe.report.inputs import ReportInputs

__all__ = ["ReportInputs", "build_report"]
