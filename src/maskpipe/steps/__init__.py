"""One module per pipeline step: the step's contract beside the thin shell that runs it.

Each module declares

- ``STEP``: a :class:`maskpipe.dag.ports.Step` (the files it reads and writes by their
  ``Layout`` names, the config sections it reads, its fan-out, threads, GPU use, whether it stays
  local under a cluster executor, the library modules whose edits rerun it);
- ``run(job, cfg)``: the shell that takes the job's resolved files
  (:class:`maskpipe.dag.ports.Job`) and the step's config sections (by dotted name) and calls the
  library's pure core with plain values;

and may declare ``AGAIN`` (how a pseudo-label round runs the step again,
:class:`maskpipe.dag.ports.Again`), ``add_arguments(parser)`` (options for people beyond the
step's files; the values reach ``run`` in ``job.extra``) and ``by_hand(args, config)`` (a mode of
its subcommand that is not the step, e.g. ``mislabels --accept``; its files are then optional).

The step table (:mod:`maskpipe.dag.table`) is collected from this package: every module with a
``STEP``, named as its step, ordered by the data it reads and writes. Adding a step is a module
here, its config schema and defaults, and its tests (docs/architecture.md).

The library is imported inside ``run``: every engine reads the table when it parses the
workflow, and importing torch there would cost seconds for nothing.
"""
