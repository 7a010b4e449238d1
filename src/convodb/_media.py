"""What convodb reads from an attachment's bytes: an image's size, a PDF's page count, a WAV's
byte rate. Token counting uses them (see ``convodb.tokens``), and they are read once, when a
part is stored.

Every function takes any bytes, never raises, and returns ``None`` when the bytes do not say
(truncated, garbage, another format, a figure no real file has). Each does work at most linear
in the input, whatever it holds: images and WAV read their headers in a bounded number of
steps, and a PDF is searched by regular expressions that read each byte a bounded number of
times, plus at most :data:`_INFLATE_BUDGET` bytes inflated from its object streams.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

__all__ = ["image_size", "pdf_pages", "wav_byte_rate"]

_MAX_SIDE = 65_535
"""Largest width or height taken as real: the most a JPEG or GIF header can say, and beyond
every API's limit. A larger figure (a PNG can declare 2**31 - 1) is read as garbage."""


def image_size(media_type: str, data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels from the header of an image of ``media_type``.

    Args:
        media_type: ``image/png``, ``image/gif``, ``image/jpeg`` or ``image/webp``; the bytes
            are read as that type only.
        data: the image, or at least its start (a JPEG's frame header may follow tens of
            kilobytes of metadata).

    Returns:
        The size, or ``None`` for another media type, bytes that are not such an image's
        header, and a side of 0 or over 65,535 pixels.
    """
    reader = _IMAGE_READERS.get(media_type)
    size = reader(data) if reader is not None else None
    if size is None or not (0 < size[0] <= _MAX_SIDE and 0 < size[1] <= _MAX_SIDE):
        return None
    return size


def _png_size(data: bytes) -> tuple[int, int] | None:
    # The signature, then the IHDR chunk, which must come first: length 13, width, height.
    if not data.startswith(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR") or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _gif_size(data: bytes) -> tuple[int, int] | None:
    # The logical screen descriptor follows the signature: width, height, little-endian.
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 10:
        return None
    return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")


_JPEG_MAX_SEGMENTS = 4096
"""Markers read before giving up on a JPEG. Real files have a few dozen before the frame
header (APPn metadata, ICC profile parts, tables); the bound keeps garbage cheap."""
# Start-of-frame markers SOF0..SOF15, less DHT (C4), JPG (C8) and DAC (CC), which share the
# range but are no frame headers.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NOT_FILL = re.compile(rb"[^\xff]")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        # A marker is 0xFF, any number of 0xFF fill bytes, then its code.
        if data[at : at + 1] != b"\xff":
            return None
        code = _NOT_FILL.search(data, at)
        if code is None:
            return None
        marker, at = data[code.start()], code.start() + 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue  # TEM, RST0..7, SOI: standalone, no length follows
        if marker in (0x00, 0xD9, 0xDA):
            return None  # a stuffed byte, EOI, or the scan: no frame header came first
        if at + 2 > len(data):
            return None
        length = int.from_bytes(data[at : at + 2], "big")  # counts itself, not the marker
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            # Length, sample precision, height, width.
            if length < 7 or at + 7 > len(data):
                return None
            height = int.from_bytes(data[at + 3 : at + 5], "big")
            return int.from_bytes(data[at + 5 : at + 7], "big"), height
        at += length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    # RIFF, size, WEBP, then the first chunk's four-character code and size at 12..20; its
    # payload starts at 20.
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        # Lossy: a 3-byte frame tag (bit 0 clear on a key frame), the start code 9D 01 2A,
        # then 14 bits of width and of height, each under 2 bits of upscaling hint.
        if data[20] & 1 or data[23:26] != b"\x9d\x01\x2a":
            return None
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        return width, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        # Lossless: the signature 0x2F, then width - 1 and height - 1 in 14 bits each.
        if data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        # Extended: flags and 3 reserved bytes, then canvas width - 1 and height - 1 in 24 bits.
        width = int.from_bytes(data[24:27], "little") + 1
        return width, int.from_bytes(data[27:30], "little") + 1
    return None


_IMAGE_READERS: dict[str, Callable[[bytes], tuple[int, int] | None]] = {
    "image/png": _png_size,
    "image/gif": _gif_size,
    "image/jpeg": _jpeg_size,
    "image/webp": _webp_size,
}


# -- PDF ------------------------------------------------------------------------------------

# A dictionary body, read as runs of ordinary bytes, hex strings <...> and dictionaries nested
# up to two deep, all possessive: a match never backtracks, and the bytes an attempt at an
# outer "<<" reads are read again only by attempts at the dictionaries inside it, so each byte
# is read at most three times. Deeper nesting, and "<" or ">" in a (literal string), make a
# dictionary unreadable here; the page count then falls back to counting page objects.
_HEX = rb"<[^<>]*+>"
_NESTED = rb"<<(?:[^<>]++|" + _HEX + rb"|<<(?:[^<>]++|" + _HEX + rb")*+>>)*+>>"
_BODY = rb"(?:[^<>]++|" + _HEX + rb"|" + _NESTED + rb")*+"
_PAGES_TYPE = rb"/Type\s*/Pages\b"
# Before /Type /Pages, a "/" is read alone and only where that entry does not start, so that
# the body stops at the entry.
_BEFORE_TYPE = rb"(?:[^<>/]++|(?!" + _PAGES_TYPE + rb")/|" + _HEX + rb"|" + _NESTED + rb")*+"
# A page tree node: a dictionary with /Type /Pages.
_PAGES_DICT = re.compile(rb"<<" + _BEFORE_TYPE + _PAGES_TYPE + _BODY + rb">>")
# An indirect /Count (/Count 12 0 R) names an object, not a number of pages.
_COUNT = re.compile(rb"/Count\s+(\d{1,9})\b(?!\s+\d+\s+R\b)")
_PAGE_OBJECT = re.compile(rb"/Type\s*/Page\b")
_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm\b")
_STREAM_START = re.compile(rb"stream\r?\n")

_INFLATE_BUDGET = 16 * 1024 * 1024
"""Bytes at most read, and at most written, inflating a PDF's object streams."""
_INFLATE_CHUNK = 64 * 1024
_MAX_OBJECT_STREAMS = 4096
"""Object streams tried at most (a thousand-page document has a few hundred)."""


def pdf_pages(data: bytes) -> int | None:
    """A PDF's page count, best effort.

    The largest ``/Count`` of a page tree node (``/Type /Pages``) that a PDF states in the
    open, else in its compressed object streams (PDF 1.5; pdfTeX and most current writers put
    the page tree there). The root node counts every page; a larger figure in an older
    revision of an incrementally updated file makes the count err high. Without a readable
    page tree node: the number of page objects (``/Type /Page``) found the same ways.

    Args:
        data: the whole PDF.

    Returns:
        The page count, or ``None`` when neither is found. A ``/Count`` over the file's size
        in bytes is no real page count and is ignored.
    """
    count = _largest_count(data, len(data))
    streams: list[bytes] = []
    if count is None and b"/ObjStm" in data:
        streams = _object_streams(data)
        counts = (_largest_count(text, len(data)) for text in streams)
        count = max((n for n in counts if n is not None), default=None)
    if count is not None:
        return count
    # subn counts in C without building a list of matches (a list of millions, on garbage).
    pages = sum(_PAGE_OBJECT.subn(b"", text)[1] for text in (data, *streams))
    return pages or None


def _largest_count(text: bytes, limit: int) -> int | None:
    if b"/Pages" not in text:  # a fast way out for most streams and garbage
        return None
    counts = [
        int(found)
        for node in _PAGES_DICT.finditer(text)
        for found in _COUNT.findall(node.group())
        if 0 < int(found) <= limit
    ]
    return max(counts, default=None)


def _object_streams(data: bytes) -> list[bytes]:
    """What the object streams of a PDF inflate to, within :data:`_INFLATE_BUDGET` read and
    written. Each stream is inflated from the ``stream`` keyword after its ``/Type /ObjStm``
    until its zlib data ends or fails: no ``/Length`` is trusted."""
    view = memoryview(data)
    found: list[bytes] = []
    starts: set[int] = set()
    read = written = 0
    for marker in _OBJECT_STREAM.finditer(data):
        if len(starts) >= _MAX_OBJECT_STREAMS or read >= _INFLATE_BUDGET:
            break
        keyword = _STREAM_START.search(data, marker.end(), marker.end() + 4096)
        if keyword is None or keyword.end() in starts:
            continue
        starts.add(keyword.end())
        inflate = zlib.decompressobj()
        parts: list[bytes] = []
        at = keyword.end()
        try:
            while at < len(data) and not inflate.eof and read < _INFLATE_BUDGET:
                chunk = view[at : at + _INFLATE_CHUNK]
                at += len(chunk)
                read += len(chunk)
                out = inflate.decompress(chunk, _INFLATE_BUDGET - written + 1)
                written += len(out)
                parts.append(out)
                if written > _INFLATE_BUDGET:
                    break
        except zlib.error:
            pass  # not zlib data, or damaged: keep what inflated before the damage
        if parts:
            found.append(b"".join(parts))
        if written > _INFLATE_BUDGET:
            break
    return found


# -- WAV ------------------------------------------------------------------------------------

_WAV_MAX_CHUNKS = 64
"""RIFF chunks read looking for ``fmt `` (it comes first or after a few metadata chunks)."""
# PCM, IEEE float, A-law, mu-law and WAVE_FORMAT_EXTENSIBLE: uncompressed formats, whose byte
# rate is sample rate times block size. Compressed ones (ADPCM, ...) declare an average.
_WAV_UNCOMPRESSED = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})
_WAV_MAX_RATE = 768_000


