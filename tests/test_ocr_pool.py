"""The OCR process pool: answers off the event loop, errors carried back, profiles loaded lazily."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from capgate.solvers.ocr.constraints import OcrConstraints
from capgate.solvers.ocr.engine import Recognizer, UnknownProfile, UnreadableImage, ddddocr_charset, ddddocr_dir
from capgate.solvers.ocr.pool import OcrPool
from capgate.solvers.ocr.profile import Profile
from tests.fixtures import labelled

# The helpers repeat test_ocr_engine's: test modules here are not a package, so one cannot import
# the other under mypy.
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def draw(text: str) -> bytes:
    image = Image.new("L", (max(160, 24 * len(text)), 50), 255)
    ImageDraw.Draw(image).text((8, 6), text, fill=0, font=ImageFont.load_default(size=32))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def write_generic_as_profile(folder: Path, name: str, min_len: int, max_len: int) -> None:
    """A profile served by ddddocr's common_old.onnx, linked rather than copied."""
    alphabet = "".join(ddddocr_charset("CHARSET_OLD")[1:])
    profile = Profile(name=name, alphabet=alphabet, min_len=min_len, max_len=max_len)
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    (target / "profile.json").write_text(profile.to_json(), encoding="utf-8")
    if not (target / "model.onnx").exists():
        (target / "model.onnx").symlink_to(ddddocr_dir() / "common_old.onnx")


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles")


@pytest.fixture(scope="module")
def pool(profiles_dir: Path) -> Iterator[OcrPool]:
    with OcrPool(2, profiles_dir) as started:
        started.wait_ready(timeout=120)
        yield started


async def test_answers_like_the_engine(pool: OcrPool) -> None:
    images = [draw(t) for t in ("48213", "ab7kq", "70394", "HELLO")]
    c = OcrConstraints(min_len=5, max_len=5)
    results = await asyncio.gather(*(pool.recognize(image, c) for image in images))
    local = Recognizer.generic()
    assert results == [local.recognize(image, c) for image in images]
    assert [r.text for r in results] == ["48213", "ab7kq", "70394", "hello"]


async def test_real_images(pool: OcrPool) -> None:
    data = labelled("lzu", 12)
    c = OcrConstraints(numeric=1, min_len=5, max_len=5)
    results = await asyncio.gather(*(pool.recognize(image, c) for image, _ in data))
    assert all(r.text.isdigit() and len(r.text) == 5 for r in results)
    assert sum(r.text == label for r, (_, label) in zip(results, data, strict=True)) >= 9


async def test_event_loop_stays_free(pool: OcrPool) -> None:
    """OCR runs in the workers: the loop keeps ticking while many images are being read."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.gather(*(pool.recognize(draw("12345"), OcrConstraints()) for _ in range(8)))
    done = True
    await task
    assert ticks > 8


async def test_errors_come_back(pool: OcrPool) -> None:
    with pytest.raises(UnreadableImage):
        await pool.recognize(b"definitely not an image", OcrConstraints())
    with pytest.raises(UnknownProfile):
        await pool.recognize(draw("123"), OcrConstraints(), profile="nope")
    with pytest.raises(UnknownProfile):
        await pool.recognize(draw("123"), OcrConstraints(), profile="../etc")
    # The workers survive errors.
    assert (await pool.recognize(draw("48213"), OcrConstraints(numeric=1))).text == "48213"


async def test_profile_loaded_lazily_and_reloaded_on_change(pool: OcrPool, profiles_dir: Path) -> None:
    write_generic_as_profile(profiles_dir, "fam", min_len=3, max_len=3)
    image = draw("48213")
    # Both workers must load it: more requests than workers.
    first = await asyncio.gather(*(pool.recognize(image, OcrConstraints(), "fam") for _ in range(4)))
    assert all(len(r.text) == 3 for r in first)

    write_generic_as_profile(profiles_dir, "fam", min_len=4, max_len=4)
    json_file = profiles_dir / "fam" / "profile.json"
    stat = json_file.stat()
    os.utime(json_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = await asyncio.gather(*(pool.recognize(image, OcrConstraints(), "fam") for _ in range(4)))
    assert all(len(r.text) == 4 for r in second)


def test_submit_and_close() -> None:
    pool = OcrPool(1, None, warm=False)
    try:
        assert pool.submit(draw("48213"), OcrConstraints(numeric=1)).result(timeout=120).text == "48213"
    finally:
        pool.close()
    pool.close()
    with pytest.raises(RuntimeError):
        pool.submit(draw("1"), OcrConstraints())


def test_rejects_fork() -> None:
    with pytest.raises(ValueError):
        OcrPool(1, start_method="fork")
