"""The recipe schema: frozen, typed dataclasses, one per section of a recipe YAML (`recipe.load` reads and
validates them; relative paths resolve against the recipe file's folder, so a loaded recipe holds
absolute paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_RECIPE: Path = Path(__file__).parent / "demo.yaml"


@dataclass(frozen=True)
class BackboneConfig:
    config: str = "t5-small"  # a packaged preset name (see backbones) or a path to a T5 config.json
    pretrained: str | None = None  # hub id or local dir of T5 weights; None: random init (offline)
    tokenizer: str = "byt5"  # "byt5" (bytes) or "demo-words" (demo vocabulary): made in code; else hub id / dir
    # transformers 3.5's decoder cross-attention relative-position bias (block 0's table, bidirectional
    # buckets, reused by every decoder layer), as checkpoints of the original HyperFormer code use it.
    legacy_cross_attention_bias: bool = False


# hyperformer-layer: one hypernet per stack over [task, layer id], generators per position (the
# released configs/hyperformer.json)
ModelVariant = Literal["hyperformer++", "hyperformer", "hyperformer-layer", "adapters"]


@dataclass(frozen=True)
class ModelConfig:
    variant: ModelVariant = "hyperformer++"
    reduction_factor: int = 32
    task_embedding_dim: int = 64
    hypernet_hidden_dim: int = 128
    # Raw task-embedding size when a projector (dim -> hidden -> task_embedding_dim) is used; the paper's
    # HyperFormer: 512. None: no projector.
    task_projector_input_dim: int | None = None
    activation: Literal["gelu_new", "relu", "swish"] = "gelu_new"


@dataclass(frozen=True)
class TaskConfig:
    name: str
    source: Literal["hf", "glue_dir", "jsonl", "csv", "demo"] = "hf"
    # Required for glue_dir/jsonl/csv; a relative path resolves against the recipe file's folder.
    path: str | None = None
    # Custom tasks only (name not in the registry), which must set all three of template, labels, metric.
    template: str | None = None
    labels: tuple[str, ...] | None = None
    metric: str | None = None
    label_field: str = "label"
    max_train_examples: int | None = None
    max_eval_examples: int | None = None


@dataclass(frozen=True)
class DataConfig:
    max_source_length: int = 128
    max_target_length: int = 128
    temperature: float = 10.0
    mixed_task_batches: bool = False
    validation_leak: bool = False  # True: the paper's (large tasks keep validation examples in train)
    data_seed: int = 42


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 65536
    batch_size: int = 32
    eval_batch_size: int = 32
    learning_rate: float = 3e-4
    warmup_steps: int = 500
    weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    label_smoothing: float = 0.1
    loss_reduction: Literal["sum", "mean"] = "sum"  # "sum": the paper's token-sum form
    max_grad_norm: float = 1.0
    eval_every: int = 1000
    log_every: int = 50
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 42


@dataclass(frozen=True)
class Recipe:
    name: str
    tasks: tuple[TaskConfig, ...]
    backbone: BackboneConfig = BackboneConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
