"""Pick a trained profile for an image nobody labelled, by what the image looks like."""

from __future__ import annotations

import io

from PIL import Image

from capgate.solvers.ocr.profile import Profile


def choose_profile(image_bytes: bytes, profiles: list[Profile]) -> str | None:
    """The name of the one profile whose fingerprint (width, height, PIL mode) matches the image
    exactly; None (use the generic model) when none or several match, or the bytes are no image.

    Only the header is read: this runs on the event loop, before the job reaches the OCR pool.
    """
    try:
        with Image.open(io.BytesIO(image_bytes)) as image:
            size, mode = image.size, image.mode
    except Exception:  # Pillow's header parsers raise a grab bag of types for bad input
        return None
    matches = [
        p.name
        for p in profiles
        if p.fingerprint is not None
        and (p.fingerprint.width, p.fingerprint.height) == size
        and p.fingerprint.mode == mode
    ]
    return matches[0] if len(matches) == 1 else None
