"""The OCR engine: constraints parsing, constrained CTC decoding, the generic model on real sets."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from PIL import Image

from capgate.solvers.ocr.constraints import OcrConstraints
from capgate.solvers.ocr.engine import (
    ASCII,
    Recognizer,
    UnknownProfile,
    UnreadableImage,
    _AlphabetKey,
    _answer_char,
    _best_path_in_range,
    ddddocr_charset,
    ddddocr_dir,
    evaluate_arithmetic,
    letter_scripts,
)
from capgate.solvers.ocr.profile import Fingerprint, Profile
from capgate.solvers.ocr.select import choose_profile
from tests.fixtures import draw, labelled

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.generic()


# --------------------------------------------------------------------------- constraints


def test_constraints_from_params() -> None:
    c = OcrConstraints.from_params(
        {"numeric": "1", "min_len": "4", "max_len": "6", "regsense": "1", "phrase": "0", "calc": "", "x": "y"}
    )
    assert c == OcrConstraints(numeric=1, min_len=4, max_len=6, case_sensitive=True)
    assert OcrConstraints.from_params({}) == OcrConstraints()
    assert OcrConstraints.from_params({"language": " 2 ", "calc": "true"}) == OcrConstraints(language=2, calc=True)


def test_lang_is_read_as_its_primary_subtag_and_never_rejected() -> None:
    assert OcrConstraints.from_params({"lang": " ZH-cn "}).lang == "zh"
    assert OcrConstraints.from_params({"lang": "pt_BR"}).lang == "pt"
    assert OcrConstraints.from_params({"lang": ""}).lang == ""
    assert OcrConstraints.from_params({"lang": "not a code at all"}).lang == "not a co"


@pytest.mark.parametrize(
    "params",
    [
        {"numeric": "5"},
        {"numeric": "one"},
        {"min_len": "-1"},
        {"max_len": "21"},
        {"min_len": "6", "max_len": "4"},
        {"language": "3"},
        {"regsense": "2"},
        {"phrase": "maybe"},
    ],
)
def test_constraints_reject_bad_values(params: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        OcrConstraints.from_params(params)


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("3+5", 8),
        ("12*4", 48),
        ("9-3=", 6),
        ("2+3*4", 14),
        ("8/2-1", 3),
        ("7/2", 4),  # rounds half to even: 3.5 -> 4
        ("+4+", 4),
        ("5++2", 7),
        ("42", 42),
        ("1/0", None),
        ("", None),
        ("=", None),
    ],
)
def test_evaluate_arithmetic(expression: str, value: int | None) -> None:
    assert evaluate_arithmetic(expression) == value


@given(st.integers(0, 999), st.sampled_from("+-*"), st.integers(0, 999))
def test_evaluate_arithmetic_matches_python(a: int, op: str, b: int) -> None:
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert evaluate_arithmetic(f"{a}{op}{b}=?") == expected


# --------------------------------------------------------------------------- decoder


def _collapsed_length(path: tuple[int, ...]) -> int:
    return sum(1 for i, g in enumerate(path) if g != 0 and (i == 0 or path[i - 1] != g))


def _path_logp(probs: NDArray[np.float32], path: tuple[int, ...] | NDArray[np.intp]) -> float:
    return float(sum(math.log(float(probs[t, g])) for t, g in enumerate(path)))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(2, 4),
    st.integers(0, 2**32 - 1),
    st.integers(0, 7),
    st.integers(0, 7),
)
def test_best_path_in_range_is_the_best_such_path(frames: int, groups: int, seed: int, low: int, high: int) -> None:
    """Against brute force over every path, on alphabets small enough for TOP_K to cover them."""
    if high and high < low:
        low, high = high, low
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(groups), size=frames).astype(np.float32) + np.float32(1e-6)
    paths = list(itertools.product(range(groups), repeat=frames))
    feasible = [p for p in paths if _collapsed_length(p) >= low and (not high or _collapsed_length(p) <= high)]
    found = _best_path_in_range(probs, low, high)
    if not feasible:
        # Too few frames for min_len: the longest reachable answer.
        assert _collapsed_length(tuple(found.tolist())) == max(_collapsed_length(p) for p in paths)
        return
    assert _collapsed_length(tuple(found.tolist())) in {_collapsed_length(p) for p in feasible}
    best = max(_path_logp(probs, p) for p in feasible)
    assert _path_logp(probs, found) == pytest.approx(best, abs=1e-4)


# --------------------------------------------------------------------------- generic model, synthetic


def test_generic_model_matches_ddddocr_preprocessing() -> None:
    """ddddocr feeds its models 64 px high grayscale in [0, 1], width by aspect: so do we."""
    assert (ddddocr_dir() / "common.onnx").is_file()
    assert len(ddddocr_charset("CHARSET_BETA")) == len(ddddocr_charset("CHARSET_OLD")) == 8210
    assert ddddocr_charset("CHARSET_OLD")[0] == ""


def test_reads_clean_text_and_folds_case(recognizer: Recognizer) -> None:
    assert recognizer.recognize(draw("48213"), OcrConstraints()).text == "48213"
    result = recognizer.recognize(draw("AbCdE"), OcrConstraints())
    assert result.text == "abcde"
    assert 0.5 < result.confidence <= 1.0


def test_accepts_modes_and_formats(recognizer: Recognizer) -> None:
    for mode in ("1", "L", "RGB", "RGBA", "P"):
        assert recognizer.recognize(draw("48213", mode=mode), OcrConstraints(numeric=1)).text == "48213", mode
    image = Image.open(io.BytesIO(draw("48213"))).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    assert recognizer.recognize(buf.getvalue(), OcrConstraints(numeric=1)).text == "48213"


_TEXTS = st.text(alphabet="abcdefghkmnpqrstuvwxyz0123456789ABCDEFGHKMNPRSTUVWXYZ", min_size=1, max_size=8)


@settings(max_examples=25, deadline=None)
@given(
    text=_TEXTS,
    numeric=st.integers(0, 4),
    language=st.integers(0, 2),
    min_len=st.integers(0, 8),
    max_len=st.integers(0, 8),
)
def test_answers_respect_the_constraints(
    recognizer: Recognizer, text: str, numeric: int, language: int, min_len: int, max_len: int
) -> None:
    if max_len and max_len < min_len:
        min_len, max_len = max_len, min_len
    c = OcrConstraints(numeric=numeric, language=language, min_len=min_len, max_len=max_len)
    answer = recognizer.recognize(draw(text), c)
    assert 0.0 <= answer.confidence <= 1.0
    assert max(1, min_len) <= len(answer.text) and (not max_len or len(answer.text) <= max_len)
    assert answer.text == answer.text.lower()
    assert " " not in answer.text
    for ch in answer.text:
        if numeric == 1:
            assert ch.isdigit() and ch.isascii()
        if numeric == 2:
            assert ch.isalpha()
        if numeric == 3:
            assert ch.isalnum()
        if numeric == 4:
            assert not ch.isdigit()
        if language == 1 and ch.isalpha():
            assert "\u0400" <= ch <= "\u04ff"
        if language == 2 and ch.isalpha():
            assert ch.isascii()
        if language == 0:
            # No language asked for: Latin letters and digits only (issue 16).
            assert ch.isascii() and ch.isalnum()


def test_numeric_restricts_before_choosing(recognizer: Recognizer) -> None:
    """A digits-only answer for letters is still digits (with a low confidence), and an easy
    digits image is read right under the restriction."""
    letters = recognizer.recognize(draw("HELLO"), OcrConstraints(numeric=1))
    assert letters.text.isdigit()
    assert letters.confidence < 0.5
    digits = recognizer.recognize(draw("70394"), OcrConstraints(numeric=1))
    assert digits.text == "70394"
    assert digits.confidence > 0.5


def test_length_range_chooses_a_path_of_that_length(recognizer: Recognizer) -> None:
    image = draw("48213")
    free = recognizer.recognize(image, OcrConstraints())
    short = recognizer.recognize(image, OcrConstraints(max_len=3))
    long = recognizer.recognize(image, OcrConstraints(min_len=7, max_len=7))
    assert len(short.text) == 3 and len(long.text) == 7
    # Forcing a length the model does not see costs confidence.
    assert short.confidence < free.confidence and long.confidence < free.confidence


def test_calc_answers_the_result(recognizer: Recognizer) -> None:
    assert recognizer.recognize(draw("3+5"), OcrConstraints(calc=True)).text == "8"
    assert recognizer.recognize(draw("12x4"), OcrConstraints(calc=True)).text == "48"
    for text in ("7-2", "HELLO", "1+1=?"):
        answer = recognizer.recognize(draw(text), OcrConstraints(calc=True)).text
        assert answer == "" or answer.lstrip("-").isdigit()


# --------------------------------------------------------------------------- scripts (issue 16)

_GENERIC_DEFAULT = frozenset({ASCII})


@pytest.mark.parametrize("charset", ["CHARSET_OLD", "CHARSET_BETA"])
@pytest.mark.parametrize("numeric", [0, 2, 3, 4])
def test_without_language_no_class_can_answer_outside_latin_and_digits(charset: str, numeric: int) -> None:
    """Every one of the generic models' 8,209 classes, under every letter-admitting ``numeric``: with no
    ``language`` or ``lang``, only ASCII letters and digits survive the mask (the decoder chooses
    among the surviving groups only, so nothing else can be emitted)."""
    key = _AlphabetKey.of(OcrConstraints(numeric=numeric), _GENERIC_DEFAULT)
    answers = {_answer_char(text, key) for text in ddddocr_charset(charset)[1:]} - {None}
    assert answers and all(a is not None and a.isascii() and a.isalnum() for a in answers), answers
    assert "不" not in answers
    assert ("7" in answers) == (numeric in (0, 3)) and ("x" in answers) == (numeric != 1)


def test_language_and_lang_open_other_scripts() -> None:
    assert letter_scripts(OcrConstraints()) == frozenset({ASCII})
    assert letter_scripts(OcrConstraints(), default=None) is None  # a trained profile: its own alphabet
    assert letter_scripts(OcrConstraints(language=1, lang="zh")) == frozenset({"CYRILLIC"})  # language wins
    assert letter_scripts(OcrConstraints(language=2)) == frozenset({"LATIN"})
    assert letter_scripts(OcrConstraints(lang="zh")) == frozenset({"LATIN", "CJK"})
    assert letter_scripts(OcrConstraints(lang="ru")) == frozenset({"LATIN", "CYRILLIC"})
    assert letter_scripts(OcrConstraints(lang="de")) == frozenset({"LATIN"})
    assert letter_scripts(OcrConstraints(lang="xx")) is None  # unknown code: not restricted
    zh = _AlphabetKey.of(OcrConstraints(lang="zh"), _GENERIC_DEFAULT)
    assert _answer_char("不", zh) == "不" and _answer_char("A", zh) == "a" and _answer_char("ü", zh) == "ü"
    assert _answer_char("Й", zh) is None and _answer_char("@", zh) is None
    default = _AlphabetKey.of(OcrConstraints(), _GENERIC_DEFAULT)
    assert _answer_char("不", default) is None and _answer_char("ü", default) is None
    assert _answer_char("Ｌ", default) == "l" and _answer_char("④", default) == "4"  # compatibility forms
    assert _answer_char("@", _AlphabetKey.of(OcrConstraints(lang="xx"), _GENERIC_DEFAULT)) == "@"


def _frames_reading(classes: tuple[str, ...], text: str, runner_up: str) -> NDArray[np.float32]:
    """Per-frame probabilities that greedy CTC reads as ``text``, each character's frame giving
    ``runner_up``'s character at that position a tenth of the weight, blanks between characters."""
    index = {c: i for i, c in reversed(list(enumerate(classes)))}
    probs = np.full((2 * len(text), len(classes)), 1e-6, dtype=np.float32)
    for n, (ch, alt) in enumerate(zip(text, runner_up, strict=True)):
        probs[2 * n, index[ch]] = 0.85
        probs[2 * n, index[alt]] += 0.1
        probs[2 * n + 1, 0] = 0.95
    normalised: NDArray[np.float32] = probs / probs.sum(axis=1, keepdims=True)
    return normalised


