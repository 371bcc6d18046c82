"""OCR accuracy and speed on the shared labelled sets, against ddddocr called directly.

    .venv/bin/python -m bench.ocr [--limit 300] [--workers N] [--sets kaggle_v2,lzu] [--no-ddddocr] [--ablation]

For each set: capgate's engine with the set's natural constraints and with none, and ddddocr's own
``classification()`` with no constraints (what a ddddocr user gets) as the floor, once per bundled
model: ``DdddOcr()`` (``common_old.onnx``, "ddddocr") and ``DdddOcr(beta=True)`` (``common.onnx``,
"ddd-beta"). The "no hints" line compares capgate without constraints to the better of the two on the
same images (issue 16: it must not be below). ``--ablation`` adds, with no constraints, each generic
model alone ("cg-old", "cg-beta") and the cascade without the default Latin-and-digits mask
("cg-nomask"), to show where the difference from raw ddddocr comes from.

* exact: the answer equals the label; "ci" ignores case, "cs" does not.
* p50 ms: median time of one image in one process, one request at a time (capgate: one
  :class:`Recognizer` with a single onnxruntime thread; ddddocr: its own session, default threads).
* img/s: capgate through :class:`OcrPool` with every image submitted at once, one worker per core;
  ddddocr sequentially in one process (it has no pool).

The images are the held-out part of the split used to fine-tune profiles (rows 500 onwards of a
``random.Random(7)`` shuffle of ``labels.csv``, wrapping round), so --limit 300 scores exactly the
300 images that fine-tuned profiles are tested on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from capgate.solvers.ocr.constraints import OcrConstraints
from capgate.solvers.ocr.engine import DEFAULT_GENERIC, SECOND_OPINION_BELOW, Recognizer
from capgate.solvers.ocr.pool import OcrPool

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / ".." / "shared" / "data"
RESULTS_DIR = REPO / "bench" / "results"
SPLIT_SEED = 7
TRAIN_ROWS = 500

#: What a client would send for each set. kaggle_v2's alphabet (2345678bcdefgmnpwxy) has no
#: ``numeric`` value, so only its length is given.
NATURAL: dict[str, OcrConstraints] = {
    "kaggle_v2": OcrConstraints(min_len=5, max_len=5),
    "lzu": OcrConstraints(numeric=1, min_len=5, max_len=5),
}

Labelled = list[tuple[bytes, str]]


@dataclass(frozen=True)
class Figures:
    set: str
    decoder: str
    constraints: str
    images: int
    exact_ci: float
    exact_cs: float
    p50_ms: float | None
    images_per_s: float | None


def load_set(name: str, limit: int, data_dir: Path = DATA_DIR) -> Labelled | None:
    """``limit`` labelled images of a shared set, the held-out part first; None if absent."""
    folder = data_dir / name
    if not (folder / "labels.csv").is_file():
        return None
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = [(r["filename"], r["label"]) for r in csv.DictReader(fh)]
    random.Random(SPLIT_SEED).shuffle(rows)
    rows = (rows[TRAIN_ROWS:] + rows[:TRAIN_ROWS])[:limit]
    return [((folder / f).read_bytes(), label) for f, label in rows]


def describe(c: OcrConstraints) -> str:
    set_fields = [f"{k}={v}" for k, v in asdict(c).items() if v != getattr(OcrConstraints(), k)]
    return ",".join(set_fields) or "none"


def exact(answers: Sequence[str], data: Labelled) -> tuple[float, float]:
    """(case-insensitive, case-sensitive) exact-match rate."""
    ci = sum(a.lower() == label.lower() for a, (_, label) in zip(answers, data, strict=True))
    cs = sum(a == label for a, (_, label) in zip(answers, data, strict=True))
    return ci / len(data), cs / len(data)


def sequential(read: Callable[[bytes], str], data: Labelled) -> tuple[list[str], float]:
    """Answers and p50 milliseconds of ``read`` called one image at a time."""
    answers, times = [], []
    for image, _ in data:
        start = time.perf_counter()
        answers.append(read(image))
        times.append((time.perf_counter() - start) * 1000)
    return answers, statistics.median(times)


def through_pool(
    pool: OcrPool, data: Labelled, constraints: OcrConstraints, profile: str | None = None
) -> tuple[list[str], float]:
    """Answers and images/s with every image submitted to ``pool`` at once."""
    start = time.perf_counter()
    futures = [pool.submit(image, constraints, profile) for image, _ in data]
    answers = [f.result().text for f in futures]
    return answers, len(data) / (time.perf_counter() - start)


def evaluate(
    name: str,
    data: Labelled,
    constraints: OcrConstraints,
    pool: OcrPool,
    recognizer: Recognizer | None = None,
    profile: str | None = None,
    decoder: str = "capgate",
) -> Figures:
    """Score one configuration: accuracy and throughput through ``pool`` (for ``profile``, or the
    generic model), and p50 latency from ``recognizer`` in this process when one is given. Other
    benchmarks (profiles, students) reuse this with their own pool and recognizer."""
    answers, rate = through_pool(pool, data, constraints, profile)
    ci, cs = exact(answers, data)
    p50 = None
    if recognizer is not None:
        _, p50 = sequential(lambda b: recognizer.recognize(b, constraints).text, data)
    return Figures(name, decoder, describe(constraints), len(data), ci, cs, p50, rate)


def ddddocr_floor(name: str, data: Labelled, beta: bool = False) -> Figures:
    import ddddocr  # only the benchmark calls ddddocr itself

    ocr = ddddocr.DdddOcr(show_ad=False, beta=beta)
    ocr.classification(data[0][0])
    answers, p50 = sequential(lambda b: str(ocr.classification(b)), data)
    start = time.perf_counter()
    for image, _ in data:
        ocr.classification(image)
    rate = len(data) / (time.perf_counter() - start)
    ci, cs = exact(answers, data)
    return Figures(name, "ddd-beta" if beta else "ddddocr", "none", len(data), ci, cs, p50, rate)


def _reader(recognizer: Recognizer) -> Callable[[bytes], str]:
    return lambda image: recognizer.recognize(image, OcrConstraints()).text


def ablation(name: str, data: Labelled) -> list[Figures]:
    """capgate with no constraints, one model at a time and without the default script mask."""
    unmasked = Recognizer.generic()
    for model in unmasked._models:
        model.default_scripts = None  # every class of ddddocr's charset, as before issue 16
    configs = {
        "cg-old": Recognizer.generic(("common_old",)),
        "cg-beta": Recognizer.generic(("common",)),
        "cg-nomask": unmasked,
    }
    figures = []
    for decoder, recognizer in configs.items():
        answers, p50 = sequential(_reader(recognizer), data)
        ci, cs = exact(answers, data)
        figures.append(Figures(name, decoder, "none", len(data), ci, cs, p50, None))
    return figures


def no_hints(figures: Sequence[Figures]) -> list[str]:
    """Per set: capgate with no constraints against raw ddddocr's better bundled model."""
    lines = []
    for name in dict.fromkeys(f.set for f in figures):
        ours = [f for f in figures if f.set == name and f.decoder == "capgate" and f.constraints == "none"]
        floors = [f for f in figures if f.set == name and f.decoder in ("ddddocr", "ddd-beta")]
        if not ours or not floors:
            continue
        best = max(floors, key=lambda f: f.exact_ci)
        gap = (ours[0].exact_ci - best.exact_ci) * 100
        verdict = "not below" if gap >= 0 else "BELOW"
        lines.append(
            f"{name}: no hints, capgate {ours[0].exact_ci * 100:.1f}% vs raw {best.decoder} "
            f"{best.exact_ci * 100:.1f}% ({gap:+.1f} points, {verdict})"
        )
    return lines


