"""Face geometry shared by the proving ground and the pipeline: each face's five landmarks, found
once with MTCNN and cached (:mod:`~maskpipe.faces.landmarks`), and masks drawn from them
(:mod:`~maskpipe.faces.masks`). ``maskpipe demo-data --faces`` draws its persons' masks with
them, and the external step (``external.masks: drawn``) masks the external faces the same way."""
