"""Where every step writes, under the configured results folder.

The steps (:mod:`maskpipe.steps`) name each of their files by these methods, so the
engines, the CLI and the steps cannot disagree about a file's name. Methods called without arguments return Snakemake
wildcard patterns (``{model}``, ``{fold}``); with arguments, concrete paths.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Output paths below ``results``."""

    results: str

    def _p(self, *parts: str) -> str:
        return "/".join([self.results.rstrip("/"), *parts])

    def file(self, *parts: str) -> str:
        """A file below the results that no method here names: a new step's own (its port:
        ``layout_port(NAME, "file", "folder", "name.csv", ...)``)."""
        return self._p(*parts)

    def round(self, number: str | int = "{round}") -> Layout:
        """Pseudo-label round ``number`` (2, 3, ...): its models, predictions, ensemble and
        pseudo-labels live in a folder of their own; round 1 is this layout itself."""
        return self if str(number) == "1" else Layout(self._p(f"round{number}"))

    # validate
    def manifest(self, split: str = "{split}") -> str:
        return self._p("manifest", f"{split}.csv")

    # crop
    def crop_dir(self) -> str:
        return self._p("crops")

    def crops(self, split: str = "{split}") -> str:
        return f"{self.crop_dir()}/{split}.npy"

    def crop_index(self, split: str = "{split}") -> str:
        return f"{self.crop_dir()}/{split}.csv"

    def crop_sheet(self, name: str) -> str:
        """Contact sheets: ``sample`` (random crops) and ``fallbacks`` (crops without a detection)."""
        return f"{self.crop_dir()}/{name}.png"

    def crop_cache(self) -> str:
        """Detection cache; deliberately not a declared output, so no engine deletes it."""
        return self._p("cache", "boxes")

    # persons
    def persons_groups(self) -> str:
        return self._p("persons", "groups.csv")

    # teacher
    def teacher_estimates(self, split: str = "{split}") -> str:
        return self._p("teacher", f"{split}.csv")

    def teacher_cache(self) -> str:
        """Estimate cache; like the crop step's, not a declared output, so no engine deletes it."""
        return self._p("cache", "teacher")

    # labels
    def labels(self) -> str:
        return self._p("labels", "train.csv")

    def corrections_applied(self) -> str:
        return self._p("labels", "corrections_applied.csv")

    # folds
    def folds(self) -> str:
        return self._p("folds", "folds.csv")

    # train
    def model_dir(self, model: str = "{model}", fold: str | int = "{fold}") -> str:
        return self._p("models", model, f"fold{fold}")

    def checkpoint(self, model: str = "{model}", fold: str | int = "{fold}") -> str:
        return f"{self.model_dir(model, fold)}/checkpoint.pt"

    def train_metrics(self, model: str = "{model}", fold: str | int = "{fold}") -> str:
        return f"{self.model_dir(model, fold)}/metrics.json"

    def tensorboard(self, model: str = "{model}", fold: str | int = "{fold}") -> str:
        return f"{self.model_dir(model, fold)}/tensorboard"

    def resume(self, model: str = "{model}", fold: str | int = "{fold}") -> str:
        """A training job's state after each epoch; deliberately not a declared output, so no
        engine deletes it before a killed job's rerun."""
        return f"{self.model_dir(model, fold)}/resume.pt"

    # predict
    def oof(self, model: str = "{model}", fold: str | int = "{fold}") -> str:
        return self._p("predictions", model, f"fold{fold}", "oof.csv")

    def test_probs(self, model: str = "{model}", fold: str | int = "{fold}") -> str:
        return self._p("predictions", model, f"fold{fold}", "test.csv")

    # ensemble
    def ensemble_oof(self) -> str:
        return self._p("ensemble", "oof.csv")

    def ensemble_test(self) -> str:
        return self._p("ensemble", "test.csv")

    def ensemble_scores(self) -> str:
        return self._p("ensemble", "scores.csv")

    def metrics(self) -> str:
        return self._p("ensemble", "metrics.json")

    # pseudo (in a round's layout: round(2).pseudo_labels())
    def pseudo_labels(self) -> str:
        return self._p("pseudo", "labels.csv")

    def pseudo_summary(self) -> str:
        return self._p("pseudo", "summary.json")

    # mislabels
    def mislabels_suspects(self) -> str:
        return self._p("mislabels", "suspects.csv")

    def mislabels_review(self) -> str:
        return self._p("mislabels", "review.html")

    def mislabels_summary(self) -> str:
        return self._p("mislabels", "summary.json")

    # submission, report
    def submission(self) -> str:
        return self._p("submission.csv")

    def report(self) -> str:
        return self._p("report.html")

    def report_figures(self) -> str:
        """The report's figures as PNG files (a folder), for ``snakemake --report`` and DVC."""
        return self._p("report", "figures")

    def report_history(self) -> str:
        """Every model x fold's per-epoch scalars in one table, for ``dvc plots``."""
        return self._p("report", "history.csv")

    def log(self, step: str, *wildcards: str | int) -> str:
        name = "-".join([step, *map(str, wildcards)]) if wildcards else step
        return self._p("logs", f"{name}.log")
