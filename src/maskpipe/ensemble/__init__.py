"""The ensemble: the vote over every model x fold (:mod:`~maskpipe.ensemble.vote`) and the fitting
of its weights and age bias on out-of-fold predictions (:mod:`~maskpipe.ensemble.fitting`)."""
