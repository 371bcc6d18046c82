"""Checking submitted images before they are stored (PROTOCOL.md §0 "Image limits").

Only headers are decoded here: the pixel size is read before any pixel, so a decompression bomb
(a few kB claiming 50 000 × 50 000 pixels) is refused before it can take memory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

import pybase64
from PIL import Image

from capgate.imageformat import sniff
from capgate.protocol.codes import C

ALLOWED_EXTENSIONS = frozenset({"jpg", "jpeg", "gif", "png", "webp", "bmp"})
_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


class ImageRejected(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class ImageLimits:
    min_bytes: int
    max_bytes: int
    max_side: int


def decode_base64(text: str) -> bytes:
    """Base64 as clients really send it: with or without a data-URI prefix, line breaks, or '+'
    turned into ' ' by a form encoder that was not told about it."""
    with contextlib.suppress(binascii.Error, ValueError):
        # Most clients send clean, padded base64: decoded strictly, it needs none of the clean-up.
        # pybase64 (SIMD) rather than the standard library: this runs on every submit, and its
        # decoder is about twenty times faster on a captcha's few kilobytes. Given as bytes: its
        # own handling of a fresh str measured ten times slower than encoding it first.
        decoded: bytes = pybase64.b64decode(text.encode("ascii"), validate=True)
        if decoded:
            return decoded
    if not text.strip():
        raise ImageRejected(C.UPLOAD)
    # Spaces are kept through the strip: at either end they may be a '+' a form encoder dropped.
    cleaned = _DATA_URI.sub("", text.strip("\t\n\r\f\v"), count=1)
    cleaned = cleaned.replace(" ", "+")
    cleaned = "".join(cleaned.split())
    if not cleaned:
        raise ImageRejected(C.UPLOAD)
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected(C.UPLOAD) from None


def check_extension(filename: str) -> None:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix and suffix not in ALLOWED_EXTENSIONS:
        raise ImageRejected(C.WRONG_FILE_EXTENSION)


def check_image(data: bytes, limits: ImageLimits) -> str:
    """Return the image's format, or raise :class:`ImageRejected` with the protocol's code."""
    if len(data) < limits.min_bytes:
        raise ImageRejected(C.ZERO_CAPTCHA_FILESIZE)
    if len(data) > limits.max_bytes:
        raise ImageRejected(C.TOO_BIG_CAPTCHA_FILESIZE)
    kind = sniff(data)
    if kind is None:
        raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED)
    if kind == "png":
        _check_size(*_png_size(data), limits)
        return kind
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                _check_size(*image.size, limits)
                image.verify()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(C.IMAGE_DIMENSIONS_TOO_LARGE) from None
    except Exception:  # Pillow raises many types for corrupt data; all mean "not an image we take"
        raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED) from None
    return kind


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    bomb = Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS
    if bomb or max(width, height) > limits.max_side:
        raise ImageRejected(C.IMAGE_DIMENSIONS_TOO_LARGE)
    if width < 1 or height < 1:
        raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED)


_CHUNK_HEAD = struct.Struct(">I4s")
_IHDR_SIZE = struct.Struct(">II")
# Bit depth and colour type of every IHDR the PNG standard allows; Pillow refuses the rest as
# "unknown PNG mode".
_IHDR_FORMATS = frozenset(
    bytes((depth, colour))
    for colour, depths in ((0, (1, 2, 4, 8, 16)), (2, (8, 16)), (3, (1, 2, 4, 8)), (4, (8, 16)), (6, (8, 16)))
    for depth in depths
)


# zlib lets go of the GIL for inputs over 5 kB, and taking it back can wait on the store's writer
# thread for far longer than the sum takes; pieces under that size keep it.
_CRC_PIECE = 4096


def _crc32(data: memoryview) -> int:
    crc = 0
    for start in range(0, len(data), _CRC_PIECE):
        crc = zlib.crc32(data[start:start + _CRC_PIECE], crc)
    return crc


def _png_size(data: bytes) -> tuple[int, int]:
    """Walk a PNG's chunks as Pillow's ``verify`` does (IHDR first, every CRC right, up to IEND)
    without Pillow: PNG is what most clients send, and this runs on every submit."""
    view = memoryview(data)
    pos, size = 8, None
    while True:
        if pos + 8 > len(data):
            raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED)  # truncated: no IEND
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        if kind == b"IEND" and size is not None:
            return size  # as in Pillow, IEND's own CRC is not read
        end = pos + 12 + length
        if end > len(data) or _crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED)
        if size is None:
            if kind != b"IHDR" or length != 13 or data[pos + 16:pos + 18] not in _IHDR_FORMATS:
                raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED)
            size = _IHDR_SIZE.unpack_from(data, pos + 8)
        pos = end
