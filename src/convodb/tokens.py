"""Token counting for history windows: exact with tiktoken's ``o200k_base``, else a safe estimate.

A window that overflows the model's context is rejected by the API, one that underfills it only
wastes a little room, so every counter here errs towards counting too many tokens:

* :class:`TiktokenCounter` counts exactly with a tiktoken encoding, except runs of hundreds of
  characters that tiktoken would take as one piece (its time on those is unbounded): these are
  counted in parts, a little high. :func:`default_counter` uses ``o200k_base`` (GPT-4o and
  later) only when its BPE file is already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``, else
  ``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``) and matches tiktoken's published
  hash: tiktoken would otherwise download the file at run time, which blocks the caller and
  fails on machines without internet access.
* :class:`EstimateCounter` needs nothing. It splits text roughly as ``o200k_base``
  pre-tokenizes it and charges each piece by its length. Calibrated against ``o200k_base`` on
  Python source, English prose and JSON arguments it counts 4-25% more tokens than the real
  encoding and never fewer; text in other scripts is over-counted more (Cyrillic up to ~2x).

Message counts add a fixed overhead per message and per tool call, approximating the framing
tokens chat APIs add; they are budget figures, not billing figures. Providers that tokenize
differently (Anthropic, Gemini) are approximated by the same numbers.

A message whose content is a list of parts (see ``convodb._parts``) costs the sum of its parts,
each by one rule per medium. A message may be sent to OpenAI or to Anthropic, so a medium
costs the larger of the two providers' figures, and where the part does not say enough (an
image by URL, audio without a size) a fixed estimate stands in:

===================== =====================================================================
part                  tokens
===================== =====================================================================
``text``              its text
``thinking``          its text, plus its signature as opaque data (the signature is what
                      the provider reads back, and where the text is a summary of the
                      thinking it may carry the whole)
``redacted_thinking`` its data as opaque data
``reasoning``         its summary texts, plus its encrypted content as opaque data, or
                      :data:`REASONING_ESTIMATE` without it (the provider holds the reasoning)
``provider_item``     its item as JSON text
``image``             with ``width`` and ``height`` (read from the data when stored): the
                      larger of OpenAI's rule and Anthropic's, see below; else
                      :data:`IMAGE_ESTIMATE`, the most either rule gives
``file``              its ``filename``, plus: a PDF with ``pages``, :data:`PDF_PAGE_TOKENS`
                      a page; a text document (``text/*``, ``application/json``) its text
                      when its data is at hand and at most :data:`TEXT_COUNT_LIMIT` bytes,
                      else its ``size``, a token a byte (a token of a byte-level BPE spans at
                      least a byte); else :data:`DOCUMENT_ESTIMATE`
``audio``             :data:`AUDIO_TOKENS_PER_SECOND` for every second it can last: its size
                      over its byte rate (a WAV's from its header, else the lowest rate of
                      its format: 8,000 bytes/s for WAV, 8 kbit/s for MP3); without a size
                      :data:`AUDIO_ESTIMATE`
===================== =====================================================================

Images: OpenAI (GPT-4o, GPT-4.1, o-series) charges 85 tokens at ``detail="low"``; otherwise it
scales the image to fit 2048 x 2048, then so that its short side is at most 768 pixels, and
charges 85 + 170 per 512-pixel tile covering it. Anthropic scales the image to a long side of
at most 1568 pixels and about 1.15 megapixels and charges width x height / 750, at most
:data:`IMAGE_ESTIMATE` (its largest size that is not scaled, 784 x 1568, costs 1,640).
Scaled sides and quotients are rounded up. Opaque data (encrypted, base64) costs one token per
:data:`OPAQUE_CHARS_PER_TOKEN` characters: what it decrypts to is unknown, and this is more
than a token per 4 bytes of it.

These rules can count low for models that charge more per image (gpt-4o-mini charges about
33 times OpenAI's figures; the 32-pixel patch models gpt-4.1-mini, gpt-4.1-nano and o4-mini
up to 2,489-3,779 for a large image) and for a document whose length is unknown (by URL or
``file_id``, or a PDF whose pages could not be counted) and longer than
:data:`DOCUMENT_ESTIMATE`.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from fractions import Fraction
from itertools import pairwise, repeat
from typing import Any, Protocol, runtime_checkable

from ._media import wav_byte_rate
from ._parts import (
    AudioPart,
    FilePart,
    ImagePart,
    ProviderItemPart,
    ReasoningPart,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
    part_from_dict,
)
from ._records import MessageLike, ToolCall

__all__ = [
    "MESSAGE_OVERHEAD",
    "TOOL_CALL_OVERHEAD",
    "EstimateCounter",
    "TiktokenCounter",
    "TokenCounter",
    "default_counter",
]

MESSAGE_OVERHEAD = 4
"""Tokens charged per message for its framing (role and delimiters), as OpenAI's chat format
spends 3-4 per message."""
TOOL_CALL_OVERHEAD = 8
"""Tokens charged per tool call on top of its id, name and arguments (call framing)."""

# OpenAI's image rule (GPT-4o, GPT-4.1, o-series): a base charge, and one per 512-pixel tile
# of the image scaled to fit _OPENAI_FIT square, then to a short side of at most _OPENAI_SHORT.
_OPENAI_BASE = 85
_OPENAI_TILE = 170
_OPENAI_FIT = 2048
_OPENAI_SHORT = 768
# Anthropic's image rule: width x height / 750 of the image scaled to a long side of at most
# _ANTHROPIC_LONG and to about 1.15 megapixels.
_ANTHROPIC_LONG = 1568
_ANTHROPIC_PIXELS_PER_TOKEN = 750

IMAGE_ESTIMATE = 1640
"""Tokens of an image of unknown size (by URL or ``file_id``, or a header convodb could not
read), and the most an image of known size costs: Anthropic's figure for its largest image
that is not scaled down, 784 x 1568 pixels (OpenAI's most is 1,445: 8 tiles, e.g. 768 x 2048)."""
PDF_PAGE_TOKENS = 3000 + IMAGE_ESTIMATE
"""Tokens of a page of a PDF: Anthropic sends each page as its text (1,500 to 3,000 tokens,
by its documentation, for a dense page) and as an image (at most :data:`IMAGE_ESTIMATE`);
OpenAI does the same for models that take images."""
DOCUMENT_ESTIMATE = PDF_PAGE_TOKENS
"""Tokens of a document whose length is unknown (by URL or ``file_id``, or a PDF whose pages
convodb could not count): a PDF page's worth."""
TEXT_COUNT_LIMIT = 1024 * 1024
"""Largest text document counted as text, in bytes (the most a message's text may be by
default); a larger one costs its size, which takes no time to count."""
AUDIO_TOKENS_PER_SECOND = 20
"""Tokens charged per second of audio: twice the rate OpenAI gives for audio input (a token
per 100 ms) in its Realtime API, its rate for audio output, as Chat Completions publishes
none for ``input_audio``."""
AUDIO_ESTIMATE = 60 * AUDIO_TOKENS_PER_SECOND
"""Tokens of audio of unknown size: a minute's."""
_WAV_LOWEST_BYTE_RATE = 8000  # 8 kHz, 8-bit mono PCM (telephone quality)
_MP3_LOWEST_BYTE_RATE = 1000  # 8 kbit/s, the lowest MPEG audio bitrate
_WAV_HEADER_CHARS = 4096  # base64 characters decoded to find a WAV's fmt chunk (3 KiB)
OPAQUE_CHARS_PER_TOKEN = 4
"""Characters of opaque data (a thinking signature, redacted thinking, encrypted reasoning:
base64 of ciphertext) charged as one token, that is a token per 3 bytes it holds."""
REASONING_ESTIMATE = 400
"""Tokens of the reasoning behind a reasoning item sent without its encrypted content (the
provider looks it up by id)."""

_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
# tiktoken_ext.openai_public pins this hash; a cached file that differs is not o200k_base.
_O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens of text and of messages. Implementations must never raise on any ``str``."""

    @property
    def name(self) -> str:
        """Which counter this is, e.g. ``"tiktoken:o200k_base"`` or ``"estimate:o200k_base"``."""
        ...

    def count_text(self, text: str) -> int:
        """Tokens of ``text`` alone."""
        ...

    def count_message(self, message: MessageLike) -> int:
        """Tokens a message costs in a prompt: content, tool calls and per-message overhead."""
        ...


def _call_parts(message: MessageLike) -> Iterable[tuple[str, str, str]]:
    calls: Iterable[ToolCall | Mapping[str, Any]] = getattr(message, "tool_calls", None) or ()
    for call in calls:
        if isinstance(call, ToolCall):
            yield call.id, call.name, call.arguments
        else:
            yield str(call.get("id", "")), str(call.get("name", "")), str(call.get("arguments", ""))


class _MessageCounting:
    """``count_message`` in terms of ``count_text``, shared by the counters below."""

    def count_text(self, text: str) -> int:
        raise NotImplementedError

    def count_message(self, message: MessageLike) -> int:
        """Tokens a message costs in a prompt: content, tool calls and per-message overhead.

        Args:
            message: a :class:`~convodb.StoredMessage`, :class:`~convodb.NewMessage` or any
                object with ``role`` and ``content`` (and optionally ``tool_calls``,
                ``tool_call_id``, ``tool_name``).

        Returns:
            ``MESSAGE_OVERHEAD`` plus the tokens of the content (a list of parts by the
            rules in the module docstring), of the ``tool_call_id`` of a tool result, and
            of each tool call's id, name and arguments plus ``TOOL_CALL_OVERHEAD``.
        """
        total = MESSAGE_OVERHEAD
        content = message.content
        if isinstance(content, str):
            total += self.count_text(content) if content else 0
        elif content:
            total += sum(self._count_part(part) for part in content)
        if message.tool_call_id:
            total += self.count_text(message.tool_call_id)
        for call_id, name, arguments in _call_parts(message):
            total += TOOL_CALL_OVERHEAD + self.count_text(call_id)
            total += self.count_text(name) + self.count_text(arguments)
        return total

    def _count_part(self, part: Any) -> int:
        # The rules of the module docstring, most common parts first.
        if isinstance(part, TextPart):
            return self.count_text(part.text)
        if isinstance(part, ImagePart):
            return _image_tokens(part.width, part.height, part.detail)
        if isinstance(part, ThinkingPart):
            return self.count_text(part.thinking) + _opaque_tokens(part.signature)
        if isinstance(part, ReasoningPart):
            hidden = part.encrypted_content
            summary = sum(map(self.count_text, part.summary))
            return summary + (_opaque_tokens(hidden) if hidden else REASONING_ESTIMATE)
        if isinstance(part, FilePart):
            return self._count_file(part)
        if isinstance(part, AudioPart):
            return _audio_tokens(part)
        if isinstance(part, RedactedThinkingPart):
            return _opaque_tokens(part.data)
        if isinstance(part, ProviderItemPart):
            try:
                item = json.dumps(part.item, ensure_ascii=False, default=str)
            except (TypeError, ValueError):  # not JSON after all (e.g. keys that are tuples)
                item = repr(part.item)
            return self.count_text(item)
        if isinstance(part, Mapping):  # a part as a dict, as a NewMessage may hold it
            try:
                return self._count_part(part_from_dict(part))
            except (KeyError, TypeError, AttributeError):  # not shaped like a part
                pass
        # Not a convodb part: its text if it has one, else the largest fixed estimate.
        text = getattr(part, "text", part.get("text") if isinstance(part, Mapping) else None)
        return self.count_text(text) if isinstance(text, str) else DOCUMENT_ESTIMATE

    def _count_file(self, part: FilePart) -> int:
        total = self.count_text(part.filename) if part.filename else 0
        media_type = part.media_type or ""
        if part.pages is not None:  # set for PDFs only
            return total + max(part.pages, 1) * PDF_PAGE_TOKENS
        if media_type.startswith("text/") or media_type == "application/json":
            text = _small_text(part.data)
            if text is not None:
                return total + self.count_text(text)
            size = _size(part)
            if size is not None:
                return total + size
        return total + DOCUMENT_ESTIMATE


def _image_tokens(width: int | None, height: int | None, detail: str | None) -> int:
    if not width or not height or width < 0 or height < 0:
        return IMAGE_ESTIMATE
    return max(_openai_image_tokens(width, height, detail), _anthropic_image_tokens(width, height))


def _openai_image_tokens(width: int, height: int, detail: str | None) -> int:
    if detail == "low":
        return _OPENAI_BASE
    scale = min(Fraction(1), Fraction(_OPENAI_FIT, max(width, height)))
    short = min(width, height) * scale
    if short > _OPENAI_SHORT:
        scale *= _OPENAI_SHORT / short
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    return _OPENAI_BASE + _OPENAI_TILE * tiles


def _anthropic_image_tokens(width: int, height: int) -> int:
    scale = min(Fraction(1), Fraction(_ANTHROPIC_LONG, max(width, height)))
    pixels = math.ceil(width * scale) * math.ceil(height * scale)
    return min(math.ceil(pixels / _ANTHROPIC_PIXELS_PER_TOKEN), IMAGE_ESTIMATE)


def _opaque_tokens(data: str) -> int:
    return -(-len(data) // OPAQUE_CHARS_PER_TOKEN)


def _small_text(data: str | None) -> str | None:
    """The text a text document's base64 ``data`` holds, when at most TEXT_COUNT_LIMIT bytes."""
    if data is None or len(data) // 4 * 3 > TEXT_COUNT_LIMIT:
        return None
    try:
        raw = binascii.a2b_base64(data)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None
    return raw.decode("utf-8", "replace")


def _size(part: FilePart | AudioPart) -> int | None:
    """Bytes of the part's data: its ``size``, else at most what its base64 can hold."""
    if part.size is not None:
        return max(part.size, 0)
    return len(part.data) // 4 * 3 if part.data else None


def _audio_tokens(part: AudioPart) -> int:
    data, size = part.data, _size(part)
    if size is None:
        return AUDIO_ESTIMATE
    byte_rate = _MP3_LOWEST_BYTE_RATE
    if part.format == "wav":
        header = None
        if data:
            try:
                header = binascii.a2b_base64(data[:_WAV_HEADER_CHARS])
            except (binascii.Error, ValueError):
                header = None
        byte_rate = (wav_byte_rate(header) if header else None) or _WAV_LOWEST_BYTE_RATE
    return -(-size * AUDIO_TOKENS_PER_SECOND // byte_rate)


class TiktokenCounter(_MessageCounting):
    """Exact counts with a tiktoken encoding; a piece too long to count exactly is over-counted.

    ```python
    import tiktoken
    counter = TiktokenCounter(tiktoken.get_encoding("cl100k_base"))
    ```

    Special-token text such as ``<|endoftext|>`` in a message is counted as ordinary text, as
    the APIs treat it.

    tiktoken splits text into pieces (a word, a run of punctuation, a run of whitespace) and
    encodes each piece alone. Before tiktoken 0.13 its time on a piece grows quadratically with
    the piece's length (minutes for 1 MiB of one letter), and its regex engine panics on a
    run of about a million spaces. So text is counted in parts wherever it has a stretch of
    more than :attr:`max_piece` characters without a space, or of whitespace, where a piece
    that long could be. Such a stretch is cut where the pre-tokenizers of ``o200k_base``,
    ``cl100k_base`` and the GPT-2 family always end one piece and begin the next, which keeps
    the count exact; where no such place is near (a long run of one character, CJK text
    without punctuation, a long hex string), inside a piece, and each of those cuts adds two
    tokens: splitting a piece can save a token or two, and the count errs on the high side.
    Text without such stretches is counted exactly, in one call.
    """

    max_piece: int = 512
    """Longest piece counted exactly; longer runs are counted in parts."""

    def __init__(self, encoding: Any) -> None:
        self._encoding = encoding
        self._name = f"tiktoken:{encoding.name}"

    @property
    def name(self) -> str:
        return self._name

    def count_text(self, text: str) -> int:
        encode = self._encoding.encode_ordinary
        if len(text) <= self.max_piece:  # the common case: no piece can be too long
            return len(encode(text))
        parts, forced_cuts = _bounded_parts(text, self.max_piece)
        return sum(len(encode(part)) for part in parts) + _CUT_MARGIN * forced_cuts


# Where the pre-tokenizers of o200k_base, cl100k_base and the GPT-2 family always end one piece
# and begin the next, whatever the text around, so that counting the two sides apart is exact.
# No pattern looks behind, and only whitespace pieces look ahead, so a cut is safe when no
# piece can cross it and no whitespace piece before it can end there:
# - before a space that follows a non-space: only a piece's first character may be a space;
# - after a line break that follows a non-space, before a non-space other than "/": a run of
#   punctuation takes the line breaks (and slashes) after it, a whitespace piece ends there;
# - after a letter or digit, before a line break or a punctuation mark other than "'" (which
#   begins the "'s" of "it's"): letters, digits and punctuation make pieces of their own. The
#   marks are ASCII and the common general, CJK and fullwidth punctuation, never a combining
#   mark (o200k_base counts those as letters).
# Python's \s is a superset of tiktoken's (Unicode White_Space), so its \S is a subset.
_CUT_PUNCTUATION = (
    r"!-&(-/:-@\[-`{-~\u2010-\u2027\u2030-\u205e\u3001-\u3003\u3008-\u301f"
    r"\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
)
_SAFE_CUT = re.compile(
    rf"(?<=\S)(?= )|(?<=\S[\r\n])(?=[^\s/])|(?<=[^\W_])(?=[\r\n{_CUT_PUNCTUATION}])"
)


# Where no safe cut is near, a cut between two letters, two ASCII marks or two spaces, tabs or
# line breaks changes only the piece it splits. Splitting a piece in two was never found to
# save more than two tokens (over half a million random texts, with pieces cut every few
# characters), hence _CUT_MARGIN per such cut.
_INNER_CUT = re.compile(
    r"(?<=[^\W\d_])(?=[^\W\d_])|(?<=[!-/:-@\[-`{-~])(?=[!-/:-@\[-`{-~])"
    r"|(?<=[ \t])(?=[ \t])|(?<=\n)(?=\n)"
)


_CUT_MARGIN = 2


@functools.lru_cache(maxsize=8)
def _long_runs(limit: int) -> tuple[re.Pattern[str], re.Pattern[str]]:
    # A piece longer than ``limit`` lies within a run of whitespace or within a run without a
    # space (a non-whitespace piece has at most one space, its first character). Anchored at
    # the start of a run, each run is scanned once.
    return re.compile(rf"(?<!\s)\s{{{limit},}}"), re.compile(rf"(?<![^ ])[^ ]{{{limit},}}")


def _bounded_parts(text: str, limit: int) -> tuple[list[str], int]:
    """``text`` cut so that no tiktoken piece is much longer than ``limit``, and the number of
    cuts made where no safe cut was near (inside a long piece).

    Only runs that could hold a piece longer than ``limit`` are cut: at a safe cut in the
    second half of each stretch of ``limit`` characters, else at its end.
    """
    limit = max(limit, 2)  # a safe cut is searched for strictly after the last one
    # Such a run holds a whole aligned window of half that length, without a space or all
    # whitespace. In most text every window has a space near its start: checking that is far
    # cheaper than scanning for runs, and a run can begin no earlier than the window before
    # the first suspect one.
    half, find = limit // 2, text.find
    for i in range(0, len(text) - half + 1, half):
        if find(" ", i, i + half) < 0 or text[i : i + half].isspace():
            break
    else:
        return [text], 0
    begin = max(0, i - half)
    spaces, non_spaces = _long_runs(limit)
    runs = sorted(m.span() for p in (spaces, non_spaces) for m in p.finditer(text, begin))
    if not runs:
        return [text], 0
    cuts: list[int] = []
    forced = at = covered = 0
    for start, end in runs:
        if start >= covered:
            at = start
        # else the runs overlap (a run without spaces may hold line breaks): go on from `at`.
        covered = max(covered, end)
        while end - at > limit:
            found = _SAFE_CUT.search(text, at + limit // 2, at + limit)
            if found is None:
                found = _INNER_CUT.search(text, at + limit - limit // 4, at + limit)
                at = at + limit if found is None else found.start()
                forced += 1
            else:
                at = found.start()
            cuts.append(at)
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)], forced


# The estimate splits text roughly as o200k_base's pre-tokenizer does and charges each piece:
#
# * a word (a run of letters) with at most one leading space or other non-newline character:
#   an ASCII word one token per started 6 letters of each camel-case hump (humps split where a
#   lower-case letter meets an upper-case one); a word with other letters 1 + one per 6 ASCII
#   letters + one per started 2 letters of other alphabets below U+2E80 + one per ideograph,
#   kana or hangul letter (U+2E80 and above). A leading character other than a space costs 1.
# * a run of digits: one token per started 3 digits;
# * a run of punctuation marks (``_`` included), with at most one leading space and any
#   trailing CR/LF: one token per started 3 marks, plus one per non-ASCII mark;
# * any other run of whitespace: 1 + one per 4 newlines + one per 16 characters.
#
# The pieces are not matched one by one (a Python step per match cost ~80 us per 200
# characters): ASCII text is mapped to a byte per character class and counted with a few
# C-level bytes.translate/replace/count passes; other text with one regex findall whose matches
# are tokens, plus counts of the surcharges. tests/test_tokens.py checks both against a plain
# piece-by-piece reference implementation of the rules above.
_LETTERS_PER_TOKEN = 6
_MARKS_PER_TOKEN = 3
_DIGITS_PER_TOKEN = 3
_CJK_START = 0x2E80


def _class_table() -> bytes:
    # a / A: lower / upper-case letter, 0: digit, ".": punctuation mark or "_", s: space,
    # n: LF, r: CR, t: other whitespace.
    table = bytearray(256)
    for i in range(128):
        ch = chr(i)
        if ch.isalpha():
            table[i] = ord("a" if ch.islower() else "A")
        elif ch.isdigit():
            table[i] = ord("0")
        elif ch.isspace():
            table[i] = ord({" ": "s", "\n": "n", "\r": "r"}.get(ch, "t"))
        else:
            table[i] = ord(".")
    return bytes(table)


_CLASSES = _class_table()
_UPPER_TO_LOWER = bytes.maketrans(b"A", b"a")
# For whitespace: words and marks "a" (a single space before them is free), digits "x".
_SPACE_VIEW = bytes.maketrans(b"aA.0snrt", b"aaaxswww")
# After marking free spaces "S": every other whitespace run starts at an "xw".
_RUN_VIEW = bytes.maketrans(b"as", b"xw")
_WHITESPACE_VIEW = bytes.maketrans(b"aA.0snrt", b"xxxxwwww")


def _chunks(run: bytes, size: int) -> list[tuple[bytes, bytes]]:
    # Replacements that turn every run of ``run`` into one byte per started ``size`` bytes.
    return [(run * n, b"T") for n in range(size, 1, -1)] + [(run, b"T")]


_WORD_CHUNKS = _chunks(b"a", _LETTERS_PER_TOKEN)[:-1]
_DIGIT_CHUNKS = _chunks(b"0", _DIGITS_PER_TOKEN)[:-1]
_MARK_CHUNKS = _chunks(b".", _MARKS_PER_TOKEN)[:-1]


def _count_ascii(text: str) -> int:
    classes = text.encode("ascii").translate(_CLASSES)
    # Hump chunks, digit chunks and mark chunks become one byte each: "aaaaaaaa" -> "TT".
    # Humps split where a lower-case letter meets an upper-case one.
    tokens = classes.replace(b"aA", b"a|A").translate(_UPPER_TO_LOWER)
    for run, token in _WORD_CHUNKS:
        tokens = tokens.replace(run, token)
    if b"0" in tokens:
        for run, token in _DIGIT_CHUNKS:
            tokens = tokens.replace(run, token)
    for run, token in _MARK_CHUNKS:
        tokens = tokens.replace(run, token)
    total = len(tokens.translate(None, b"|snrt"))
    if b"n" in classes or b"r" in classes:
        # CR/LF right after a mark belong to the mark's piece and cost nothing.
        for mark_newline in (b".r", b".n"):
            if mark_newline in classes:
                head, *tails = classes.split(mark_newline)
                classes = b".".join([head, *map(bytes.lstrip, tails, repeat(b"rn"))])
        total += classes.translate(None, b"srt").count(b"nnnn")
    # A single space before a word or a mark is part of that piece; other runs cost 1 each.
    runs = classes.translate(_SPACE_VIEW).replace(b"sa", b"Sa").translate(_RUN_VIEW)
    total += runs.count(b"xw") + runs.startswith(b"w")
    return total + classes.translate(_WHITESPACE_VIEW).count(b"w" * 16)


# Non-ASCII text: each findall match is one token, except the one capturing group, which
# catches what needs a correction: a whitespace run of 16+ characters or 4+ newlines, a word
# with other letters and 6+ ASCII letters, and a non-ASCII mark leading a word (its
# non-ASCII surcharge, counted over the whole text, does not apply).
#
# Linear time: count_text runs on the event loop in every append, on up to max_message_bytes,
# so an attempt that scans to the end of a run must be made once per run, not at every
# position in it. _RUN_START anchors _OTHER_WORD (and the lookahead before it) at the start
# of a letter run: a match beginning there takes the whole run if the run holds a non-ASCII
# letter, and if it holds none, no rest of it does, so no attempt inside the run could match.
# Unanchored, it was retried at every hump chunk of an ASCII run, rescanning the run each
# time: quadratic ("é " + "a" * 40_000 took seconds). The other alternatives scan a bounded
# distance or consume what they scan (_LONG_SPACE, a mark piece's [\r\n]*); _OTHER_PAIR's scan
# from a letter of another alphabet stops at the next one, which it takes, so no two of its
# attempts scan the same characters.
_OTHER_WORD = r"[^\W\d_]*[^\W\d_\x00-\x7f][^\W\d_]*"
_RUN_START = r"(?<![^\W\d_])"  # not after a letter: at the start of a letter run
_LONG_SPACE = r"(?=(?:[^\S\n]*\n){4}|\s{16})\s+"
_HUMP_CHUNK = (
    r"(?:[A-Z]{6}|[A-Z]{5}[a-z]?|[A-Z]{4}[a-z]{0,2}|[A-Z]{3}[a-z]{0,3}|[A-Z]{2}[a-z]{0,4}"
    r"|[A-Z][a-z]{0,5}|[a-z]{1,6})"
)
_TOKEN = re.compile(
    rf"( ?{_RUN_START}(?=(?:[^\W\d_\x00-\x7f]*[A-Za-z]){{6}}){_OTHER_WORD}"
    r"|(?<![^\s\w])(?<!_)[^\s\w\x00-\x7f](?=[^\W\d_])"
    rf"|{_LONG_SPACE})"
    rf"| ?{_RUN_START}{_OTHER_WORD}"
    rf"| ?{_HUMP_CHUNK}"
    r"|[^\r\n\w ](?=[^\W\d_])"
    r"| ?(?:[^\s\w]|_){1,3}[\r\n]*"
    r"|\d{1,3}"
    r"|\s+"
)
# One token per non-ASCII mark and per letter from U+2E80 up.
_SURCHARGE = re.compile(r"[^\s\w\x00-\x7f]|[^\W\d_\x00-\u2e7f]")
# One token per started pair of letters of other alphabets (below U+2E80) within a word.
_OTHER_LETTER = r"[^\W\d_\x00-\x7f\u2e80-\U0010ffff]"
_OTHER_PAIR = re.compile(rf"{_OTHER_LETTER}(?:(?:[A-Za-z]|[^\W\d_\x00-\u2e7f])*{_OTHER_LETTER})?")


def _count_unicode(text: str) -> int:
    found = _TOKEN.findall(text)
    total = len(found) + len(_SURCHARGE.findall(text)) + len(_OTHER_PAIR.findall(text))
    for piece in filter(None, found):
        if piece[-1].isspace():
            total += piece.count("\n") // 4 + len(piece) // 16
        elif len(piece) == 1:
            total -= 1
        else:
            ascii_letters = len(piece.encode("ascii", "ignore")) - piece.startswith(" ")
            total += ascii_letters // _LETTERS_PER_TOKEN
    return total


class EstimateCounter(_MessageCounting):
    """A dependency-free estimate of ``o200k_base`` counts that errs on the high side.

    Calibrated on English prose, Python source and JSON: 4-25% above the real count, never
    below. Use it when tiktoken or its BPE file is not available. Its time is linear in the
    text's length, whatever the text.
    """

    @property
    def name(self) -> str:
        return "estimate:o200k_base"

    def count_text(self, text: str) -> int:
        if text.isascii():
            return _count_ascii(text)
        return _count_unicode(text)


def _tiktoken_cache_dir() -> str | None:
    # Mirrors tiktoken.load.read_file_cached, which decides where tiktoken will look.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return cache_dir or None  # "" disables tiktoken's cache: every load would download


def _o200k_cache_path() -> str | None:
    cache_dir = _tiktoken_cache_dir()
    if cache_dir is None:
        return None
    return os.path.join(cache_dir, hashlib.sha1(_O200K_URL.encode()).hexdigest())


@functools.lru_cache(maxsize=4)
def _load_o200k(path: str, size: int, mtime_ns: int) -> Any:
    # Keyed on the file's size and mtime so that a replaced file is checked again, while the
    # hash (about 10 ms) is computed once per file rather than once per call.
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    # tiktoken deletes a cached file whose hash differs and downloads it again: check first.
    if hashlib.sha256(data).hexdigest() != _O200K_SHA256:
        return None
    try:
        return tiktoken.get_encoding("o200k_base")
    except Exception:  # a broken tiktoken install must not break history reads
        return None


def default_counter() -> TokenCounter:
    """The best counter available without network access.

    Returns:
        A :class:`TiktokenCounter` for ``o200k_base`` when tiktoken is installed and the
        encoding's BPE file is in tiktoken's cache directory with the published hash, else an
        :class:`EstimateCounter`. Never downloads anything. Check ``.name`` to see which.
    """
    path = _o200k_cache_path()
    if path is not None:
        try:
            stat = os.stat(path)
        except OSError:
            stat = None
        if stat is not None:
            encoding = _load_o200k(path, stat.st_size, stat.st_mtime_ns)
            if encoding is not None:
                return TiktokenCounter(encoding)
    return EstimateCounter()
