"""What convodb reads from attachment bytes: image sizes, PDF page counts, WAV byte rates.

The files are built here byte by byte, as their specifications lay them out (PNG, GIF89a, JPEG
with JFIF/Exif segments, the three WebP variants, PDF 1.7 with and without object streams,
WAV through the standard library), so no image library is needed.
"""

from __future__ import annotations

import io
import random
import struct
import wave
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convodb._media import image_size, pdf_pages, wav_byte_rate

# -- builders -------------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png(width: int, height: int) -> bytes:
    """A complete grayscale PNG, all black."""
    rows = (b"\x00" + bytes(width)) * height  # filter type 0, then the row
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def gif(width: int, height: int, version: bytes = b"89a") -> bytes:
    """A GIF whose logical screen is ``width`` x ``height``, holding a 1 x 1 image."""
    return (
        b"GIF"
        + version
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global color table of 2
        + b"\x00\x00\x00\xff\xff\xff"
        + b","
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW minimum code size 2, one data sub-block
        + b";"
    )


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def frame_header(width: int, height: int) -> bytes:
    # Sample precision, height, width, one component (id 1, sampling 1x1, table 0).
    return struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"


# An Exif segment whose payload holds what looks like a frame header: only skipping segments
# by their length reads past it correctly.
EXIF = segment(0xE1, b"Exif\x00\x00" + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x01" * 50)
JFIF = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
DQT = segment(0xDB, b"\x00" + bytes(range(64)))
DHT = segment(0xC4, b"\x00" + bytes(16) + b"\x01\x02\x03")  # C4 shares the SOF range


def jpeg(width: int, height: int, *, sof: int = 0xC0, before_frame: bytes = b"") -> bytes:
    """A baseline (or ``sof``) JPEG: JFIF and Exif segments, tables, the frame, a scan."""
    return (
        b"\xff\xd8"
        + JFIF
        + EXIF
        + before_frame
        + DQT
        + segment(sof, frame_header(width, height))
        + DHT
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x12\x34\xff\x00\x56"  # entropy-coded data, with a stuffed 0xFF
        + b"\xff\xd9"
    )


def riff(*chunks: tuple[bytes, bytes], form: bytes = b"WEBP") -> bytes:
    body = form
    for kind, payload in chunks:
        body += kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_lossy(width: int, height: int, scale_bits: int = 0) -> bytes:
    # Frame tag: key frame (bit 0 clear), version 0, shown (bit 4), first partition size.
    tag = (1 << 4 | 10 << 5).to_bytes(3, "little")
    dims = struct.pack("<HH", width | scale_bits << 14, height | scale_bits << 14)
    return riff((b"VP8 ", tag + b"\x9d\x01\x2a" + dims + bytes(10)))


def vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | (height - 1) << 14 | 1 << 28  # alpha hint set, version 0
    return b"\x2f" + struct.pack("<I", bits) + bytes(6)


def webp_lossless(width: int, height: int) -> bytes:
    return riff((b"VP8L", vp8l(width, height)))


def webp_extended(width: int, height: int) -> bytes:
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff(
        (b"VP8X", b"\x10\x00\x00\x00" + canvas),  # alpha flag
        (b"VP8L", vp8l(width, height)),
    )


IMAGES = {
    "image/png": png,
    "image/gif": gif,
    "image/jpeg": jpeg,
    "image/webp": webp_lossy,
}


def pdf(*objects: bytes) -> bytes:
    """A PDF 1.7 file with ``objects`` numbered from 1, a cross-reference table, a trailer."""
    out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"


def flat_pdf(pages: int) -> bytes:
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
    tree = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages)
    return pdf(CATALOG, tree, *[PAGE] * pages)


def wav(seconds: float, rate: int = 24_000, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(int(seconds * rate) * channels * width))
    return buffer.getvalue()


# -- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", list(IMAGES))
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (3, 2000), (1023, 17)])
def test_image_size_reads_each_format(media_type: str, size: tuple[int, int]) -> None:
    assert image_size(media_type, IMAGES[media_type](*size)) == size


