"""The step table for people: what ``maskpipe steps`` prints and docs/pipeline.md shows.

Rendering only; every fact comes from :data:`maskpipe.dag.table.STEPS`.
"""

from __future__ import annotations

from maskpipe.layout import Layout
from maskpipe.dag.ports import FOLD, MODEL, Port, Step
from maskpipe.dag.table import STEPS


def port_path(port: Port) -> str:
    """Where ``port`` lives, for people: below ``results`` (``{model}``/``{fold}`` for a job's
    own file, ``round{round}/`` for a pseudo-label round's), or ``{KEY}/under`` for a path taken
    from the config key KEY; a port only some configs have says which key (``with KEY``)."""
    if port.config is not None:
        return "/".join(["{" + port.config + "}", *([port.under] if port.under else [])])
    wildcards = (MODEL, FOLD) if port.per_job or port.every_job else ()
    path = getattr(Layout("."), port.layout)(*port.args, *wildcards).removeprefix("./")
    folder = {"": "", "this": "round{round}/", "previous": "round{round-1}/", "last": "round{last}/",
              "rounds": "round{r}/", "extra": "round{r}/"}[port.round]
    notes = ((EVERY_JOB if port.every_job else "") + ROUND_NOTES.get(port.round, "")
             + (f" (with {port.when})" if port.when else ""))
    return folder + path + ("/" if port.folder else "") + notes


#: After a path of :func:`port_path` that a later step reads once per model x fold.
EVERY_JOB = " (each model x fold)"
#: After a path of :func:`port_path` read once per round.
ROUND_NOTES = {"rounds": " (each round)", "extra": " (each round from 2)"}

#: The columns of :func:`table`: step, config sections, files read, files written, other paths
#: the engines pass, fan-out and GPU.
TABLE_COLUMNS = ("step", "config", "reads", "writes (under results)", "other paths", "fan-out", "gpu")


def table_rows() -> list[tuple[str, ...]]:
    """One row per step of :data:`STEPS`, in pipeline order, with the :data:`TABLE_COLUMNS`."""
    def paths(ports: tuple[Port, ...]) -> str:
        return ", ".join(port_path(p) for p in ports)

    def fan_out(s: Step) -> str:
        return " x ".join(["round"] * s.rounds + ["model x fold"] * s.fan_out)

    def sections(s: Step) -> str:  # a switched step says so beside its sections
        return ", ".join(s.sections) + (f" (runs with {s.when})" if s.when else "")

    return [(s.name, sections(s), paths(s.inputs), paths(s.outputs), paths(s.options),
             fan_out(s), "yes" if s.gpu else "") for s in STEPS.values()]


def table(fmt: str = "markdown") -> str:
    """The step table for people (``maskpipe steps``): a Markdown table (``markdown``, the one
    in docs/pipeline.md) or tab-separated values with a header line (``tsv``)."""
    rows = table_rows()
    if fmt == "tsv":
        return "\n".join("\t".join(r) for r in [TABLE_COLUMNS, *rows])
    if fmt != "markdown":
        raise ValueError(f"unknown table format {fmt!r}")

    def cell(text: str) -> str:
        parts = [p.partition(" (") for p in text.split(", ")]  # a path, then its notes
        return ", ".join(f"`{path}`" + sep + rest for path, sep, rest in parts) if text else "–"

    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for name, *rest in rows:
        cells = [cell(c) for c in rest[:4]] + [c or "–" for c in rest[4:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The markers around the step table in a docs page (docs/pipeline.md).
TABLE_START = "<!-- `maskpipe steps` prints this table from the step table;"
TABLE_END = "<!-- end of `maskpipe steps` -->"


def page_with_table(page: str, where: str = "the page") -> str:
    """``page`` (Markdown text) with the step table between its markers replaced by today's
    (``maskpipe steps --write PAGE``)."""
    begin = page.find(TABLE_START)
    start = page.find("\n", begin) + 1 if begin >= 0 else 0
    end = page.find(TABLE_END, start) if begin >= 0 and start > 0 else -1
    if end < 0:
        raise ValueError(f"{where}: no step table between the markers {TABLE_START!r}... (a line of its "
                         f"own) and {TABLE_END!r}")
    return page[:start] + "\n" + table() + "\n\n" + page[end:]
