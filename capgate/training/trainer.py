"""Fine-tune the generic recognizer on one family, distil it into a compact student, export a profile.

The route follows what was measured on real families (``shared/data/README.md``): a model trained
from scratch on a few hundred labels memorises them, while ddddocr's pretrained recognizer, its output
cut down to the family's alphabet, reaches ~99% in a couple of CPU minutes. That model is too slow to
serve in under 5 ms, so it then labels augmented and unlabelled images for a compact student: the
teacher's own convs, thinned, under a few small new layers that learn to copy the teacher frame by
frame. The student ships only if it reads within 0.3 points of its teacher over the held-out labels
and every unlabelled image the teacher labelled (:mod:`capgate.training.ship`); otherwise the teacher
does, and the profile's metrics say which and why."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from capgate.solvers.ocr.preprocess import open_image, to_model_input
from capgate.solvers.ocr.profile import InputSpec, Profile
from capgate.training.augment import as_grayscale, augment, is_binary
from capgate.training.data import (
    Dataset,
    Sample,
    fingerprint,
    holdout_size,
    infer_alphabet,
    infer_length_range,
    is_case_sensitive,
    split,
)
from capgate.training.evaluate import EvalResult, OnnxModel, ctc_greedy, evaluate, same_answer
from capgate.training.model import (
    CONV_PREFIXES,
    INPUT_HEIGHT,
    CompactRecognizer,
    GenericRecognizer,
    export_onnx,
    load_generic,
)
from capgate.training.ship import TOLERANCE_POINTS, Agreement, ShipDecision, decide, no_student

# Teacher and student read the same input, so one preprocessed array serves both.
SPEC = InputSpec(height=INPUT_HEIGHT, width=None, channels=1)
# Softened teacher outputs: how it ranks the wrong characters (m next to n) teaches more per image
# than its near-certain first choice alone.
DISTIL_TEMPERATURE = 2.0


@dataclass
class TrainOptions:
    epochs: int = 40  # most teacher epochs; early stopping usually ends sooner
    student_epochs: int = 40
    time_budget: float = 270.0  # seconds for the whole run, teacher and student together
    seed: int = 0
    distill: bool = True
    threads: int = 2
    batch_size: int = 16
    patience: int = 3  # epochs without held-out improvement before stopping, once past half the time
    holdout: int | None = None  # held-out labels; None: a tenth, 10 to 500
    max_unlabelled: int = 3000
    max_pool: int = 6000  # teacher-labelled images the student learns from (~64 kB each)
    # How far below its teacher, in percentage points, the student may read over the held-out labels
    # plus every unlabelled image the teacher labelled, each disagreement there counted as a student
    # error (capgate.training.ship). Issue 16: a student 3 points worse passed a 50-image check.
    student_tolerance: float = TOLERANCE_POINTS
    # Unlabelled images beyond ``max_unlabelled`` that the teacher labels for the ship check only: the
    # student never learns from them, so they also show how it reads images it has not seen.
    agreement_images: int = 1000
    teacher_share: float = 0.15  # of the time budget, when a student follows


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # "teacher", "labelling", "student", "export"
    completed: float  # in units of ``total``
    total: float
    loss: float | None = None
    holdout_accuracy: float | None = None


ProgressFn = Callable[[ProgressEvent], None]


@dataclass
class TrainResult:
    profile: Profile
    onnx_bytes: bytes
    holdout: list[Sample] = field(default_factory=list)
    # Every model trained along the way ("teacher", "student"): ONNX bytes and input geometry.
    candidates: dict[str, tuple[bytes, InputSpec]] = field(default_factory=dict)


def _quiet(_: ProgressEvent) -> None:
    return None


def _load_gray(path: Path) -> Image.Image:
    return as_grayscale(open_image(path.read_bytes()))


def _stack(arrays: Sequence[NDArray[np.float32]]) -> torch.Tensor:
    """Batch ``[1, H, W]`` arrays, padding narrower ones on the right with their own edge pixels."""
    width = max(a.shape[-1] for a in arrays)
    padded = [
        a if a.shape[-1] == width else np.pad(a, ((0, 0), (0, 0), (0, width - a.shape[-1])), mode="edge")
        for a in arrays
    ]
    return torch.from_numpy(np.stack(padded))


def _targets(labels: Sequence[str], index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    flat = [index[ch] for label in labels for ch in label]
    return torch.tensor(flat, dtype=torch.long), torch.tensor([len(label) for label in labels], dtype=torch.long)


def _ctc(logits: torch.Tensor, labels: Sequence[str], index: dict[str, int]) -> torch.Tensor:
    log_probs = logits.log_softmax(-1)
    targets, target_lengths = _targets(labels, index)
    steps, batch = log_probs.shape[0], log_probs.shape[1]
    input_lengths = torch.full((batch,), steps, dtype=torch.long)
    loss: torch.Tensor = nn.functional.ctc_loss(
        log_probs, targets, input_lengths, target_lengths, blank=0, zero_infinity=True
    )
    return loss


@dataclass
class _Scored:
    accuracy: float
    loss: float

    def better_than(self, other: _Scored | None) -> bool:
        """Whether this (later) score should replace ``other``: accuracy first, then the loss.

        On a small held-out set accuracy saturates. A tie then goes to the later model, trained longer
        at a lower rate, unless its loss is clearly worse: once nearly every image is read right the
        loss is tiny, and a few images' confidence moves it by tens of percent either way.
        """
        if other is None:
            return True
        if self.accuracy != other.accuracy:
            return self.accuracy > other.accuracy
        return self.loss <= max(other.loss * 1.5, other.loss + 0.01)


def _score(
    model: nn.Module,
    inputs: Sequence[NDArray[np.float32]],
    labels: Sequence[str],
    alphabet: str,
    index: dict[str, int],
    case_sensitive: bool,
    batch_size: int = 64,
) -> _Scored:
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            chunk = labels[start : start + batch_size]
            logits = model(_stack(inputs[start : start + batch_size]))
            loss_sum += _ctc(logits, chunk, index).item() * len(chunk)
            frames = logits.numpy()
            for i, label in enumerate(chunk):
                correct += same_answer(ctc_greedy(frames[:, i], alphabet), label, case_sensitive)
    return _Scored(correct / max(1, len(inputs)), loss_sum / max(1, len(inputs)))


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def _cosine(done: float, warmup: float = 0.05) -> float:
    """Learning-rate factor at fraction ``done`` of a run: a short warm-up, then a half cosine to zero."""
    return min(1.0, done / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))


def _fine_tune(
    train: Sequence[tuple[Image.Image, str]],
    held_inputs: Sequence[NDArray[np.float32]],
    held_labels: Sequence[str],
    alphabet: str,
    case_sensitive: bool,
    binary: bool,
    options: TrainOptions,
    deadline: float,
    progress: ProgressFn,
) -> tuple[GenericRecognizer, dict[str, Any]]:
    """Fine-tune for the whole time given (or ``options.epochs``), annealing to zero by the end.

    Stopping as soon as the held-out accuracy stalled used to end after ~5 epochs, at a high learning
    rate: with a few dozen held-out images all read right, nothing told those models apart, and the
    one chosen varied by 1-2 points on unseen images. Annealing instead settles the weights, and the
    epoch kept is still chosen on the held-out images, their loss breaking ties in accuracy.
    """
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    model = load_generic(alphabet)
    start_score = _score(model, held_inputs, held_labels, alphabet, index, case_sensitive)
    # The cut-down head is the only part that must move far; the pretrained body needs nudging.
    head = list(model.head.parameters())
    body = [p for name, p in model.named_parameters() if not name.startswith("head.")]
    peaks = (2e-4, 1e-3)
    optimiser = torch.optim.AdamW(
        [{"params": body, "lr": peaks[0]}, {"params": head, "lr": peaks[1]}], weight_decay=1e-4
    )
    rng = random.Random(options.seed)
    best: _Scored | None = None
    best_state: dict[str, torch.Tensor] = {}
    stale, epoch, step, done = 0, 0, 0, 0.0
    batches = max(1, -(-len(train) // options.batch_size))
    planned = options.epochs * batches
    begin = time.monotonic()
    span = max(1e-9, deadline - begin)
    for epoch in range(1, options.epochs + 1):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        running, seen = 0.0, 0
        for b in range(batches):
            done = max(step / planned, (time.monotonic() - begin) / span)
            # A big data set may not even finish one epoch in its time; one step there must be, so
            # that there is a model to choose.
            if done >= 1.0 and step > 0:
                break
            for group, peak in zip(optimiser.param_groups, peaks, strict=True):
                group["lr"] = peak * _cosine(done)
            chunk = [train[i] for i in order[b * options.batch_size : (b + 1) * options.batch_size]]
            # A few clean images per batch keep the unaugmented distribution in sight.
            images = [img if rng.random() < 0.15 else augment(img, rng, binary) for img, _ in chunk]
            batch = _stack([to_model_input(img, SPEC) for img in images])
            loss = _ctc(model(batch), [label for _, label in chunk], index)
            optimiser.zero_grad()
            torch.autograd.backward(loss)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            step += 1
            running, seen = running + loss.item(), seen + 1
            progress(ProgressEvent("teacher", epoch - 1 + (b + 1) / batches, options.epochs, running / seen))
        if not seen:
            break
        scored = _score(model, held_inputs, held_labels, alphabet, index, case_sensitive)
        progress(ProgressEvent("teacher", epoch, options.epochs, running / seen, scored.accuracy))
        if scored.better_than(best):
            best, stale = scored, 0
            best_state = copy.deepcopy(model.state_dict())
        elif done >= 0.5:
            # Only a model that keeps getting worse while the rate is already low is worth leaving
            # early; at the start a high rate makes the held-out score bounce.
            stale += 1
        if stale >= options.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    assert best is not None
    return model, {
        "generic_holdout_accuracy": round(start_score.accuracy, 5),
        "teacher_epochs": epoch,
        "teacher_steps": step,
        "teacher_best_loss": round(best.loss, 5),
    }


@dataclass
class _Pool:
    """Teacher-labelled copies of the family's images, index-aligned lists."""

    inputs: list[NDArray[np.float16]] = field(default_factory=list)  # what the student reads
    features: list[torch.Tensor] = field(default_factory=list)  # the teacher's conv features [T, 512]
    probs: list[torch.Tensor] = field(default_factory=list)  # the teacher's softened frames [T, classes]
    labels: list[str | None] = field(default_factory=list)  # the true answer when labelled
    clean: int = 0  # the first ``clean`` items are the images as they are (not augmented)


