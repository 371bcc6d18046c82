"""``capgate train`` and ``capgate eval``: the command-line face of :mod:`capgate.training`.

Each subcommand sets ``func`` to a handler taking the parsed arguments and returning the exit status;
expected failures (a missing folder, no labels, no PyTorch) print one line and return 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from capgate.paths import labelled_dir, profiles_dir
from capgate.solvers.ocr.profile import load_profile, model_path, save_profile, valid_profile_name
from capgate.training import TrainingUnavailable, require_torch
from capgate.training.data import DataError, load_dataset

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from capgate.training.trainer import ProgressEvent

EXIT_USAGE = 2

_STAGES = {
    "teacher": "fine-tuning",
    "labelling": "teacher labelling",
    "student": "distilling",
    "export": "exporting",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a recognizer profile for one captcha family",
        description="Fine-tune the generic OCR model on labelled images of one captcha family, distil it "
        "into a fast model, and save it as a profile the server uses at once.",
    )
    train.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        metavar="DATA_DIR",
        help="images plus labels.csv (filename,label), or images named by their label",
    )
    train.add_argument("--profile", required=True, help="profile name (letters, digits, '_', '-', '.')")
    train.add_argument(
        "--from-reports",
        action="store_true",
        help="train on the labels kept from use (reportgood, human answers) for this profile",
    )
    train.add_argument("--epochs", type=int, default=40, help="most fine-tuning epochs (default 40)")
    train.add_argument(
        "--time-budget", type=float, default=270.0, help="seconds for the whole run (default 270)"
    )
    train.add_argument("--seed", type=int, default=0, help="seed for the held-out split and augmentation")
    train.add_argument("--no-distill", action="store_true", help="ship the fine-tuned model, no small student")
    train.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch (default 2)")
    train.add_argument("--holdout", type=int, default=None, help="labelled images held out (default: a tenth)")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "eval",
        help="measure a profile's exact-match accuracy and latency on labelled images",
        description="Run a saved profile through onnxruntime on every labelled image in DATA_DIR.",
    )
    evaluate.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    evaluate.add_argument("--profile", required=True)
    evaluate.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    evaluate.set_defaults(func=run_eval)


def _fail(command: str, message: str) -> int:
    print(f"capgate {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


class _Bar:
    """Rich progress, one bar per stage, showing the running loss and the latest held-out accuracy."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.accuracy: dict[str, str] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage not in self.tasks:
            for stage, task in self.tasks.items():
                # Early stopping ends a stage short of its planned epochs: show it as done.
                self.progress.update(task, completed=self.progress.tasks[task].total)
                self.accuracy.setdefault(stage, "")
            self.tasks[event.stage] = self.progress.add_task(
                _STAGES.get(event.stage, event.stage), total=event.total, loss="", acc=""
            )
        if event.holdout_accuracy is not None:
            self.accuracy[event.stage] = f"held-out {event.holdout_accuracy:.1%}"
        self.progress.update(
            self.tasks[event.stage],
            completed=event.completed,
            total=event.total,
            loss=f"loss {event.loss:.4f}" if event.loss is not None else "",
            acc=self.accuracy.get(event.stage, ""),
        )


def run_train(args: argparse.Namespace) -> int:
    name: str = args.profile
    if not valid_profile_name(name):
        return _fail("train", f"invalid profile name {name!r}: letters, digits, '_', '-', '.' (max 64)")
    if args.from_reports:
        folder = labelled_dir() / name
        if not folder.is_dir():
            return _fail("train", f"no labels kept from use for profile {name!r} (looked in {folder})")
    elif args.data_dir is None:
        return _fail("train", "DATA_DIR is required unless --from-reports is given")
    else:
        folder = args.data_dir
    if args.epochs < 1 or args.time_budget <= 0 or args.threads < 1:
        return _fail("train", "--epochs, --time-budget and --threads must be positive")
    try:
        dataset = load_dataset(folder)
        require_torch()
    except (DataError, TrainingUnavailable) as exc:
        return _fail("train", str(exc))

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from capgate.training.trainer import TrainOptions, train_profile

    options = TrainOptions(
        epochs=args.epochs,
        time_budget=args.time_budget,
        seed=args.seed,
        distill=not args.no_distill,
        threads=args.threads,
        holdout=args.holdout,
    )
    print(
        f"training {name!r} on {len(dataset.labelled)} labelled images"
        + (f" (+{len(dataset.unlabelled)} unlabelled)" if dataset.unlabelled else "")
        + f" from {folder}"
    )
    columns = (
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TextColumn("{task.fields[loss]:<12}"),
        TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns) as progress:
            result = train_profile(name, dataset, options, _Bar(progress))
    except DataError as exc:
        return _fail("train", str(exc))
    folder_out = save_profile(profiles_dir(), result.profile, result.onnx_bytes)
    m = result.profile.metrics
    accuracy = m.get(f"{m['shipped']}_holdout_accuracy", 0.0)
    latency = m.get(f"{m['shipped']}_p50_ms", 0.0)
    print(
        f"saved profile {name!r} to {folder_out}: {m['shipped']} model, held-out {accuracy:.1%} "
        f"of {m['holdout_images']} (generic {m['generic_holdout_accuracy']:.1%}), "
        f"{latency:.1f} ms p50, trained in {m['train_seconds']:.0f} s"
    )
    if m.get("ship_reason"):
        print(f"shipped the {m['ship_reason']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from capgate.training.evaluate import OnnxModel, evaluate

    name: str = args.profile
    if not valid_profile_name(name):
        return _fail("eval", f"invalid profile name {name!r}")
    root = profiles_dir()
    path = model_path(root, name)
    try:
        profile = load_profile(root, name)
    except FileNotFoundError:
        return _fail("eval", f"no profile {name!r} in {root}")
    except (ValueError, KeyError, TypeError) as exc:
        return _fail("eval", f"profile {name!r} is unreadable: {exc}")
    if not path.is_file():
        return _fail("eval", f"profile {name!r} has no model file ({path})")
    try:
        dataset = load_dataset(args.data_dir)
    except DataError as exc:
        return _fail("eval", str(exc))
    model = OnnxModel.from_profile(profile, path, threads=max(1, args.threads))
    result = evaluate(model, [(s.path, s.label) for s in dataset.labelled], profile.case_sensitive)
    print(
        f"{name}: exact match {result.accuracy:.2%} ({result.correct}/{result.total}), "
        f"p50 {result.p50_ms:.2f} ms per image, {result.images_per_s:.0f} images/s"
    )
    for file_name, label, predicted in result.errors[:10]:
        print(f"  {file_name}: {label!r} read as {predicted!r}")
    return 0