def test_gif87a_is_read_too() -> None:
    assert image_size("image/gif", gif(320, 200, b"87a")) == (320, 200)


@pytest.mark.parametrize("sof", [0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCA, 0xCF])
def test_jpeg_size_comes_from_any_start_of_frame(sof: int) -> None:
    assert image_size("image/jpeg", jpeg(1920, 1080, sof=sof)) == (1920, 1080)


def test_jpeg_tables_that_share_the_frame_range_are_skipped() -> None:
    # DHT (C4), JPG (C8) and DAC (CC) before the frame, each with bytes that would read as a
    # size of 0x0102 x 0x0304 if taken for a frame header.
    lookalike = b"\x08\x01\x02\x03\x04\x01\x01\x11\x00"
    tables = b"".join(segment(marker, lookalike) for marker in (0xC4, 0xC8, 0xCC))
    assert image_size("image/jpeg", jpeg(800, 600, before_frame=tables)) == (800, 600)


def test_jpeg_fill_bytes_and_standalone_markers_before_the_frame() -> None:
    # Any number of 0xFF may pad a marker; TEM and RSTn carry no length.
    padding = b"\xff\xff\xff" + segment(0xE2, b"ICC_PROFILE\x00\x01\x01") + b"\xff\x01\xff\xd0"
    assert image_size("image/jpeg", jpeg(64, 48, before_frame=padding)) == (64, 48)


def test_jpeg_many_metadata_segments_before_the_frame() -> None:
    # An ICC profile split over many APP2 segments of nearly 64 KiB each.
    icc = segment(0xE2, b"ICC_PROFILE\x00" + bytes(65_000)) * 40
    assert image_size("image/jpeg", jpeg(4000, 3000, before_frame=icc)) == (4000, 3000)


def test_jpeg_without_a_frame_before_its_scan_is_unreadable() -> None:
    scan_first = b"\xff\xd8" + JFIF + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\xff\xd9"
    assert image_size("image/jpeg", scan_first) is None
    assert image_size("image/jpeg", b"\xff\xd8" + JFIF + b"\xff\xd9") is None


def test_jpeg_with_height_left_to_a_dnl_marker_is_unreadable() -> None:
    # A height of 0 in the frame header means "given later": no size from the header.
    assert image_size("image/jpeg", jpeg(640, 0)) is None


def test_jpeg_garbage_between_segments_is_unreadable() -> None:
    assert image_size("image/jpeg", b"\xff\xd8" + JFIF + b"junk" + jpeg(1, 1)[2:]) is None


def test_webp_lossy_ignores_the_upscaling_bits() -> None:
    assert image_size("image/webp", webp_lossy(1000, 750, scale_bits=2)) == (1000, 750)


@pytest.mark.parametrize("size", [(1, 1), (16383, 16383), (550, 368)])
def test_webp_lossless(size: tuple[int, int]) -> None:
    assert image_size("image/webp", webp_lossless(*size)) == size


@pytest.mark.parametrize("size", [(1, 1), (20000, 3), (550, 368)])
def test_webp_extended_gives_the_canvas(size: tuple[int, int]) -> None:
    assert image_size("image/webp", webp_extended(*size)) == size


def test_webp_lossy_that_is_not_a_key_frame_is_unreadable() -> None:
    data = bytearray(webp_lossy(10, 10))
    data[20] |= 1
    assert image_size("image/webp", bytes(data)) is None


def test_image_is_read_only_as_its_declared_type() -> None:
    assert image_size("image/jpeg", png(10, 10)) is None
    assert image_size("image/png", gif(10, 10)) is None
    assert image_size("image/svg+xml", png(10, 10)) is None