def _teacher_pool(
    teacher: GenericRecognizer,
    sources: Sequence[tuple[Image.Image, str | None]],
    binary: bool,
    options: TrainOptions,
    deadline: float,
    progress: ProgressFn,
) -> _Pool:
    """Copies of every image with the teacher's conv features and per-frame probabilities.

    The first round is the images as they are, labelled ones first; later rounds are augmented, until
    the pool is full or the time set aside for it runs out. The teacher's forward pass is the expensive
    part, so each copy is labelled once and reused for every student epoch. The student's copy gets a little extra
    contrast, brightness and noise, which moves no character, so the teacher's answer stays right;
    not in a 1-bit family, whose served images never vary that way.
    """
    rng = random.Random(options.seed + 1)
    generator = torch.Generator().manual_seed(options.seed)
    pool = _Pool()
    rounds = max(1, options.max_pool // max(1, len(sources)))
    chunk = 32
    labelled = sum(label is not None for _, label in sources)
    for round_no in range(rounds):
        order = list(range(len(sources)))
        if round_no > 0:
            rng.shuffle(order)
        for start in range(0, len(order), chunk):
            picked = [sources[i] for i in order[start : start + chunk]]
            batch = _stack(
                [to_model_input(img if round_no == 0 else augment(img, rng, binary), SPEC) for img, _ in picked]
            )
            seen = _jitter(batch, generator) if round_no > 0 and not binary else batch
            with torch.no_grad():
                encoded = teacher.encode(batch)
                out = (teacher.decode(encoded) / DISTIL_TEMPERATURE).softmax(-1)
            for i, (_, label) in enumerate(picked):
                pool.inputs.append(seen[i].numpy().astype(np.float16))
                pool.features.append(encoded[:, i, :].half())
                pool.probs.append(out[:, i, :].clone())
                pool.labels.append(label)
            if round_no == 0:
                pool.clean = len(pool.labels)
            progress(ProgressEvent("labelling", len(pool.labels), rounds * len(sources)))
            # The labelled images, first in ``sources``, are always all in; the rest as time allows.
            if time.monotonic() >= deadline and (round_no > 0 or start + chunk >= labelled):
                return pool
    return pool


def _read(model: nn.Module, inputs: Sequence[NDArray[np.float32]], alphabet: str, batch: int = 64) -> list[str]:
    """Greedy answers of ``model`` for each input, in batches of images of the same width (so that
    no image is padded)."""
    model.eval()
    answers: list[str] = [""] * len(inputs)
    by_width: dict[int, list[int]] = {}
    for i, array in enumerate(inputs):
        by_width.setdefault(array.shape[-1], []).append(i)
    with torch.no_grad():
        for items in by_width.values():
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                frames = model(_stack([inputs[i] for i in chunk])).numpy()
                for n, i in enumerate(chunk):
                    answers[i] = ctc_greedy(frames[:, n], alphabet)
    return answers


def _jitter(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = batch.shape[0]
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)
    shift = 0.16 * torch.rand(n, 1, 1, 1, generator=generator) - 0.08
    noise = 0.03 * torch.rand(n, 1, 1, 1, generator=generator) * torch.randn(batch.shape, generator=generator)
    return ((batch - 0.5) * contrast + 0.5 + shift + noise).clamp(0.0, 1.0)


def _buckets(pool: _Pool, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of pool items with the same number of time steps (images of equal width)."""
    by_steps: dict[int, list[int]] = {}
    for i, frames in enumerate(pool.probs):
        by_steps.setdefault(frames.shape[0], []).append(i)
    batches = []
    for items in by_steps.values():
        rng.shuffle(items)
        batches += [items[k : k + batch_size] for k in range(0, len(items), batch_size)]
    rng.shuffle(batches)
    return batches


def _distil(
    student: CompactRecognizer,
    pool: _Pool,
    held_inputs: Sequence[NDArray[np.float32]],
    held_labels: Sequence[str],
    alphabet: str,
    case_sensitive: bool,
    options: TrainOptions,
    deadline: float,
    progress: ProgressFn,
) -> tuple[CompactRecognizer, dict[str, Any]]:
    """Teach the student in two phases, each copying a different half of the teacher.

    1. The new layers learn to read the *teacher's* conv features, cached in the pool, into the
       teacher's frames. A step costs a few small layers' work, so this converges within a minute
       (on kaggle_v2 it matched the teacher: 99.7% on 300 unseen images); it gets a fifth of the
       time, since the student's accuracy follows how long phase 2 runs (on lzu, students cut short
       by a longer teacher read 93-95%).
    2. The thinned convs learn to produce the teacher's features (a dense 512-number target per
       frame, far richer than the frames' probabilities) while the whole student keeps copying the
       teacher's frames. Reading the thinned convs' own features instead, frozen, stalled at ~94%.
    """
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    rng = random.Random(options.seed + 2)
    state: dict[str, Any] = {"best": None, "best_state": {}, "steps": 0, "epochs": 0, "loss": 0.0}
    start = time.monotonic()
    total = max(1e-9, deadline - start)

    def report(accuracy: float | None = None) -> None:
        progress(ProgressEvent("student", 100 * min(1.0, (time.monotonic() - start) / total), 100,
                               state["loss"], accuracy))

    def keep_if_best() -> None:
        scored = _score(student, held_inputs, held_labels, alphabet, index, case_sensitive)
        report(scored.accuracy)
        # Later is better when scores tie: the learning rate is lower and the model has seen more.
        if state["best"] is None or scored.accuracy >= state["best"].accuracy:
            state["best"], state["best_state"] = scored, copy.deepcopy(student.state_dict())

    def frame_loss(logits: torch.Tensor, picked: list[int]) -> torch.Tensor:
        target = torch.stack([pool.probs[i] for i in picked], dim=1)
        soft = (logits / DISTIL_TEMPERATURE).log_softmax(-1)
        loss = nn.functional.kl_div(soft, target, reduction="none").sum(-1).mean() * DISTIL_TEMPERATURE**2
        known = [(n, pool.labels[i]) for n, i in enumerate(picked) if pool.labels[i] is not None]
        if known:
            sel = torch.tensor([n for n, _ in known])
            loss = loss + 0.5 * _ctc(logits[:, sel], [lab for _, lab in known if lab is not None], index)
        return loss

    def phase(groups: list[tuple[list[nn.Parameter], float]], batch_size: int, until: float, convs: bool) -> None:
        optimiser = torch.optim.AdamW([{"params": p, "lr": lr} for p, lr in groups], weight_decay=1e-4)
        params = [p for group, _ in groups for p in group]
        begin = time.monotonic()
        planned = options.student_epochs * max(1, -(-len(pool.labels) // batch_size))
        step, done = 0, 0.0
        while done < 1.0:
            state["epochs"] += 1
            running, seen = 0.0, 0
            for picked in _buckets(pool, batch_size, rng):
                # The schedule runs on whichever ends first, the planned steps or the time left, so
                # the learning rate has annealed by the deadline instead of being cut off at its peak.
                done = max(step / planned, (time.monotonic() - begin) / max(1e-9, until - begin))
                if done >= 1.0:
                    break
                scale = _cosine(done)
                for group, (_, peak) in zip(optimiser.param_groups, groups, strict=True):
                    group["lr"] = peak * scale
                student.train()
                wanted = torch.stack([pool.features[i] for i in picked], dim=1).float()
                if convs:
                    encoded = student.encode(_stack([pool.inputs[i].astype(np.float32) for i in picked]))
                    hint = ((encoded - wanted) ** 2).mean() / (wanted**2).mean().clamp_min(1e-6)
                    loss = hint + frame_loss(student.decode(encoded), picked)
                else:
                    loss = frame_loss(student.decode(wanted), picked)
                optimiser.zero_grad()
                torch.autograd.backward(loss)
                nn.utils.clip_grad_norm_(params, 5.0)
                optimiser.step()
                step += 1
                state["steps"] += 1
                running, seen = running + loss.item(), seen + 1
                state["loss"] = running / seen
                if step % 10 == 0:
                    report()
                if convs and step % 25 == 0:
                    keep_if_best()
            if seen:
                keep_if_best()

    new = [p for name, p in student.named_parameters() if not name.startswith(CONV_PREFIXES)]
    convs = [p for name, p in student.named_parameters() if name.startswith(CONV_PREFIXES)]
    report()  # the stage starts, however little time the teacher left it
    phase([(new, 5e-3)], 64, start + total * 0.2, convs=False)
    phase([(convs, 1e-3), (new, 3e-4)], 32, deadline, convs=True)
    if state["best"] is None:
        keep_if_best()  # no time was left to train it: it is scored all the same, for the ship rule
    if state["best_state"]:
        student.load_state_dict(state["best_state"])
    student.eval()
    return student, {"student_epochs": state["epochs"], "student_steps": state["steps"],
                     "student_pool": len(pool.labels)}


def _width_for(spec: InputSpec, fp_width: int | None, fp_height: int | None) -> int:
    if spec.width is not None:
        return spec.width
    if fp_width and fp_height:
        return max(1, round(fp_width * spec.height / fp_height))
    return spec.height * 4


def train_profile(
    name: str,
    dataset: Dataset,
    options: TrainOptions | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train a profile for one family; the result is ready for ``save_profile``."""
    options = options or TrainOptions()
    progress = progress or _quiet
    budget = _Budget(options.time_budget)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    try:
        return _train(name, dataset, options, progress, budget)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    name: str, dataset: Dataset, options: TrainOptions, progress: ProgressFn, budget: _Budget
) -> TrainResult:
    labels = [s.label for s in dataset.labelled]
    case_sensitive = is_case_sensitive(labels)
    alphabet = infer_alphabet(labels)
    min_len, max_len = infer_length_range(labels)
    fp = fingerprint([s.path for s in dataset.labelled] + list(dataset.unlabelled), seed=options.seed)
    held_count = options.holdout if options.holdout is not None else holdout_size(len(dataset.labelled))
    train_samples, held = split(dataset.labelled, held_count, options.seed)

    train = [(_load_gray(s.path), s.label) for s in train_samples]
    held_images = [_load_gray(s.path) for s in held]
    held_labels = [s.label for s in held]
    unlabelled_paths = list(dataset.unlabelled)
    if len(unlabelled_paths) > options.max_unlabelled:
        unlabelled_paths = random.Random(options.seed).sample(unlabelled_paths, options.max_unlabelled)
    # Whether the student reads as its teacher does on images it never learnt from is a far larger
    # test than a few dozen held-out labels, which can't tell a point's difference apart.
    taken = set(unlabelled_paths)
    spare = [p for p in dataset.unlabelled if p not in taken]
    spare = random.Random(options.seed + 4).sample(spare, min(len(spare), options.agreement_images))
    unseen = [to_model_input(_load_gray(p), SPEC) for p in spare] if options.distill else []

    # The teacher gets a small share of the time when a student follows: annealed, a few epochs
    # already read better than twice as many stopped early (lzu, 500 labels: 100% of 300 unseen
    # images after 60 s), while the student's accuracy keeps following the time it is given.
    teacher_share = options.teacher_share if options.distill else 1.0
    # A family of 1-bit images gets augmented copies that are 1-bit too.
    binary = all(is_binary(img) for img, _ in train[:50])
    teacher, metrics = _fine_tune(
        train,
        [to_model_input(img, SPEC) for img in held_images],
        held_labels,
        alphabet,
        case_sensitive,
        binary,
        options,
        budget.start + options.time_budget * teacher_share,
        progress,
    )
    teacher_seconds = budget.elapsed()
    width = fp.width if fp else None
    height = fp.height if fp else None

    # Augmented copies of the held-out images: a harsher test, recorded for both models. The choice
    # between them is made on the held-out images as they are, the kind of image the family sends.
    check_rng = random.Random(options.seed + 3)
    originals = list(zip(held_images, held_labels, strict=True))
    check = originals + [(augment(img, check_rng, binary), label) for _ in range(3) for img, label in originals]

    def served(model: nn.Module, spec: InputSpec) -> tuple[bytes, EvalResult, int]:
        data = export_onnx(model, spec.channels, spec.height, _width_for(spec, width, height))
        onnx_model = OnnxModel(data, alphabet, spec)
        result = evaluate(onnx_model, [(s.path, s.label) for s in held], case_sensitive)
        correct = sum(same_answer(onnx_model.predict(img), label, case_sensitive) for img, label in check)
        return data, result, correct

    teacher_bytes, teacher_eval, teacher_check = served(teacher, SPEC)
    metrics.update(
        teacher_check_accuracy=round(teacher_check / len(check), 5),
        teacher_holdout_accuracy=round(teacher_eval.accuracy, 5),
        teacher_p50_ms=round(teacher_eval.p50_ms, 3),
        teacher_seconds=round(teacher_seconds, 1),
    )
    shipped_bytes, shipped_spec = teacher_bytes, SPEC
    decision: ShipDecision = no_student()
    candidates = {"teacher": (teacher_bytes, SPEC)}

    if options.distill:
        sources: list[tuple[Image.Image, str | None]] = [(img, label) for img, label in train]
        sources += [(_load_gray(p), None) for p in unlabelled_paths]
        # Labelling gets up to a third of what is left; the teacher's reading of the images kept
        # back for the ship check comes out of the same share.
        labelling_deadline = time.monotonic() + budget.left() / 3
        teacher_unseen = _read(teacher, unseen, alphabet)
        pool = _teacher_pool(teacher, sources, binary, options, labelling_deadline, progress)
        metrics["labelling_seconds"] = round(budget.elapsed() - teacher_seconds, 1)
        student, student_metrics = _distil(
            CompactRecognizer.from_teacher(teacher),
            pool,
            [to_model_input(img, SPEC) for img in held_images],
            held_labels,
            alphabet,
            case_sensitive,
            options,
            budget.deadline,
            progress,
        )
        metrics.update(student_metrics)
        student_bytes, student_eval, student_check = served(student, SPEC)
        candidates["student"] = (student_bytes, SPEC)
        # Every unlabelled image the teacher labelled: the clean copies in the student's pool, and
        # the ones kept back from it. The teacher's reading of the former is its pool entry.
        learnt = [i for i in range(pool.clean) if pool.labels[i] is None]
        teacher_learnt = [ctc_greedy(pool.probs[i].numpy(), alphabet) for i in learnt]
        student_learnt = _read(student, [pool.inputs[i].astype(np.float32) for i in learnt], alphabet)
        student_unseen = _read(student, unseen, alphabet)

        def agreeing(mine: list[str], theirs: list[str]) -> int:
            return sum(same_answer(a, b, case_sensitive) for a, b in zip(mine, theirs, strict=True))

        agreed_unseen = agreeing(student_unseen, teacher_unseen)
        counts = Agreement(
            holdout=len(held),
            teacher_correct=teacher_eval.correct,
            student_correct=student_eval.correct,
            pool=len(learnt) + len(unseen),
            agreed=agreeing(student_learnt, teacher_learnt) + agreed_unseen,
            pool_unseen=len(unseen),
            agreed_unseen=agreed_unseen,
        )
        decision = decide(counts, options.student_tolerance)
        metrics.update(
            student_holdout_accuracy=round(student_eval.accuracy, 5),
            student_p50_ms=round(student_eval.p50_ms, 3),
            student_check_accuracy=round(student_check / len(check), 5),
            student_agreement=round(counts.agreed / max(1, counts.pool), 5),
            agreement_pool=counts.pool,
            agreement_unseen=counts.pool_unseen,
            student_agreement_unseen=round(agreed_unseen / max(1, len(unseen)), 5) if unseen else None,
        )
        if decision.shipped == "student":
            shipped_bytes = student_bytes

    metrics.update(decision.as_metrics())

    metrics.update(
        labelled=len(dataset.labelled),
        train_images=len(train),
        holdout_images=len(held),
        check_images=len(check),
        agreement_images=len(unseen),
        unlabelled_images=len(unlabelled_paths),
        train_seconds=round(budget.elapsed(), 1),
        seed=options.seed,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    progress(ProgressEvent("export", 1, 1))
    profile = Profile(
        name=name,
        alphabet=alphabet,
        input=shipped_spec,
        output_layout="TNC",
        min_len=min_len,
        max_len=max_len,
        case_sensitive=case_sensitive,
        fingerprint=fp,
        metrics=metrics,
    )
    return TrainResult(profile, shipped_bytes, held, candidates)
