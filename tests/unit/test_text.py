"""Text assembly: languages, joining, glossary, repetition loops."""

from __future__ import annotations

import pytest

from scribed import text


def test_language_names() -> None:
    assert text.language_name("auto") is None
    assert text.language_name("yue") == "Cantonese"
    assert text.language_name("Mandarin") == "Chinese"
    assert text.language_name("ENGLISH") == "English"
    assert text.language_code("Cantonese") == "yue"
    with pytest.raises(ValueError, match="unknown language 'klingon'"):
        text.language_name("klingon")


def test_join_cjk_and_latin() -> None:
    assert text.join_texts(["你好", "世界"]) == "你好世界"
    assert text.join_texts(["hello", "world"]) == "hello world"
    assert text.join_texts(["我们用", "Python", "写代码。"]) == "我们用Python写代码。"
    assert text.join_texts(["Done.", "", "  Next  "]) == "Done. Next"


def test_glossary_whole_words_and_cjk_substrings() -> None:
    g = {"open ai": "OpenAI", "chat": "Chat", "阿里巴巴": "阿里"}
    assert text.apply_glossary("we met open ai and Open AI", g) == "we met OpenAI and OpenAI"
    assert text.apply_glossary("chatting about chat", g) == "chatting about Chat"
    assert text.apply_glossary("阿里巴巴集团", g) == "阿里集团"


def test_repetition_loops_collapse_but_normal_speech_stays() -> None:
    looped = "so the plan is " + "thank you " * 30 + "bye"
    out, removed = text.collapse_repetitions(looped)
    assert out == "so the plan is thank you bye" and removed == 58
    out, removed = text.collapse_repetitions("好的" * 20 + "我们开始")
    assert out == "好的我们开始"
    normal = "no no no, that is not what I said"
    assert text.collapse_repetitions(normal) == (normal, 0)


def test_clock_and_sentences() -> None:
    assert text.format_clock(3725.5) == "01:02:05"
    assert text.format_clock(3725.5, millis=True, sep=",") == "01:02:05,500"
    pieces = text.split_sentences("First one. Second one! 第三句。" + "x" * 200)
    assert pieces[:3] == ["First one.", "Second one!", "第三句。"]
    assert all(len(p) <= 84 for p in pieces)
