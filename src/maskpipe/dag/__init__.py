"""The step table and what is made from it: each step's ports (:mod:`~maskpipe.dag.ports`), the
table (:mod:`~maskpipe.dag.table`), pseudo-label rounds (:mod:`~maskpipe.dag.rounds`), each job's
files and command (:mod:`~maskpipe.dag.jobs`), the code files a step depends on
(:mod:`~maskpipe.dag.sources`), ``dvc.yaml`` (:mod:`~maskpipe.dag.dvc`), the table for people
(:mod:`~maskpipe.dag.render`) and the in-process job runner (:mod:`~maskpipe.dag.runner`)."""
