"""Cost estimates before a call and costs after it, for tokens, images, seconds and characters."""

from __future__ import annotations

import pytest
from support.standin_apis import tiny_wav

from mediaconduit_worker import Audio, Image, Text
from mediaconduit_worker.pricing import DEFAULT_OUTPUT_TOKENS, actual_usd, cost_record, estimate_usd, job_size

CHAT = {"prompt": 1e-6, "completion": 2e-6, "currency": "USD"}


def test_job_size_counts_characters_and_estimates_tokens():
    size = job_size("x" * 40, {"systemPrompt": "y" * 8, "maxOutputTokens": 100})
    assert (size.characters, size.input_tokens, size.output_tokens, size.tokens) == (40, 12, 100, 112)
    assert job_size([Text.from_string("abcd"), "efgh"], None).input_tokens == 2
    assert job_size("hi", {}).output_tokens == DEFAULT_OUTPUT_TOKENS
    assert job_size("a cat", {"n": 3}).images == 3
    assert job_size(Audio.from_bytes(tiny_wav(seconds=2.0), "audio/wav"), {}).seconds == pytest.approx(2.0)


def test_estimates_by_what_the_model_is_priced_on():
    size = job_size("x" * 40, {"maxOutputTokens": 100})
    assert estimate_usd(CHAT, size, "text") == pytest.approx(10 * 1e-6 + 100 * 2e-6)
    assert estimate_usd({"per_image": 0.04, "request": 0.001}, job_size("a cat", {"n": 2}), "image") == pytest.approx(0.081)
    speech = job_size("x" * 150, {})
    assert estimate_usd({"per_character": 15e-6}, speech, "audio") == pytest.approx(150 * 15e-6)
    assert estimate_usd({"per_second": 0.01}, speech, "audio") == pytest.approx(0.1)  # 150 characters: ~10 s of speech
    assert estimate_usd({"per_second": 0.01}, job_size("calm piano", {"duration": 8}), "audio") == pytest.approx(0.08)
    assert estimate_usd({"per_second": 0.01}, job_size("a fox", {}), "image") is None  # billed by compute time: unknown
    assert estimate_usd({"prompt": 0, "completion": 0}, size, "text") == 0.0  # a free model is priced
    assert estimate_usd(None, size, "text") is None and estimate_usd({"currency": "USD"}, size, "text") is None


def test_actual_cost_from_reported_usage_the_api_or_the_estimate():
    size = job_size("x" * 40, {"maxOutputTokens": 100})
    out = Text.from_string("ok", metadata={"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
    assert actual_usd(CHAT, out, size, 0.5) == (pytest.approx(20e-6), "pricing")
    reported = Text.from_string("ok", metadata={"cost": {"total": 0.0042, "currency": "USD", "source": "api"}})
    assert actual_usd(CHAT, reported, size, 0.5) == (0.0042, "api")
    own = Text.from_string("ok", metadata={"cost": {"total": 0.003, "source": "pricing", "predict_time": 2.0}})
    assert actual_usd({"per_second": 0.0015}, own, size, None) == (0.003, "pricing")  # the provider knew the seconds
    assert actual_usd(CHAT, Text.from_string("no usage"), size, 0.5) == (0.5, "estimate")
    assert actual_usd(None, Text.from_string("ok"), size, None) == (None, "unpriced")

    wav = Audio.from_bytes(tiny_wav(seconds=3.0), "audio/wav")
    assert actual_usd({"per_second": 0.01}, wav, job_size("hello", {}), None) == (pytest.approx(0.03), "pricing")
    speech = Audio.from_bytes(b"ID3fake", "audio/mpeg", metadata={"usage": {"characters": 120}})
    assert actual_usd({"per_character": 1e-5}, speech, job_size("x" * 99, {}), None) == (pytest.approx(0.0012), "pricing")
    image = Image.from_bytes(b"\x89PNG\r\n\x1a\nfake", "image/png")
    assert actual_usd({"per_image": 0.0027}, image, job_size("a cat", {}), None) == (0.0027, "pricing")


def test_cost_record_keeps_the_earlier_total_field():
    assert cost_record(0.2, 0.1, "pricing") == {"estimated_usd": 0.2, "usd": 0.1, "total": 0.1, "currency": "USD",
                                                "source": "pricing"}
