"""The choices and defaults the stages take, as types: one source for the library's signatures and the
CLI's options. Light on purpose: the CLI reads it before any heavy import."""

from __future__ import annotations

from typing import Literal, get_args

Device = Literal["auto", "cpu", "cuda"]
Split = Literal["validation", "test"]  # what evaluate measures
Format = Literal["onnx", "tensorrt"]
ExportHead = Literal["generate", "classify", "both"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
Tune = Literal["embedding", "layer-norms", "hypernet"]  # what adapt lets learn

DEVICES: tuple[Device, ...] = get_args(Device)
SPLITS: tuple[Split, ...] = get_args(Split)
FORMATS: tuple[Format, ...] = get_args(Format)
EXPORT_HEADS: tuple[ExportHead, ...] = get_args(ExportHead)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
TUNES: tuple[Tune, ...] = get_args(Tune)
# what ONNX Runtime's CPU provider runs (it has no bf16 kernels, e.g. Sub)
CPU_RUNNABLE: tuple[Precision, ...] = ("fp32", "fp16", "int8")

DEFAULT_DEVICE: Device = "auto"
DEFAULT_SPLIT: Split = "test"
DEFAULT_FORMAT: Format = "onnx"
DEFAULT_HEAD: ExportHead = "both"
DEFAULT_PRECISION: Precision = "fp32"
DEFAULT_TUNE: Tune = "embedding"
DEFAULT_OPSET = 18  # optimum recommends at least 18 for T5
DEFAULT_ENGINE_BATCH = "1:8:32"  # TensorRT profile ranges, min:opt:max
DEFAULT_ENGINE_SEQ = "1:64:256"
DEFAULT_VERIFY_EXAMPLES = 200
DEFAULT_ADAPT_STEPS = 200
DEFAULT_ADAPT_LEARNING_RATE = 3e-2  # one 64-number vector drawn N(0, 1): it needs larger steps than the hypernet
DEFAULT_BENCH_BATCHES = "1,8,32"
DEFAULT_BENCH_SEQ = 128
DEFAULT_BENCH_ROUNDS = 10
DEFAULT_TRITON_REPO = "triton-repo"
DEFAULT_SERVE_HOST = "127.0.0.1"  # serve binds to the loopback unless --host says otherwise
DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT = 8000, 8001, 8002  # Triton's own defaults
DEFAULT_SERVE_MAX_BATCH = 32  # requests' rows Triton's dynamic batcher joins into one execution
DEFAULT_MAX_QUEUE_DELAY_US = 0  # 0: a batch is whatever queued while the model was busy; no added wait
DEFAULT_SERVE_INSTANCES = 1  # model instances (processes) per served model; ONNX Runtime uses every core in each
