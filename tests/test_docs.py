"""The docs stay readable and true: a short README, links that resolve, run commands that work.

The tables and examples the pages show are kept true by the tests of what they describe
(test_table.py: the step table in docs/pipeline.md; test_config.py: the real-data config in
docs/real-data.md; test_engines.py: the rerun table in docs/engines.md).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

# [text](target) outside code; images too. Targets with a scheme (https:, mailto:) are not files.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")

# `--resources` with its NAME=VALUE settings, then a word that is no option, comment or
# placeholder: Snakemake 9 reads that word as one more resource and fails ("dictionary update
# sequence element"), so a target must come before `--resources`.
WRONG_ORDER = re.compile(r"--resources((?:[ \t]+[\w.-]+=[^\s`'\",)\]]+)+)[ \t]+([A-Za-z_][\w./-]*)")


def _words(text: str) -> str:
    """A command written as a Python list (`["--resources", "gpu=1"]`) as the words it runs."""
    return re.sub(r"[\"'],[ \t]*[\"']", " ", text)


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans, where links are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text.replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def shipped_files() -> list[Path]:
    """Files git tracks or would track (untracked but not ignored), text only."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the shipped files are git's")
    files = []
    for name in filter(None, listed):
        path = REPO / name
        if path.is_file() and path.suffix not in {".png", ".jpg", ".npy", ".pt", ".lock"}:
            files.append(path)
    return files


def test_readme_is_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to a page in docs/"


def test_every_docs_page_is_listed_in_the_readme():
    listed = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", README.read_text()))
    pages = {p.name for p in PAGES[1:]}
    assert pages <= listed, f"docs pages the README does not link: {sorted(pages - listed)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_slug_is_githubs():
    assert slug("Pretrained weights offline") == "pretrained-weights-offline"
    assert slug("The proving ground (real faces)") == "the-proving-ground-real-faces"
    assert slug("`maskpipe search`") == "maskpipe-search"
    assert slug("From scratch (2026-11-30)") == "from-scratch-2026-11-30"


def test_wrong_resources_order_is_caught():
    """The check itself: a target after the resources is found, the right forms are not."""
    bad = "snakemake --cores 8 " + "--resources gpu=1 " + "submission"
    assert WRONG_ORDER.search(bad)
    assert WRONG_ORDER.search(_words('["--resources", ' + '"gpu=1", "submission"]'))
    for good in [
        "snakemake submission --cores 8 --resources gpu=1",
        "snakemake submission --resources gpu=1  # submission.csv",
        "pass `--resources gpu=N` for N GPUs",
        "--resources gpu=1 -q",
        '"limit concurrent GPU jobs with --resources gpu=N")',
    ]:
        assert not WRONG_ORDER.search(good), good


def test_no_shipped_file_shows_a_target_after_resources():
    """Every place that shows the run command shows a form Snakemake 9 accepts."""
    found = []
    for path in shipped_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(_words(text).splitlines(), start=1):
            m = WRONG_ORDER.search(line)
            if m:
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "write the target before --resources:\n" + "\n".join(found)


def test_the_readme_picture_shows_every_step():
    """The README's pipeline picture is drawn by hand (a generated one shows every file and
    reads worse); each step of the step table must still appear in it, by name."""
    from maskpipe.dag.table import STEPS

    picture = re.search(r"```mermaid\n(.*?)```", README.read_text(), re.S).group(1)
    missing = [name for name in STEPS if not re.search(rf"\b{re.escape(name)}\b", picture)]
    assert not missing, f"README.md's pipeline picture lacks the steps {missing}"
