import numpy as np
import pandas as pd
import pytest

from maskpipe.cli import main as cli_main
from maskpipe.train.predict import PROB_COLUMNS
from maskpipe.submission import check_submission, make_submission


def probs(keys, classes):
    return pd.concat([pd.DataFrame({"key": keys}),
                      pd.DataFrame(np.eye(18)[classes], columns=PROB_COLUMNS)], axis=1)


MANIFEST = pd.DataFrame({"key": ["b.jpg", "a.jpg", "c.jpg"]})


def test_follows_info_csv_order():
    sub = make_submission(probs(["a.jpg", "b.jpg", "c.jpg"], [1, 2, 17]), MANIFEST)
    assert list(sub["ImageID"]) == ["b.jpg", "a.jpg", "c.jpg"]
    assert list(sub["ans"]) == [2, 1, 17]


@pytest.mark.parametrize("table, message", [
    (probs(["a.jpg", "b.jpg"], [1, 2]), "no prediction for eval image 'c.jpg'"),
    (probs(["a.jpg", "b.jpg", "c.jpg", "a.jpg"], [1, 2, 3, 4]), "predicted more than once"),
    (probs(["a.jpg", "b.jpg", "c.jpg"], [1, 2, 3]).assign(p00=np.nan), "NaN"),
])
def test_broken_predictions_are_rejected(table, message):
    with pytest.raises(Exception, match=message):
        make_submission(table, MANIFEST)


@pytest.mark.parametrize("sub, message", [
    (pd.DataFrame({"ImageID": ["b.jpg", "a.jpg"], "ans": [0, 1]}), "2 rows for 3 eval images"),
    (pd.DataFrame({"ImageID": ["b.jpg", "a.jpg", "a.jpg"], "ans": [0, 1, 2]}), "once each"),
    (pd.DataFrame({"ImageID": ["b.jpg", "a.jpg", "c.jpg"], "ans": [0, 1, 18]}), "integers 0..17"),
    (pd.DataFrame({"ImageID": ["b.jpg", "a.jpg", "c.jpg"], "ans": [0.5, 1, 2]}), "integers 0..17"),
    (pd.DataFrame({"id": ["b.jpg", "a.jpg", "c.jpg"], "ans": [0, 1, 2]}), "columns"),
])
def test_checks(sub, message):
    with pytest.raises(Exception, match=message):
        check_submission(sub, MANIFEST)


def test_cli_writes_nothing_on_error(tmp_path, capsys):
    probs(["a.jpg", "b.jpg"], [1, 2]).to_csv(tmp_path / "p.csv", index=False)
    MANIFEST.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "submission.csv"
    code = cli_main(["submit", "--probs", str(tmp_path / "p.csv"), "--eval-manifest",
                     str(tmp_path / "m.csv"), "--out-submission", str(out)])
    assert code == 1 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "maskpipe submit: error: submission: no prediction for eval image 'c.jpg' (1 missing)"


def test_tiny_run_submission_is_valid(tiny_run):
    _, L = tiny_run
    sub = pd.read_csv(L.submission())
    info = pd.read_csv(L.manifest("eval"))
    assert list(sub.columns) == ["ImageID", "ans"]
    assert list(sub["ImageID"]) == list(info["key"])
    assert sub["ans"].between(0, 17).all()
