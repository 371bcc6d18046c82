"""OCR that learns (issue 5): accuracy, training time and served speed against the number of labels.

For each set in ``../shared/data`` (kaggle_v2, lzu) the rows of ``labels.csv`` are shuffled with
``random.Random(7)``; the first N (100, 200, 500) are the labels training may use, and rows 500–799 are
the test set, never seen by training in any form. Every other image of the set (rows N–499 and 800+)
is handed to training *without its label*, as the unlabelled images of the family a service would
have seen; the fine-tuned teacher labels them for the student.

Measured per set and size, in one run:

* exact-match accuracy on the 300 test images of the model that ``capgate train`` would ship, and of
  both candidates (the fine-tuned teacher and the distilled student);
* the ship rule's decision and why: the student ships only within 0.3 points of the teacher over the
  held-out labels and every unlabelled image the teacher labelled ("pool"; disagreements counted as
  student errors), see ``capgate/training/ship.py``;
* training wall time (``--threads`` PyTorch threads; 2 by default, the machine's two cores);
* the served model's p50 milliseconds per image and images per second: onnxruntime with one thread,
  one image at a time, preprocessing and CTC decoding included (one worker process per core);
* the untrained generic model on the same test images: ddddocr's ``common.onnx`` as shipped (all 8,210
  classes, case folded) and the same model cut down to the family's alphabet before any training.

Targets with 500 labels: ≥ 99% exact on each set, training ≤ 5 minutes, served model ≤ 5 ms p50.
Results: a table on stdout and JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
SETS = ("kaggle_v2", "lzu")
SIZES = (100, 200, 500)
TEST_START, TEST_COUNT = 500, 300


def _rows(folder: Path) -> list[tuple[str, str]]:
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = [(r["filename"], r["label"]) for r in csv.DictReader(handle)]
    random.Random(7).shuffle(rows)
    return rows


def _generic_results(folder: Path, alphabet: str, test: list[tuple[Path, str]]) -> dict[str, Any]:
    from capgate.solvers.ocr.profile import InputSpec
    from capgate.training.evaluate import OnnxModel, evaluate
    from capgate.training.model import export_onnx, generic_charset, generic_model_path, load_generic

    spec = InputSpec(height=64)
    raw = OnnxModel(generic_model_path(), generic_charset()[1:], spec)
    sliced_bytes = export_onnx(load_generic(alphabet), 1, 64, 256)
    sliced = OnnxModel(sliced_bytes, alphabet, spec)
    return {
        "generic": evaluate(raw, test).as_dict(),
        "generic_alphabet": evaluate(sliced, test).as_dict(),
    }


def run_one(
    name: str, size: int, rows: list[tuple[str, str]], args: argparse.Namespace
) -> dict[str, Any]:
    from capgate.training.data import Dataset, Sample
    from capgate.training.evaluate import OnnxModel, evaluate
    from capgate.training.trainer import TrainOptions, train_profile

    folder = DATA / name
    labelled = [Sample(folder / f, label) for f, label in rows[:size]]
    test = [(folder / f, label) for f, label in rows[TEST_START : TEST_START + TEST_COUNT]]
    unlabelled = [folder / f for f, _ in rows[size:TEST_START] + rows[TEST_START + TEST_COUNT :]]
    options = TrainOptions(
        time_budget=args.time_budget, seed=args.seed, distill=not args.no_distill, threads=args.threads
    )
    start = time.perf_counter()
    result = train_profile(f"bench-{name}", Dataset(labelled, unlabelled), options)
    seconds = time.perf_counter() - start
    profile = result.profile
    out: dict[str, Any] = {
        "set": name,
        "labels": size,
        "train_seconds": round(seconds, 1),
        "shipped": profile.metrics["shipped"],
        "profile_metrics": profile.metrics,
    }
    for kind, (data, spec) in result.candidates.items():
        model = OnnxModel(data, profile.alphabet, spec)
        out[kind] = evaluate(model, test, profile.case_sensitive).as_dict()
    out["served"] = out[profile.metrics["shipped"]]
    return out


def _table(runs: list[dict[str, Any]], generic: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'set':<10} {'labels':>6} {'exact':>7} {'train s':>8} {'p50 ms':>7} {'img/s':>6} {'ships':>8}"
        f" {'teacher':>8} {'student':>8} {'pool':>6} {'agree':>7} {'below':>6}"
    )
    lines = [head, "-" * len(head)]
    for name, g in generic.items():
        for kind in ("generic", "generic_alphabet"):
            r = g[kind]
            label = "generic" if kind == "generic" else "gen+abc"
            lines.append(
                f"{name:<10} {label:>6} {r['accuracy']:>7.1%} {'-':>8} {r['p50_ms']:>7.2f} "
                f"{r['images_per_s']:>6.0f}"
            )
    for run in runs:
        served = run["served"]
        teacher = run.get("teacher", {}).get("accuracy")
        student = run.get("student", {}).get("accuracy")
        lines.append(
            f"{run['set']:<10} {run['labels']:>6} {served['accuracy']:>7.1%} {run['train_seconds']:>8.0f} "
            f"{served['p50_ms']:>7.2f} {served['images_per_s']:>6.0f} {run['shipped']:>8} "
            f"{f'{teacher:.1%}' if teacher is not None else '-':>8} "
            f"{f'{student:.1%}' if student is not None else '-':>8}"
            f"{_pool_columns(run['profile_metrics'])}"
        )
    return "\n".join(lines)


def _pool_columns(metrics: dict[str, Any]) -> str:
    """The ship rule's inputs: images compared, agreement on them, estimated points below the teacher."""
    pool, agree, below = metrics.get("agreement_pool"), metrics.get("student_agreement"), metrics.get(
        "student_points_below"
    )
    if pool is None or agree is None or below is None:
        return f" {'-':>6} {'-':>7} {'-':>6}"
    return f" {pool:>6} {agree:>7.2%} {below:>6.2f}"


