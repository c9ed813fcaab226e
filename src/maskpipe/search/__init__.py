"""Hyperparameter search (``maskpipe search``, Optuna): see :mod:`maskpipe.search.study`."""

from maskpipe.search.study import run_search

__all__ = ["run_search"]
