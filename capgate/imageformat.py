"""Which image format a file is, from its first bytes (never its name or a client's word).

A leaf module: in.php checks uploads with it and the label keeper names its files by it.
"""

from __future__ import annotations

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


def sniff(data: bytes) -> str | None:
    """``png``, ``jpeg``, ``gif``, ``bmp`` or ``webp``; ``None`` for anything else."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None
