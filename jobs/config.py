"""winnow's configuration: one TOML file, one table per config section, every threshold a key.

Each section is a frozen dataclass whose fields are its keys and defaults,
typed once, beside the code that uses them: a stage declares its sections
(``Stage.sections``; ``jobs.stages.STAGES`` lists the stages, and is read
when a config is built, so a stage added there brings its sections), and ``[run]``
(which stages run, how the run is stored) is ``RunConfig`` below. The defaults
are the published values (COYO-700M, GRIT) where there are any;
docs/config.md lists every key (``winnow config --reference`` writes it) and
deploy/winnow.toml has them all (``winnow config --defaults``).

Precedence, lowest first: the defaults, the TOML file (``--config``), the
dedicated CLI flags (``--url-col`` ...), then ``--set section.key=value``
(repeatable). Unknown sections or keys, values of the wrong type and
impossible values (min above max, negative sizes, a stage without what it
needs) are errors that name the key, raised before Spark starts.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from jobs import stages as registry
from jobs.errors import ConfigError, require
from jobs.stage import Config, Stage


def stage_classes() -> tuple[type[Stage], ...]:
    """The stages in pipeline order (``jobs.stages.STAGES``); ingest is the first."""
    return registry.STAGES


def known_stages() -> tuple[str, ...]:
    """The stages --stages may name: every stage but ingest, which always runs first."""
    return tuple(stage.name for stage in stage_classes()[1:])


@dataclass(frozen=True)
class RunConfig:
    """``[run]``: which stages run after ingest, and how the run stores and reports its work."""

    stages: tuple[str, ...] = ("text", "image", "dedup")
    """The stages after ingest (--stages), in the order they run: text, image, score, dedup, ground.
    ground also needs a source of boxes (--boxes), so it is not in the default."""
    arrow_batch_size: int = 5000
    """Rows per Arrow batch sent to Python UDFs (spark.sql.execution.arrow.maxRecordsPerBatch)."""
    report_samples: int = 5
    """Sample rejected rows per (stage, reason) in report/report.html and funnel.json."""
    checkpoints: bool = True
    """Write each stage's verdicts to OUTPUT/_checkpoints/<stage>/ (per dump, fingerprinted), so a
    re-run starts after the last stage whose checkpoint still matches; false: keep them in memory."""
    keep_checkpoints: bool = False
    """Keep a dump's checkpoints after its output is committed (else they are deleted then)."""
    row_group_bytes: int = 32 * 1024 * 1024
    """Parquet row groups winnow writes (checkpoints, outputs) close at about this many bytes, so rows
    with image bytes (img2dataset inputs, image.keep_bytes) are read back a few MB at a time; 0 =
    Parquet's own (128 MiB, checked every 100 rows), which full-size images overflow in a 1 GB heap."""
    lease_timeout: float = 300.0
    """Seconds without a heartbeat after which OUTPUT's lease (one run at a time) is a killed run's and is
    taken over; the holder renews it every tenth of this."""
    progress_seconds: float = 60.0
    """A long stage logs its progress this often: the image stage's rows done of all, images per
    second and an estimate of the time left, from its committed units."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        if self.arrow_batch_size < 1:
            yield "arrow_batch_size", "must be at least 1"
        if self.report_samples < 0:
            yield "report_samples", "must not be negative"
        if self.row_group_bytes != 0 and self.row_group_bytes < 1024 * 1024:
            yield "row_group_bytes", "must be 0 (Parquet's default) or at least 1 MiB (1048576)"
        if not (self.lease_timeout >= 1.0 and math.isfinite(self.lease_timeout)):
            yield "lease_timeout", "must be a finite number of seconds, at least 1"
        if not (self.progress_seconds > 0 and math.isfinite(self.progress_seconds)):
            yield "progress_seconds", "must be a finite number of seconds above 0"


def sections() -> dict[str, type]:
    """Every section: TOML table -> its dataclass, in pipeline order, [run] last."""
    tables = {name: section for stage in stage_classes() for name, section in stage.sections.items()}
    return {**tables, "run": RunConfig}


def default_config() -> Config:
    """Every section at its defaults."""
    return Config({name: section() for name, section in sections().items()})


def field_types(section: type) -> dict[str, Any]:
    """A section's keys and their types (int, float, bool, str or tuple[str, ...])."""
    hints = get_type_hints(section)
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` as ``hint`` or raise ConfigError naming ``key``."""
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint == tuple[str, ...]:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if isinstance(value, str):  # --set text.noun_pos=NOUN,PROPN
            return tuple(v.strip() for v in value.split(",") if v.strip())
    else:  # pragma: no cover - a new field type without a checker
        raise TypeError(f"no type check for {hint}")
    name = "list of strings" if hint == tuple[str, ...] else getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key}: expected {name}, got {type(value).__name__} {value!r}")


# Keys that moved: an old config that sets one gets told where it went, not just "unknown".
MOVED = {
    "image.max_nsfw_score": "moved to score.max_nsfw_score (one NSFW rule; the image stage applies it before fetching)",
    "image.nsfw_score_columns": "removed: every nsfw_score_* column of the input is checked (score.max_nsfw_score)",
}


def _key_type(section: str, key: str) -> Any:
    """The type of ``section.key``, or a ConfigError naming what is known."""
    if f"{section}.{key}" in MOVED:
        raise ConfigError(f"{section}.{key}: {MOVED[f'{section}.{key}']}")
    known = sections()
    if section not in known:
        raise ConfigError(f"unknown config section [{section}] (known: {', '.join(sorted(known))})")
    types = field_types(known[section])
    if key not in types:
        raise ConfigError(f"unknown config key {section}.{key} (known in [{section}]: {', '.join(types)})")
    return types[key]


def _parse_scalar(text: str, hint: Any = None) -> Any:
    """A ``--set`` value: TOML syntax when it parses (8, 0.5, true, [..]), else a string.

    For a string key the text is the value as typed (so ``--set ingest.dump=2024-01``
    is a string, not a TOML date), unless it is quoted.
    """
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if hint is str and not isinstance(value, str):
        return text
    return value


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a [{section}] table, got a value")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Build and check a Config from defaults, a TOML file, flags and ``--set``s.

    ``overrides`` maps ``section.key`` to values from dedicated CLI flags (None: not given).
    """
    tables = sections()
    values: dict[str, dict[str, Any]] = {name: {} for name in tables}

    def apply(section: str, key: str, value: Any) -> None:
        values[section][key] = _check_type(f"{section}.{key}", value, _key_type(section, key))

    for section, table in (_read_toml(path) if path is not None else {}).items():
        for key, value in table.items():
            apply(section, key, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            apply(*dotted.split(".", 1), value)
    for item in sets or []:
        dotted, sep, raw = item.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        section, key = dotted.strip().split(".", 1)
        apply(section, key, _parse_scalar(raw.strip(), _key_type(section, key)))
    cfg = Config({name: section(**values[name]) for name, section in tables.items()})
    check(cfg)
    return cfg


def check(cfg: Config) -> None:
    """Every section's own values, then the stages: known, in order, each with what it needs."""
    for name in cfg.section_names():
        for key, why in getattr(cfg, name).problems():
            raise ConfigError(f"{name}.{key}: {why}")
    stages, known = cfg.run.stages, known_stages()
    require(bool(stages), "run.stages", "must name at least one stage")
    for name in stages:
        require(
            name in known,
            "run.stages",
            f"unknown or not yet available stage {name!r} (available: {', '.join(known)})",
        )
    in_order = [name for name in known if name in stages]
    require(
        list(dict.fromkeys(stages)) == in_order,
        "run.stages",
        f"list the stages in the order they run: {','.join(in_order)}",
    )
    for stage in (cls(cfg) for cls in stage_classes()[1:] if cls.name in stages):
        stage.validate()
        for other, why in stage.needs().items():
            wanted = ",".join(name for name in known if name in stages or name == other)
            require(
                other in stages,
                "run.stages",
                f"{stage.name} needs the {other} stage before it ({why}): --stages {wanted}",
            )
