"""Every file, module and name the docs and the docstrings point a reader to exists.

Checked: paths such as `udfs/image.py` or `docs/rules.md` in README.md, docs/ and
the code's docstrings and comments; dotted names such as ``jobs.stages.ingest``
or ``udfs.grounding.judge_row`` (a module, then attributes) in README.md, docs/
and the code; and relative links between the docs pages. No page or docstring
points at a design note outside the repository.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
CODE = [p for d in ("jobs", "udfs", "schemas", "bench", "deploy") for p in sorted((REPO / d).rglob("*.py"))]
PATH = re.compile(r"\b((?:jobs|udfs|schemas|deploy|bench|tests|docs)/[\w./-]*\w\.(?:py|md|sh|toml|yaml|json))\b")
DOTTED = re.compile(r"\b((?:jobs|udfs|schemas)(?:\.[A-Za-z_]\w*)+)")
LINK = re.compile(r"\]\(([^)#:]+\.md)(#[\w-]+)?\)")


def _resolves(dotted: str) -> bool:
    """A module, then attributes of it: ``jobs.stages.ground.with_ground_verdicts``."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _files(paths: list[Path]) -> list[tuple[Path, str]]:
    return [(p, p.read_text(encoding="utf-8")) for p in paths]


@pytest.mark.parametrize("path", DOCS + CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_named_files_exist(path: Path):
    text = path.read_text(encoding="utf-8")
    # bench/results/ holds what the benchmarks write (not committed)
    missing = sorted({m for m in PATH.findall(text) if not (REPO / m).exists() and not m.startswith("bench/results/")})
    assert not missing, f"{path.relative_to(REPO)} names files that do not exist: {missing}"
    assert not re.search(r"\b(DESIGN|STYLE)\.md\b", text), f"{path} points to a design note outside the repository"
    if path in DOCS:  # the benchmarks and tests may read the shared test data; a user's page may not
        assert "../shared" not in text, f"{path} points outside the repository"


@pytest.mark.parametrize("path", DOCS + CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_named_modules_and_names_exist(path: Path):
    text = path.read_text(encoding="utf-8")
    # a trailing dot ends a sentence, not a name
    names = {m.rstrip(".") for m in DOTTED.findall(text)}
    missing = sorted(n for n in names if not _resolves(n))
    assert not missing, f"{path.relative_to(REPO)} names modules or attributes that do not exist: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_between_pages_resolve(path: Path):
    text = path.read_text(encoding="utf-8")
    for target, anchor in LINK.findall(text):
        page = (path.parent / target).resolve()
        assert page.is_file(), f"{path.relative_to(REPO)} links to {target}, which does not exist"
        if anchor:
            body = page.read_text(encoding="utf-8")
            slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", body, re.M)} | set(re.findall(r'id="([\w-]+)"', body))
            assert anchor[1:] in slugs, f"{path.relative_to(REPO)} links to {target}{anchor}: no such heading"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")
