"""The simple chat engines behind CHAT_MODE."""

from __future__ import annotations

import pytest

from twilio_chat.replies.engines import EchoEngine, KeywordsEngine, build_chat_engine


def test_echo_engine_echoes_the_trimmed_text() -> None:
    assert EchoEngine().reply("  Hello there \n") == "Echo: Hello there"


@pytest.mark.parametrize("body", ["", "   ", "\n\t"])
def test_echo_engine_does_not_answer_an_empty_text(body: str) -> None:
    assert EchoEngine().reply(body) is None


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        ("HOURS", KeywordsEngine.ANSWERS["hours"]),
        ("What are your hours?", KeywordsEngine.ANSWERS["hours"]),
        ("price!", KeywordsEngine.ANSWERS["price"]),
        ("Hello", KeywordsEngine.ANSWERS["hello"]),
        ("hi", KeywordsEngine.ANSWERS["hi"]),
    ],
)
def test_keywords_engine_answers_known_words(body: str, answer: str) -> None:
    assert KeywordsEngine().reply(body) == answer


def test_keywords_engine_uses_the_first_known_word() -> None:
    assert KeywordsEngine().reply("price and hours") == KeywordsEngine.ANSWERS["price"]


@pytest.mark.parametrize("body", ["Something else", "this is it", "shipping", ""])
def test_keywords_engine_answers_other_texts_with_the_help_line(body: str) -> None:
    # "this" and "shipping" contain "hi" but are not the word "hi".
    assert KeywordsEngine().reply(body) == KeywordsEngine.DEFAULT


@pytest.mark.parametrize(
    ("body", "word"),
    [("Hello, is anyone there", "hello"), ("Your hours.", "hours"), ("price?!", "price")],
)
def test_keywords_engine_ignores_trailing_punctuation(body: str, word: str) -> None:
    assert KeywordsEngine().reply(body) == KeywordsEngine.ANSWERS[word]


def test_build_chat_engine_returns_the_named_engine() -> None:
    assert isinstance(build_chat_engine("echo"), EchoEngine)
    assert isinstance(build_chat_engine("keywords"), KeywordsEngine)


def test_build_chat_engine_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="CHAT_MODE"):
        build_chat_engine("parrot")
