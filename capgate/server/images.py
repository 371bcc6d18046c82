"""Checking submitted images before they are stored (PROTOCOL.md §0 "Image limits").

Only headers are decoded here: the pixel size is read before any pixel, so a decompression bomb
(a few kB claiming 50 000 × 50 000 pixels) is refused before it can take memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image

from capgate.protocol.codes import C

ALLOWED_EXTENSIONS = frozenset({"jpg", "jpeg", "gif", "png", "webp", "bmp"})
_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


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
    cleaned = _DATA_URI.sub("", text.strip(), count=1)
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


def sniff(data: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def check_image(data: bytes, limits: ImageLimits) -> str:
    """Return the image's format, or raise :class:`ImageRejected` with the protocol's code."""
    if len(data) < limits.min_bytes:
        raise ImageRejected(C.ZERO_CAPTCHA_FILESIZE)
    if len(data) > limits.max_bytes:
        raise ImageRejected(C.TOO_BIG_CAPTCHA_FILESIZE)
    kind = sniff(data)
    if kind is None:
        raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if max(width, height) > limits.max_side:
                    raise ImageRejected(C.IMAGE_DIMENSIONS_TOO_LARGE)
                if width < 1 or height < 1:
                    raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED)
                image.verify()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(C.IMAGE_DIMENSIONS_TOO_LARGE) from None
    except Exception:  # Pillow raises many types for corrupt data; all mean "not an image we take"
        raise ImageRejected(C.IMAGE_TYPE_NOT_SUPPORTED) from None
    return kind
