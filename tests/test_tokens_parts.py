"""Token counts of content parts: one rule per medium, never below what OpenAI or Anthropic
charge where the part says enough, a fixed estimate where it does not."""

from __future__ import annotations

import base64
import io
import json
import math
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convodb._parts import (
    AudioPart,
    FilePart,
    ImagePart,
    Part,
    ProviderItemPart,
    ReasoningPart,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
)
from convodb.tokens import (
    AUDIO_ESTIMATE,
    AUDIO_TOKENS_PER_SECOND,
    DOCUMENT_ESTIMATE,
    IMAGE_ESTIMATE,
    MESSAGE_OVERHEAD,
    PDF_PAGE_TOKENS,
    REASONING_ESTIMATE,
    TEXT_COUNT_LIMIT,
    EstimateCounter,
)

COUNTER = EstimateCounter()
DIGEST = "ab" * 32


@dataclass(frozen=True)
class Message:
    role: str
    content: str | Sequence[Part] | None
    tool_call_id: str | None = None
    tool_name: str | None = None


def cost(*parts: Part) -> int:
    """Tokens the parts cost in a message, without the message's own overhead."""
    return COUNTER.count_message(Message("user", parts)) - MESSAGE_OVERHEAD


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- images ---------------------------------------------------------------------------------


def stored_image(width: int, height: int, detail: Any = None) -> ImagePart:
    return ImagePart(
        media_type="image/png",
        attachment=DIGEST,
        size=50_000,
        width=width,
        height=height,
        detail=detail,
    )


@pytest.mark.parametrize(
    ("width", "height", "detail", "expected"),
    [
        # OpenAI: 768 x 768, 4 tiles: 85 + 680 = 765. Anthropic: 1048576 / 750 = 1398.1.
        (1024, 1024, None, 1399),
        (1024, 1024, "high", 1399),
        # OpenAI 85 + 170 for one tile; Anthropic 10000 / 750 = 13.3.
        (100, 100, "auto", 255),
        # Low detail is 85 at OpenAI; Anthropic takes no detail.
        (100, 100, "low", 85),
        (1024, 1024, "low", 1399),
        # OpenAI: fit 2048 -> 1024 x 2048, short side 768 -> 768 x 1536, 6 tiles: 1105.
        # Anthropic: long side 1568 -> 784 x 1568: 1229312 / 750 = 1639.1.
        (2048, 4096, None, 1640),
        (4096, 2048, None, 1640),
        # OpenAI: 768 x 2048 is 8 tiles, its most: 1445. Anthropic: long side 1568 -> 588 x
        # 1568 = 921984 pixels, 1229.3.
        (768, 2048, None, 1445),
        # Anthropic scales 1568 x 1568 to about 1.15 megapixels: at most IMAGE_ESTIMATE.
        (1568, 1568, None, 1640),
        # OpenAI: 1 x 2048 is one column of 4 tiles: 765. Anthropic: 2048 / 750 -> 3.
        (1, 2048, None, 765),
    ],
)
def test_image_of_known_size_costs_the_larger_rule(
    width: int, height: int, detail: Any, expected: int
) -> None:
    assert cost(stored_image(width, height, detail)) == expected


@pytest.mark.parametrize(
    "part",
    [
        ImagePart(url="https://example.com/cat.png"),
        ImagePart(url="https://example.com/cat.png", detail="low"),
        ImagePart(file_id="file-abc123"),
        ImagePart(media_type="image/jpeg", attachment=DIGEST, size=300),  # header unreadable
        ImagePart(media_type="image/png", attachment=DIGEST, size=300, width=640),
    ],
)
def test_image_of_unknown_size_costs_the_fixed_estimate(part: ImagePart) -> None:
    assert cost(part) == IMAGE_ESTIMATE == 1640


def test_image_estimate_is_the_most_either_rule_gives() -> None:
    sides = [1, 100, 511, 512, 513, 768, 784, 1024, 1092, 1568, 2048, 4096, 8000, 65_535]
    assert max(cost(stored_image(w, h)) for w in sides for h in sides) == IMAGE_ESTIMATE


def openai_reference(width: int, height: int, detail: str | None) -> int:
    """OpenAI's published rule, computed as its documentation reads: floating point, the
    scaled sides rounded to whole pixels."""
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return 85 + 170 * math.ceil(round(w) / 512) * math.ceil(round(h) / 512)


