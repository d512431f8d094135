"""The Chinese rule set (text.language = zh): real jieba, posseg, OpenCC and CLD3, then the Spark stage."""

from __future__ import annotations

import pytest

from jobs.config import load_config
from jobs.errors import ConfigError
from jobs.stages.text import rules_from_config, split_text, with_text_verdicts
from schemas import reasons
from udfs import resources
from udfs.text_rules import TextConfig
from udfs.text_rules_zh import (
    ChineseRules,
    ChineseTextConfig,
    find_zh_nsfw_word,
    is_word,
    judge_captions_zh,
    load_zh_word_list,
)


def judge(caption: str, rules: ChineseRules | None = None, occurrences: int = 1):
    rules = rules or ChineseRules()
    tools = resources.chinese_tools(rules.zh.convert_traditional)
    (verdict,) = judge_captions_zh([caption], [occurrences], rules, resources.cld3_languages, tools)
    return verdict


@pytest.mark.parametrize(
    "caption,reason",
    [
        ("一只小猫", reasons.TOO_SHORT),  # 4 characters: below min_chars 5
        ("一只小猫咪", None),  # 5: kept
        ("中华人民共和国", reasons.TOO_FEW_WORDS),  # one jieba word, 7 characters
        ("这是一张照片", None),
        ("非常漂亮而且很好看", reasons.NO_NOUN),  # adverbs and adjectives only
        ("Yi zhi mao zuo zai sha fa shang", reasons.WRONG_LANGUAGE),  # pinyin: CLD3 says zh-Latn
        ("a cat sitting on a red sofa", reasons.WRONG_LANGUAGE),
        ("東京タワーの夜景がきれい", reasons.WRONG_LANGUAGE),  # Japanese
    ],
)
def test_rules_at_their_boundaries(caption, reason):
    v = judge(caption)
    assert v.reason == reason, (caption, v.reason, v.detail)
    if reason is None:
        assert v.language == "zh" and v.has_noun and v.noun_chunk_spans


def test_length_is_counted_in_characters_up_to_max_chars():
    base = "一只猫坐在红色的沙发上。"  # 12 characters, 7 words with the full stop not counted
    rules = ChineseRules(zh=ChineseTextConfig(max_chars=24, max_words=100))
    assert judge(base * 2, rules).reason is None
    v = judge(base * 2 + "猫", rules)
    assert (v.reason, v.detail) == (reasons.TOO_LONG, "25")


def test_words_are_jieba_tokens_without_punctuation():
    v = judge("一只猫坐在红色的沙发上！！！")
    assert v.word_count == 7  # 一只 / 猫 / 坐在 / 红色 / 的 / 沙发 / 上
    rules = ChineseRules(zh=ChineseTextConfig(max_words=6))
    assert (judge("一只猫坐在红色的沙发上", rules).reason, judge("一只猫坐在红色的沙发上", rules).detail) == (
        reasons.TOO_MANY_WORDS,
        "7",
    )
    assert not is_word("！") and not is_word(" ") and is_word("猫") and is_word("iPhone")


def test_mixed_language_follows_cld3():
    # Mostly Chinese with a brand name: Chinese. Half English: CLD3 does not say zh.
    assert judge("新款iPhone手机壳 透明防摔").reason is None
    v = judge("我爱北京天安门 and the great wall of china")
    assert v.reason == reasons.WRONG_LANGUAGE and not v.detail.startswith("zh:")


def test_traditional_script_is_tagged_on_its_simplified_form_and_spans_index_the_original():
    caption = "這是臺北的夜景"
    converted = judge(caption)
    assert converted.reason is None
    spans = {(s["start"], s["end"], s["root_lemma"]) for s in converted.noun_chunk_spans}
    assert (2, 4, "臺北") in spans and (5, 7, "夜景") in spans  # original script, original offsets
    plain = judge(caption, ChineseRules(zh=ChineseTextConfig(convert_traditional=False)))
    assert "臺北" not in {s["root_lemma"] for s in plain.noun_chunk_spans}
    assert converted.ref_exp_spans == [{"start": s["start"], "end": s["end"]} for s in converted.noun_chunk_spans]


