"""The recognizers training works with: ddddocr's generic model rebuilt in PyTorch, and a small student.

The teacher is ddddocr's bundled ``common.onnx`` (MIT licence) written out as plain PyTorch modules so
its weights can be copied from the ONNX initializers with the ``onnx`` package alone; converting the
graph generically (onnx2torch) would pull a CUDA torch and still lacks an LSTM converter. Its output
layer is cut down to the CTC blank plus the family's alphabet: 8,210 classes become a handful, which
drops the model from 13.5M to about 5M parameters and stops it answering characters the family never
uses.

Both models take ``float32[N, 1, 64, W]`` and return logits ``[T, N, classes]`` (layout ``"TNC"``),
one time step per 8 columns.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CONV_PREFIXES = ("stem.", "stage1.", "down2.", "stage2.", "down3.", "stage3.")
INPUT_HEIGHT = 64  # fixed by the generic model: its LSTM reads 64 channels x 8 rows


def generic_model_path() -> Path:
    """ddddocr's ``common.onnx``, found without importing ddddocr (its import pulls in onnxruntime)."""
    spec = importlib.util.find_spec("ddddocr")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / "common.onnx"
        if path.is_file():
            return path
    raise FileNotFoundError("ddddocr's common.onnx was not found: is ddddocr installed?")


def generic_charset() -> list[str]:
    """The class list of ``common.onnx`` (ddddocr calls it the beta charset); index 0 is the blank."""
    from ddddocr.charsets import CHARSET_BETA

    return list(CHARSET_BETA)


