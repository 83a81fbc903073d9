"""int8: ONNX Runtime's dynamic quantization of an export's graphs (weights int8, activations quantized
at run time), a CPU artifact."""

from __future__ import annotations

from pathlib import Path


def quantize_folder(folder: Path) -> None:
    """Dynamic int8 quantization (weights int8, activations quantized at run time) of every graph's MatMuls."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for path in sorted(folder.glob("*.onnx")):
        quantized = path.with_name(f".{path.name}.int8")
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        quantized.replace(path)
