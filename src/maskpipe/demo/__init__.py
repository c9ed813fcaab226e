"""Demo and proving-ground data in the competition's layout: the synthetic demo
(:mod:`~maskpipe.demo.synthetic`, drawn faces) and the real-faces set
(:mod:`~maskpipe.demo.realfaces`: UTKFace faces with drawn masks), with what they draw with
(photo shoots, masks, landmarks, duplicate faces) and write with (:mod:`~maskpipe.demo.competition`).
No pipeline step runs this package: ``maskpipe demo-data`` does, upstream of the pipeline."""
