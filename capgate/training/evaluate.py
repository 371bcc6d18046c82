"""Measuring a model the way it will be served: ONNX in onnxruntime, one image at a time.

Deliberately independent of the OCR worker's engine, so that training can judge its own output and
``capgate eval`` measures exactly the file on disk. Needs no PyTorch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from capgate.solvers.ocr.preprocess import open_image, to_model_input
from capgate.solvers.ocr.profile import InputSpec, Profile


def ctc_greedy(logits: NDArray[Any], alphabet: Sequence[str]) -> str:
    """Best class per time step, repeats merged, blanks (class 0) dropped. ``logits``: [T, classes]."""
    best = np.argmax(logits, axis=-1)
    chars = []
    previous = 0
    for index in best.tolist():
        if index != previous and index != 0 and index <= len(alphabet):
            chars.append(alphabet[index - 1])
        previous = index
    return "".join(chars)


def same_answer(predicted: str, label: str, case_sensitive: bool) -> bool:
    return predicted == label if case_sensitive else predicted.lower() == label.lower()


class OnnxModel:
    """An ONNX recognizer plus what's needed to read its output (alphabet, input geometry, layout)."""

    def __init__(
        self,
        model: bytes | Path,
        alphabet: Sequence[str],
        spec: InputSpec,
        output_layout: str = "TNC",
        threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ddddocr's common.onnx declares a wrong output shape and onnxruntime warns on every run.
        options.log_severity_level = 3
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = str(self.session.get_inputs()[0].name)
        self.alphabet = alphabet
        self.spec = spec
        self.output_layout = output_layout

    @classmethod
    def from_profile(cls, profile: Profile, model: bytes | Path, threads: int = 1) -> OnnxModel:
        return cls(model, profile.alphabet, profile.input, profile.output_layout, threads)

    def predict(self, image: Image.Image) -> str:
        batch = to_model_input(image, self.spec)[np.newaxis]
        logits = self.session.run(None, {self.input_name: batch})[0]
        frames = logits[:, 0] if self.output_layout == "TNC" else logits[0]
        return ctc_greedy(frames, self.alphabet)


@dataclass
class EvalResult:
    total: int
    correct: int
    p50_ms: float
    images_per_s: float
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (file name, label, predicted)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "correct": self.correct,
            "accuracy": round(self.accuracy, 5),
            "p50_ms": round(self.p50_ms, 3),
            "images_per_s": round(self.images_per_s, 1),
        }


def evaluate(
    model: OnnxModel,
    samples: Sequence[tuple[Path, str]],
    case_sensitive: bool = False,
    warmup: int = 3,
) -> EvalResult:
    """Exact-match accuracy and per-image latency (decode + preprocess + inference + CTC decoding).

    Images are read from disk before the clock starts: file-system speed is not the model's.
    """
    loaded = [(path.name, open_image(path.read_bytes()), label) for path, label in samples]
    for _, image, _ in loaded[:warmup]:
        model.predict(image)
    times: list[float] = []
    correct = 0
    errors: list[tuple[str, str, str]] = []
    for name, image, label in loaded:
        start = time.perf_counter()
        predicted = model.predict(image)
        times.append(time.perf_counter() - start)
        if same_answer(predicted, label, case_sensitive):
            correct += 1
        else:
            errors.append((name, label, predicted))
    p50 = statistics.median(times) * 1000.0 if times else 0.0
    rate = len(times) / sum(times) if times and sum(times) > 0 else 0.0
    return EvalResult(len(loaded), correct, p50, rate, errors)
