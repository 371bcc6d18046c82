"""Training (issue 5): data-folder reading, alphabet and length inference, the command line, and one real
fine-tune on a small slice of ``../shared/data/kaggle_v2`` checked against the untrained generic model.

The real runs on 100-500 labels are benchmarks (``python -m bench.training``); here the fine-tune is
kept to about a minute on two cores.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capgate.solvers.ocr.profile import Fingerprint, InputSpec, load_profile, model_path, save_profile
from capgate.training import INSTALL_HINT, TrainingUnavailable
from capgate.training.augment import as_grayscale, augment, is_binary
from capgate.training.command import register
from capgate.training.data import (
    DataError,
    Sample,
    fingerprint,
    holdout_size,
    infer_alphabet,
    infer_length_range,
    is_case_sensitive,
    label_from_filename,
    load_dataset,
    split,
)
from capgate.training.evaluate import OnnxModel, ctc_greedy, evaluate, same_answer
from capgate.training.ship import TOLERANCE_POINTS, Agreement, decide, no_student

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KAGGLE = DATA / "kaggle_v2"
HAS_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx"))
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed (pip install 'capgate[train]')")
needs_kaggle = pytest.mark.skipif(not (KAGGLE / "labels.csv").is_file(), reason=f"{KAGGLE} not present")


def _png(path: Path, size: tuple[int, int] = (60, 20), mode: str = "L") -> Path:
    Image.new(mode, size, 255 if mode != "1" else 1).save(path)
    return path


def _folder_by_names(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        _png(root / name)
    return root


# --- data folders ---------------------------------------------------------------------------------


def test_label_from_filename_strips_duplicate_suffix() -> None:
    assert label_from_filename(Path("ab3kx.png")) == "ab3kx"
    assert label_from_filename(Path("ab3kx_2.png")) == "ab3kx"
    assert label_from_filename(Path("ab_cd.jpg")) == "ab_cd"


def test_labels_from_file_names(tmp_path: Path) -> None:
    names = [f"{i:05d}.png" for i in range(12)] + ["00001_1.png", "notes.txt"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    folder = _folder_by_names(tmp_path / "d", [n for n in names if n.endswith(".png")])
    dataset = load_dataset(folder)
    labels = sorted(s.label for s in dataset.labelled)
    assert len(labels) == 13 and labels.count("00001") == 2
    assert dataset.unlabelled == []


def test_labels_csv_with_header_and_unlisted_images(tmp_path: Path) -> None:
    folder = _folder_by_names(tmp_path / "d", [f"img{i}.png" for i in range(14)])
    rows = [("filename", "label")] + [(f"img{i}.png", f"A{i}b") for i in range(12)]
    rows += [("missing.png", "zz"), ("../escape.png", "zz")]
    with (folder / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    dataset = load_dataset(folder)
    assert {s.label for s in dataset.labelled} == {f"A{i}b" for i in range(12)}
    assert sorted(p.name for p in dataset.unlabelled) == ["img12.png", "img13.png"]


def test_labels_csv_without_header(tmp_path: Path) -> None:
    folder = _folder_by_names(tmp_path / "d", [f"{i}.png" for i in range(10)])
    (folder / "labels.csv").write_text("".join(f"{i}.png,x{i}\n" for i in range(10)))
    assert len(load_dataset(folder).labelled) == 10


def test_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no labelled images"):
        load_dataset(tmp_path / "empty")
    few = _folder_by_names(tmp_path / "few", ["a.png", "b.png"])
    with pytest.raises(DataError, match="at least"):
        load_dataset(few)
    unmatched = _folder_by_names(tmp_path / "unmatched", ["a.png"])
    (unmatched / "labels.csv").write_text("filename,label\nother.png,x\n")
    with pytest.raises(DataError, match="names none"):
        load_dataset(unmatched)


def test_alphabet_case_and_length_inference() -> None:
    labels = ["ab12", "C3d", "zz9zz"]
    assert infer_alphabet(labels) == "1239Cabdz"  # kept in the case it was labelled in
    assert infer_length_range(labels) == (3, 5)
    assert not is_case_sensitive(labels)  # no letter is labelled in both cases
    assert is_case_sensitive(["ab", "AB"])
    assert not is_case_sensitive(["ABC", "XYZ", "123"])


def test_split_is_seeded_and_disjoint() -> None:
    samples = [Sample(Path(f"{i}.png"), str(i)) for i in range(100)]
    train, held = split(samples, holdout_size(len(samples)), seed=3)
    assert len(held) == 10 and len(train) == 90
    assert not {s.path for s in train} & {s.path for s in held}
    assert split(samples, 10, seed=3) == (train, held)
    assert split(samples, 10, seed=4) != (train, held)
    assert holdout_size(12) == 6 and holdout_size(500) == 50 and holdout_size(100_000) == 500


def test_fingerprint_uniform_and_mixed(tmp_path: Path) -> None:
    uniform = [_png(tmp_path / f"u{i}.png", (80, 25), "1") for i in range(3)]
    assert fingerprint(uniform) == Fingerprint(width=80, height=25, mode="1")
    mixed = [*uniform, _png(tmp_path / "other.png", (81, 25), "1")]
    assert fingerprint(mixed) is None


def test_augment_keeps_size_and_grayscale() -> None:
    image = as_grayscale(Image.new("1", (80, 25), 1))
    assert image.mode == "L" and image.size == (80, 25) and np.asarray(image).min() == 255
    out = augment(image, random.Random(0))
    assert out.mode == "L" and out.size == (80, 25)


def test_augment_keeps_one_bit_images_black_and_white() -> None:
    """A 1-bit family never shows grey, so its augmented copies don't either; others still get grey."""
    image = Image.new("1", (80, 25), 1)
    image.paste(0, (20, 6, 60, 19))
    gray = as_grayscale(image)
    assert is_binary(gray)
    rng = random.Random(0)
    for _ in range(20):
        out = np.asarray(augment(gray, rng))
        assert set(np.unique(out).tolist()) == {0, 255}
    soft = Image.fromarray(np.where(np.asarray(gray) < 128, 60, 200).astype(np.uint8), mode="L")
    assert not is_binary(soft)
    assert any(len(np.unique(np.asarray(augment(soft, rng)))) > 2 for _ in range(5))


