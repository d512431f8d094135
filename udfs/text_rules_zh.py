"""Chinese text rules (TaiSu and other Chinese captions) as pure functions: ``text.language = "zh"``.

The same rule order and reason codes as the COYO rules of ``udfs.text_rules``,
cheap first, with Chinese measures:

1. length in characters of the normalised caption (``text_zh.min_chars`` /
   ``max_chars``; Chinese has no spaces, so characters are the unit);
2. words = jieba's segmentation (``jieba.cut``), punctuation and whitespace
   tokens not counted (``text_zh.min_words`` / ``max_words``);
3. NSFW words: the user's Chinese lists (``text_zh.nsfw_word_lists``); no
   list is built in, so without one this rule is off (the job logs it). A
   listed word matches as a substring: Chinese is written without spaces, and
   a word jieba happens to split differently must still be caught;
4. language: CLD3 must say ``zh`` (it does for simplified and traditional
   script alike; Latin-script pinyin is ``zh-Latn`` and is rejected);
5. frequency over the whole input (``text.max_occurrences``, as for English);
6. a noun: ``jieba.posseg`` must tag one word with a noun flag
   (``text_zh.noun_flags``: jieba's n, nr, ns, nt, nz, ng, nrt, nrfg).

Traditional characters: jieba's dictionary is simplified Chinese, and on
traditional text it mis-tags common nouns (貓 "cat" as a verb). With
``text_zh.convert_traditional`` (default on) segmentation, tagging and the
NSFW look-up run on OpenCC's ``t2s`` conversion; the caption itself is kept
as written. t2s maps characters one to one for nearly all text, so the noun
spans index the original caption; when a conversion changes the length the
original is segmented instead.

The noun words found by posseg are written as ``noun_chunk_spans`` (root
lemma = the word, root_pos = jieba's flag) and, unexpanded, as
``ref_exp_spans``, so the columns have the English stage's shape.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas import reasons
from udfs.text_rules import LanguageId, Verdict, check_language_and_frequency

# jieba's noun flags (its dictionary's tag set, ICTCLAS-style).
DEFAULT_NOUN_FLAGS = ("n", "ng", "nr", "nrfg", "nrt", "ns", "nt", "nz")


def is_word(token: str) -> bool:
    """A jieba token that counts as a word: not only whitespace, punctuation or symbols."""
    return any(not (ch.isspace() or unicodedata.category(ch)[0] in "PSZC") for ch in token)


def load_zh_word_list(lines: list[str]) -> tuple[str, ...]:
    """Entries of a Chinese word list (one per line, '#' comments), lower-cased, longest first."""
    entries = {line.split("#", 1)[0].strip().lower() for line in lines}
    return tuple(sorted((e for e in entries if e), key=lambda e: (-len(e), e)))


@functools.cache
def _nsfw_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(re.escape(w) for w in words)) if words else None


def find_zh_nsfw_word(text: str, words: tuple[str, ...]) -> str | None:
    """The first listed word found in ``text`` as a substring (case-insensitive), else None."""
    pattern = _nsfw_pattern(words)
    if pattern is None or not text:
        return None
    found = pattern.search(text.lower())
    return found.group(0) if found else None


@dataclass(frozen=True)
class ChineseRules:
    """Thresholds and word lists of the Chinese rule set, small enough to ship to executors."""

    min_chars: int = 5
    max_chars: int = 256
    min_words: int = 2
    max_words: int = 128
    language: str = "zh"
    min_language_probability: float = 0.0
    max_occurrences: int = 10
    nsfw_words: tuple[str, ...] = ()
    noun_flags: frozenset[str] = frozenset(DEFAULT_NOUN_FLAGS)
    convert_traditional: bool = True

    @classmethod
    def from_config(cls, text: Any, zh: Any, convert: Callable[[str], str] | None = None) -> ChineseRules:
        """From ``jobs.config`` TextConfig (language, frequency) and ChineseTextConfig; lists read here.

        List entries are converted to simplified script with ``convert`` (the
        captions are, before the look-up) so one list catches both scripts.
        """
        lines: list[str] = []
        for path in zh.nsfw_word_lists:
            lines.extend(Path(path).read_text(encoding="utf-8").splitlines())
        if zh.convert_traditional and convert is not None:
            lines = [convert(line) for line in lines]
        return cls(
            min_chars=zh.min_chars,
            max_chars=zh.max_chars,
            min_words=zh.min_words,
            max_words=zh.max_words,
            language=text.language,
            min_language_probability=text.min_language_probability,
            max_occurrences=text.max_occurrences,
            nsfw_words=load_zh_word_list(lines),
            noun_flags=frozenset(zh.noun_flags),
            convert_traditional=zh.convert_traditional,
        )


class ChineseTools:
    """What the rules need per worker: jieba's tokenizer, its POS tagger, OpenCC's t2s (optional)."""

    def __init__(self, tokenizer: Any, tagger: Any, converter: Callable[[str], str] | None) -> None:
        self.tokenizer = tokenizer
        self.tagger = tagger
        self.converter = converter

    def simplified(self, caption: str) -> str:
        """``caption`` in simplified script when conversion is on and keeps its length, else as is."""
        if self.converter is None:
            return caption
        converted = self.converter(caption)
        return converted if len(converted) == len(caption) else caption

    def count_words(self, text: str) -> int:
        return sum(1 for token in self.tokenizer.cut(text) if is_word(token))

    def nouns(self, text: str, flags: frozenset[str]) -> list[tuple[int, int, str, str]]:
        """(start, end, word, flag) of every word posseg tags with one of ``flags``."""
        out = []
        at = 0
        for pair in self.tagger.cut(text):
            word, flag = pair.word, pair.flag
            if flag in flags and is_word(word):
                out.append((at, at + len(word), word, flag))
            at += len(word)
        return out


def check_cheap_rules_zh(
    caption: str, simplified: str, occurrences: int, rules: ChineseRules, tools: ChineseTools, identify: LanguageId
) -> Verdict:
    """Every rule but the noun check, cheapest first; ``reason`` is the first failure."""
    n_chars = len(caption)
    v = Verdict(text_length=n_chars, word_count=0)
    if n_chars < rules.min_chars:
        v.reason, v.detail = reasons.TOO_SHORT, str(n_chars)
        return v
    if n_chars > rules.max_chars:
        v.reason, v.detail = reasons.TOO_LONG, str(n_chars)
        return v
    v.word_count = tools.count_words(simplified)
    if v.word_count < rules.min_words:
        v.reason, v.detail = reasons.TOO_FEW_WORDS, str(v.word_count)
    elif v.word_count > rules.max_words:
        v.reason, v.detail = reasons.TOO_MANY_WORDS, str(v.word_count)
    elif (word := find_zh_nsfw_word(simplified, rules.nsfw_words)) is not None:
        v.reason, v.detail = reasons.NSFW_WORD, word
    else:
        check_language_and_frequency(v, caption, occurrences, rules, identify)
    return v


def judge_captions_zh(
    captions: list[str], occurrences: list[int], rules: ChineseRules, identify: LanguageId, tools: ChineseTools
) -> Iterator[Verdict]:
    """Verdicts for a batch of distinct normalised captions, in order; posseg only on survivors."""
    for caption, n in zip(captions, occurrences, strict=True):
        simplified = tools.simplified(caption) if rules.convert_traditional else caption
        v = check_cheap_rules_zh(caption, simplified, n, rules, tools, identify)
        if v.reason is None:
            nouns = tools.nouns(simplified, rules.noun_flags)
            v.has_noun = bool(nouns)
            v.noun_chunk_spans = [
                {"start": s, "end": e, "root_lemma": caption[s:e], "root_pos": flag} for s, e, _, flag in nouns
            ]
            v.ref_exp_spans = [{"start": s, "end": e} for s, e, _, _ in nouns]
            if not nouns:
                v.reason = reasons.NO_NOUN
        yield v