@pytest.mark.parametrize(
    ("media_type", "data"),
    [
        ("image/png", png(0, 5)),
        ("image/png", png(70_000, 1)),  # a side no API takes: garbage, not a size
        ("image/gif", gif(0, 0)),
        ("image/jpeg", jpeg(0, 10)),
        ("image/webp", webp_lossy(0, 100)),
    ],
)
def test_zero_and_absurd_sides_read_as_unknown(media_type: str, data: bytes) -> None:
    assert image_size(media_type, data) is None


@pytest.mark.parametrize(
    ("media_type", "data"),
    [
        *((t, build(300, 200)) for t, build in IMAGES.items()),
        ("image/webp", webp_lossless(300, 200)),
        ("image/webp", webp_extended(300, 200)),
    ],
)
def test_a_truncated_image_reads_as_its_size_or_unknown(media_type: str, data: bytes) -> None:
    for end in range(len(data) + 1):
        assert image_size(media_type, data[:end]) in (None, (300, 200)), end


MAGICS = [b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"GIF89a", b"\xff\xd8", b"\xff\xd8\xff"]
MAGICS += [b"RIFF\x00\x00\x00\x00WEBP" + kind for kind in (b"VP8 ", b"VP8L", b"VP8X")]


@given(st.sampled_from(MAGICS), st.binary(max_size=200))
def test_image_size_of_any_bytes_is_a_size_or_none(magic: bytes, tail: bytes) -> None:
    for media_type in IMAGES:
        size = image_size(media_type, magic + tail)
        assert size is None or all(0 < side <= 65_535 for side in size)


# -- PDF ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pages", [1, 3, 40])
def test_pdf_pages_from_the_page_tree(pages: int) -> None:
    assert pdf_pages(flat_pdf(pages)) == pages


def test_pdf_pages_count_before_type_and_nested_dictionaries() -> None:
    tree = (
        b"<</Count 2/Kids[3 0 R 4 0 R]/Resources<</Font<</F1 5 0 R>>/ProcSet[/PDF/Text]>>"
        b"/MediaBox[0 0 595 842]/Type/Pages>>"
    )
    assert pdf_pages(pdf(CATALOG, tree, PAGE, PAGE, b"<< /Type /Font >>")) == 2


def test_pdf_pages_takes_the_root_of_a_balanced_tree() -> None:
    root = b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 5 >>"
    left = b"<< /Type /Pages /Parent 2 0 R /Kids [5 0 R 6 0 R 7 0 R] /Count 3 >>"
    right = b"<< /Type /Pages /Parent 2 0 R /Kids [8 0 R 9 0 R] /Count 2 >>"
    assert pdf_pages(pdf(CATALOG, root, left, right, *[PAGE] * 5)) == 5


def test_pdf_outline_counts_are_no_page_counts() -> None:
    catalog = b"<< /Type /Catalog /Pages 2 0 R /Outlines 5 0 R >>"
    tree = b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>"
    outlines = b"<< /Type /Outlines /First 6 0 R /Last 6 0 R /Count 40 >>"
    assert pdf_pages(pdf(catalog, tree, PAGE, PAGE, outlines)) == 2


def test_pdf_page_tree_in_an_object_stream() -> None:
    # PDF 1.5 object streams, as pdfTeX and most current writers make them: the page tree and
    # the pages are compressed, only the stream's own dictionary is in the open.
    objects = [CATALOG, b"<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R 6 0 R] /Count 4 >>"]
    objects += [PAGE] * 4
    offsets, body = [], b""
    for obj in objects:
        offsets.append(len(body))
        body += obj + b"\n"
    index = b" ".join(b"%d %d" % (n, o) for n, o in enumerate(offsets, 1)) + b"\n"
    packed = zlib.compress(index + body)
    stream = b"<< /Type /ObjStm /N %d /First %d /Length %d /Filter /FlateDecode >>\nstream\n" % (
        len(objects),
        len(index),
        len(packed),
    )
    data = pdf(stream + packed + b"\nendstream")
    assert b"/Pages" not in data
    assert pdf_pages(data) == 4


