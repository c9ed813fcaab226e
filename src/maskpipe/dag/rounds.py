"""Pseudo-label rounds of a config: which rounds it has, which models they train again, and in
which round's folder a port lives.

Round 1 is the plain pipeline. Each round 2 .. ``pseudo.rounds`` + 1 labels the eval photos the
previous round's ensemble is sure of, then trains, predicts and ensembles again
(:data:`maskpipe.dag.table.ROUND_STEPS`), its files in :meth:`Layout.round`'s folder.
"""

from __future__ import annotations

from maskpipe.layout import Layout

#: Where a port lives, by its ``round``: "" the plain pipeline's files (round 1); "this" the
#: job's round (an ``every_job`` port: for a model ``pseudo.models`` leaves out, its round-1
#: files, as it is never trained again); "previous" the round before the job's; "last" the last
#: round (round 1 without pseudo-label rounds); "rounds" one path per round, 1 .. last (none
#: without pseudo-label rounds); "extra" one path per round 2 .. last.
ROUND_KINDS = ("", "this", "previous", "last", "rounds", "extra")


def extra_rounds(raw: dict) -> list[int]:
    """The pseudo-label rounds of a config: 2 .. ``pseudo.rounds`` + 1 (none when it is 0)."""
    return list(range(2, raw["pseudo"]["rounds"] + 2))


def last_round(raw: dict) -> int:
    """The round whose ensemble is submitted: the last pseudo-label round, or 1 without them."""
    return raw["pseudo"]["rounds"] + 1


def retrained(raw: dict) -> list[str]:
    """The models pseudo-label rounds train again (``pseudo.models``; null: every model)."""
    chosen = raw["pseudo"]["models"]
    return list(raw["models"]) if chosen is None else [m for m in raw["models"] if m in chosen]


def round_layouts(kind: str, base: Layout, raw: dict, round: str | int, port: str) -> list[Layout]:
    """The layouts a port of ``kind`` (:data:`ROUND_KINDS`) of a job in ``round`` lives in, for
    config ``raw`` with results ``base``; ``port`` names it in errors."""
    if kind == "previous":
        if not str(round).isdigit():  # an engine pattern: common.smk asks per job instead
            raise ValueError(f"{port}: the previous round of {round!r} needs its number")
        return [base.round(int(round) - 1)]
    extra = extra_rounds(raw)
    return {"": [base], "this": [base.round(round)], "last": [base.round(last_round(raw))],
            "rounds": [base.round(r) for r in ([1, *extra] if extra else [])],
            "extra": [base.round(r) for r in extra]}[kind]