def wav_byte_rate(data: bytes) -> int | None:
    """Bytes per second of a WAV file's uncompressed audio, from its ``fmt `` chunk.

    A file's size over its byte rate is at least its duration (headers count as audio), so
    the start of the file is enough to bound how long it plays.

    Args:
        data: the WAV file, or a prefix that holds its ``fmt `` chunk.

    Returns:
        The byte rate, or ``None`` when ``data`` is not RIFF/WAVE, its format is compressed,
        or the figures disagree (a byte rate other than sample rate times block size).
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at = 12
    for _ in range(_WAV_MAX_CHUNKS):
        if at + 8 > len(data):
            return None
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        if data[at : at + 4] == b"fmt ":
            if size < 16 or at + 24 > len(data):
                return None
            fmt = data[at + 8 : at + 24]
            tag = int.from_bytes(fmt[0:2], "little")
            channels = int.from_bytes(fmt[2:4], "little")
            sample_rate = int.from_bytes(fmt[4:8], "little")
            byte_rate = int.from_bytes(fmt[8:12], "little")
            block = int.from_bytes(fmt[12:14], "little")
            if (
                tag not in _WAV_UNCOMPRESSED
                or not 0 < sample_rate <= _WAV_MAX_RATE
                or channels == 0
                or block < channels
                or byte_rate != sample_rate * block
            ):
                return None
            return byte_rate
        at += 8 + size + (size & 1)  # chunks are padded to an even size
    return None
