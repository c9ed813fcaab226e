"""Demo and proving-ground data in the competition's layout: the synthetic demo
(:mod:`~maskpipe.demo.synthetic`, drawn faces) and the real-faces set
(:mod:`~maskpipe.demo.realfaces`: UTKFace faces with drawn masks), with what they draw with
(photo shoots, duplicate faces; the faces' landmarks and masks are :mod:`maskpipe.faces`), write
with (:mod:`~maskpipe.demo.competition`) and score against (:mod:`~maskpipe.demo.truth`: the
planted errors and the eval persons a generated set knows). No pipeline step runs this package:
``maskpipe demo-data`` does, upstream of the pipeline; benchmarks and tests score with it."""
