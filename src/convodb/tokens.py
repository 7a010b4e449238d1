"""Token counting for history windows: exact with tiktoken's ``o200k_base``, else a safe estimate.

A window that overflows the model's context is rejected by the API, one that underfills it only
wastes a little room, so every counter here errs towards counting too many tokens:

* :class:`TiktokenCounter` counts exactly with a tiktoken encoding. :func:`default_counter` uses
  ``o200k_base`` (GPT-4o and later) only when its BPE file is already in tiktoken's cache
  (``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``) and
  matches tiktoken's published hash: tiktoken would otherwise download the file at run time,
  which blocks the caller and fails on machines without internet access.
* :class:`EstimateCounter` needs nothing. It splits text roughly as ``o200k_base``
  pre-tokenizes it and charges each piece by its length. Calibrated against ``o200k_base`` on
  Python source, English prose and JSON arguments it counts 4-25% more tokens than the real
  encoding and never fewer; text in other scripts is over-counted more (Cyrillic up to ~2x).

Message counts add a fixed overhead per message and per tool call, approximating the framing
tokens chat APIs add; they are budget figures, not billing figures. Providers that tokenize
differently (Anthropic, Gemini) are approximated by the same numbers.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._records import ToolCall

if TYPE_CHECKING:
    from .formats import MessageLike

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
            ``MESSAGE_OVERHEAD`` plus the tokens of the content, of the ``tool_call_id`` of a
            tool result, and of each tool call's id, name and arguments plus
            ``TOOL_CALL_OVERHEAD``.
        """
        total = MESSAGE_OVERHEAD
        if message.content:
            total += self.count_text(message.content)
        if message.tool_call_id:
            total += self.count_text(message.tool_call_id)
        for call_id, name, arguments in _call_parts(message):
            total += TOOL_CALL_OVERHEAD + self.count_text(call_id)
            total += self.count_text(name) + self.count_text(arguments)
        return total


class TiktokenCounter(_MessageCounting):
    """Exact counts with a tiktoken encoding.

    ```python
    import tiktoken
    counter = TiktokenCounter(tiktoken.get_encoding("cl100k_base"))
    ```

    Special-token text such as ``<|endoftext|>`` in a message is counted as ordinary text, as
    the APIs treat it.
    """

    def __init__(self, encoding: Any) -> None:
        self._encoding = encoding
        self._name = f"tiktoken:{encoding.name}"

    @property
    def name(self) -> str:
        return self._name

    def count_text(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))


# Pieces in the spirit of o200k_base's pre-tokenizer: a word (camel-case humps are split later)
# with at most one leading space or punctuation mark, 1-3 digits, a run of punctuation, a run of
# whitespace; "other" catches anything else (a lone combining mark, ...) at one token each.
_PIECE = re.compile(
    r"(?P<word>(?P<lead>[^\r\n\w])?[^\W\d_]+)"
    r"|(?P<digits>\d{1,3})"
    r"|(?P<marks> ?(?:[^\s\w]|_)+[\r\n]*)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_HUMP = re.compile(r"[A-Z]*[a-z]+|[A-Z]+(?![a-z])")
# Calibration constants (see the module docstring and tests/test_tokens.py): one token per
# started 6 ASCII letters of a word hump, per started 3 punctuation marks, per 2 letters of
# other alphabets, and per ideograph / kana / hangul character (U+2E80 and above).
_LETTERS_PER_TOKEN = 6
_MARKS_PER_TOKEN = 3
_CJK_START = 0x2E80


class EstimateCounter(_MessageCounting):
    """A dependency-free estimate of ``o200k_base`` counts that errs on the high side.

    Calibrated on English prose, Python source and JSON: 4-25% above the real count, never
    below. Use it when tiktoken or its BPE file is not available.
    """

    @property
    def name(self) -> str:
        return "estimate:o200k_base"

    def count_text(self, text: str) -> int:
        total = 0
        for match in _PIECE.finditer(text):
            kind = match.lastgroup
            piece = match.group()
            if kind == "word":
                lead = match.group("lead")
                # A leading space merges into the word; a leading mark often does not.
                total += _word_tokens(piece[1:] if lead else piece)
                total += 1 if lead and lead != " " else 0
            elif kind == "marks":
                marks = piece.strip()
                other = sum(1 for ch in marks if not ch.isascii())
                total += 1 + (len(marks) - 1) // _MARKS_PER_TOKEN + other
            elif kind == "space":
                # Indentation and blank lines merge into few tokens.
                total += 1 + piece.count("\n") // 4 + len(piece) // 16
            else:
                total += 1
        return total


def _word_tokens(word: str) -> int:
    if word.isascii():
        return sum(1 + (len(h) - 1) // _LETTERS_PER_TOKEN for h in _HUMP.findall(word)) or 1
    ascii_letters = sum(1 for ch in word if ch.isascii())
    cjk = sum(1 for ch in word if ord(ch) >= _CJK_START)
    other = len(word) - ascii_letters - cjk
    return 1 + ascii_letters // _LETTERS_PER_TOKEN + (other + 1) // 2 + cjk


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
