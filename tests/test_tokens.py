"""Token counters: tiktoken's o200k_base loaded only from the local cache, and the estimate's
calibration against it.

tiktoken downloads its BPE files at run time; these machines reach no network but package
registries. The quicktok-v1 wheel ships the o200k_base ranks, from which the fixture writes
tiktoken's cache file; its SHA-256 must equal the hash tiktoken pins, so the reference below is
the real encoding, not a look-alike.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
import struct
import sys
import sysconfig
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convodb import tokens
from convodb._records import NewMessage, StoredMessage, ToolCall
from convodb.tokens import (
    MESSAGE_OVERHEAD,
    TOOL_CALL_OVERHEAD,
    EstimateCounter,
    TiktokenCounter,
    TokenCounter,
    default_counter,
)

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
ESTIMATE = EstimateCounter()


def quicktok_ranks(name: str) -> dict[bytes, int]:
    """A BPE vocabulary of quicktok's, token to rank.

    quicktok's format: a little-endian u32 count, then per token a u16 length, the bytes and a
    u32 rank.
    """
    data = (resources.files("quicktok") / "data" / f"{name}.vocab").read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset = 4
    ranks: dict[bytes, int] = {}
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        token = data[offset + 2 : offset + 2 + length]
        (rank,) = struct.unpack_from("<I", data, offset + 2 + length)
        offset += 6 + length
        ranks[token] = rank
    return ranks


def o200k_tiktoken_file() -> bytes:
    """o200k_base in tiktoken's format, from quicktok's vocab file."""
    ranked = sorted((r, t) for t, r in quicktok_ranks("o200k").items())
    return b"".join(base64.b64encode(t) + b" %d\n" % r for r, t in ranked)


@pytest.fixture(scope="session")
def o200k_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    content = o200k_tiktoken_file()
    assert hashlib.sha256(content).hexdigest() == O200K_SHA256
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    (cache / hashlib.sha1(O200K_URL.encode()).hexdigest()).write_bytes(content)
    return cache


def refuse_download(blobpath: str) -> bytes:
    raise AssertionError(f"tiktoken tried to download {blobpath}")


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken.load

    monkeypatch.setattr(tiktoken.load, "read_file", refuse_download)


@pytest.fixture(scope="session")
def o200k(o200k_cache: Path) -> TokenCounter:
    """The exact counter, as default_counter() finds it in the cache; shared by the session."""
    import tiktoken.load

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiktoken.load, "read_file", refuse_download)
        patch.setenv("TIKTOKEN_CACHE_DIR", str(o200k_cache))
        counter = default_counter()
    assert counter.name == "tiktoken:o200k_base"
    return counter


# -- choosing the counter -------------------------------------------------------------------


def test_default_counter_loads_o200k_from_the_cache_without_network(
    o200k_cache: Path, monkeypatch: pytest.MonkeyPatch, no_download: None
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(o200k_cache))
    tokens._load_o200k.cache_clear()
    counter = default_counter()
    assert isinstance(counter, TiktokenCounter)
    assert counter.name == "tiktoken:o200k_base"
    assert default_counter().count_text("Hello world") == 2


def test_tiktoken_counter_counts_special_token_text_as_text(o200k: TokenCounter) -> None:
    assert o200k.count_text("Hello world") == 2
    assert o200k.count_text("<|endoftext|>") > 1  # special-token text is ordinary text


def test_default_counter_honours_data_gym_cache_dir(
    o200k_cache: Path, monkeypatch: pytest.MonkeyPatch, no_download: None
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(o200k_cache))
    assert default_counter().name == "tiktoken:o200k_base"


def test_default_counter_estimates_when_the_cache_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: None
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    counter = default_counter()
    assert isinstance(counter, EstimateCounter)
    assert counter.name == "estimate:o200k_base"
    assert list(tmp_path.iterdir()) == []


def test_default_counter_estimates_when_caching_is_disabled(
    monkeypatch: pytest.MonkeyPatch, no_download: None
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken would download on every load
    assert isinstance(default_counter(), EstimateCounter)


def test_default_counter_ignores_and_keeps_a_corrupt_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: None
) -> None:
    path = tmp_path / hashlib.sha1(O200K_URL.encode()).hexdigest()
    path.write_bytes(b"not a BPE file\n")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert isinstance(default_counter(), EstimateCounter)
    assert path.read_bytes() == b"not a BPE file\n"  # tiktoken would delete it and download


def test_default_counter_estimates_without_tiktoken(
    o200k_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(o200k_cache))
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken -> ImportError
    tokens._load_o200k.cache_clear()
    try:
        assert isinstance(default_counter(), EstimateCounter)
    finally:
        tokens._load_o200k.cache_clear()


def test_counters_satisfy_the_protocol(o200k: TokenCounter) -> None:
    assert isinstance(ESTIMATE, TokenCounter)
    assert isinstance(o200k, TokenCounter)


# -- counting messages ----------------------------------------------------------------------


@pytest.mark.parametrize("counter_name", ["estimate", "o200k"])
def test_message_count_adds_overhead_ids_and_tool_calls(
    counter_name: str, request: pytest.FixtureRequest
) -> None:
    counter: TokenCounter = (
        ESTIMATE if counter_name == "estimate" else request.getfixturevalue("o200k")
    )
    text = counter.count_text
    assert counter.count_message(NewMessage(role="user", content="")) == MESSAGE_OVERHEAD
    assert counter.count_message(NewMessage(role="user", content="Hello there")) == (
        MESSAGE_OVERHEAD + text("Hello there")
    )
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    expected = MESSAGE_OVERHEAD + text("Checking") + TOOL_CALL_OVERHEAD
    expected += text("call_1") + text("get_weather") + text('{"city": "Paris"}')
    as_dataclass = NewMessage(role="assistant", content="Checking", tool_calls=[call])
    as_mapping = NewMessage(role="assistant", content="Checking", tool_calls=[call.to_dict()])
    assert counter.count_message(as_dataclass) == expected
    assert counter.count_message(as_mapping) == expected
    result = StoredMessage(
        id="m",
        conversation_id="c",
        seq=2,
        role="tool",
        content="18 C",
        tool_calls=None,
        tool_name="get_weather",
        tool_call_id="call_1",
        metadata={},
        key=None,
        token_count=None,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert counter.count_message(result) == MESSAGE_OVERHEAD + text("18 C") + text("call_1")


# -- calibration of the estimate ------------------------------------------------------------

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = [
    "json/__init__.py",
    "textwrap.py",
    "argparse.py",
    "asyncio/tasks.py",
    "dataclasses.py",
    "csv.py",
    "heapq.py",
    "string.py",
    "shlex.py",
    "email/message.py",
    "logging/__init__.py",
    "pathlib.py",
    "functools.py",
    "http/client.py",
]


def samples() -> list[tuple[str, str]]:
    """Python source, English prose (the stdlib's docstrings) and JSON tool arguments."""
    out: list[tuple[str, str]] = []
    for name in MODULES:
        source = (STDLIB / name).read_text(encoding="utf-8")
        out.append((name, source))
        nodes = ast.walk(ast.parse(source))
        docs = [
            ast.get_docstring(n) for n in nodes if isinstance(n, ast.ClassDef | ast.FunctionDef)
        ]
        out.append((f"docstrings of {name}", "\n\n".join(d for d in docs if d)))
    arguments: list[dict[str, Any]] = [
        {"city": "Paris", "units": "metric", "days": [1, 2, 3]},
        {"query": "weather forecast for tomorrow", "limit": 10, "id": "call_8f3a9b2c"},
        {"path": "src/convodb/history.py", "line": 120, "replace": "return window"},
    ]
    out.append(("json arguments", "\n".join(json.dumps(a) for a in arguments * 10)))
    return out


def test_estimate_never_undercounts_code_prose_or_json(o200k: TokenCounter) -> None:
    for name, text in samples():
        real, estimate = o200k.count_text(text), ESTIMATE.count_text(text)
        # Documented: 4-25% above the real count, never below.
        assert real <= estimate <= 1.25 * real, (name, real, estimate)


def test_estimate_of_single_line_messages_rarely_undercounts(o200k: TokenCounter) -> None:
    lines = [line for _, text in samples() for line in text.splitlines() if line.strip()]
    under = [
        line
        for line in lines
        if ESTIMATE.count_message(NewMessage(role="user", content=line))
        < 0.9 * o200k.count_message(NewMessage(role="user", content=line))
    ]
    assert len(under) <= 0.01 * len(lines), under[:10]


WORDS = sorted(
    {
        w
        for _, text in samples()[1::2]
        for w in text.replace("\n", " ").split(" ")
        if w.isalpha() and w.isascii()
    }
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(WORDS), st.sampled_from([" ", " ", " ", ", ", ". ", "\n"])),
        min_size=20,
        max_size=120,
    )
)
def test_estimate_of_english_sentences_is_within_ten_percent(
    o200k: TokenCounter, words: list[tuple[str, str]]
) -> None:
    text = "".join(w + sep for w, sep in words)
    real = o200k.count_text(text)
    assert ESTIMATE.count_text(text) >= 0.9 * real


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_estimate_counts_any_text_without_error(text: str) -> None:
    count = ESTIMATE.count_text(text)
    assert count >= (1 if text else 0)
    assert count <= 2 * len(text)


