"""Which recognizer the running service uses (issue 5, item 3): the task's ``profile``, the account's
default, a profile whose family the image clearly belongs to, else the generic model.

The profile here is a tiny ONNX graph that reads every image as ``zzzz``, so which model answered is
plain from the answer; real trained profiles are covered by ``test_training.py``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from capgate.solvers.ocr.profile import Fingerprint, InputSpec, Profile, save_profile
from tests.serverproc import ServerProcess, start_server

onnx = pytest.importorskip("onnx")

FAMILY_SIZE = (120, 40)


def constant_model() -> bytes:
    """Logits [T=8, N=1, C=2] that always decode (greedy CTC) to ``zzzz``: z, blank, z, blank, …"""
    from onnx import TensorProto, helper, numpy_helper

    logits = np.zeros((8, 1, 2), dtype=np.float32)
    logits[0::2, 0, 1] = 10.0  # class 1 = "z"
    logits[1::2, 0, 0] = 10.0  # class 0 = blank
    node = helper.make_node("Constant", [], ["logits"], value=numpy_helper.from_array(logits))
    graph = helper.make_graph(
        [node], "zzzz",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 64, None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [8, 1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def png(size: tuple[int, int], text_shade: int = 0) -> bytes:
    image = Image.new("L", size, 255)
    for x in range(10, size[0] - 10, 7):
        for y in range(size[1] // 3, 2 * size[1] // 3):
            image.putpixel((x, y), text_shade)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def profile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("profiles")
    profile = Profile(name="zfamily", alphabet="z", input=InputSpec(height=64), min_len=1, max_len=8,
                      fingerprint=Fingerprint(FAMILY_SIZE[0], FAMILY_SIZE[1], "L"))
    save_profile(workdir / "profiles", profile, constant_model())
    with start_server(workdir) as server:
        yield server


def solve(server: ServerProcess, key: str, image: bytes, **extra: str) -> str:
    with httpx.Client(timeout=60) as http:
        submitted = http.post(server.url("in.php"), data={
            "key": key, "method": "base64", "body": base64.b64encode(image).decode(), **extra}).text
        assert submitted.startswith("OK|"), submitted
        return http.get(server.url("res.php"), params={
            "key": key, "action": "get", "id": submitted[3:], "wait": "30"}).text


def test_a_task_names_its_profile(profile_server: ServerProcess) -> None:
    key = profile_server.create_key(sandbox=False, threads=5)
    assert solve(profile_server, key, png((150, 50)), profile="zfamily") == "OK|zzzz"


def test_an_unknown_profile_falls_back_to_the_generic_model(profile_server: ServerProcess) -> None:
    key = profile_server.create_key(sandbox=False, threads=5)
    assert solve(profile_server, key, png((150, 50), 40), profile="nosuchfamily") != "OK|zzzz"


def test_an_image_of_the_family_uses_its_profile(profile_server: ServerProcess) -> None:
    key = profile_server.create_key(sandbox=False, threads=5)
    assert solve(profile_server, key, png(FAMILY_SIZE)) == "OK|zzzz"
    assert solve(profile_server, key, png((150, 50), 20)) != "OK|zzzz"  # another size: generic


def test_the_account_default_profile(profile_server: ServerProcess) -> None:
    key = profile_server.create_key(sandbox=False, threads=5)
    profile_server.cli("keys", "set", key, "--profile", "zfamily")
    assert solve(profile_server, key, png((150, 50), 60)) == "OK|zzzz"
