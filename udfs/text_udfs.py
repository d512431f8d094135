"""Spark wrapper of the text rules: one iterator pandas UDF over distinct captions."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql.functions import pandas_udf

from schemas.tables import TEXT_VERDICT
from udfs import resources
from udfs.text_rules import TextRules, judge_captions
from udfs.text_rules_zh import ChineseRules, judge_captions_zh

_VERDICT_COLUMNS = TEXT_VERDICT.fieldNames()


def judge_captions_udf(rules: TextRules | ChineseRules):
    """A pandas UDF (caption, occurrences) -> TEXT_VERDICT struct for ``rules``.

    ``rules`` is plain data shipped with the UDF; the language identifier
    (CLD3 or fastText, ``text.language_id``), spaCy (English) and jieba /
    OpenCC (Chinese) come from ``udfs.resources`` and are loaded once per
    Python worker.
    """

    @pandas_udf(TEXT_VERDICT)
    def judge(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        text = rules.text if isinstance(rules, ChineseRules) else rules.config
        identify = resources.language_ranker(text.language_id, text.language_top_k)
        if isinstance(rules, ChineseRules):
            tools = resources.chinese_tools(rules.zh.convert_traditional)
        else:
            nlp = resources.spacy_pipeline(rules.config.spacy_model)
        for captions, occurrences in batches:
            texts, counts = captions.tolist(), occurrences.tolist()
            if isinstance(rules, ChineseRules):
                verdicts = judge_captions_zh(texts, counts, rules, identify, tools)
            else:
                verdicts = judge_captions(texts, counts, rules, identify, nlp)
            yield pd.DataFrame([v.__dict__ for v in verdicts], columns=_VERDICT_COLUMNS)

    return judge
