"""One schema, one loader, one typed config object.

The schema (``schemas/config.schema.yaml``, linked from ``workflow/schemas/``) is validated and
its defaults filled by :func:`load_raw`, which ``workflow/rules/common.smk`` also uses to build
Snakemake's ``config`` from the same files, so Snakemake's ``config`` and maskpipe's
:class:`Config` always agree.

Each step reads only the sections listed for it in the step table (``Step.sections``, :mod:`maskpipe.dag.ports`).
The Snakemake rules and the DVC stages declare exactly those sections as ``params``; that is what
makes "after a config edit, only the steps that read the edited keys run again" true.

A config file may replace a section of the files before it instead of merging into it:
``replace: [models]`` at its top level makes its ``models`` the only ones (a recipe run alone).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from maskpipe.dag.rounds import extra_rounds
from maskpipe.io import MaskpipeError

#: Top-level key of a config file listing the sections it replaces instead of merging into.
REPLACE = "replace"


def schema_path() -> Path:
    """Path of the config schema shipped inside the package."""
    return Path(str(resources.files("maskpipe") / "schemas" / "config.schema.yaml"))


def _schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


def _validator_with_defaults(schema: dict) -> jsonschema.protocols.Validator:
    """A JSON Schema 2020-12 validator that fills ``default`` values, as Snakemake's ``validate`` does."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": set_defaults})
    return cls(schema)


def _error_line(source: str, err: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = list(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, allowed, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        where = f"{key}." if err.absolute_path else ""
        return f"{source}: unknown key {where}{', '.join(hints)}; allowed: {', '.join(allowed)}"
    return f"{source}: {key}: {err.message}"


def validate(raw: dict, source: str = "config") -> dict:
    """Validate a raw config dict against the schema and fill its defaults (in place).

    Raises:
        MaskpipeError: one line naming the first offending key.
    """
    if not isinstance(raw, dict):
        raise MaskpipeError(f"{source}: the config must be a mapping of sections")
    validator = _validator_with_defaults(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise MaskpipeError(_error_line(source, best))
    unknown = sorted(set(raw["ensemble"]["weights"]) - set(raw["models"]))
    if unknown:  # a typo would silently weigh the model 1 (the schema cannot see model names)
        raise MaskpipeError(f"{source}: ensemble.weights: unknown model {unknown[0]!r} "
                            f"(models: {', '.join(raw['models'])})")
    unknown = [m for m in raw["pseudo"]["models"] or [] if m not in raw["models"]]
    if unknown:
        raise MaskpipeError(f"{source}: pseudo.models: {unknown[0]!r} is not a model "
                            f"(models: {', '.join(raw['models'])})")
    return raw


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (how Snakemake merges config files)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_file(base: dict, part: dict, source: str = "config") -> dict:
    """Merge one file's dict over ``base``; the sections its ``replace:`` lists replace base's."""
    part = dict(part)
    replace = part.pop(REPLACE, [])
    if not isinstance(replace, list) or not all(isinstance(k, str) and k in part for k in replace):
        raise MaskpipeError(f"{source}: {REPLACE}: must list top-level sections this file sets, "
                            f"found {replace!r}")
    return merge({k: v for k, v in base.items() if k not in replace}, part)


def load_raw(paths: str | Path | Iterable[str | Path]) -> dict:
    """Read, merge (later files win; ``replace:`` sections replace), validate and default one or
    more YAML config files."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    raw: dict = {}
    names = []
    for path in map(Path, paths):
        names.append(str(path))
        if not path.is_file():
            raise MaskpipeError(f"{path}: config file not found")
        try:
            part = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise MaskpipeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(part, dict):
            raise MaskpipeError(f"{path}: the config must be a mapping of sections")
        raw = merge_file(raw, part, str(path))
    return validate(raw, source=" + ".join(names))


def section(raw: dict, name: str) -> Any:
    """A dotted section of a validated config, e.g. ``models.effb0``."""
    node: Any = raw
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise MaskpipeError(f"config: no section {name!r}")
        node = node[part]
    return node


def step_params(raw: dict, sections: Iterable[str], **wildcards: str) -> dict[str, Any]:
    """The ``sections`` a step reads (its ``Step.sections``; ``{model}`` filled from
    ``wildcards``), keyed by dotted name: what its rule and stage declare."""
    names = [s.format(**wildcards) for s in sections]
    return {name: copy.deepcopy(section(raw, name)) for name in names}


def as_hw(size: int | list[int]) -> tuple[int, int]:
    """``[height, width]`` from a size that may be a single number."""
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class Config:
    """A validated config: the raw dict plus typed access to what every step needs."""

    raw: dict

    @classmethod
    def load(cls, paths: str | Path | Iterable[str | Path]) -> Config:
        return cls(load_raw(paths))

    @property
    def results(self) -> Path:
        return Path(self.raw["results"])

    @property
    def models(self) -> list[str]:
        return list(self.raw["models"])

    @property
    def folds(self) -> list[int]:
        return list(range(self.raw["folds"]["k"]))

    @property
    def rounds(self) -> list[int]:
        """The pseudo-label rounds after the first: 2 .. ``pseudo.rounds`` + 1."""
        return extra_rounds(self.raw)

    def model(self, name: str) -> dict:
        if name not in self.raw["models"]:
            known = ", ".join(self.raw["models"])
            raise MaskpipeError(f"config: no model {name!r} under models (known: {known})")
        return self.raw["models"][name]

    @property
    def search(self) -> SearchConfig:
        """The ``search`` section (``maskpipe search``), its base model resolved."""
        return SearchConfig.from_raw(self.raw)


@dataclass(frozen=True)
class SearchConfig:
    """The ``search`` section: which model the trials change, how many, on which folds, and the
    declared space (checked by :func:`maskpipe.search.space.parse_space`)."""

    model: str
    trials: int
    folds: tuple[int, ...]
    seed: int
    parallel: int
    space: dict

    @classmethod
    def from_raw(cls, raw: dict) -> SearchConfig:
        """From a validated config.

        Raises:
            MaskpipeError: ``search.model`` names no model, or a fold is not below ``folds.k``.
        """
        cfg, models = raw["search"], list(raw["models"])
        model = cfg["model"] if cfg["model"] is not None else models[0]
        if model not in models:
            raise MaskpipeError(f"search.model: no model {model!r} under models "
                                f"(known: {', '.join(models)})")
        bad = [f for f in cfg["folds"] if f >= raw["folds"]["k"]]
        if bad:
            raise MaskpipeError(f"search.folds: fold {bad[0]} is not below folds.k ({raw['folds']['k']})")
        return cls(model, cfg["trials"], tuple(cfg["folds"]), cfg["seed"], cfg["parallel"],
                   copy.deepcopy(cfg["space"]))