@needs_torch
def test_held_out_ties_go_to_the_later_model() -> None:
    """A saturated held-out set must not freeze the choice on an early, barely trained epoch."""
    from capgate.training.trainer import _cosine, _Scored

    early = _Scored(accuracy=1.0, loss=0.0012)
    assert _Scored(1.0, 0.0015).better_than(early)  # tie, loss about the same: the later one
    assert not _Scored(1.0, 0.05).better_than(early)  # tie, clearly less sure: kept the earlier
    assert _Scored(1.0, 0.5).better_than(_Scored(0.98, 0.001))
    assert not _Scored(0.98, 0.001).better_than(_Scored(1.0, 0.5))
    assert _cosine(0.0) == 0.0 and _cosine(0.05) == pytest.approx(1.0, abs=0.01) and _cosine(1.0) == 0.0


def test_ctc_greedy_merges_repeats_and_drops_blanks() -> None:
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3]
    logits = np.eye(4, dtype=np.float32)[steps]
    assert ctc_greedy(logits, "abc") == "aabc"
    assert same_answer("AbC", "abc", case_sensitive=False)
    assert not same_answer("AbC", "abc", case_sensitive=True)


# --- which model ships (issue 16) -----------------------------------------------------------------


def test_ship_rule_ships_the_student_only_within_a_third_of_a_point() -> None:
    assert TOLERANCE_POINTS == 0.3
    # 5 disagreements in 3,000 pool images, held-out labels equal: at most 0.16 points below.
    close = decide(Agreement(holdout=50, teacher_correct=50, student_correct=50, pool=3000, agreed=2995))
    assert close.shipped == "student" and close.points_below == pytest.approx(100 * 5 / 3050)
    assert close.reason.startswith("student:") and "2,995 of 3,000" in close.reason
    # 10 disagreements: 0.33 points, over the line.
    far = decide(Agreement(holdout=50, teacher_correct=50, student_correct=50, pool=3000, agreed=2990))
    assert far.shipped == "teacher" and far.reason.startswith("teacher:") and "0.33 points" in far.reason
    # Exactly on the line (9 of 3,050 is 0.295 points) ships; one more image does not.
    assert decide(Agreement(50, 50, 50, 3000, 2991)).shipped == "student"
    assert decide(Agreement(50, 50, 49, 3000, 2991)).shipped == "teacher"


def test_ship_rule_catches_what_fifty_labels_cannot() -> None:
    """issue 16: "held-out 100.0% of 50", yet 97% of 300 other images. A student that read all 50 and
    disagreed with its teacher on 2% of 300 images passed the old rule (2% of held-out + agreement
    images); this one ships the teacher."""
    counts = Agreement(holdout=50, teacher_correct=50, student_correct=50, pool=300, agreed=294)
    assert counts.lost <= int(0.02 * counts.images)  # what used to pass
    decision = decide(counts)
    assert decision.shipped == "teacher" and decision.points_below == pytest.approx(100 * 6 / 350)