def test_pdf_without_a_readable_tree_counts_page_objects() -> None:
    # An indirect /Count names an object, not a count: fall back to the 3 page objects, not
    # counting the /Pages node itself.
    tree = b"<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 9 0 R >>"
    assert pdf_pages(pdf(CATALOG, tree, PAGE, PAGE, PAGE, b"3")) == 3


def test_pdf_count_larger_than_the_file_is_ignored() -> None:
    data = flat_pdf(2).replace(b"/Count 2", b"/Count 999999999")
    assert pdf_pages(data) == 2  # the two page objects


@pytest.mark.parametrize(
    "data",
    [b"", b"%PDF-1.7\n", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF", b"<<" * 50],
)
def test_pdf_without_pages_is_unknown(data: bytes) -> None:
    assert pdf_pages(data) is None


def test_pdf_damaged_object_stream_is_unknown() -> None:
    data = pdf(b"<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode >>\nstream\nnot zlib")
    assert pdf_pages(data) is None


@given(st.binary(max_size=300))
def test_pdf_pages_of_any_bytes_is_a_count_or_none(tail: bytes) -> None:
    pages = pdf_pages(b"%PDF-1.7\n<< /Type /Pages /Count 3 >>" + tail)
    assert pages is None or pages > 0


# -- WAV ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "channels", "width"), [(8000, 1, 1), (24_000, 1, 2), (44_100, 2, 2), (48_000, 6, 3)]
)
def test_wav_byte_rate(rate: int, channels: int, width: int) -> None:
    assert wav_byte_rate(wav(0.1, rate, channels, width)) == rate * channels * width


def test_wav_byte_rate_from_the_header_alone_after_other_chunks() -> None:
    whole = wav(1.0)
    fmt = whole[12:36]
    data = riff((b"LIST", b"INFOISFT\x05\x00\x00\x00test\x00"), (b"JUNK", bytes(3)), form=b"WAVE")
    assert wav_byte_rate(data + fmt) == 48_000


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"RIFF\x00\x00\x00\x00WAVE",
        wav(0.1)[:30],  # truncated in the fmt chunk
        wav(0.1).replace(b"WAVE", b"AVI "),
        # A byte rate that is not sample rate x block size.
        wav(0.1)[:28] + struct.pack("<I", 1) + wav(0.1)[32:],
        # IMA ADPCM (format 0x11): compressed, its byte rate an average.
        wav(0.1)[:20] + b"\x11\x00" + wav(0.1)[22:],
    ],
)
def test_wav_byte_rate_unknown(data: bytes) -> None:
    assert wav_byte_rate(data) is None


@given(st.binary(max_size=100))
def test_wav_byte_rate_of_any_bytes_is_a_rate_or_none(tail: bytes) -> None:
    rate = wav_byte_rate(b"RIFF\x00\x00\x00\x00WAVE" + tail)
    assert rate is None or rate > 0


# -- bounded work ---------------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024


GARBAGE = {
    "random": lambda: random.Random(0).randbytes(TEN_MB),
    "fill": lambda: b"\xff\xd8" + b"\xff" * TEN_MB,  # JPEG fill bytes without end
    "standalone": lambda: b"\xff\xd8" + b"\xff\x01" * (TEN_MB // 2),  # TEM markers
    "open": lambda: b"<" * TEN_MB,
    "unclosed": lambda: b"<</Type/Pages" * (TEN_MB // 13),  # dictionaries that never close
    "slashes": lambda: b"<<" + b"/" * TEN_MB,
    "streams": lambda: b"/Type/ObjStm stream\n" * (TEN_MB // 20),
    "bomb": lambda: b"/Type/ObjStm stream\n" + zlib.compress(bytes(4 * TEN_MB)),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_huge_garbage_returns(kind: str) -> None:
    # No timing assert (timings belong in benchmarks): this only has to finish.
    data = GARBAGE[kind]()
    for media_type in IMAGES:
        assert image_size(media_type, data) is None
    assert pdf_pages(data) is None
    assert wav_byte_rate(data) is None
