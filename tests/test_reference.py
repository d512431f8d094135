"""The generated references match the code, and every row of the rules table points at real code and tests.

deploy/winnow.toml, docs/config.md and docs/rules.md are generated (``make docs``,
i.e. ``winnow config --defaults / --reference / --rules``); a stale committed copy
fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

from jobs import cli, reference
from jobs.config import default_config, load_config, sections
from jobs.stages import STAGES
from schemas import reasons

REPO = Path(__file__).resolve().parent.parent
KNOWN_CODES = {c for codes in reasons.REASONS.values() for c in codes} | set(reasons.BOX_REASONS)


@pytest.mark.parametrize(
    ("path", "generate"),
    [
        ("deploy/winnow.toml", reference.defaults_toml),
        ("docs/config.md", reference.config_markdown),
        ("docs/rules.md", reference.rules_markdown),
    ],
)
def test_committed_copy_is_what_the_code_generates(path, generate):
    committed = (REPO / path).read_text(encoding="utf-8")
    assert committed == generate(), f"{path} is stale: run `make docs`"


@pytest.mark.parametrize(
    ("flag", "generate"), [("--defaults", reference.defaults_toml), ("--rules", reference.rules_markdown)]
)
def test_winnow_config_prints_the_reference(capsys, flag, generate):
    assert cli.main(["config", flag]) == 0
    assert capsys.readouterr().out == generate()


def test_generated_toml_loads_as_the_defaults(tmp_path):
    path = tmp_path / "winnow.toml"
    path.write_text(reference.defaults_toml(), encoding="utf-8")
    assert load_config(path) == default_config()


def test_every_key_is_documented_where_it_is_typed():
    for name, section in sections().items():
        docs = reference.key_docs(section)
        missing = [f.name for f in dataclasses.fields(section) if not docs.get(f.name)]
        assert not missing, f"[{name}] ({section.__module__}) has keys without a docstring: {missing}"
        assert reference.section_doc(section), f"[{name}] has no class docstring"


def test_the_reference_names_every_key_and_where_its_section_lives():
    text = reference.config_markdown()
    for name, table in default_config().to_dict().items():
        assert f"## [{name}]" in text
        assert f"`{sections()[name].__module__.replace('.', '/')}.py`" in text
        for key in table:
            assert f"| `{name}.{key}` |" in text


def _defines(path: Path, qualname: str) -> bool:
    """Whether the module at ``path`` defines ``qualname`` (a function, a class or Class.method)."""
    module = importlib.import_module(str(path.with_suffix("")).replace("/", "."))
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return callable(obj)


def _test_names(path: Path) -> set[str]:
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


@pytest.mark.parametrize(("stage", "rule"), reference.all_rules(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_rule_points_at_its_key_code_and_test(stage, rule):
    cfg = default_config().to_dict()
    for key in rule.keys:
        section, name = key.split(".", 1)
        assert name in cfg.get(section, {}), f"{stage}: {rule.rule!r} names {key}, which is no config key"
    assert rule.reason == "" or rule.reason in KNOWN_CODES, rule.reason
    code_file, qualname = rule.code.split(":")
    assert (REPO / code_file).is_file() and _defines(Path(code_file), qualname), rule.code
    test_file, test_name = rule.test.split("::")
    assert test_name in _test_names(Path(test_file)), rule.test


def test_every_stage_has_rules_but_ingest():
    assert [s.name for s in STAGES if not s.rules] == ["ingest"]