class _Residual(nn.Module):
    """``x + conv1x1(silu(conv3x3(x)))``: the repeating unit of ddddocr's backbone."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(channels, hidden, 3, padding=1)
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.project(nn.functional.silu(self.expand(x)))
        return out


class _Down(nn.Module):
    """Strided 3x3 conv with SiLU, then a linear 1x1 projection (no activation, as in the ONNX graph)."""

    def __init__(self, cin: int, hidden: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, hidden, 3, stride=2, padding=1)
        self.project = nn.Conv2d(hidden, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.project(nn.functional.silu(self.conv(x)))
        return out


class GenericRecognizer(nn.Module):
    """ddddocr ``common.onnx``: a residual SiLU CNN (height 64 -> 8), a 512-unit BiLSTM, a linear head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 24, 3, stride=2, padding=1)
        self.stage1 = nn.Sequential(_Residual(24, 24), _Residual(24, 24))
        self.down2 = _Down(24, 96, 48)
        self.stage2 = nn.Sequential(_Residual(48, 192), _Residual(48, 192), _Residual(48, 192))
        self.down3 = _Down(48, 192, 64)
        self.stage3 = nn.Sequential(_Residual(64, 256), _Residual(64, 256), _Residual(64, 256))
        self.rnn = nn.LSTM(512, 512, bidirectional=True)
        self.head = nn.Linear(1024, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional part: ``[N, 1, 64, W]`` -> one 512-d feature per time step ``[T, N, 512]``."""
        x = nn.functional.silu(self.stem(x))
        x = self.stage3(self.down3(self.stage2(self.down2(self.stage1(x)))))
        # [N, C, H, W] -> [W, N, C*H]: each column of the feature map is one time step, and the ONNX
        # graph flattens channels before height.
        n, c, h, w = x.shape
        return x.permute(3, 0, 1, 2).reshape(w, n, c * h)

    def decode(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(seq)
        logits: torch.Tensor = self.head(out)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


# Names of common.onnx's initializers, in the order the PyTorch convolutions appear above.
_ONNX_CONVS = [
    "stem",
    "stage1.0.expand", "stage1.0.project", "stage1.1.expand", "stage1.1.project",
    "down2.conv", "down2.project",
    "stage2.0.expand", "stage2.0.project", "stage2.1.expand", "stage2.1.project",
    "stage2.2.expand", "stage2.2.project",
    "down3.conv", "down3.project",
    "stage3.0.expand", "stage3.0.project", "stage3.1.expand", "stage3.1.project",
    "stage3.2.expand", "stage3.2.project",
]  # fmt: skip


def _onnx_weights(path: Path) -> tuple[list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]], dict[str, Any]]:
    """Read the convolutions (in graph order) and the LSTM/Gemm initializers of ``common.onnx``."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    # Copies: arrays read from the protobuf are read-only, which torch.from_numpy warns about.
    inits = {t.name: np.array(numpy_helper.to_array(t)) for t in graph.initializer}
    convs = [(inits[n.input[1]], inits[n.input[2]]) for n in graph.node if n.op_type == "Conv"]
    lstm = next(n for n in graph.node if n.op_type == "LSTM")
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    rest = {
        "lstm_w": inits[lstm.input[1]],
        "lstm_r": inits[lstm.input[2]],
        "lstm_b": inits[lstm.input[3]],
        "head_w": inits[gemm.input[1]],
        "head_b": inits[gemm.input[2]],
    }
    return convs, rest


def _onnx_lstm_to_torch(gates: np.ndarray[Any, Any], hidden: int) -> torch.Tensor:
    """ONNX orders LSTM gates input, output, forget, cell; PyTorch input, forget, cell, output."""
    i, o, f, c = (gates[k * hidden : (k + 1) * hidden] for k in range(4))
    return torch.from_numpy(np.concatenate([i, f, c, o]).copy())


def class_rows(alphabet: str, charset: list[str]) -> list[int]:
    """Rows of the generic head that start each of the family's classes (blank first).

    A character the generic model lacks starts from its other case when that exists (ddddocr's models
    tend to answer upper-case letters in lower case), else from the blank row: fine-tuning teaches it.
    """
    index = {ch: i for i, ch in enumerate(charset) if ch}
    rows = [0]
    for ch in alphabet:
        if ch.isupper() and ch.lower() not in alphabet and ch.lower() in index:
            rows.append(index[ch.lower()])
        elif ch in index:
            rows.append(index[ch])
        elif ch.swapcase() in index:
            rows.append(index[ch.swapcase()])
        else:
            rows.append(0)
    return rows


def load_generic(alphabet: str | None = None, path: Path | None = None) -> GenericRecognizer:
    """Build the generic recognizer with ddddocr's weights; ``alphabet`` slices its output layer."""
    convs, rest = _onnx_weights(path or generic_model_path())
    full_classes = rest["head_w"].shape[0]
    rows = class_rows(alphabet, generic_charset()) if alphabet is not None else list(range(full_classes))
    model = GenericRecognizer(len(rows))
    modules = dict(model.named_modules())
    if len(convs) != len(_ONNX_CONVS):
        raise ValueError(f"unexpected generic model: {len(convs)} convolutions")
    with torch.no_grad():
        for name, (weight, bias) in zip(_ONNX_CONVS, convs, strict=True):
            conv = modules[name]
            assert isinstance(conv, nn.Conv2d)
            conv.weight.copy_(torch.from_numpy(weight))
            assert conv.bias is not None
            conv.bias.copy_(torch.from_numpy(bias))
        hidden = model.rnn.hidden_size
        for direction, suffix in enumerate(("", "_reverse")):
            w = _onnx_lstm_to_torch(rest["lstm_w"][direction], hidden)
            r = _onnx_lstm_to_torch(rest["lstm_r"][direction], hidden)
            bias = rest["lstm_b"][direction]
            b_ih = _onnx_lstm_to_torch(bias[: 4 * hidden], hidden)
            b_hh = _onnx_lstm_to_torch(bias[4 * hidden :], hidden)
            getattr(model.rnn, f"weight_ih_l0{suffix}").copy_(w)
            getattr(model.rnn, f"weight_hh_l0{suffix}").copy_(r)
            getattr(model.rnn, f"bias_ih_l0{suffix}").copy_(b_ih)
            getattr(model.rnn, f"bias_hh_l0{suffix}").copy_(b_hh)
        model.head.weight.copy_(torch.from_numpy(rest["head_w"][rows]))
        model.head.bias.copy_(torch.from_numpy(rest["head_b"][rows]))
    return model


def export_onnx(model: nn.Module, channels: int, height: int, width: int) -> bytes:
    """Serialise ``model`` to ONNX with a dynamic batch and width, logits ``[T, N, classes]``."""
    import tempfile
    import warnings

    model.eval()
    example = torch.zeros(1, channels, height, width)
    # The TorchScript exporter: the torch.export-based one needs onnxscript, which the extra doesn't
    # install. Its deprecation notice and a batch-size caution that doesn't apply (the LSTM's initial
    # state is zeros, whatever the batch) would otherwise fail test runs that treat warnings as errors.
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as folder:
        warnings.simplefilter("ignore")
        path = Path(folder) / "model.onnx"
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch", 3: "width"}, "logits": {0: "time", 1: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        return path.read_bytes()


class CompactRecognizer(nn.Module):
    """The generic recognizer thinned out for serving: the student that distillation trains.

    Same input geometry and time steps as :class:`GenericRecognizer`, so it copies its teacher frame
    by frame without any resampling. It keeps the teacher's stem and down-sampling convs and the first
    ``blocks[i]`` residual blocks of each stage (dropping blocks from a trained residual network
    degrades it gracefully rather than destroying it), and replaces the 2x512 BiLSTM, which costs
    more time than all the convs kept, with three 1-D convolutions over time: they learn far faster
    than a fresh LSTM, and copying the teacher's frames needs only local context (13 steps, about two
    characters). With the defaults it is about 0.6M parameters and a quarter of the teacher's
    arithmetic: ~3 ms per 200x50 image in onnxruntime on one core, against ~12-15 ms.

    Starting from trained convs is what lets distillation finish in minutes; a small CRNN trained
    from scratch on the teacher's outputs was still at 0% after 4,000 images.
    """

    def __init__(self, num_classes: int, blocks: tuple[int, int, int] = (1, 0, 1), hidden: int = 128) -> None:
        super().__init__()
        self.blocks = blocks
        self.stem = nn.Conv2d(1, 24, 3, stride=2, padding=1)
        self.stage1 = nn.Sequential(*[_Residual(24, 24) for _ in range(blocks[0])])
        self.down2 = _Down(24, 96, 48)
        self.stage2 = nn.Sequential(*[_Residual(48, 192) for _ in range(blocks[1])])
        self.down3 = _Down(48, 192, 64)
        self.stage3 = nn.Sequential(*[_Residual(64, 256) for _ in range(blocks[2])])
        # Normalised first: the thinned convs' features don't come out at the scale the teacher's had.
        self.norm = nn.LayerNorm(512)
        # The student sees each pool item many times; dropping features is its cheap augmentation.
        self.dropout = nn.Dropout(0.25)
        self.project = nn.Linear(512, hidden)
        self.temporal = nn.ModuleList(nn.Conv1d(hidden, hidden, 5, padding=2) for _ in range(3))
        self.head = nn.Linear(hidden, num_classes)

    @classmethod
    def from_teacher(
        cls, teacher: GenericRecognizer, blocks: tuple[int, int, int] = (1, 0, 1), hidden: int = 128
    ) -> CompactRecognizer:
        model = cls(teacher.head.out_features, blocks, hidden)
        state = teacher.state_dict()
        # Every conv kept has the same name in both models (stage blocks are taken from the front).
        kept = {k: v for k, v in state.items() if k.startswith(CONV_PREFIXES)}
        missing, _ = model.load_state_dict(kept, strict=False)
        assert all(not k.startswith(CONV_PREFIXES) for k in missing), missing
        return model

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional part: ``[N, 1, 64, W]`` -> one 512-d feature per time step ``[T, N, 512]``."""
        x = nn.functional.silu(self.stem(x))
        x = self.stage3(self.down3(self.stage2(self.down2(self.stage1(x)))))
        n, c, h, w = x.shape
        return x.permute(3, 0, 1, 2).reshape(w, n, c * h)

    def decode(self, seq: torch.Tensor) -> torch.Tensor:
        """``[T, N, 512]`` features -> ``[T, N, classes]`` logits."""
        x = nn.functional.gelu(self.project(self.dropout(self.norm(seq)))).permute(1, 2, 0)
        for conv in self.temporal:
            x = x + nn.functional.gelu(conv(x))
        logits: torch.Tensor = self.head(x.permute(2, 0, 1))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
