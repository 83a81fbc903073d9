"""What every graph export shares: the opset, and tracing's warnings kept out of the command's output."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

from hyperexport.options import DEFAULT_OPSET  # noqa: F401  (the opset every graph export uses)


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Tracing T5 warns about Python branches it freezes (sequence length, cache state); the graphs are
    checked by `verify`, and the warnings would bury the command's own output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        yield
