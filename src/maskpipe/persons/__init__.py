"""Eval photos grouped into persons, and what the ensemble does with the groups.

:mod:`.group` finds the groups and :mod:`.eval_photos` groups a run's eval photos
(:func:`maskpipe.demo.truth.score_groups` scores them against known persons); :mod:`.adjust` applies the ensemble's eval-only
options: :mod:`.prior` re-estimates class priors, :mod:`.vote` pools a group's predictions.
"""