def _csv_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated sets (default: all)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="label counts (default 100,200,500)")
    parser.add_argument("--time-budget", type=float, default=270.0, help="training seconds per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-distill", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: bench/results/…)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    try:
        from capgate.training import TrainingUnavailable, require_torch

        require_torch()
    except TrainingUnavailable as exc:
        print(f"bench training: {exc}", file=sys.stderr)
        return 2
    sets = [s for s in args.sets.split(",") if s]
    sizes = _csv_ints(args.sizes)
    if any(size > TEST_START for size in sizes):
        print(f"bench training: sizes above {TEST_START} would overlap the test rows", file=sys.stderr)
        return 2
    missing = [s for s in sets if not (DATA / s / "labels.csv").is_file()]
    if missing:
        print(f"bench training: no data for {', '.join(missing)} under {DATA}", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    generic: dict[str, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    for name in sets:
        rows = _rows(DATA / name)
        test = [(DATA / name / f, label) for f, label in rows[TEST_START : TEST_START + TEST_COUNT]]
        alphabet = "".join(sorted({ch for _, label in rows[:TEST_START] for ch in label}))
        generic[name] = _generic_results(DATA / name, alphabet, test)
        print(f"{name}: generic {generic[name]['generic']}, cut to alphabet {generic[name]['generic_alphabet']}",
              flush=True)
        for size in sizes:
            run = run_one(name, size, rows, args)
            runs.append(run)
            print(
                f"{name} {size}: exact {run['served']['accuracy']:.1%} ({run['shipped']}), "
                f"{run['train_seconds']:.0f} s, {run['served']['p50_ms']:.2f} ms p50",
                flush=True,
            )
            print(f"  shipped the {run['profile_metrics'].get('ship_reason', run['shipped'])}", flush=True)

    table = _table(runs, generic)
    print(table)
    report = {
        "bench": "training",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
        "split": {"shuffle": "random.Random(7)", "test_rows": [TEST_START, TEST_START + TEST_COUNT]},
        "options": {"time_budget": args.time_budget, "seed": args.seed, "distill": not args.no_distill},
        "generic": generic,
        "runs": runs,
        "table": table,
    }
    out = args.out or RESULTS / f"training-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