def test_a_chinese_reading_becomes_its_latin_runner_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """issue 16's ``73mnx`` read as ``不3mnx``: the model's first choice for the first character is
    Chinese. Without ``language`` the answer is the best Latin/digit reading; ``lang=zh`` keeps it.
    A trained profile's alphabet is its own: no default restriction there."""
    recognizer = Recognizer.generic(("common_old",))
    model = recognizer._models[0]
    fake = _frames_reading(model.classes, "不3mnx", "73mnx")
    monkeypatch.setattr(model, "probs", lambda image: fake.copy())
    image = draw("73mnx")
    assert recognizer.recognize(image, OcrConstraints()).text == "73mnx"
    assert recognizer.recognize(image, OcrConstraints(min_len=5, max_len=5)).text == "73mnx"
    assert recognizer.recognize(image, OcrConstraints(lang="zh")).text == "不3mnx"
    assert recognizer.recognize(image, OcrConstraints(language=2)).text == "73mnx"

    write_generic_as_profile(tmp_path, "chinese")
    profile = Recognizer.from_profile(tmp_path, "chinese")
    monkeypatch.setattr(profile._models[0], "probs", lambda image: fake.copy())
    assert profile.recognize(image, OcrConstraints()).text == "不3mnx"
    assert profile.recognize(image, OcrConstraints(language=2)).text == "73mnx"


