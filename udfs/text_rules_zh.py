"""Chinese text rules (TaiSu and other Chinese captions) as pure functions: ``text.language = "zh"``.

``ChineseTextConfig`` is the ``[text_zh]`` config section (its fields are the
defaults); the language, its probability and the frequency rule come from
``[text]``. The same rule order and reason codes as the COYO rules of
``udfs.text_rules``, cheap first, with Chinese measures:

1. length in characters of the normalised caption (``text_zh.min_chars`` /
   ``max_chars``; Chinese has no spaces, so characters are the unit);
2. words = jieba's segmentation (``jieba.cut``), punctuation and whitespace
   tokens not counted (``text_zh.min_words`` / ``max_words``);
3. NSFW words: the user's Chinese lists (``text_zh.nsfw_word_lists``); no
   list is built in, so without one this rule is off (the job logs it). A
   listed word matches as a substring: Chinese is written without spaces, and
   a word jieba happens to split differently must still be caught;
4. language: CLD3 must say ``zh`` (it does for simplified and traditional
   script alike; Latin-script pinyin is ``zh-Latn`` and is rejected). Always
   CLD3: fastText's lid.176 calls short Chinese captions Japanese, so
   ``text.language_id = "fasttext"`` with ``zh`` is a config error;
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
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas import reasons
from udfs.text_rules import LanguageId, TextConfig, Verdict, check_language_and_frequency


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
class ChineseTextConfig:
    """``[text_zh]``: the Chinese rule set, used when text.language = "zh" (TaiSu and other Chinese
    captions). Lengths in characters of the normalised caption. Our defaults, not published numbers:
    5 characters is about two or three Chinese words, the shortest useful caption (COYO's "more than
    5 characters" is about one English word); 256 characters is about COYO's 1000 English characters
    in words (a Chinese word is 1.5 to 2 characters, an English one about 5 with its space)."""

    min_chars: int = 5
    """Characters (about two or three Chinese words)."""
    max_chars: int = 256
    """Characters (about COYO's 1000 English characters, in words)."""
    min_words: int = 2
    """jieba words, punctuation not counted: a caption needs more than one word (COYO's third
    English word is often an article, which Chinese lacks)."""
    max_words: int = 128
    """jieba words."""
    noun_flags: tuple[str, ...] = ("n", "ng", "nr", "nrfg", "nrt", "ns", "nt", "nz")
    """jieba.posseg flags that count as "contains a noun" (its noun tags)."""
    nsfw_word_lists: tuple[str, ...] = ()
    """Chinese NSFW word lists (one entry per line, '#' comments), matched as substrings. None is
    built in: with no list the NSFW rule is off for Chinese (the job logs it)."""
    convert_traditional: bool = True
    """Segment, tag and look words up on OpenCC's t2s conversion (jieba's dictionary is simplified
    Chinese); the caption is kept as written."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        for key in ("min_chars", "max_chars", "min_words", "max_words"):
            if getattr(self, key) < 0:
                yield key, "must not be negative"
        if self.min_chars > self.max_chars:
            yield "min_chars", f"{self.min_chars} is above text_zh.max_chars {self.max_chars}"
        if self.min_words > self.max_words:
            yield "min_words", f"{self.min_words} is above text_zh.max_words {self.max_words}"
        if not self.noun_flags:
            yield "noun_flags", "must name at least one jieba flag"
        for flag in self.noun_flags:
            if re.fullmatch(r"[a-z]{1,5}", flag) is None:
                yield "noun_flags", f"{flag!r} is not a jieba flag"
        for path in self.nsfw_word_lists:
            if not Path(path).is_file():
                yield "nsfw_word_lists", f"file not found: {path}"


@dataclass(frozen=True)
class ChineseRules:
    """``[text]`` (language, frequency), ``[text_zh]`` and the Chinese NSFW words: shipped to executors."""

    text: TextConfig = TextConfig(language="zh")
    zh: ChineseTextConfig = ChineseTextConfig()
    nsfw_words: tuple[str, ...] = ()

    @classmethod
    def from_config(
        cls, text: TextConfig, zh: ChineseTextConfig, convert: Callable[[str], str] | None = None
    ) -> ChineseRules:
        """The sections with the word lists read (here, on the driver).

        List entries are converted to simplified script with ``convert`` (the
        captions are, before the look-up) so one list catches both scripts.
        """
        lines: list[str] = []
        for path in zh.nsfw_word_lists:
            lines.extend(Path(path).read_text(encoding="utf-8").splitlines())
        if zh.convert_traditional and convert is not None:
            lines = [convert(line) for line in lines]
        return cls(text, zh, load_zh_word_list(lines))


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

    def nouns(self, text: str, flags: Container[str]) -> list[tuple[int, int, str, str]]:
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
    zh = rules.zh
    n_chars = len(caption)
    v = Verdict(text_length=n_chars, word_count=0)
    if n_chars < zh.min_chars:
        v.reason, v.detail = reasons.TOO_SHORT, str(n_chars)
        return v
    if n_chars > zh.max_chars:
        v.reason, v.detail = reasons.TOO_LONG, str(n_chars)
        return v
    v.word_count = tools.count_words(simplified)
    if v.word_count < zh.min_words:
        v.reason, v.detail = reasons.TOO_FEW_WORDS, str(v.word_count)
    elif v.word_count > zh.max_words:
        v.reason, v.detail = reasons.TOO_MANY_WORDS, str(v.word_count)
    elif (word := find_zh_nsfw_word(simplified, rules.nsfw_words)) is not None:
        v.reason, v.detail = reasons.NSFW_WORD, word
    else:
        check_language_and_frequency(v, caption, occurrences, rules.text, identify)
    return v


def judge_captions_zh(
    captions: list[str], occurrences: list[int], rules: ChineseRules, identify: LanguageId, tools: ChineseTools
) -> Iterator[Verdict]:
    """Verdicts for a batch of distinct normalised captions, in order; posseg only on survivors."""
    for caption, n in zip(captions, occurrences, strict=True):
        simplified = tools.simplified(caption) if rules.zh.convert_traditional else caption
        v = check_cheap_rules_zh(caption, simplified, n, rules, tools, identify)
        if v.reason is None:
            nouns = tools.nouns(simplified, rules.zh.noun_flags)
            v.has_noun = bool(nouns)
            v.noun_chunk_spans = [
                {"start": s, "end": e, "root_lemma": caption[s:e], "root_pos": flag} for s, e, _, flag in nouns
            ]
            v.ref_exp_spans = [{"start": s, "end": e} for s, e, _, _ in nouns]
            if not nouns:
                v.reason = reasons.NO_NOUN
        yield v
