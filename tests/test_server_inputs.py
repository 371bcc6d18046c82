"""The fast paths that read a submit (parameters, base64, PNG) agree with the general decoders."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from capgate.protocol.codes import C
from capgate.server.images import ImageLimits, ImageRejected, check_image, decode_base64
from capgate.server.params import BadParameters, parse_query

LIMITS = ImageLimits(min_bytes=1, max_bytes=1 << 20, max_side=1000)
# Bytes that make the percent-decoder's corners: escapes, broken escapes, '+', a backslash (which
# the C fast path must not see), non-UTF-8.
_PIECES = st.lists(st.sampled_from([b"%", b"%2B", b"%2b", b"%25", b"%3D", b"%zz", b"%4", b"+", b"\\", b"\\x41",
                                    b"a", b"=", b"&", b"\xc3\xa9", b"\xff", b"%C3%A9", b"%FF", b"x"]))


def _reference(raw: bytes) -> dict[str, str]:
    values: dict[str, str] = {}
    for piece in raw.split(b"&"):
        if piece:
            name, _, value = piece.partition(b"=")
            values[unquote_to_bytes(name.replace(b"+", b" ")).decode()] = \
                unquote_to_bytes(value.replace(b"+", b" ")).decode()
    return values


@given(_PIECES.map(b"".join))
@settings(max_examples=2000)
def test_parse_query_decodes_as_the_general_decoder(raw: bytes) -> None:
    try:
        expected = _reference(raw)
    except UnicodeDecodeError:
        with pytest.raises(BadParameters):
            parse_query(raw)
        return
    assert parse_query(raw) == expected


@given(st.binary(max_size=300))
def test_parse_query_on_any_bytes(raw: bytes) -> None:
    try:
        expected = _reference(raw)
    except UnicodeDecodeError:
        with pytest.raises(BadParameters):
            parse_query(raw)
        return
    assert parse_query(raw) == expected


def test_percent_encoded_base64_body() -> None:
    image = bytes(range(256)) * 20
    text = base64.b64encode(image).decode()
    raw = b"key=k&body=" + text.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D").encode()
    assert parse_query(raw)["body"] == text


@given(st.binary(min_size=1, max_size=600), st.sampled_from(["plain", "lines", "data-uri", "spaces", "unpadded"]))
def test_base64_in_every_shape_clients_send(data: bytes, shape: str) -> None:
    text = base64.b64encode(data).decode()
    if shape == "lines":
        text = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    elif shape == "data-uri":
        text = "data:image/png;base64," + text
    elif shape == "spaces":
        text = text.replace("+", " ")
    elif shape == "unpadded":
        text = text.rstrip("=")
    assert decode_base64(text) == data


@pytest.mark.parametrize("text", ["", "   ", "abc!", "YW Jj!", "é", "YQ==YQ==x"])
def test_base64_that_is_not(text: str) -> None:
    with pytest.raises(ImageRejected) as caught:
        decode_base64(text)
    assert caught.value.code == C.UPLOAD


def _png(mode: str = "L", size: tuple[int, int] = (40, 12), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, "PNG", **options)
    return buffer.getvalue()


def _pillow_verdict(data: bytes) -> str:
    """What the Pillow-only check answered before the fast path: the reference."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max(width, height) > LIMITS.max_side:
                return C.IMAGE_DIMENSIONS_TOO_LARGE
            image.verify()
    except Exception:
        return C.IMAGE_TYPE_NOT_SUPPORTED
    return "png"


def _verdict(data: bytes) -> str:
    try:
        return check_image(data, LIMITS)
    except ImageRejected as exc:
        return exc.code


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
@pytest.mark.parametrize("interlace", [False, True])
def test_png_of_every_mode_is_taken(mode: str, interlace: bool) -> None:
    data = _png(mode, optimize=False) if not interlace else _png(mode)
    assert _verdict(data) == "png" == _pillow_verdict(data)


@given(st.data())
@settings(max_examples=400)
def test_damaged_png_is_judged_as_pillow_judges_it(data: st.DataObject) -> None:
    image = _png("RGB", (60, 20))
    damage = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    if damage == "flip":
        at = data.draw(st.integers(0, len(image) - 1))
        image = image[:at] + bytes([image[at] ^ data.draw(st.integers(1, 255))]) + image[at + 1:]
    elif damage == "truncate":
        image = image[:data.draw(st.integers(8, len(image) - 1))]
    else:
        image += data.draw(st.binary(min_size=1, max_size=20))
    if not image.startswith(b"\x89PNG\r\n\x1a\n"):
        return
    assert _verdict(image) == _pillow_verdict(image)


def _with_ihdr(width: int, height: int, tail: bytes = b"\x08\x00\x00\x00\x00") -> bytes:
    """A real PNG whose IHDR is rewritten (CRC fixed), as a hostile client would send."""
    image = _png("L", (4, 4))
    body = b"IHDR" + struct.pack(">II", width, height) + tail
    return image[:8] + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body)) + image[33:]


@pytest.mark.parametrize(("width", "height", "code"), [
    (50_000, 50_000, C.IMAGE_DIMENSIONS_TOO_LARGE),  # a decompression bomb's header
    (1001, 10, C.IMAGE_DIMENSIONS_TOO_LARGE),
    (0, 10, C.IMAGE_TYPE_NOT_SUPPORTED),
])
def test_png_header_limits(width: int, height: int, code: str) -> None:
    assert _verdict(_with_ihdr(width, height)) == code


@pytest.mark.parametrize("tail", [b"\x03\x00\x00\x00\x00", b"\x10\x03\x00\x00\x00", b"\x08\x01\x00\x00\x00",
                                  b"\x02\x06\x00\x00\x00"])
def test_png_header_of_no_standard_format(tail: bytes) -> None:
    data = _with_ihdr(4, 4, tail)
    assert _verdict(data) == C.IMAGE_TYPE_NOT_SUPPORTED == _pillow_verdict(data)