def test_language_cyrillic_maps_latin_lookalikes(recognizer: Recognizer) -> None:
    answer = recognizer.recognize(draw("POTOK"), OcrConstraints(language=1, numeric=2))
    assert answer.text == "роток"  # Cyrillic er, o, te, o, ka


def _blank(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 255).save(buf, "PNG")
    return buf.getvalue()


def test_degenerate_images(recognizer: Recognizer) -> None:
    for size in ((1, 1), (3, 64), (1000, 20)):
        answer = recognizer.recognize(_blank(size), OcrConstraints(min_len=3))
        assert answer.text and answer.confidence < 0.5
    # Too few frames for min_len: as long as the frames allow.
    assert len(recognizer.recognize(_blank((3, 64)), OcrConstraints(min_len=3)).text) == 1
    assert len(recognizer.recognize(_blank((1000, 20)), OcrConstraints(min_len=3)).text) >= 3
    with pytest.raises(UnreadableImage):
        recognizer.recognize(_blank((1000, 1)), OcrConstraints())


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, draw("12345")[:60]],
)
def test_garbage_bytes_are_unreadable(recognizer: Recognizer, data: bytes) -> None:
    with pytest.raises(UnreadableImage):
        recognizer.recognize(data, OcrConstraints())


# --------------------------------------------------------------------------- profiles and selection


