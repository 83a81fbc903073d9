"""What `bench` measures and how: the subject (a trained run, or a backbone preset's shape with random
weights), the inputs, the thread count, and the machine facts every report carries."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hyperexport.backbones import PRESETS
from hyperexport.contracts.run import RunFolder
from hyperexport.errors import UserError
from hyperexport.recipe.load import load_recipe
from hyperexport.recipe.schema import DEFAULT_RECIPE
from hyperexport.tasks.registry import max_target_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hyperexport.model.hyper_t5 import HyperT5
    from hyperexport.recipe.schema import Recipe


@dataclass(frozen=True)
class Subject:
    """What is benchmarked: a HyperT5 (trained or random), its recipe and tokenizer, and the task."""
    recipe: Recipe
    tokenizer: PreTrainedTokenizerBase
    model: HyperT5
    task: str
    label_ids: torch.Tensor  # [K, L]
    new_tokens: int  # the task's generation length (its longest label, </s> included)
    source: str  # "runs/demo" or "random t5-small"
    backbone_dir: Path | None  # a run's saved backbone weights; None: the recipe's (random from its seed)


def load_subject(run, task: str, backbone: str | None, recipe_path: str | Path | None = None) -> Subject:
    """The run's trained model; with `backbone`, that preset's shape with random weights and the
    adapter settings of `recipe_path`, else of the run's recipe, else of the default recipe."""
    from hyperexport.model.build import (
        BYTE_TOKENIZER,
        DEMO_WORD_TOKENIZER,
        build_model,
        load_tokenizer,
    )
    from hyperexport.training.task_data import task_spec

    if backbone is None:
        from hyperexport.model.trained import load_run

        loaded = load_run(run)
        loaded.check_tasks([task])
        if loaded.tokenizer is None:
            raise UserError(f"the run {loaded.path.name} has no tokenizer, which bench needs for the labels: "
                            "import it again with --tokenizer, or bench a --backbone shape")
        recipe, tokenizer, model, source = loaded.recipe, loaded.tokenizer, loaded.model, str(loaded.path)
        backbone_dir = loaded.folder.backbone_dir
    else:
        if backbone not in PRESETS:
            raise UserError(f"unknown backbone '{backbone}': use one of {', '.join(sorted(PRESETS))}")
        base = load_recipe(recipe_path or (RunFolder.resolve(run).recipe_file if run else DEFAULT_RECIPE))
        recipe = replace(base, backbone=replace(base.backbone, config=backbone, pretrained=None))
        if recipe.backbone.tokenizer not in (BYTE_TOKENIZER, DEMO_WORD_TOKENIZER):  # random weights: the tokenizer only
            recipe = replace(recipe, backbone=replace(recipe.backbone, tokenizer=BYTE_TOKENIZER))  # sets label ids
        tokenizer = load_tokenizer(recipe.backbone.tokenizer)
        model = build_model(recipe, [t.name for t in recipe.tasks]).eval()
        source, backbone_dir = f"random {backbone}", None
    known = [t.name for t in recipe.tasks]
    if task not in known:
        raise UserError(f"task '{task}' is not in the recipe: its tasks are {', '.join(known)}")
    from hyperexport.export.classify import label_token_ids

    spec = task_spec(next(t for t in recipe.tasks if t.name == task))
    return Subject(recipe, tokenizer, model, task, label_token_ids(tokenizer, list(spec.labels)),
                   max_target_tokens(spec, tokenizer), source, backbone_dir)


def parse_sizes(text: str, name: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); anything else is a one-line error."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise UserError(f"--{name} '{text}' is not a comma-separated list of positive integers (e.g. 1,8,32)")
    return sizes


def check_settings(seq: int, rounds: int) -> None:
    if seq < 2 or rounds < 1:
        raise UserError("--seq must be at least 2 and --rounds at least 1")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """PyTorch's thread count set for the measurement (default: every core), restored afterwards."""
    previous = torch.get_num_threads()
    count = threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


def random_inputs(subject: Subject, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch)
    vocab = min(len(subject.tokenizer), subject.model.backbone.config.vocab_size)
    input_ids = torch.randint(3, vocab, (batch, seq), generator=generator)  # [B, S]
    input_ids[:, -1] = subject.tokenizer.eos_token_id
    return input_ids, torch.ones_like(input_ids)


def adapter_bottleneck(subject: Subject) -> int:
    from hyperexport.model.generators import bottleneck_size

    return bottleneck_size(subject.model.backbone.config.d_model, subject.recipe.model.reduction_factor)


def machine_facts(threads: int) -> dict:
    """What the figures depend on: the processor (model, the SIMD features int8 kernels use), the thread
    count, the library versions, and the load average when the run began (other work on the cores)."""
    import onnxruntime

    model, flags = _cpu_info()
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": model, "cpu_features": sorted(flags & SIMD_FEATURES), "cpu_count": os.cpu_count(),
            "threads": threads, "load_average_1m": os.getloadavg()[0], "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


SIMD_FEATURES = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16"}


def _cpu_info() -> tuple[str, set[str]]:
    """The processor's model name and feature flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor(), set()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return fields.get("model name\t", "").strip(), set(fields.get("flags\t\t", "").split())
