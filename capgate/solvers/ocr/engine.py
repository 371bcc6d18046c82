"""Text captcha recognition with CTC models run by onnxruntime, constraints honoured while decoding.

Constraints restrict the decoder instead of filtering its answer: classes the client ruled out are
removed before each frame's character is chosen, and a length range picks the most probable CTC
path whose collapsed length lies in it. Filtering afterwards (ddddocr's ``set_ranges``) throws away
characters the model did see and keeps the wrong ones it preferred; restricting first let the
generic model go from 84 % to 97 % exact on kaggle_v2 and from 69 % to 93 % on lzu.

Without a ``language`` or ``lang`` parameter the generic models answer in ASCII letters and digits
only: their charset is ddddocr's 8,000 classes, nearly all Chinese, and left whole it read ``73mnx``
as ``不3mnx``. Other scripts are allowed when the task asks for them (:func:`letter_scripts`); a
trained profile answers from its own alphabet.

Decoding works on *groups*: every model class whose text maps to the same answer text (``A`` and
``a`` when case does not matter, ``４`` and ``4``, Latin ``P`` and Cyrillic ``Р`` for Cyrillic
answers) is one group, its probability the sum of its members'. The CTC blank is group 0.

Confidence is the geometric mean, over the characters of the answer, of each character's peak
per-frame probability under the full (unrestricted) softmax, so a constraint that forces an answer
the model did not believe in shows up as low confidence. When a length range made the decoder
leave the most probable path, it is further multiplied by the probability ratio of the path taken
to that path (dropping a character the model was sure of costs what it should). An empty answer
has confidence 0.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from capgate.solvers.ocr.constraints import OcrConstraints
from capgate.solvers.ocr.preprocess import open_image, to_model_input
from capgate.solvers.ocr.profile import InputSpec, Profile, load_profile, model_path

GenericName = Literal["common", "common_old"]

#: ddddocr's bundled models and the charset each was trained with (ddddocr pairs ``common.onnx``
#: with ``CHARSET_BETA`` and ``common_old.onnx`` with ``CHARSET_OLD``).
GENERIC_MODELS: dict[str, tuple[str, str]] = {
    "common": ("common.onnx", "CHARSET_BETA"),
    "common_old": ("common_old.onnx", "CHARSET_OLD"),
}
#: Chosen by measurement, exact match on 1,000 images each, kaggle_v2 (length 5 / no constraint) and
#: lzu (digits, length 5 / none): common alone 97.2 / 81.6 % and 95.3 / 84.9 %; common_old alone
#: 96.8 / 84.0 % and 96.0 / 89.0 %; common_old asking common when it is unsure (confidence < 0.9)
#: and keeping the more confident answer 98.1 / 90.0 % and 95.9 / 89.4 %, common being asked for
#: 3-14 % of images. common_old is int8 and the faster (13-17 ms against 19-25 ms p50).
DEFAULT_GENERIC: tuple[GenericName, ...] = ("common_old", "common")
SECOND_OPINION_BELOW = 0.9
GENERIC_SPEC = InputSpec(height=64, width=None, channels=1, mean=0.0, std=1.0)

#: Candidates per frame for the length-constrained search; the answer almost never needs a class
#: outside a frame's eight most probable ones, and the search stays well under a millisecond.
TOP_K = 8

#: Widest model input accepted (aspect ratio 64:1 at height 64).
MAX_INPUT_WIDTH = 4096

_DIGITS = frozenset("0123456789")
_CALC_OPS = {
    "+": "+", "-": "-", "−": "-", "*": "*", "x": "*", "X": "*", "×": "*", "/": "/", "÷": "/", "=": "=",
}  # fmt: skip
# Glyphs the generic model only knows in their Latin form (its charset has 7 Cyrillic letters).
_LATIN_TO_CYRILLIC = {
    "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "K": "К", "M": "М", "O": "О", "P": "Р",
    "T": "Т", "X": "Х", "Y": "У", "a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х",
    "y": "у", "k": "к", "m": "м", "n": "п", "r": "г",
}  # fmt: skip


class OcrError(Exception):
    """Base of the errors a recognizer raises."""


class UnreadableImage(OcrError, ValueError):
    """The bytes are not an image Pillow can decode."""


class UnknownProfile(OcrError, LookupError):
    """No usable profile of that name."""


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float  # in [0, 1]; see the module docs


# --------------------------------------------------------------------------- alphabet groups


#: Pseudo-script of the generic model's default answer: ASCII letters (and, numeric permitting, digits).
ASCII = "ASCII"

_LATIN_LANGS = (
    "af", "az", "ca", "cs", "cy", "da", "de", "en", "eo", "es", "et", "eu", "fi", "fr", "ga", "gl", "hr",
    "hu", "id", "is", "it", "lt", "lv", "ms", "mt", "nb", "nl", "nn", "no", "pl", "pt", "ro", "sk", "sl",
    "sq", "sv", "sw", "tl", "tr", "uz", "vi",
)  # fmt: skip
#: The letter scripts each ``lang`` code's text is written in, by the first word of their Unicode
#: character names. Latin stays allowed beside them (captchas mix it in); a code not listed leaves
#: letters unrestricted.
_LANG_SCRIPTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_LATIN_LANGS, ()),
    **dict.fromkeys(("be", "bg", "kk", "ky", "mk", "mn", "ru", "sr", "tg", "uk"), ("CYRILLIC",)),
    "el": ("GREEK",),
    "zh": ("CJK",),
    "ja": ("CJK", "HIRAGANA", "KATAKANA"),
    "ko": ("HANGUL", "CJK"),
    **dict.fromkeys(("ar", "fa", "ur"), ("ARABIC",)),
    "he": ("HEBREW",),
    **dict.fromkeys(("hi", "mr", "ne"), ("DEVANAGARI",)),
    "bn": ("BENGALI",),
    "th": ("THAI",),
    "hy": ("ARMENIAN",),
    "ka": ("GEORGIAN",),
}


def letter_scripts(c: OcrConstraints, default: frozenset[str] | None = frozenset({ASCII})) -> frozenset[str] | None:
    """The scripts an answer's letters may be drawn from (None: any), given the task's ``language``
    and ``lang``; ``default`` when it names neither (ASCII for ddddocr's generic models, whose
    charset is mostly Chinese: without it ``73mnx`` could be read ``不3mnx``; a trained profile's own
    alphabet needs no default). ``language`` wins over ``lang``. Wherever scripts are restricted,
    only letters of those scripts and digits can be answered (spaces with ``phrase``); symbols only
    where nothing restricts them."""
    if c.language == 1:
        return frozenset({"CYRILLIC"})
    if c.language == 2:
        return frozenset({"LATIN"})
    if c.lang:
        scripts = _LANG_SCRIPTS.get(c.lang)
        return None if scripts is None else frozenset({"LATIN", *scripts})
    return default


@dataclass(frozen=True)
class _AlphabetKey:
    numeric: int
    scripts: frozenset[str] | None
    cyrillic_lookalikes: bool  # ``language=1``: Latin glyphs the model knows stand for Cyrillic ones
    calc: bool
    phrase: bool
    case_sensitive: bool

    @classmethod
    def of(cls, c: OcrConstraints, default: frozenset[str] | None) -> _AlphabetKey:
        scripts = letter_scripts(c, default)
        return cls(c.numeric, scripts, c.language == 1, c.calc, c.phrase, c.case_sensitive)


def _script(char: str) -> str:
    return unicodedata.name(char, "").split(" ", 1)[0]


def _answer_char(text: str, key: _AlphabetKey) -> str | None:
    """What a class whose text is ``text`` contributes to the answer, or None if ruled out."""
    norm = unicodedata.normalize("NFKC", text)
    # Compatibility forms that stand for one plain character ("４", "ｃ", "²") are that character;
    # ones that expand ("⑴" -> "(1)") are left alone as symbols.
    char = norm if len(norm) == 1 else text
    if char.isspace():
        return " " if key.phrase else None
    if key.calc:
        if char in _DIGITS:
            return char
        return _CALC_OPS.get(char)
    is_digit = char in _DIGITS
    is_letter = len(char) == 1 and char.isalpha()
    if key.numeric == 1 and not is_digit:
        return None
    if key.numeric == 2 and not is_letter:
        return None
    if key.numeric == 3 and not (is_digit or is_letter):
        return None
    if key.numeric == 4 and is_digit:
        return None
    if key.scripts is not None:
        if not (is_digit or is_letter):
            return None
        if is_letter and not ((ASCII in key.scripts and char.isascii()) or _script(char) in key.scripts):
            mapped = _LATIN_TO_CYRILLIC.get(char) if key.cyrillic_lookalikes else None
            if mapped is None:
                return None
            char = mapped
    return char if key.case_sensitive else char.lower()


@dataclass(frozen=True)
class _Groups:
    """Which model classes make up each answer group; group 0 is the CTC blank."""

    first: NDArray[np.intp]  # per group, the model class of its first member
    # Further members, one level per rank (second members, third members, ...), so that each
    # level names every group at most once and can be added with one fancy-indexed ``+=``.
    extra: tuple[tuple[NDArray[np.intp], NDArray[np.intp]], ...]  # (groups, model classes)
    texts: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.texts)

    def sum(self, probs: NDArray[np.float32]) -> NDArray[np.float32]:
        """``[T, classes]`` probabilities to ``[T, groups]``."""
        grouped: NDArray[np.float32] = probs[:, self.first]
        for groups, columns in self.extra:
            grouped[:, groups] += probs[:, columns]
        return grouped


def _build_groups(allowed: dict[int, str]) -> _Groups:
    members: dict[str, list[int]] = {}
    for cls_id, text in allowed.items():
        members.setdefault(text, []).append(cls_id)
    texts = ("", *sorted(members))
    ranked = [[0], *(members[t] for t in texts[1:])]
    levels = []
    for rank in range(1, max(len(m) for m in ranked)):
        pairs = [(g, m[rank]) for g, m in enumerate(ranked) if len(m) > rank]
        levels.append((np.asarray([g for g, _ in pairs], np.intp), np.asarray([c for _, c in pairs], np.intp)))
    first = np.asarray([m[0] for m in ranked], dtype=np.intp)
    return _Groups(first, tuple(levels), texts)


# --------------------------------------------------------------------------- models


def ddddocr_dir() -> Path:
    """ddddocr's package folder, found without importing it (its import pulls in far more)."""
    spec = importlib.util.find_spec("ddddocr")
    if spec is None or not spec.submodule_search_locations:
        raise OcrError("ddddocr is not installed; it ships the generic OCR model")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def ddddocr_charset(name: str) -> tuple[str, ...]:
    """A charset list from ddddocr's ``charsets.py``; index 0 is the CTC blank ``""``."""
    path = ddddocr_dir() / "charsets.py"
    spec = importlib.util.spec_from_file_location("_capgate_ddddocr_charsets", path)
    if spec is None or spec.loader is None:
        raise OcrError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    charset = getattr(module, name)
    return tuple(str(c) for c in charset)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread per session: the pool runs one process per core, so more threads only contend.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # ddddocr's models declare their output as [1, seqlen] and return [T, 1, C]; onnxruntime
    # warns about it on every run.
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class _Model:
    def __init__(
        self,
        path: Path,
        classes: Sequence[str],
        spec: InputSpec,
        layout: str,
        default_scripts: frozenset[str] | None = None,
    ) -> None:
        if layout not in ("TNC", "NTC"):
            raise OcrError(f"unknown output layout {layout!r}")
        self.path = path
        self.classes = tuple(classes)
        self.spec = spec
        self.layout = layout
        # Letter scripts answered when the task names no language (see ``letter_scripts``).
        self.default_scripts = default_scripts
        self.session = _session(path)
        self.input_name: str = self.session.get_inputs()[0].name
        self._groups: dict[_AlphabetKey, _Groups] = {}

    def probs(self, image: Image.Image) -> NDArray[np.float32]:
        """Per-frame softmax ``[T, classes]``."""
        if self.spec.width is None and image.width * self.spec.height > MAX_INPUT_WIDTH * image.height:
            # A 1000x1 strip would become 64,000 px wide: hundreds of MB of activations for
            # something that is no text captcha.
            raise UnreadableImage(f"a {image.width}x{image.height} image is too elongated for text recognition")
        batch = to_model_input(image, self.spec)[np.newaxis]
        out: NDArray[np.float32] = np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float32)
        if out.ndim == 3:
            out = out[:, 0, :] if self.layout == "TNC" else out[0]
        elif out.ndim != 2:
            raise OcrError(f"unexpected model output shape {out.shape}")
        if out.shape[1] != len(self.classes):
            raise OcrError(f"model has {out.shape[1]} classes, its alphabet {len(self.classes)}")
        out = out - out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out

    def groups(self, key: _AlphabetKey) -> _Groups:
        found = self._groups.get(key)
        if found is None:
            allowed = {}
            for cls_id, text in enumerate(self.classes):
                if cls_id == 0 or text == "":
                    continue
                char = _answer_char(text, key)
                if char is not None:
                    allowed[cls_id] = char
            if not allowed:
                # The client's constraints and this model's alphabet do not meet (digits asked
                # of a letters-only profile): the model's own alphabet is the better guess.
                relaxed = _AlphabetKey(0, None, False, False, key.phrase, key.case_sensitive)
                allowed = {
                    i: c for i, t in enumerate(self.classes) if i and t and (c := _answer_char(t, relaxed)) is not None
                }
            found = self._groups[key] = _build_groups(allowed)
        return found