# -- the estimate's fast counting against its rules, piece by piece ----------------------------
#
# count_text counts with bytes passes (ASCII) or one findall (other text); this is the plain
# reading of the rules in tokens.py, one regex match at a time, that it must equal exactly.

REFERENCE_PIECE = re.compile(
    r"(?P<word>(?P<lead>[^\r\n\w])?[^\W\d_]+)"
    r"|(?P<digits>\d{1,3})"
    r"|(?P<marks> ?(?:[^\s\w]|_)+[\r\n]*)"
    r"|(?P<space>\s+)",
    re.DOTALL,
)
REFERENCE_HUMP = re.compile(r"[A-Z]*[a-z]+|[A-Z]+(?![a-z])")


def reference_word_tokens(word: str) -> int:
    if word.isascii():
        return sum(1 + (len(hump) - 1) // 6 for hump in REFERENCE_HUMP.findall(word))
    ascii_letters = sum(1 for ch in word if ch.isascii())
    cjk = sum(1 for ch in word if ord(ch) >= 0x2E80)
    other = len(word) - ascii_letters - cjk
    return 1 + ascii_letters // 6 + (other + 1) // 2 + cjk


def reference_count(text: str) -> int:
    total = 0
    for match in REFERENCE_PIECE.finditer(text):
        piece = match.group()
        if match.lastgroup == "word":
            lead = match.group("lead")
            total += reference_word_tokens(piece[1:] if lead else piece)
            total += 1 if lead and lead != " " else 0
        elif match.lastgroup == "marks":
            marks = piece.strip()
            other = sum(1 for ch in marks if not ch.isascii())
            total += 1 + (len(marks) - 1) // 3 + other
        elif match.lastgroup == "space":
            total += 1 + piece.count("\n") // 4 + len(piece) // 16
        else:
            total += 1
    return total


def test_estimate_equals_the_reference_on_code_prose_and_json() -> None:
    for name, text in samples():
        assert ESTIMATE.count_text(text) == reference_count(text), name
        for line in text.splitlines(keepends=True):
            assert ESTIMATE.count_text(line) == reference_count(line), (name, line)
            ascii_line = line.encode("ascii", "ignore").decode()
            assert ESTIMATE.count_text(ascii_line) == reference_count(ascii_line), ascii_line


# Characters where the rules have edges: camel-case humps, marks before words and after
# spaces, CR/LF after marks, other whitespace, long runs, non-ASCII letters, marks and digits.
TRICKY = st.sampled_from(
    [*"aAzZbcXY  \t\n\r.,(_)-+0129\x0b\x1c", "\r\n", "    ", "\n\n", ".\n", "XMLHttp"]
    + ["abcdefghijklm", "ABCDEFGHIJ", "1234567", " " * 17, "((((", "\n\n\n\n\n"]
    + [*"é«»“”—👍中文Жж\xa0\u3000\u0301ÉßΩ²٣\u2028", "\U0001d400", "Жжжжжж", "naïveté"]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(TRICKY, max_size=40).map("".join))
def test_estimate_equals_the_reference_on_tricky_text(text: str) -> None:
    assert ESTIMATE.count_text(text) == reference_count(text)


@settings(max_examples=1500, deadline=None)
@given(st.lists(TRICKY.filter(str.isascii), max_size=40).map("".join))
def test_estimate_equals_the_reference_on_tricky_ascii(text: str) -> None:
    assert ESTIMATE.count_text(text) == reference_count(text)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_estimate_equals_the_reference_on_any_text(text: str) -> None:
    assert ESTIMATE.count_text(text) == reference_count(text)


# -- time: linear on any text ---------------------------------------------------------------
#
# count_text runs in every append, on the event loop, over up to max_message_bytes (1 MiB by
# default). These shapes defeat regex engines (long runs of one class, classes alternating,
# non-ASCII letters before long ASCII runs); "é " + "a" * n took hours at 1 MiB when a pattern
# rescanned the rest of a run from every chunk of it. The bound is a generous regression
# guard, not a performance target.

MiB = 1024 * 1024
ADVERSARIAL = [
    ("é ", "a", ""),
    ("é ", "aA", ""),
    ("é ", "Abcdefg", ""),
    ("é", "a", ""),
    ("é", "A", ""),
    ("", "é", ""),
    ("", "éa", ""),
    ("", "aé", ""),
    ("", "aaaaaaé", ""),
    ("Ж", "a", "Ж"),
    ("", "Жa", ""),
    ("", "中", ""),
    ("", "中a", ""),
    ("", ".é", ""),
    ("", " é", ""),
    ("", "«a", ""),
    ("", "\u0301", ""),
    ("", "e\u0301", ""),
    ("é", "a1", ""),
    ("é", "1", ""),
    ("é", "_", ""),
    ("é", ".", ""),
    ("é", "..\n", ""),
    ("é", "—", ""),
    ("é", " ", ""),
    ("é", " ", "a"),
    ("é", "\n", ""),
    ("é", " \n", ""),
    ("é", "\r\n", ""),
    ("é", "\t", ""),
    ("é", "\u3000", ""),
    ("é", " " * 15 + "é", ""),
    ("", "a", ""),
    ("", "aA", ""),
    ("", " ", ""),
    ("", "\n", ""),
    ("", ".\n", ""),
    ("", ".\r\n", ""),
    ("", "a1", ""),
    ("", "_", ""),
    ("", "\t", ""),
    ("", "a ", ""),
    ("", " .", ""),
]


def megabyte_of(prefix: str, unit: str, suffix: str, size: int = MiB) -> str:
    """``prefix + unit * n + suffix`` with the largest ``n`` that fits ``size`` UTF-8 bytes."""
    fixed = len((prefix + suffix).encode())
    return prefix + unit * ((size - fixed) // len(unit.encode())) + suffix


def shape_id(prefix: str, unit: str, suffix: str) -> str:
    return ascii(prefix) + "+" + ascii(unit) + "*n" + ("+" + ascii(suffix) if suffix else "")


def mixture(size: int = MiB) -> str:
    import random

    rng = random.Random(9)
    alphabet = ["a", "A", "é", "中", " ", "\n", ".", "1", "_", "\u0301", "aaaaaaa", "  "]
    parts = rng.choices(alphabet, k=size // 3)
    return "".join(parts)[: size // 3]  # at most 3 UTF-8 bytes a character


@pytest.mark.parametrize(
    "text",
    [pytest.param(megabyte_of(*shape), id=shape_id(*shape)) for shape in ADVERSARIAL]
    + [pytest.param(mixture(), id="mixture")],
)
def test_estimate_counts_a_megabyte_of_adversarial_text_in_linear_time(text: str) -> None:
    assert len(text.encode()) <= MiB
    start = time.perf_counter()
    count = ESTIMATE.count_text(text)
    assert time.perf_counter() - start < 3.0  # took hours for "é " + "a" * n
    assert count >= 1


LONG_UNITS = st.sampled_from(["a", "A", "aA", "é", "éa", "中", " ", "\n", ".", "1", "_", "é "])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(TRICKY, LONG_UNITS, st.integers(0, 3000)), min_size=1, max_size=4).map(
        lambda runs: "".join(lead + unit * n for lead, unit, n in runs)
    )
)
def test_estimate_equals_the_reference_on_long_runs(text: str) -> None:
    assert ESTIMATE.count_text(text) == reference_count(text)


# -- tiktoken: bounded on long pieces, exact elsewhere -----------------------------------------
#
# tiktoken encodes each piece of its pre-tokenizer's split alone: before 0.13 in time quadratic
# in the piece's length, and its regex engine panics (pyo3_runtime.PanicException, not an
# Exception) on a run of about a million spaces. TiktokenCounter counts pieces longer than
# max_piece in parts.

ONE_CHARACTER_RUNS = [" ", "\t", "\n", " \n", "\u3000", "a", "ab", "中", ".", "1", "é", "👍", "_"]


@pytest.mark.parametrize("unit", ONE_CHARACTER_RUNS, ids=ascii)
def test_tiktoken_counter_counts_a_megabyte_run_in_bounded_time(
    o200k: TokenCounter, unit: str
) -> None:
    text = megabyte_of("", unit, "")
    start = time.perf_counter()
    count = o200k.count_text(text)  # a run of spaces or tabs panicked inside tiktoken
    assert time.perf_counter() - start < 5.0
    assert isinstance(o200k, TiktokenCounter)
    exact = len(o200k._encoding.encode_ordinary(text[:999_000]))  # below the panic
    assert exact <= count <= len(text.encode())


def test_tiktoken_counter_counts_ordinary_long_text_exactly(o200k: TokenCounter) -> None:
    assert isinstance(o200k, TiktokenCounter)
    text = "\n".join(text for _, text in samples()) * 4
    assert len(text) > 1_000_000
    assert o200k.count_text(text) == len(o200k._encoding.encode_ordinary(text))


def other_encodings() -> list[Any]:
    """cl100k_base's pre-tokenizer and GPT-2's, with cl100k_base's ranks (quicktok ships no
    GPT-2 ranks; the safe cuts depend on the split, and the split does not use the ranks)."""
    import tiktoken

    ranks = quicktok_ranks("cl100k")
    cl100k = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    gpt2 = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    return [
        tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
        for name, pattern in (("cl100k-split", cl100k), ("gpt2-split", gpt2))
    ]


@pytest.fixture(scope="session")
def encodings(o200k: TokenCounter) -> list[Any]:
    assert isinstance(o200k, TiktokenCounter)
    return [o200k._encoding, *other_encodings()]


CUT_TEXT = st.lists(
    st.one_of(
        TRICKY,
        st.sampled_from(
            ["it's", "don't", "//", "\n/", "中文，", "，", "。", "「", "‧", "、", "（"]
        ),
    ),
    max_size=60,
).map("".join)


@settings(max_examples=1500, deadline=None)
@given(CUT_TEXT, st.integers(2, 40))
def test_tiktoken_counts_parts_cut_at_safe_cuts_exactly_and_others_high(
    encodings: list[Any], text: str, max_piece: int
) -> None:
    parts, forced = tokens._bounded_parts(text, max_piece)
    assert "".join(parts) == text
    for encoding in encodings:
        exact = len(encoding.encode_ordinary(text))
        split = sum(len(encoding.encode_ordinary(part)) for part in parts)
        if forced == 0:
            assert split == exact, (encoding.name, parts)
        counter = TiktokenCounter(encoding)
        counter.max_piece = max_piece
        assert counter.count_text(text) == split + 2 * forced >= exact, (encoding.name, parts)


def test_tiktoken_parts_are_bounded() -> None:
    for unit in ONE_CHARACTER_RUNS + ["a.", "a\n", "中文，", "x" * 300 + " "]:
        text = megabyte_of("", unit, "", size=64 * 1024)
        parts, _ = tokens._bounded_parts(text, 64)
        assert "".join(parts) == text
        # a piece is at most a run within a part, plus a leading character
        assert all(len(run) <= 64 for part in parts for run in re.findall(r"\s+|[^ ]+", part))
