"""The ``mislabels`` step: rank the persons and photos whose labels the models disagree with.

``rank`` scores every label against the ensemble's out-of-fold probabilities with cleanlab,
``review`` draws the HTML review page, ``accept`` appends accepted fixes to the corrections file
the ``labels`` step reads, and ``step`` ties them to files.
"""