def test_nsfw_list_matches_substrings_in_both_scripts(tmp_path):
    listed = tmp_path / "zh.txt"
    listed.write_text("# a user's list\n色情\n賭博\n", encoding="utf-8")
    text = TextConfig(language="zh")
    rules = ChineseRules.from_config(
        text, ChineseTextConfig(nsfw_word_lists=[str(listed)]), resources.traditional_to_simplified()
    )
    assert rules.nsfw_words == ("色情", "赌博")  # the list is converted to simplified script too
    assert (judge("网上色情图片的截图", rules).reason, judge("网上色情图片的截图", rules).detail) == (
        reasons.NSFW_WORD,
        "色情",
    )
    assert judge("澳門賭博網站的廣告", rules).reason == reasons.NSFW_WORD  # traditional caption
    assert judge("一只猫坐在红色的沙发上", rules).reason is None
    assert find_zh_nsfw_word("abc", ()) is None
    assert load_zh_word_list(["  ", "#x", "AbC # note"]) == ("abc",)


def test_no_builtin_chinese_list(caplog):
    rules = rules_from_config(TextConfig(language="zh"), ChineseTextConfig())
    assert isinstance(rules, ChineseRules) and rules.nsfw_words == ()
    assert "NSFW word rule is off" in caplog.text


def test_frequency_rule_is_shared_with_english():
    rules = ChineseRules(text=TextConfig(language="zh", max_occurrences=10))
    assert judge("这是一张照片", rules, occurrences=10).reason is None
    assert judge("这是一张照片", rules, occurrences=11).reason == reasons.TOO_FREQUENT


def test_config_keys_are_checked():
    cfg = load_config(overrides={"text.language": "zh"}, sets=["text_zh.min_chars=3"])
    assert (cfg.text.language, cfg.text_zh.min_chars) == ("zh", 3)
    with pytest.raises(ConfigError, match="text_zh.min_chars"):
        load_config(sets=["text_zh.min_chars=300"])
    with pytest.raises(ConfigError, match="text_zh.noun_flags"):
        load_config(sets=["text_zh.noun_flags=NOUN"])
    with pytest.raises(ConfigError, match="text_zh.nsfw_word_lists"):
        load_config(sets=["text_zh.nsfw_word_lists=/no/such/list.txt"])


@pytest.mark.spark
def test_spark_stage_with_the_chinese_rules(spark):
    rows = [
        (1, "http://x/1", "一只猫坐在红色的沙发上", "d"),
        (2, "http://x/2", "一隻貓坐在紅色的沙發上", "d"),  # traditional
        (3, "http://x/3", "  蓝天  白云下的草地  ", "d"),  # whitespace runs normalised
        (4, "http://x/4", "一只小猫", "d"),
        (5, "http://x/5", "a photo of a cat", "d"),
        (6, "http://x/6", "非常漂亮而且很好看", "d"),
        (7, "http://x/7", None, "d"),
    ] + [(100 + i, f"http://x/r{i}", "重复的图片描述文字", "d") for i in range(11)]
    pairs = spark.createDataFrame(rows, "id long, url string, caption string, dump string")
    rules = rules_from_config(TextConfig(language="zh"), ChineseTextConfig())
    annotated = with_text_verdicts(pairs, rules, 2).persist()
    accepted, rejected = split_text(annotated, pairs.columns)
    kept = {r["id"]: r for r in accepted.collect()}
    assert set(kept) == {1, 2, 3}
    assert kept[3]["caption"] == "蓝天 白云下的草地" and kept[3]["language"] == "zh"
    assert kept[2]["noun_chunk_spans"][0]["root_lemma"] in ("貓", "紅色")
    why = {r["id"]: r["reason"] for r in rejected.collect()}
    assert why[4] == reasons.TOO_SHORT and why[5] == reasons.WRONG_LANGUAGE and why[6] == reasons.NO_NOUN
    assert why[7] == reasons.TOO_SHORT  # a null caption normalises to ""
    assert {why[100 + i] for i in range(11)} == {reasons.TOO_FREQUENT}
    assert len(kept) + len(why) == len(rows)
    annotated.unpersist()
