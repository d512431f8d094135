"""The import contracts of pyproject.toml hold, and `make lint` would fail on an import that points up.

Each planted violation is written into a copy of the three packages (never into
the checkout) and the contract command `make lint` runs, ``lint-imports``, is
run in that copy: it must fail and name the planted import.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]


def lint(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT_IMPORTS, cwd=folder, capture_output=True, text=True, timeout=120)


def copy_of_the_code(tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    for package in ("jobs", "udfs", "schemas"):
        shutil.copytree(REPO / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", folder / "pyproject.toml")
    return folder


def test_make_lint_checks_the_import_contracts():
    recipe = (REPO / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "lint-imports" in recipe


def test_the_checkout_keeps_every_contract(tmp_path):
    done = lint(copy_of_the_code(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout and "4 kept" in done.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("udfs/image.py", "from jobs import pipeline", "packages:"),
        ("schemas/reasons.py", "import udfs.grounding", "packages:"),
        ("jobs/stages/text.py", "from jobs import pipeline", "jobs:"),
        ("jobs/storage.py", "from jobs.stages import dedup", "jobs:"),
        ("jobs/stages/dedup.py", "from jobs.stages import ground", "stages:"),
        ("jobs/stages/ground.py", "from jobs.demo import shapes", "demo:"),
    ],
)
def test_an_import_that_points_up_breaks_a_contract(tmp_path, module, planted, contract):
    folder = copy_of_the_code(tmp_path)
    with open(folder / module, "a", encoding="utf-8") as f:
        f.write(f"\n{planted}  # planted by tests/test_architecture.py\n")
    done = lint(folder)
    assert done.returncode != 0, done.stdout[-3000:]
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), done.stdout[-3000:]
    importer = module.removesuffix(".py").replace("/", ".")
    assert importer in done.stdout
