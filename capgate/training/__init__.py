"""Training per-family recognizers (``capgate train``): fine-tune, distil, export ONNX profiles.

PyTorch is an optional extra, so this package imports without it: data loading, evaluation and the
command-line wiring work anywhere, and the parts that train are loaded on first use. Without PyTorch
they raise :class:`TrainingUnavailable`, whose message says how to install it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

INSTALL_HINT = "training needs PyTorch: pip install 'capgate[train]'"

if TYPE_CHECKING:
    from capgate.training.trainer import ProgressEvent, TrainOptions, TrainResult, train_profile

__all__ = [
    "INSTALL_HINT",
    "ProgressEvent",
    "TrainOptions",
    "TrainResult",
    "TrainingUnavailable",
    "require_torch",
    "train_profile",
]


class TrainingUnavailable(ImportError):
    """PyTorch (or onnx) is missing; ``str()`` of it is a message fit for the command line."""


def require_torch() -> None:
    """Import PyTorch and onnx now, or raise :class:`TrainingUnavailable`."""
    # OpenMP threads that spin while waiting for work are ruinous on a small machine the service's
    # own workers share: with one core busy elsewhere, two spinning threads ran training 5x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise TrainingUnavailable(f"{INSTALL_HINT} ({exc.name or exc} is not installed)") from exc


def __getattr__(name: str) -> Any:
    if name in ("ProgressEvent", "TrainOptions", "TrainResult", "train_profile"):
        require_torch()
        from capgate.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