# --------------------------------------------------------------------------- decoding


def _collapse(path: NDArray[np.intp], probs: NDArray[np.float32]) -> tuple[list[int], list[float]]:
    """CTC collapse of a per-frame group path: emitted groups and each one's peak probability."""
    emitted: list[int] = []
    peaks: list[float] = []
    prev = 0
    for t, g in enumerate(path.tolist()):
        if g != 0 and g == prev:
            peaks[-1] = max(peaks[-1], float(probs[t, g]))
        elif g != 0:
            emitted.append(g)
            peaks.append(float(probs[t, g]))
        prev = g
    return emitted, peaks


def _best_path_in_range(probs: NDArray[np.float32], low: int, high: int) -> NDArray[np.intp]:
    """Most probable frame path whose collapsed length is in ``[low, high]`` (``high`` 0 = any).

    Viterbi over (frame, characters emitted so far, this frame's label) with each frame's labels
    limited to the blank and its TOP_K most probable groups. Without an upper bound the count
    saturates at ``low`` (the last row means "at least ``low``"), which keeps the tables small
    for very wide images. When no path reaches the range (fewer frames than ``low``), the path
    whose length is nearest to it.
    """
    frames, size = probs.shape
    saturate = not high
    cap = min(high or low, frames)
    k = min(TOP_K, size - 1)
    if k == 0:
        return np.zeros(frames, dtype=np.intp)
    logp = np.log(np.maximum(probs, 1e-30))
    top = np.argpartition(-probs[:, 1:], k - 1, axis=1)[:, :k] + 1
    cand = np.concatenate([np.zeros((frames, 1), dtype=np.intp), top], axis=1)  # [T, K+1]
    lp = np.take_along_axis(logp, cand, axis=1)

    neg = -np.inf
    score = np.full((cap + 1, k + 1), neg)
    score[0, 0] = lp[0, 0]
    if cap:
        score[1, 1:] = lp[0, 1:]
    elif saturate:
        score[0, 1:] = lp[0, 1:]
    back = np.zeros((frames, cap + 1, k + 1), dtype=np.intp)
    emits = np.zeros((frames, k + 1, k + 1), dtype=bool)
    stays_on_top = np.zeros((frames, k + 1), dtype=bool)  # saturated row: emitted from the top row
    for t in range(1, frames):
        prev, cur = cand[t - 1], cand[t]
        emit = (cur[np.newaxis, :] != 0) & (prev[:, np.newaxis] != cur[np.newaxis, :])  # [prev, cur]
        emits[t] = emit
        shifted = np.full_like(score, neg)
        shifted[1:] = score[:-1]
        if saturate:
            stays_on_top[t] = score[cap] >= shifted[cap]
            shifted[cap] = np.maximum(shifted[cap], score[cap])
        options = np.where(emit[np.newaxis], shifted[:, :, np.newaxis], score[:, :, np.newaxis])
        back[t] = options.argmax(axis=1)
        score = np.take_along_axis(options, back[t][:, np.newaxis, :], axis=1)[:, 0, :] + lp[t]

    best_per_len = score.max(axis=1)
    reachable = np.flatnonzero(np.isfinite(best_per_len))
    in_range = [n for n in reachable.tolist() if n >= low]
    n = max(in_range, key=lambda m: best_per_len[m]) if in_range else int(reachable.max())
    j = int(score[n].argmax())
    path = np.zeros(frames, dtype=np.intp)
    for t in range(frames - 1, -1, -1):
        path[t] = cand[t, j]
        if t:
            i = int(back[t, n, j])
            if emits[t, i, j] and not (saturate and n == cap and stays_on_top[t, i]):
                n -= 1
            j = i
    return path


