"""The competition's data as the pipeline's first steps read it: the layout check and image
manifests (validate), the label corrections (labels) and the person-grouped folds (folds)."""