def test_ship_rule_counts_labelled_gains_and_is_strict_on_small_pools() -> None:
    # The student reads two more held-out labels than its teacher: they offset two disagreements.
    assert decide(Agreement(50, 48, 50, 1000, 995)).shipped == "student"
    assert decide(Agreement(50, 48, 50, 1000, 990)).shipped == "teacher"
    # Under ~333 images compared, 0.3% is less than one image: nothing may be lost.
    assert decide(Agreement(8, 7, 7, 16, 16)).shipped == "student"
    assert decide(Agreement(8, 7, 7, 16, 15)).shipped == "teacher"
    assert decide(Agreement(8, 7, 6, 16, 16)).shipped == "teacher"
    # Images kept back from the student are named apart in the reason.
    unseen = decide(Agreement(50, 50, 50, 4000, 3999, pool_unseen=1000, agreed_unseen=999))
    assert unseen.shipped == "student" and "999 of the 1,000 it never learnt from" in unseen.reason
    with pytest.raises(ValueError):
        Agreement(50, 51, 50, 10, 10)
    with pytest.raises(ValueError):
        Agreement(50, 50, 50, 10, 11)


def test_ship_decision_metrics() -> None:
    metrics = decide(Agreement(50, 50, 50, 3000, 2990)).as_metrics()
    assert metrics["shipped"] == "teacher" and metrics["ship_reason"].startswith("teacher:")
    assert metrics["student_points_below"] == pytest.approx(0.328, abs=1e-3) and "0.3" in metrics["ship_rule"]
    assert no_student().as_metrics()["shipped"] == "teacher"
    assert no_student().as_metrics()["student_points_below"] is None


