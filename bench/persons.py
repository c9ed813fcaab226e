"""Benchmark the persons step and the ensemble options that use it, on a real-faces proving ground.

    maskpipe demo-data --faces ../shared/realfaces/utkface --out D --persons 30 --eval-persons 80
    # run the pipeline on D up to `ensemble` (snakemake or the maskpipe steps), results in R
    python bench/persons.py --data D --results R

Prints (1) the grouping's pairwise precision, recall, F1, the share of persons found whole
against ``D/demo_truth.csv`` and the seconds it took, for the look alone, the face alone and both
(the configured weights), after the seconds reading the features took; (2) with the ensemble's
eval probabilities ``R/ensemble/test.csv``: eval macro F1 (against the truth's ``ans``) without
and with the prior shift and the persons options, how many predictions each changed, and the same
with the true persons as groups (the ceiling of grouping). Run by hand; tests/test_persons.py
checks small cases, tests/test_bench_realfaces.py that this runs and prints its tables.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.classes import PROB_COLUMNS
from maskpipe.config import load_raw
from maskpipe.io import read_csv
from maskpipe.layout import Layout
from maskpipe.metrics import macro_f1
from maskpipe.persons.adjust import adjust_eval
from maskpipe.persons.group import Grouping, group_persons
from maskpipe.demo.truth import score_groups
from maskpipe.persons.eval_photos import read_features
from maskpipe.persons.vote import changes

OPTIONS = [  # name, ensemble.prior_shift, ensemble.persons
    ("per photo", False, {}),
    ("prior shift", True, {}),
    ("pool gender+age", False, {"pool": True}),
    ("pool + 5/1/1 masks", False, {"pool": True, "assign_masks": True}),
    ("prior shift + pool + masks", True, {"pool": True, "assign_masks": True}),
]


def grouping_table(data: Path, layout: Layout, grouping: Grouping) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Scores of the grouping variants; the eval keys (manifest order) and their true persons."""
    manifest = read_csv(layout.manifest("eval"), dtype={"key": str})
    index = read_csv(layout.crop_index("eval"), dtype={"key": str})
    start = time.perf_counter()
    looks, faces = read_features(manifest, data, np.load(layout.crops("eval"), mmap_mode="r"), index)
    print(f"features of {len(manifest)} eval photos (look: the photo read again; face: its crop): "
          f"{time.perf_counter() - start:.1f} s")
    truth = read_csv(data / "demo_truth.csv", dtype={"ImageID": str}).set_index("ImageID")
    persons = truth.loc[manifest["key"], "person"].to_numpy()
    rows, found = [], None
    for name, g in (("look only", replace(grouping, face_weight=0.0)),
                    ("face only", replace(grouping, look_weight=0.0)),
                    ("look + face (config)", grouping)):
        start = time.perf_counter()
        groups, conf = group_persons(looks, faces, g)
        rows.append({"features": name, **score_groups(groups, persons), "mean_confidence": conf.mean(),
                     "grouping_s": time.perf_counter() - start})
        found = pd.DataFrame({"key": manifest["key"], "group": groups,
                              "size": np.bincount(groups)[groups], "confidence": conf})
    return pd.DataFrame(rows), found, persons


def option_table(layout: Layout, truth: pd.DataFrame, groups: dict[str, pd.DataFrame],
                 work: Path) -> pd.DataFrame:
    """Eval macro F1 and changed predictions of each option, with the found and the true groups."""
    test = read_csv(layout.ensemble_test(), dtype={"key": str})
    keys = pd.Index(test["key"])
    probs = test[PROB_COLUMNS].to_numpy()
    y_true = truth.loc[keys, "ans"].to_numpy()
    oof = read_csv(layout.ensemble_oof())
    labels, oof_probs = oof["label"].to_numpy(), oof[PROB_COLUMNS].to_numpy()
    base = probs.argmax(1)
    rows = []
    for source, table in groups.items():
        path = work / f"groups_{source.split()[0]}.csv"
        table.to_csv(path, index=False)
        for name, shift, opts in OPTIONS:
            if source != "found" and not opts:
                continue
            adjusted, info = adjust_eval(probs, keys, labels, path, opts, shift, oof=oof_probs)
            if shift and source == "found" and not opts:
                print(f"prior shift at temperature {info['prior_shift']['temperature']}: "
                      f"{info['prior_shift']['priors']}")
            pred = adjusted.argmax(1)
            rows.append({"groups": source if opts else "-", "option": name,
                         "eval_macro_f1": macro_f1(y_true, pred), **changes(base, pred)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a real-faces demo-data folder")
    ap.add_argument("--results", type=Path, required=True, help="a pipeline run's results on it")
    ap.add_argument("--config", type=Path, nargs="*", default=[Path("config.yaml")],
                    help="config file(s) whose persons section to use")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pd.set_option("display.width", 160)
    layout = Layout(str(args.results))
    grouping = Grouping(**load_raw(args.config)["persons"])
    scores, found, persons = grouping_table(args.data, layout, grouping)
    print(f"grouping {len(found)} eval photos of {len(np.unique(persons))} persons ({grouping}):")
    print(scores.round(4).to_string(index=False))
    if not Path(layout.ensemble_test()).is_file():
        print(f"no {layout.ensemble_test()}: run the pipeline up to ensemble for the F1 table")
        return
    truth = read_csv(args.data / "demo_truth.csv", dtype={"ImageID": str}).set_index("ImageID")
    oracle = found.assign(group=persons, size=7, confidence=1.0)
    work = args.results / "bench_persons"
    work.mkdir(exist_ok=True)
    table = option_table(layout, truth, {"found": found, "true persons": oracle}, work)
    plain = table.loc[table["option"] == "per photo", "eval_macro_f1"].iloc[0]
    table["gain"] = table["eval_macro_f1"] - plain
    print("\neval macro F1 by ensemble option (changed: argmax predictions that differ from per photo):")
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
