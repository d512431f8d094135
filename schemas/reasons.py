"""Reject reason codes, one per rule.

A rejected row carries ``stage`` (one of ``STAGES``) and ``reason`` (one of the
codes below). The codes are part of the output contract: dashboards and
downstream jobs group by them, so a code is never renamed, only added.
"""

from __future__ import annotations

INGEST = "ingest"
TEXT = "text"
STAGES = (INGEST, TEXT)

# ingest: the row cannot become a pair at all
MALFORMED_RECORD = "malformed-record"  # a jsonl line that is not JSON
MISSING_URL = "missing-url"
MISSING_CAPTION = "missing-caption"
MISSING_ID = "missing-id"

# text (COYO text-level rules, in the order they are applied)
TOO_SHORT = "text-too-short"  # length <= 5 characters after normalisation
TOO_LONG = "text-too-long"  # length > 1000 characters
TOO_FEW_WORDS = "text-too-few-words"  # fewer than 3 words
TOO_MANY_WORDS = "text-too-many-words"  # more than 256 words
NSFW_WORD = "text-nsfw-word"  # a word from the NSFW word lists
WRONG_LANGUAGE = "text-wrong-language"  # CLD3's top language is not text.language (en)
TOO_FREQUENT = "text-too-frequent"  # the text occurs more than 10 times in the input
NO_NOUN = "text-no-noun"  # spaCy finds no noun

REASONS = {
    INGEST: (MALFORMED_RECORD, MISSING_URL, MISSING_CAPTION, MISSING_ID),
    TEXT: (
        TOO_SHORT,
        TOO_LONG,
        TOO_FEW_WORDS,
        TOO_MANY_WORDS,
        NSFW_WORD,
        WRONG_LANGUAGE,
        TOO_FREQUENT,
        NO_NOUN,
    ),
}