def anthropic_reference(width: int, height: int) -> int:
    """Anthropic's published rule: scaled to a long side of 1568 and to 1.15 megapixels,
    sides rounded, width x height / 750 rounded."""
    w, h = float(width), float(height)
    if max(w, h) > 1568:
        w, h = w * 1568 / max(w, h), h * 1568 / max(w, h)
    if w * h > 1_150_000:
        factor = (1_150_000 / (w * h)) ** 0.5
        w, h = w * factor, h * factor
    return round(round(w) * round(h) / 750)


@given(
    st.integers(1, 20_000),
    st.integers(1, 20_000),
    st.sampled_from([None, "auto", "low", "high"]),
)
def test_image_never_costs_less_than_either_provider_says(
    width: int, height: int, detail: Any
) -> None:
    tokens = cost(stored_image(width, height, detail))
    assert tokens >= openai_reference(width, height, detail)
    assert tokens >= anthropic_reference(width, height)
    assert tokens <= IMAGE_ESTIMATE


# -- files ----------------------------------------------------------------------------------


def test_pdf_costs_its_pages() -> None:
    report = FilePart(media_type="application/pdf", attachment=DIGEST, size=90_000, pages=3)
    assert PDF_PAGE_TOKENS == 3000 + IMAGE_ESTIMATE
    assert cost(report) == 3 * PDF_PAGE_TOKENS == 13_920


def test_filename_is_counted_with_the_document() -> None:
    report = FilePart(
        media_type="application/pdf", attachment=DIGEST, size=9, pages=1, filename="q3 report.pdf"
    )
    assert cost(report) == PDF_PAGE_TOKENS + COUNTER.count_text("q3 report.pdf")


@pytest.mark.parametrize(
    "part",
    [
        FilePart(media_type="application/pdf", attachment=DIGEST, size=90_000),  # pages unread
        FilePart(url="https://example.com/spec.pdf"),
        FilePart(url="https://example.com/data.csv", media_type="text/csv"),
        FilePart(file_id="file-abc123"),
    ],
)
def test_document_of_unknown_length_costs_the_fixed_estimate(part: FilePart) -> None:
    assert cost(part) == DOCUMENT_ESTIMATE == PDF_PAGE_TOKENS


@pytest.mark.parametrize("media_type", ["text/plain", "text/markdown", "application/json"])
def test_text_document_at_hand_costs_its_text(media_type: str) -> None:
    text = 'Quarterly notes: revenue up 12%, costs flat. {"ok": true}\n' * 20
    part = FilePart(data=b64(text.encode()), media_type=media_type, size=len(text))
    assert cost(part) == COUNTER.count_text(text) < len(text)


def test_stored_text_document_costs_a_token_a_byte() -> None:
    # A byte-level BPE token spans at least one byte: the size bounds the count.
    stored = FilePart(media_type="text/csv", attachment=DIGEST, size=12_345)
    assert cost(stored) == 12_345