# --- command line ---------------------------------------------------------------------------------


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="capgate")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _run(argv: list[str]) -> int:
    args = _cli(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CAPGATE_DATA_DIR", str(home))
    return home


def test_cli_train_missing_dir(data_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["train", str(tmp_path / "nope"), "--profile", "fam"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err


def test_cli_train_needs_data_dir_or_reports(data_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["train", "--profile", "fam"]) == 2
    assert "DATA_DIR is required" in capsys.readouterr().err
    assert _run(["train", "--from-reports", "--profile", "fam"]) == 2
    assert "no labels kept" in capsys.readouterr().err


def test_cli_train_no_labels(data_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert _run(["train", str(tmp_path / "empty"), "--profile", "fam"]) == 2
    assert "no labelled images" in capsys.readouterr().err


def test_cli_train_bad_profile_name(data_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["train", str(tmp_path), "--profile", "../x"]) == 2
    assert "invalid profile name" in capsys.readouterr().err


def test_cli_train_without_torch(
    data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder_by_names(tmp_path / "d", [f"{i:04d}.png" for i in range(12)])

    def missing() -> None:
        raise TrainingUnavailable(f"{INSTALL_HINT} (torch is not installed)")

    monkeypatch.setattr("capgate.training.command.require_torch", missing)
    assert _run(["train", str(folder), "--profile", "fam"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'capgate[train]'" in err and "Traceback" not in err


def test_cli_train_from_reports_reads_labelled_dir(
    data_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _folder_by_names(data_home / "labelled" / "fam", [f"{i:04d}.png" for i in range(3)])
    # Three kept labels are too few to train on: the error names the folder that was read.
    assert _run(["train", "--from-reports", "--profile", "fam"]) == 2
    assert str(data_home / "labelled" / "fam") in capsys.readouterr().err


def test_cli_eval_errors(data_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["eval", str(tmp_path), "--profile", "ghost"]) == 2
    assert "no profile 'ghost'" in capsys.readouterr().err


# --- with PyTorch ---------------------------------------------------------------------------------


@needs_torch
def test_generic_model_rebuilt_in_torch_matches_onnxruntime() -> None:
    import onnxruntime as ort
    import torch

    from capgate.training.model import generic_model_path as path
    from capgate.training.model import load_generic

    model = load_generic(None).eval()
    x = np.random.default_rng(0).random((1, 1, 64, 96), dtype=np.float32)
    session = ort.InferenceSession(str(path()), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) < 1e-3


@needs_torch
def test_sliced_generic_model_exports_and_loads(tmp_path: Path) -> None:
    from capgate.solvers.ocr.profile import Profile
    from capgate.training.model import export_onnx, load_generic

    alphabet = "0123456789"
    data = export_onnx(load_generic(alphabet), 1, 64, 128)
    profile = Profile(name="digits", alphabet=alphabet, input=InputSpec(height=64))
    save_profile(tmp_path, profile, data)
    loaded = load_profile(tmp_path, "digits")
    model = OnnxModel.from_profile(loaded, model_path(tmp_path, "digits"))
    answer = model.predict(Image.new("L", (100, 50), 255))
    assert set(answer) <= set(alphabet)


def _kaggle_rows() -> list[tuple[str, str]]:
    with (KAGGLE / "labels.csv").open(newline="") as handle:
        rows = [(r["filename"], r["label"]) for r in csv.DictReader(handle)]
    random.Random(11).shuffle(rows)
    return rows


@pytest.mark.slow
@needs_torch
@needs_kaggle
def test_fine_tune_beats_generic_model(
    data_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """150 labels, three annealed epochs of fine-tuning through ``capgate train`` (about 15 s on two
    cores), tested on 100 other images. Seeds 1-3 read 99-100% of them; six epochs did no better."""
    from capgate.training.model import generic_charset, generic_model_path

    rows = _kaggle_rows()
    folder = _labelled_links(tmp_path / "family", rows[:150])
    unseen = _labelled_links(tmp_path / "unseen", rows[150:250])

    # Three epochs, annealed: the time budget alone would keep it fine-tuning for the whole minute.
    argv = ["train", str(folder), "--profile", "kaggle", "--no-distill", "--time-budget", "60", "--epochs", "3"]
    # One thread: the suite runs beside it on the same cores, where a second one mostly spins.
    argv += ["--seed", "1", "--threads", "1"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "saved profile 'kaggle'" in out
    assert "shipped the teacher: no student was trained" in out

    profile = load_profile(data_home / "profiles", "kaggle")
    assert profile.fingerprint == Fingerprint(width=200, height=50, mode="L")
    assert (profile.min_len, profile.max_len) == (5, 5)
    assert set(profile.alphabet) <= set("2345678bcdefgmnpwxy")
    # The trained model is read by ``capgate eval``, as an operator would check it.
    assert _run(["eval", str(unseen), "--profile", "kaggle"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"kaggle: exact match [\d.]+% \((\d+)/(\d+)\)", out)
    assert found is not None, out
    correct, total = int(found[1]), int(found[2])
    assert total == 100 and correct >= 93, out
    test = [(KAGGLE / name, label) for name, label in rows[150:250]]
    generic = evaluate(OnnxModel(generic_model_path(), generic_charset()[1:], InputSpec(height=64)), test)
    assert correct / total >= generic.accuracy + 0.08, (out, generic.accuracy)


def _labelled_links(folder: Path, rows: list[tuple[str, str]]) -> Path:
    """A data folder of ``rows``' kaggle_v2 images (links) and their labels.csv."""
    folder.mkdir()
    for name, _ in rows:
        (folder / name).symlink_to(KAGGLE / name)
    with (folder / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "label"), *rows])
    return folder


@pytest.mark.slow
@needs_torch
@needs_kaggle
def test_distillation_path_produces_both_candidates() -> None:
    """The teacher-student path end to end, too briefly to learn much: it must run and choose."""
    from capgate.training.data import Dataset
    from capgate.training.trainer import TrainOptions, train_profile

    rows = _kaggle_rows()
    dataset = Dataset(
        [Sample(KAGGLE / name, label) for name, label in rows[:24]],
        [KAGGLE / name for name, _ in rows[24:40]],
    )
    # Two planned passes per student phase: the budget is a ceiling the run never reaches.
    options = TrainOptions(epochs=1, student_epochs=2, time_budget=20, max_pool=80, holdout=8, threads=1)
    events: list[str] = []
    result = train_profile("tiny", dataset, options, lambda event: events.append(event.stage))
    metrics = result.profile.metrics
    assert set(result.candidates) == {"teacher", "student"}
    assert metrics["shipped"] in result.candidates
    assert result.onnx_bytes == result.candidates[metrics["shipped"]][0]
    assert {"teacher", "labelling", "student", "export"} <= set(events)
    assert metrics["unlabelled_images"] == 16 and metrics["holdout_images"] == 8
    assert metrics["agreement_images"] == 0  # every unlabelled image went to the student
    # ... and every one of them, as the teacher labelled it, is in the ship rule's pool.
    assert metrics["agreement_pool"] == 16 and metrics["agreement_unseen"] == 0
    assert metrics["ship_reason"].startswith(metrics["shipped"] + ":")
    assert "16 unlabelled images" in metrics["ship_reason"]
    assert 0.0 <= metrics["student_check_accuracy"] <= 1.0
