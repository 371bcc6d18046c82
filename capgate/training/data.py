"""A family's labelled images: reading a folder, inferring what answers look like, splitting.

A data folder holds images plus either a ``labels.csv`` (``filename,label``; a header row is optional)
or labels as file names (``ab3kx.png``; ``ab3kx_2.png`` is a second image with the same answer). With
a ``labels.csv``, images it doesn't list are kept as unlabelled: a fine-tuned model can still teach a
student on them.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from capgate.solvers.ocr.profile import Fingerprint

LABELS_FILE = "labels.csv"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
MIN_LABELLED = 10
_DUPLICATE_SUFFIX = re.compile(r"_\d+$")


class DataError(ValueError):
    """The data folder can't be trained on; the message says why, for the command line."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


@dataclass
class Dataset:
    labelled: list[Sample]
    unlabelled: list[Path] = field(default_factory=list)


def label_from_filename(path: Path) -> str:
    """``ab3kx_2.png`` -> ``ab3kx``: the suffix lets one folder hold several images of one answer."""
    return _DUPLICATE_SUFFIX.sub("", path.stem)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _read_labels_csv(csv_path: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        for index, row in enumerate(csv.reader(handle)):
            if len(row) < 2:
                continue
            name, label = row[0].strip(), row[1].strip()
            if index == 0 and (name.lower(), label.lower()) == ("filename", "label"):
                continue
            if name and label:
                rows.append((name, label))
    return rows


def load_dataset(folder: Path) -> Dataset:
    """Read a data folder; raise :class:`DataError` when it is missing or holds too few labels."""
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if _is_image(p))
    csv_path = folder / LABELS_FILE
    if csv_path.is_file():
        listed: dict[str, str] = {}
        for name, label in _read_labels_csv(csv_path):
            # A name that escapes the folder would let a CSV point training at arbitrary files.
            if Path(name).name == name:
                listed[name] = label
        labelled = [Sample(p, listed[p.name]) for p in images if p.name in listed]
        unlabelled = [p for p in images if p.name not in listed]
        if not labelled:
            raise DataError(f"{csv_path} names none of the images in {folder}")
    else:
        labelled = [Sample(p, label_from_filename(p)) for p in images]
        labelled = [s for s in labelled if s.label]
        unlabelled = []
        if not labelled:
            raise DataError(f"no labelled images in {folder} (expected {LABELS_FILE} or images named by label)")
    if len(labelled) < MIN_LABELLED:
        raise DataError(f"only {len(labelled)} labelled images in {folder}; at least {MIN_LABELLED} needed")
    return Dataset(labelled, unlabelled)


def is_case_sensitive(labels: Iterable[str]) -> bool:
    """Case matters only when some letter is labelled in both cases somewhere in the family."""
    chars = set("".join(labels))
    return any(c.islower() and c.upper() in chars and c.upper() != c for c in chars)


def infer_alphabet(labels: Iterable[str]) -> str:
    """Every character the labels use, sorted, in the case it was labelled in.

    Not folded even for a family that ignores case: a site that only ever shows capitals may still
    want them typed as capitals.
    """
    return "".join(sorted(set("".join(labels))))


def infer_length_range(labels: Iterable[str]) -> tuple[int, int]:
    lengths = [len(label) for label in labels]
    if not lengths:
        raise DataError("no labels")
    return min(lengths), max(lengths)


def holdout_size(labelled: int) -> int:
    """A tenth of the labels, at least 10 and at most 500: enough to stop early on, little lost."""
    return max(min(labelled // 2, 10), min(500, round(labelled * 0.1)))


def split(samples: Sequence[Sample], holdout: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded shuffle, then the first ``holdout`` samples are held out: (train, held_out)."""
    shuffled = list(samples)
    random.Random(seed).shuffle(shuffled)
    return shuffled[holdout:], shuffled[:holdout]


def fingerprint(paths: Sequence[Path], sample: int = 200, seed: int = 0) -> Fingerprint | None:
    """The family's image size and mode when (a sample of) its images all share them, else ``None``.

    Only headers are read. A family of mixed sizes gets no fingerprint: picking it automatically would
    be guesswork.
    """
    chosen = list(paths)
    if len(chosen) > sample:
        chosen = random.Random(seed).sample(chosen, sample)
    seen: Counter[tuple[int, int, str]] = Counter()
    for path in chosen:
        try:
            with Image.open(path) as image:
                seen[(image.width, image.height, image.mode)] += 1
        except OSError:
            continue
    if len(seen) != 1:
        return None
    (width, height, mode), _ = seen.popitem()
    return Fingerprint(width=width, height=height, mode=mode)