def test_text_document_over_the_limit_costs_its_size() -> None:
    text = b"word " * (TEXT_COUNT_LIMIT // 5 + 1)
    part = FilePart(data=b64(text), media_type="text/plain", size=len(text))
    assert cost(part) == len(text)


def test_text_document_with_undecodable_data_costs_its_size() -> None:
    part = FilePart(data="ÿ not base64 ÿ", media_type="text/plain", size=77)
    assert cost(part) == 77


# -- audio ----------------------------------------------------------------------------------


def wav(seconds: float, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(int(seconds * rate) * 2))
    return buffer.getvalue()


def test_wav_at_hand_costs_its_duration_from_its_header() -> None:
    data = wav(3.0, 24_000)  # 48,000 bytes a second, plus a 44-byte header
    part = AudioPart(data=b64(data), format="wav", attachment=DIGEST, size=len(data))
    assert cost(part) == math.ceil(len(data) * AUDIO_TOKENS_PER_SECOND / 48_000) == 61


def test_stored_wav_costs_its_size_at_the_lowest_pcm_rate() -> None:
    # 8,000 bytes a second (8 kHz, 8-bit mono): 96,000 bytes last at most 12 seconds.
    assert cost(AudioPart(format="wav", attachment=DIGEST, size=96_000)) == 12 * 20


def test_mp3_costs_its_size_at_the_lowest_mp3_bitrate() -> None:
    # 8 kbit/s: 16,000 bytes last at most 16 seconds.
    assert cost(AudioPart(format="mp3", attachment=DIGEST, size=16_000)) == 16 * 20


def test_wav_with_an_unreadable_header_costs_its_size_at_the_lowest_rate() -> None:
    part = AudioPart(data=b64(b"RIFF" + bytes(3996)), format="wav", size=4000)
    assert cost(part) == 4000 * 20 // 8000


def test_audio_without_a_size_is_measured_by_its_base64() -> None:
    assert cost(AudioPart(data=b64(bytes(3000)), format="mp3")) == 3 * 20


def test_audio_of_unknown_size_costs_the_fixed_estimate() -> None:
    assert cost(AudioPart(format="mp3")) == AUDIO_ESTIMATE == 60 * AUDIO_TOKENS_PER_SECOND


# -- reasoning and provider items -----------------------------------------------------------


def test_thinking_costs_its_text_and_its_signature() -> None:
    part = ThinkingPart(thinking="Let me add 2 and 2.", signature="EqQBCkgIARABGAIiQL" * 10)
    assert cost(part) == COUNTER.count_text("Let me add 2 and 2.") + 180 // 4


def test_redacted_thinking_costs_a_token_per_four_characters() -> None:
    assert cost(RedactedThinkingPart(data="x" * 1001)) == 251


def test_reasoning_costs_its_summaries_and_its_encrypted_content() -> None:
    part = ReasoningPart(
        id="rs_1", summary=("First, read.", "Then add."), encrypted_content="g" * 400
    )
    summaries = COUNTER.count_text("First, read.") + COUNTER.count_text("Then add.")
    assert cost(part) == summaries + 100


def test_reasoning_without_encrypted_content_costs_an_estimate_for_what_it_hides() -> None:
    part = ReasoningPart(id="rs_1", summary=("Done.",))
    assert cost(part) == COUNTER.count_text("Done.") + REASONING_ESTIMATE


def test_provider_item_costs_its_json() -> None:
    item = {"type": "web_search_call", "id": "ws_1", "status": "completed", "query": "café"}
    part = ProviderItemPart(provider="openai", item=item)
    assert cost(part) == COUNTER.count_text(json.dumps(item, ensure_ascii=False))


# -- messages -------------------------------------------------------------------------------


def test_message_costs_the_sum_of_its_parts() -> None:
    question = "What is in this picture?"
    parts: list[Part] = [TextPart(text=question), stored_image(1024, 1024), FilePart(url="x")]
    total = COUNTER.count_message(Message("user", parts))
    assert total == MESSAGE_OVERHEAD + COUNTER.count_text(question) + 1399 + DOCUMENT_ESTIMATE


def test_text_parts_cost_their_text() -> None:
    assert cost(TextPart(text="Hello there")) == COUNTER.count_text("Hello there")


def test_objects_that_are_no_convodb_part() -> None:
    @dataclass
    class Note:
        text: str

    assert cost(cast(Any, Note("Hello there"))) == COUNTER.count_text("Hello there")
    assert cost(cast(Any, {"type": "video"})) == DOCUMENT_ESTIMATE
    assert cost(cast(Any, {"type": "image", "colour": "red"})) == DOCUMENT_ESTIMATE


def test_parts_as_dicts_cost_what_the_parts_cost() -> None:
    # A NewMessage may hold its parts as dicts (as an HTTP body or a from_* format gives them).
    image = {"type": "image", "url": "https://example.com/a.png"}
    assert cost(cast(Any, image)) == cost(ImagePart(url="https://example.com/a.png"))
    text = {"type": "text", "text": "Hello there"}
    assert cost(cast(Any, text)) == COUNTER.count_text("Hello there")


@given(
    st.one_of(
        st.builds(ImagePart, width=st.integers(-5, 10**9), height=st.integers(-5, 10**9)),
        st.builds(
            FilePart,
            data=st.none() | st.text(max_size=50),
            media_type=st.sampled_from([None, "application/pdf", "text/plain", "text/csv"]),
            size=st.none() | st.integers(0, 10**9),
            pages=st.none() | st.integers(-3, 10**6),
        ),
        st.builds(
            AudioPart,
            data=st.none() | st.text(max_size=50),
            format=st.sampled_from([None, "wav", "mp3"]),
            size=st.none() | st.integers(0, 10**9),
        ),
    )
)
def test_any_media_part_is_counted_without_error(part: Part) -> None:
    assert cost(part) >= 0
