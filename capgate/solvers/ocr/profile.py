"""What a trained recognizer is: its input geometry, alphabet and where its ONNX file lives.

A profile is a folder ``<profiles_dir>/<name>/`` holding ``model.onnx`` and ``profile.json``.
Training writes it (``capgate train``); the OCR worker reads it. Both sides go through this module
and :mod:`capgate.solvers.ocr.preprocess`, so an image is prepared the same way when a model learns
and when it serves.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROFILE_FILE = "profile.json"
MODEL_FILE = "model.onnx"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input tensor ``float32[1, channels, height, width]``.

    ``width`` of ``None`` keeps the aspect ratio (width scales with height), as ddddocr's models do.
    Pixels are scaled to [0, 1], then ``(x - mean) / std``.
    """

    height: int = 64
    width: int | None = None
    channels: int = 1
    mean: float = 0.0
    std: float = 1.0


@dataclass(frozen=True)
class Fingerprint:
    """What images of a family look like, to pick a profile for an image nobody labelled."""

    width: int
    height: int
    mode: str  # PIL mode of the source images ("L", "1", "RGB", "RGBA", ...)


@dataclass(frozen=True)
class Profile:
    """A trained recognizer for one captcha family.

    ``alphabet[i]`` is the model's output class ``i + 1``; class 0 is the CTC blank. The model's
    output is logits laid out ``"TNC"`` (time, batch, classes) or ``"NTC"``.
    """

    name: str
    alphabet: str
    input: InputSpec = field(default_factory=InputSpec)
    output_layout: str = "TNC"
    min_len: int = 1
    max_len: int = 20
    case_sensitive: bool = False
    fingerprint: Fingerprint | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Profile:
        fp = raw.get("fingerprint")
        return cls(
            name=str(raw["name"]),
            alphabet=str(raw["alphabet"]),
            input=InputSpec(**raw.get("input", {})),
            output_layout=str(raw.get("output_layout", "TNC")),
            min_len=int(raw.get("min_len", 1)),
            max_len=int(raw.get("max_len", 20)),
            case_sensitive=bool(raw.get("case_sensitive", False)),
            fingerprint=Fingerprint(**fp) if fp else None,
            metrics=dict(raw.get("metrics", {})),
        )


def valid_profile_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def profile_dir(profiles_dir: Path, name: str) -> Path:
    if not valid_profile_name(name):
        raise ValueError(f"invalid profile name {name!r}: letters, digits, '_', '-', '.' (max 64)")
    return profiles_dir / name


def load_profile(profiles_dir: Path, name: str) -> Profile:
    folder = profile_dir(profiles_dir, name)
    raw = json.loads((folder / PROFILE_FILE).read_text(encoding="utf-8"))
    return Profile.from_dict(raw)


def model_path(profiles_dir: Path, name: str) -> Path:
    return profile_dir(profiles_dir, name) / MODEL_FILE


def save_profile(profiles_dir: Path, profile: Profile, onnx_bytes: bytes) -> Path:
    """Write a profile atomically: a server reading the folder never sees half a model."""
    folder = profile_dir(profiles_dir, profile.name)
    folder.mkdir(parents=True, exist_ok=True)
    for filename, data in ((MODEL_FILE, onnx_bytes), (PROFILE_FILE, profile.to_json().encode("utf-8"))):
        tmp = folder / f".{filename}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / filename)
    return folder


def list_profiles(profiles_dir: Path) -> list[Profile]:
    if not profiles_dir.is_dir():
        return []
    found = []
    for child in sorted(profiles_dir.iterdir()):
        if (child / PROFILE_FILE).is_file() and (child / MODEL_FILE).is_file():
            try:
                found.append(load_profile(profiles_dir, child.name))
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                continue
    return found