def _decode(probs: NDArray[np.float32], texts: Sequence[str], low: int, high: int) -> tuple[str, float]:
    if probs.shape[0] == 0:
        return "", 0.0
    greedy = probs.argmax(axis=1)
    emitted, peaks = _collapse(greedy, probs)
    log_ratio = 0.0
    if len(emitted) < low or (high and len(emitted) > high):
        path = _best_path_in_range(probs, low, high)
        emitted, peaks = _collapse(path, probs)
        frames = np.arange(probs.shape[0])
        chosen, best = probs[frames, path], probs[frames, greedy]
        log_ratio = float(np.sum(np.log(np.maximum(chosen, 1e-30)) - np.log(np.maximum(best, 1e-30))))
    if not emitted:
        return "", 0.0
    confidence = math.exp(sum(math.log(max(p, 1e-30)) for p in peaks) / len(peaks) + log_ratio)
    return "".join(texts[g] for g in emitted), min(1.0, max(0.0, confidence))


# --------------------------------------------------------------------------- arithmetic


def evaluate_arithmetic(expression: str) -> int | None:
    """The integer value of ``a op b op c ...`` (``+ - * /``, usual precedence) read off a captcha.

    Tolerates what OCR leaves around an expression: a trailing ``=`` and whatever follows it,
    operators at either end, doubled operators (the first wins). Inexact division rounds to the
    nearest integer. None when there is no number or a division by zero.
    """
    head = expression.split("=", 1)[0] if not expression.startswith("=") else expression.strip("=")
    tokens: list[str] = []
    for ch in head:
        if ch in _DIGITS:
            if tokens and tokens[-1][0] in _DIGITS:
                tokens[-1] += ch
            else:
                tokens.append(ch)
        elif ch in "+-*/" and tokens and tokens[-1] not in "+-*/":
            tokens.append(ch)
    if tokens and tokens[-1] in "+-*/":
        tokens.pop()
    if not tokens:
        return None
    # Fold * and / into terms first, then sum the terms.
    total = Fraction(0)
    term = Fraction(int(tokens[0]))
    sign = 1
    for op, num in zip(tokens[1::2], tokens[2::2], strict=True):
        value = Fraction(int(num))
        if op == "*":
            term *= value
        elif op == "/":
            if value == 0:
                return None
            term /= value
        else:
            total += sign * term
            sign = 1 if op == "+" else -1
            term = value
    total += sign * term
    return round(total)