def run(
    limit: int = 300,
    sets: Sequence[str] = tuple(NATURAL),
    workers: int | None = None,
    with_ddddocr: bool = True,
    data_dir: Path = DATA_DIR,
    with_ablation: bool = False,
) -> list[Figures]:
    loaded = {name: data for name in sets if (data := load_set(name, limit, data_dir))}
    figures: list[Figures] = []
    if not loaded:
        return figures
    recognizer = Recognizer.generic()
    with OcrPool(workers) as pool:
        pool.wait_ready()
        for name, data in loaded.items():
            # A few unscored requests so every worker has run its first (slow) inference.
            through_pool(pool, data[: pool.workers * 2], OcrConstraints())
            for constraints in (NATURAL.get(name, OcrConstraints()), OcrConstraints()):
                figures.append(evaluate(name, data, constraints, pool, recognizer))
            if with_ddddocr:
                figures.append(ddddocr_floor(name, data))
                figures.append(ddddocr_floor(name, data, beta=True))
            if with_ablation:
                figures.extend(ablation(name, data))
    return figures


def table(figures: Sequence[Figures]) -> str:
    head = (
        f"{'set':10} {'decoder':9} {'constraints':30} {'n':>4} "
        f"{'exact ci':>8} {'exact cs':>8} {'p50 ms':>7} {'img/s':>7}"
    )
    lines = [head, "-" * len(head)]
    for f in figures:
        p50 = f"{f.p50_ms:7.1f}" if f.p50_ms is not None else f"{'-':>7}"
        rate = f"{f.images_per_s:7.1f}" if f.images_per_s is not None else f"{'-':>7}"
        lines.append(
            f"{f.set:10} {f.decoder:9} {f.constraints:30} {f.images:4d} "
            f"{f.exact_ci * 100:7.1f}% {f.exact_cs * 100:7.1f}% {p50} {rate}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ocr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=300, help="images per set (default 300)")
    parser.add_argument("--workers", type=int, default=None, help="pool processes (default: all cores)")
    parser.add_argument("--sets", default=",".join(NATURAL), help="comma-separated set names")
    parser.add_argument("--no-ddddocr", action="store_true", help="skip the ddddocr floor")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--ablation", action="store_true", help="also each model alone and the unmasked cascade")
    args = parser.parse_args(argv)

    sets = [s for s in args.sets.split(",") if s]
    figures = run(args.limit, sets, args.workers, not args.no_ddddocr, args.data_dir, args.ablation)
    if not figures:
        print(f"no data sets found under {args.data_dir}")
        return 1
    workers = args.workers or os.cpu_count() or 1
    print(
        f"generic cascade {' > '.join(DEFAULT_GENERIC)} (second opinion below {SECOND_OPINION_BELOW}); "
        f"pool of {workers} on {os.cpu_count()} cores"
    )
    print(table(figures))
    for line in no_hints(figures):
        print(line)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"ocr-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {
        "command": "python -m bench.ocr " + " ".join(sys.argv[1:] if argv is None else argv),
        "limit": args.limit,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "ddddocr": version("ddddocr"),
        "generic": list(DEFAULT_GENERIC),
        "second_opinion_below": SECOND_OPINION_BELOW,
        "split": f"rows {TRAIN_ROWS}.. of random.Random({SPLIT_SEED}).shuffle(labels.csv rows)",
        "figures": [asdict(f) for f in figures],
        "no_hints": no_hints(figures),
    }
    out.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
