"""Random, label-preserving distortions of a captcha image, applied to the PIL image before
:func:`capgate.solvers.ocr.preprocess.to_model_input` so augmented and served pixels go through the
same resize and scaling.

The distortions stay mild: a few hundred labels are enough for a pretrained model, and the aim is to
keep it from learning each image's noise by heart, not to invent new captcha styles. A family whose
images are pure black and white (1-bit captchas) stays pure black and white: blur, grey noise and
contrast changes are things it never shows, while a random threshold after the geometric distortion
thickens or thins its strokes, which it does show.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageFilter

from capgate.solvers.ocr.preprocess import to_model_input
from capgate.solvers.ocr.profile import InputSpec


def as_grayscale(image: Image.Image) -> Image.Image:
    """The image as 8-bit grayscale, prepared exactly as the served model's input is (transparency on
    white, 1-bit converted before any resampling), at its own size."""
    native = InputSpec(height=image.height, width=image.width, channels=1)
    pixels = to_model_input(image, native)[0]
    return Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def _background(image: Image.Image) -> int:
    """The border's median grey: what a shifted or rotated captcha should reveal at its edges."""
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return int(np.median(border))


def is_binary(image: Image.Image) -> bool:
    """Whether a grayscale image holds only pure black and pure white pixels."""
    pixels = np.asarray(image)
    return bool(np.isin(pixels, (0, 255)).all())


def augment(image: Image.Image, rng: random.Random, binary: bool | None = None) -> Image.Image:
    """A randomly distorted copy of a grayscale (``"L"``) image of the same size.

    ``binary``: keep the copy black and white; ``None`` decides from the image itself.
    """
    if binary is None:
        binary = is_binary(image)
    width, height = image.size
    fill = _background(image)

    angle = math.radians(rng.uniform(-4.0, 4.0))
    shear = rng.uniform(-0.15, 0.15)
    scale_x = rng.uniform(0.9, 1.08)
    scale_y = scale_x * rng.uniform(0.95, 1.05)
    shift_x = rng.uniform(-0.04, 0.04) * width
    shift_y = rng.uniform(-0.08, 0.08) * height
    # Inverse map (output -> input pixel) around the centre, as Image.transform expects.
    cos, sin = math.cos(angle), math.sin(angle)
    a, b = cos / scale_x, (sin + shear) / scale_x
    d, e = -sin / scale_y, cos / scale_y
    cx, cy = width / 2.0, height / 2.0
    c = cx - a * (cx + shift_x) - b * (cy + shift_y)
    f = cy - d * (cx + shift_x) - e * (cy + shift_y)
    out = image.transform(
        image.size, Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR, fillcolor=fill
    )
    if binary:
        # Bilinear resampling left grey edges; cutting them at a random level moves every stroke's
        # edges in or out together.
        threshold = rng.uniform(115.0, 190.0)
        return Image.fromarray(np.where(np.asarray(out) < threshold, 0, 255).astype(np.uint8), mode="L")

    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * max(1.0, height / 50.0)))
    pixels = np.asarray(out, dtype=np.float32)
    if rng.random() < 0.5:
        contrast = rng.uniform(0.7, 1.2)
        pixels = (pixels - 128.0) * contrast + 128.0 + rng.uniform(-25.0, 25.0)
    if rng.random() < 0.3:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, rng.uniform(3.0, 12.0), pixels.shape)
        pixels = pixels + noise.astype(np.float32)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), mode="L")