def write_generic_as_profile(folder: Path, name: str, **extra: object) -> Profile:
    """A profile whose model is ddddocr's common_old.onnx (linked, not copied): real files in the
    real layout without needing a trained model."""
    alphabet = "".join(ddddocr_charset("CHARSET_OLD")[1:])
    profile = Profile.from_dict({"name": name, "alphabet": alphabet, **extra})
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    (target / "profile.json").write_text(profile.to_json(), encoding="utf-8")
    model = target / "model.onnx"
    if not model.exists():
        model.symlink_to(ddddocr_dir() / "common_old.onnx")
    return profile


def test_profile_recognizer_uses_its_length_range(tmp_path: Path) -> None:
    write_generic_as_profile(tmp_path, "fam", min_len=3, max_len=3)
    recognizer = Recognizer.from_profile(tmp_path, "fam")
    assert len(recognizer.recognize(draw("48213"), OcrConstraints()).text) == 3
    # A request that contradicts the profile loses to it.
    assert len(recognizer.recognize(draw("48213"), OcrConstraints(min_len=5)).text) == 3
    with pytest.raises(UnknownProfile):
        Recognizer.from_profile(tmp_path, "absent")
    with pytest.raises(UnknownProfile):
        Recognizer.from_profile(tmp_path, "../escape")


def test_choose_profile_by_exact_fingerprint() -> None:
    def prof(name: str, fp: Fingerprint | None) -> Profile:
        return Profile(name=name, alphabet="0123456789", fingerprint=fp)

    image = draw("123", size=(200, 50))
    profiles = [prof("a", Fingerprint(200, 50, "L")), prof("b", Fingerprint(200, 50, "RGB")), prof("c", None)]
    assert choose_profile(image, profiles) == "a"
    assert choose_profile(draw("123", size=(200, 50), mode="RGB"), profiles) == "b"
    assert choose_profile(draw("123", size=(201, 50)), profiles) is None
    assert choose_profile(image, [*profiles, prof("a2", Fingerprint(200, 50, "L"))]) is None
    assert choose_profile(b"garbage", profiles) is None
    assert choose_profile(image, []) is None


# --------------------------------------------------------------------------- real data sets


def _accuracy(recognizer: Recognizer, data: list[tuple[bytes, str]], c: OcrConstraints) -> float:
    return sum(recognizer.recognize(b, c).text == label.lower() for b, label in data) / len(data)


def test_lzu_digits_len5(recognizer: Recognizer) -> None:
    # These 50 measured 96 % (1,000 images: 95.9 %); the margin absorbs onnxruntime/Pillow updates.
    data = labelled("lzu", 50)
    assert _accuracy(recognizer, data, OcrConstraints(numeric=1, min_len=5, max_len=5)) >= 0.90


def test_kaggle_v2_len5(recognizer: Recognizer) -> None:
    # Its alphabet (2345678bcdefgmnpwxy) is not expressible with numeric; length alone. These 50
    # measured 98 % (1,000 images: 98.1 %).
    data = labelled("kaggle_v2", 50)
    assert _accuracy(recognizer, data, OcrConstraints(min_len=5, max_len=5)) >= 0.92


def test_real_images_only_ever_yield_digits_under_numeric(recognizer: Recognizer) -> None:
    for image, _ in labelled("kaggle_v2", 10):
        assert recognizer.recognize(image, OcrConstraints(numeric=1, max_len=4)).text.isdigit()
