"""Eval photos grouped into persons, and what the ensemble does with the groups.

:mod:`.group` finds the groups (the ``persons`` step), :mod:`.score` scores them against known
persons, :mod:`.vote` pools a group's predictions and :mod:`.prior` re-estimates class priors.
"""