# --------------------------------------------------------------------------- public


class Recognizer:
    """ddddocr's generic models or one trained profile. Not thread-safe; the pool gives each process
    its own.

    With several models they form a cascade: the first answers, and while an answer's confidence
    is under ``second_opinion_below`` the next model is asked too and the more confident answer
    wins. (Averaging the models' per-frame probabilities does not work: their CTC peaks fall on
    different frames, and the average reads 27 % on kaggle_v2 where each model alone reads 82-84 %.)
    """

    def __init__(
        self,
        models: Sequence[_Model],
        *,
        length_range: tuple[int, int] = (0, 0),
        second_opinion_below: float = 0.0,
        name: str = "generic",
    ) -> None:
        if not models:
            raise OcrError("a recognizer needs at least one model")
        self._models = tuple(models)
        self._length = length_range
        self._second_opinion_below = second_opinion_below
        self.name = name

    @classmethod
    def generic(
        cls,
        which: Sequence[GenericName] = DEFAULT_GENERIC,
        second_opinion_below: float = SECOND_OPINION_BELOW,
    ) -> Recognizer:
        """ddddocr's bundled model(s), a cascade in the order given."""
        folder = ddddocr_dir()
        models = []
        for key in which:
            filename, charset = GENERIC_MODELS[key]
            classes = ddddocr_charset(charset)
            models.append(_Model(folder / filename, classes, GENERIC_SPEC, "TNC", frozenset({ASCII})))
        return cls(models, second_opinion_below=second_opinion_below, name="generic:" + ">".join(which))

    @classmethod
    def from_profile(cls, profiles_dir: Path, name: str) -> Recognizer:
        try:
            profile: Profile = load_profile(profiles_dir, name)
            path = model_path(profiles_dir, name)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UnknownProfile(f"profile {name!r}: {exc}") from exc
        if not path.is_file():
            raise UnknownProfile(f"profile {name!r} has no model file")
        model = _Model(path, ("", *profile.alphabet), profile.input, profile.output_layout)
        return cls([model], length_range=(profile.min_len, profile.max_len), name=name)

    def recognize(self, image_bytes: bytes, constraints: OcrConstraints) -> OcrResult:
        try:
            image = open_image(image_bytes)
        except Exception as exc:  # Pillow's decoders raise a grab bag of types for bad input
            raise UnreadableImage(f"cannot decode image: {exc}") from exc
        best: OcrResult | None = None
        for model in self._models:
            result = self._recognize_with(model, image, constraints)
            if best is None or result.confidence > best.confidence:
                best = result
            if best.confidence >= self._second_opinion_below:
                break
        assert best is not None
        return best

    def warm_up(self, image_bytes: bytes) -> None:
        """Run every model once: onnxruntime plans and allocates on its first run."""
        image = open_image(image_bytes)
        for model in self._models:
            model.probs(image)

    def _recognize_with(self, model: _Model, image: Image.Image, constraints: OcrConstraints) -> OcrResult:
        groups = model.groups(_AlphabetKey.of(constraints, model.default_scripts))
        grouped = groups.sum(model.probs(image))
        if constraints.calc:
            expression, confidence = _decode(grouped, groups.texts, 1, 0)
            value = evaluate_arithmetic(expression)
            return OcrResult(str(value), confidence) if value is not None else OcrResult("", 0.0)
        low, high = self._effective_length(constraints)
        text, confidence = _decode(grouped, groups.texts, low, high)
        if constraints.phrase:
            text = " ".join(text.split())
        return OcrResult(text, confidence)

    def _effective_length(self, constraints: OcrConstraints) -> tuple[int, int]:
        """The client's length range within the model's own (profiles know theirs); a request that
        contradicts the profile loses. An answer always has at least one character."""
        low, high = max(1, constraints.min_len), constraints.max_len
        m_low, m_high = self._length
        low = max(low, m_low)
        if m_high:
            high = min(high, m_high) if high else m_high
        if high and low > high:
            low, high = max(1, m_low), m_high
        return low, high
