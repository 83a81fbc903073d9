"""Which backend runs an export folder on this machine: TensorRT for an engine folder, else ONNX Runtime
with the execution provider the export's precision needs."""

from __future__ import annotations

from hyperexport.contracts.export import ExportFolder
from hyperexport.errors import UserError
from hyperexport.runtime.backends import GraphBackend, OnnxRuntimeBackend, onnxruntime_provider


def export_backend(export: ExportFolder, threads: int | None = None) -> GraphBackend:
    """The backend that runs an export folder here: TensorRT for an engine folder (needs an NVIDIA GPU
    and tensorrt), else ONNX Runtime with the provider its precision needs; what cannot run here is a
    one-line `UserError` before anything is loaded."""
    if export.is_engine:
        from hyperexport.runtime.tensorrt import TensorRTBackend

        return TensorRTBackend(export.path)
    precision = export.manifest.precision
    provider = onnxruntime_provider(precision)
    if provider is None:
        raise UserError(f"{export.path} holds {precision} graphs, which ONNX Runtime runs only on a GPU here: "
                        "install onnxruntime-gpu on a machine with an NVIDIA GPU, or export --precision fp32")
    return OnnxRuntimeBackend(export.path, provider, threads)
