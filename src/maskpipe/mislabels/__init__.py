"""The ``mislabels`` step: rank the persons and photos whose labels the models disagree with.

``rank`` scores every label against the ensemble's out-of-fold probabilities with cleanlab,
``review`` draws the HTML review page, ``accept`` appends accepted fixes to the corrections file
the ``labels`` step reads, and ``suspects`` ties them to files.
"""

#: The columns of ``suspects.csv`` (see :func:`maskpipe.mislabels.rank.rank_suspects`). Defined here,
#: without importing cleanlab, so the report can check the file cheaply.
SUSPECT_COLUMNS = ["rank", "suspect", "person", "task", "image", "given", "suggested", "score",
                   "p_suggested", "flagged", "fix_kind", "fix_value", "accept"]
