"""Every file and folder name of hyperexport's artifacts, in one place.

A stage's folder is a contract: the typed classes beside this module (`RunFolder`, `TaskFolder`,
`ExportFolder`, ...) read and write these files; no other module spells a name.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST_FILE = "manifest.json"  # in every stage's folder: its facts and every file's sha256

# ---- a run folder (train, import-hyperformer, adapt): runs/<name>/ -----------------------------------
RUNS_DIR = "runs"
LATEST_LINK = "latest"  # runs/latest -> the newest finished run
PARTIAL_SUFFIX = ".partial"  # an unfinished run: runs/<name>.partial/
RECIPE_FILE = "recipe.yaml"
WEIGHTS_FILE = "model.safetensors"  # trained tensors: hypernets, task embeddings, T5 layer norms
BACKBONE_DIR = "backbone"  # a random-init or imported backbone's frozen weights (absent for pretrained ones)
TOKENIZER_DIR = "tokenizer"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoint"  # resumable training state, inside the unfinished run folder
TASKS_DIR = "tasks"  # materialized tasks inside a run folder (written after the run's manifest)
ADAPTED_DATA_DIR = "data"  # <run>/data/<task>/{train,validation,test}.jsonl: the rows `adapt` used

# ---- a training checkpoint: <run>.partial/checkpoint/ ------------------------------------------------
TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"  # optimizer, scheduler, sampler, RNG (torch.load(weights_only=True))

# ---- a materialized task: <run>/tasks/<task>/ ------------------------------------------------------
ADAPTERS_FILE = "adapters.safetensors"
TASK_FILE = "task.json"

# ---- an export: exports/<task>/<format>[-<precision>]/ -------------------------------------------
EXPORTS_DIR = "exports"
CLASSIFY_GRAPH = "classify_model.onnx"
ENCODER_GRAPH = "encoder_model.onnx"  # optimum's names for the generate head
DECODER_GRAPH = "decoder_model.onnx"
DECODER_WITH_PAST_GRAPH = "decoder_with_past_model.onnx"
GENERATE_MODEL_GRAPH = "generate_model.onnx"  # optional: the whole greedy loop in one graph (ONNX Runtime only)
GRAPH_WEIGHTS_FILE = "graphs.onnx_data"  # the graphs' weights, each distinct tensor once (external data)
GENERATE_GRAPHS = {"encoder": ENCODER_GRAPH, "decoder": DECODER_GRAPH, "decoder_with_past": DECODER_WITH_PAST_GRAPH}
HEAD_GRAPHS = {"classify": (CLASSIFY_GRAPH,), "generate": tuple(GENERATE_GRAPHS.values())}
MODEL_CONFIG_FILE = "config.json"  # transformers' T5 config, beside the generate graphs (optimum loads it)

# ---- transformers' own checkpoint layout (a saved backbone/, an original HyperFormer checkpoint) -------
TRANSFORMERS_CONFIG_FILE = MODEL_CONFIG_FILE
TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # preferred first
IO_SPEC_FILE = "io_spec.json"
TASK_TABLE_FILE = "tasks.json"  # a multi-task export's task table (`contracts.task_table.TaskTable`)
MULTITASK_EXPORT = "multitask"  # exports/multitask/<format>[-<precision>]/: one export for many tasks
PARITY_REPORT_FILE = "parity_report.json"  # written into an export folder by `verify`, after its manifest
ENGINE_SOURCE_DIR = "onnx"  # an engine folder's source ONNX export
PLAN_SUFFIX = ".plan"
TIMING_CACHE_FILE = "timing.cache"  # TensorRT's timing cache of one build, in a temporary folder (no --timing-cache)

# ---- a Triton deployment: triton-repo/ ------------------------------------------------------------
MODELS_DIR = "models"  # the model repository (tritonserver --model-repository)
CLIENTS_DIR = "clients"  # clients/<task>/: what a client needs and Triton must not see
DEPLOY_FILE = "deploy.json"
CLIENT_FILE = "client.py"
TRITON_CONFIG_FILE = "config.pbtxt"
MODEL_VERSION = "1"
TRITON_MODEL_FILES = {"tensorrt": "model.plan", "onnx": "model.onnx"}

# ---- a served model repository (`serve`): a temporary folder owned by the serve process -----------------
SERVE_FOLDER_PREFIX = "hyperexport-serve-"  # <tmp>/hyperexport-serve-<pid>-<random>/, removed when serve stops
PYTHON_MODEL_FILE = "model.py"  # models/<model>/1/model.py: Triton's Python backend runs it; it imports hyperexport
BACKENDS_DIR = "backends"  # backends/python/: links to the Python backend of nvidia-pytriton's tritonserver
SERVER_LOG_FILE = "tritonserver.log"


def plan_name(graph_file: str) -> str:
    """`encoder_model.onnx` -> `encoder_model.plan`."""
    return Path(graph_file).with_suffix(PLAN_SUFFIX).name


def graph_stem(graph_file: str) -> str:
    """`decoder_with_past_model.onnx` -> `decoder_with_past`."""
    return Path(graph_file).stem.removesuffix("_model")


def default_export_dir(task: str, fmt: str, precision: str) -> Path:
    """exports/<task>/<format> for fp32, exports/<task>/<format>-<precision> otherwise."""
    return Path(EXPORTS_DIR) / task / (fmt if precision == "fp32" else f"{fmt}-{precision}")
