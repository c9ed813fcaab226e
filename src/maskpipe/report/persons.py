"""The report's "Eval persons" section: the groups found, what the ensemble's options changed, the
train and estimated eval priors."""

from __future__ import annotations

import pandas as pd

from maskpipe.classes import AGE_NAMES, GENDER_NAMES, MASK_NAMES
from maskpipe.report.inputs import Run
from maskpipe.report.markup import Figures, card, esc, f3, join, pct, table

_CLASS_NAMES = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}


def _groups(groups: pd.DataFrame) -> str:
    sizes = groups.groupby("group").size()
    by_size = sizes.value_counts().sort_index()
    dist = pd.DataFrame({"photos in the group": by_size.index, "groups": by_size.to_numpy(),
                         "photos": by_size.index * by_size.to_numpy()})
    sevens = int((sizes == 7).sum())
    return join(
        '<div class="cards">',
        card("eval photos", f"{len(groups):,}"),
        card("groups", f"{len(sizes):,}", "expected: photos / 7"),
        card("groups of 7", f"{sevens:,}", f"{pct(7 * sevens / max(len(groups), 1))} of the photos"),
        card("mean confidence", f3(float(groups["confidence"].mean()))),
        "</div>",
        table(dist),
    )


def _changed(info: dict) -> pd.DataFrame:
    return pd.DataFrame([{"predictions changed": info.get("changed", 0),
                          **{f"{t} changed": info.get(f"changed_{t}", 0) for t in _CLASS_NAMES}}])


def _priors(info: dict) -> str:
    rows = [{"task": task, "class": name, "train": p["train"][i], "eval (estimated)": p["eval"][i],
             "OOF self-check": p["oof"][i] if "oof" in p else float("nan"),
             "shifted": "yes" if p.get("applied", True) else "no: self-check off"}
            for task, p in info["priors"].items() for i, name in enumerate(_CLASS_NAMES[task])]
    return join("<h3>Prior shift</h3>",
                "<p>Each task's class priors re-estimated on the eval set from the test probabilities "
                "(EM of Saerens, Latinne and Decaestecker, 2002), and the probabilities adjusted to "
                "them. The same EM on the out-of-fold predictions should give the train priors; a "
                "task whose self-check misses them by more than 5 points is not shifted.</p>",
                table(pd.DataFrame(rows), {"train": pct, "eval (estimated)": pct, "OOF self-check": pct}),
                table(_changed(info)))


def section(r: Run, figs: Figures) -> str:
    parts = ["<p>A person's 7 eval photos are one shoot; the <code>persons</code> step groups the eval "
             "photos by the photo's look and the face crop's upper half (docs/persons.md).</p>"]
    parts.append(_groups(r.persons) if r.persons is not None else "<p><i>no persons groups given</i></p>")
    persons = r.metrics.get("persons", {"enabled": False})
    if persons.get("enabled"):
        what = " and ".join(w for w, on in (("gender and age pooled", persons["pool"]),
                                           ("mask states assigned 5/1/1", persons["assign_masks"])) if on)
        parts += [f"<h3>Person-consistent predictions</h3><p>{esc(what)} in "
                  f"{persons['clean_groups']:,} clean groups ({persons['photos_in_clean_groups']:,} photos, "
                  f"every confidence ≥ {persons['min_confidence']}); other photos keep their own "
                  "prediction.</p>", table(_changed(persons))]
    else:
        parts.append("<p>The ensemble does not use the groups (<code>ensemble.persons</code> is off).</p>")
    shift = r.metrics.get("prior_shift", {"enabled": False})
    parts.append(_priors(shift) if shift.get("enabled") else
                 "<p>No prior shift (<code>ensemble.prior_shift</code> is off).</p>")
    return join(*parts)
