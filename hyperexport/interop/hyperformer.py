"""`import-hyperformer`: a checkpoint of the original HyperFormer code (rabeehk/hyperformer, transformers
3.5.1) as a run folder that every later stage accepts (materialize, export, verify, predict).

The checkpoint folder holds `pytorch_model.bin` (read with `torch.load(weights_only=True)`, never full
unpickling) or `model.safetensors`, the original `config.json`, and the JSON of training arguments the
original was run with (its `configs/*.json` format: tasks and adapter settings). Its `training_args.bin`
(a pickle) is never read. The original variants map onto ours:

| original arguments                                    | variant             |
| `adapter_config_name=meta-adapter`, `efficient_unique_hyper_net` | hyperformer++ |
| `adapter_config_name=meta-adapter`, `unique_hyper_net`           | hyperformer-layer |
| `adapter_config_name=meta-adapter` (a hypernet in every sublayer) | hyperformer  |
| `adapter_config_name=adapter` (plain per-task adapters)          | adapters     |

transformers 3.5's T5 gave decoder block 0's cross-attention its own relative-position bias; the
run's backbone keeps it (`backbone.legacy_cross_attention_bias`), so the logits stay the original's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names, publish
from hyperexport.contracts.run import RunManifest, write_run_manifest
from hyperexport.errors import UserError
from hyperexport.recipe.load import recipe_from_dict, recipe_to_dict
from hyperexport.tasks.registry import TASKS

WEIGHT_FILES = names.TRANSFORMERS_WEIGHT_FILES
CONFIG_FILE = names.TRANSFORMERS_CONFIG_FILE
NOT_TRAINING_ARGS = {CONFIG_FILE, "trainer_state.json", "tokenizer_config.json", "special_tokens_map.json",
                     "tokenizer.json", "added_tokens.json", "generation_config.json"}
TOKENIZER_FILES = ("tokenizer_config.json", "spiece.model", "tokenizer.json")
ACTIVATIONS = ("gelu_new", "relu", "swish")


@dataclass(frozen=True)
class OriginalSettings:
    """The original's adapter arguments, with the defaults of its `AdapterTrainingArguments`."""

    tasks: tuple[str, ...]
    adapter_config_name: str
    reduction_factor: int = 16
    non_linearity: str = "swish"
    task_embedding_dim: int | None = None
    projected_task_embedding_dim: int = 64
    task_hidden_dim: int = 128
    train_task_embeddings: bool = False
    conditional_layer_norm: bool = False
    add_layer_norm_before_adapter: bool = False
    add_layer_norm_after_adapter: bool = True
    unique_hyper_net: bool = False
    efficient_unique_hyper_net: bool = False
    unique_hyper_net_layer_norm: bool = True
    max_source_length: int = 128
    max_target_length: int = 128

    @property
    def variant(self) -> str:
        if self.adapter_config_name == "adapter":
            return "adapters"
        if self.efficient_unique_hyper_net:  # the original builds this one last when both flags are set
            return "hyperformer++"
        return "hyperformer-layer" if self.unique_hyper_net else "hyperformer"


def import_hyperformer(checkpoint_dir: str | Path, *, output: Path | None = None, tokenizer: str | None = None,
                       training_args: Path | None = None, overwrite: bool = False) -> Path:
    """Import `checkpoint_dir` into `output` (default runs/<checkpoint folder name>); returns the run folder."""
    from transformers import T5Config, T5ForConditionalGeneration

    from hyperexport.interop.hyperformer_keys import OriginalState, assemble_state, check_complete
    from hyperexport.model.build import add_legacy_cross_attention_bias, check_tokenizer_fits, load_tokenizer
    from hyperexport.model.hyper_t5 import HyperT5

    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise UserError(f"no checkpoint folder at {checkpoint_dir}: pass the original's output_dir")
    destination = Path(output) if output is not None else Path("runs") / checkpoint_dir.resolve().name
    if destination.exists() and not overwrite:
        raise UserError(f"{destination} already exists: pass --overwrite to replace it, or choose another --output")
    settings = read_settings(_training_args_file(checkpoint_dir, training_args))
    config_dict = _read_json(checkpoint_dir / CONFIG_FILE, "the original's config.json")
    if not isinstance(config_dict, dict):
        raise UserError(f"{checkpoint_dir / CONFIG_FILE} is {_json_kind(config_dict)}, not a JSON object: "
                        "copy the original's config.json there")
    weights_path, original = read_original_weights(checkpoint_dir)
    tokenizer_source = tokenizer or (str(checkpoint_dir) if _has_tokenizer(checkpoint_dir) else None)

    recipe = _recipe(settings, destination.name, tokenizer_source)
    torch.manual_seed(0)  # every tensor is overwritten below; the seed only keeps construction quiet
    try:
        config = _t5_config(T5Config, config_dict)
        backbone = T5ForConditionalGeneration(config)
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError, RuntimeError) as error:  # a bad value
        raise UserError(f"{checkpoint_dir / CONFIG_FILE} does not describe a T5 that can be built "
                        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else '?'}): "
                        "copy the original's config.json there") from None
    add_legacy_cross_attention_bias(backbone)
    model = HyperT5(backbone, settings.tasks, recipe.model)
    state = OriginalState(original)
    assembled = assemble_state(model, state, settings.conditional_layer_norm)
    check_complete(state, str(weights_path))
    _load_exactly(model, assembled, weights_path)
    loaded_tokenizer = load_tokenizer(tokenizer_source) if tokenizer_source else None
    if loaded_tokenizer is not None:
        check_tokenizer_fits(loaded_tokenizer, config)
    return _write_run(model.eval(), recipe, loaded_tokenizer, destination, weights_path, settings)


def read_settings(path: Path) -> OriginalSettings:
    """The adapter settings of an original training-arguments JSON; unsupported settings are refused."""
    args = _read_json(path, "the training-arguments JSON")
    if not isinstance(args, dict):
        raise UserError(f"{path} is {_json_kind(args)}, not a JSON object of training arguments: pass the "
                        "configs/*.json the original ran with")
    if not args.get("train_adapters", False):
        raise UserError(f"{path} does not set train_adapters: the checkpoint has no adapters to import")
    if args.get("adapters") or args.get("task_embeddings"):
        raise UserError(f"{path} maps tasks onto shared adapters or embeddings (adapters / task_embeddings), "
                        "which this importer does not support")
    known = {name: args[name] for name in OriginalSettings.__dataclass_fields__ if name in args}
    tasks = args.get("tasks") or ()
    if not isinstance(tasks, list) or not all(isinstance(task, str) for task in tasks):
        raise UserError(f"{path}: tasks must be a list of task names, got {tasks!r}")
    known["tasks"] = tuple(tasks)
    if not known["tasks"] or known.get("adapter_config_name") not in ("adapter", "meta-adapter"):
        raise UserError(f"{path} needs `tasks` and `adapter_config_name` (adapter or meta-adapter)")
    for name, value in known.items():
        expected = _SETTING_TYPES.get(name)
        nullable = name == "task_embedding_dim" and value is None
        if expected is not None and not _is_setting(value, expected) and not nullable:
            raise UserError(f"{path}: {name} must be {_SETTING_KINDS[expected]}, got {value!r}")
    settings = OriginalSettings(**known)
    problem = _unsupported(settings)
    if problem:
        raise UserError(f"{path}: {problem}, which this importer does not support")
    return settings


# the type each setting must have in the JSON (task_embedding_dim may also be null)
_SETTING_TYPES = ({name: type(field.default) for name, field in OriginalSettings.__dataclass_fields__.items()
                   if isinstance(field.default, (bool, int, str))}
                  | {"adapter_config_name": str, "task_embedding_dim": int})
_SETTING_KINDS = {bool: "true or false", int: "a positive whole number", str: "a string"}


def _is_setting(value, expected: type) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    return isinstance(value, expected)


def _json_kind(value) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _unsupported(s: OriginalSettings) -> str | None:
    if s.add_layer_norm_before_adapter or not s.add_layer_norm_after_adapter:
        return "the adapters need a post-adapter layer norm and no pre-adapter one"
    if s.non_linearity.lower() not in ACTIVATIONS:
        return f"non_linearity {s.non_linearity!r} (supported: {', '.join(ACTIVATIONS)})"
    if s.variant in ("hyperformer++", "hyperformer-layer"):
        if not s.unique_hyper_net_layer_norm:
            return "unique_hyper_net_layer_norm=false"
        if s.projected_task_embedding_dim != s.task_embedding_dim:
            return "a shared hypernetwork with projected_task_embedding_dim != task_embedding_dim"
    if s.variant != "adapters" and s.task_embedding_dim is None:
        return "a meta-adapter without task_embedding_dim"
    return None


def read_original_weights(checkpoint_dir: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The original state dict: safetensors, or the pickle-free part of `torch.load(weights_only=True)`."""
    path = next((checkpoint_dir / name for name in WEIGHT_FILES if (checkpoint_dir / name).is_file()), None)
    if path is None:
        raise UserError(f"{checkpoint_dir} holds neither {' nor '.join(WEIGHT_FILES)}: pass the original's output_dir")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise several types for damaged or foreign files
        first = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
        if first.startswith("Weights only load failed"):  # torch's next lines suggest weights_only=False: never
            raise UserError(f"cannot read {path}: it holds objects other than tensors, which are refused without "
                            "being run (Weights only load failed): pass a checkpoint of plain tensors") from None
        reason = first.split(". ")[0].rstrip(".")  # torch goes on with guesses and advice on the same line
        raise UserError(f"cannot read {path}: {reason}: the file is damaged or not a checkpoint; copy the original's "
                        "weights again") from None
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise UserError(f"{path} is not a state dict of tensors")
    return path, dict(tensors)


def _training_args_file(checkpoint_dir: Path, given: Path | None) -> Path:
    if given is not None:
        return Path(given)
    candidates = []
    for path in sorted(checkpoint_dir.glob("*.json")):
        if path.name not in NOT_TRAINING_ARGS:
            content = _read_json(path, "a JSON file")
            if isinstance(content, dict) and "adapter_config_name" in content:
                candidates.append(path)
    if len(candidates) != 1:
        found = "none" if not candidates else ", ".join(p.name for p in candidates)
        raise UserError(f"{checkpoint_dir} needs one training-arguments JSON (the configs/*.json the original ran "
                        f"with; found {found}): copy it there or pass --training-args")
    return candidates[0]


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {what} at {path}: {error}") from None


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _t5_config(config_class, original: dict):
    """The original T5 config for current transformers; 3.5's T5 always scaled tied output embeddings."""
    if not original.get("tie_word_embeddings", True):
        raise UserError("the original config unties the word embeddings, which transformers 3.5's T5 ignored; "
                        "import needs tie_word_embeddings=true")
    kept = {k: v for k, v in original.items() if k not in ("train_adapters", "architectures", "transformers_version")}
    return config_class(**kept)


def _recipe(settings: OriginalSettings, name: str, tokenizer: str | None):
    """The run's recipe: the original's tasks and adapter settings; the backbone is the run's own folder."""
    unknown = [task for task in settings.tasks if task not in TASKS]
    if unknown:
        raise UserError(f"task '{unknown[0]}' of the checkpoint is not a registered task: registered tasks are "
                        f"{', '.join(sorted(TASKS))}")
    projector = settings.train_task_embeddings and settings.variant != "adapters"
    dim = settings.task_embedding_dim or 64
    model = {
        "variant": settings.variant,
        "reduction_factor": settings.reduction_factor,
        "task_embedding_dim": settings.projected_task_embedding_dim if projector else dim,
        "hypernet_hidden_dim": settings.task_hidden_dim,
        "task_projector_input_dim": dim if projector else None,
        "activation": settings.non_linearity.lower(),
    }
    return recipe_from_dict({
        "name": name,
        "tasks": [{"name": task} for task in settings.tasks],
        "backbone": {"config": f"{names.BACKBONE_DIR}/{CONFIG_FILE}", "pretrained": None,
                     "tokenizer": tokenizer or "none", "legacy_cross_attention_bias": True},
        "model": model,
        "data": {"max_source_length": settings.max_source_length, "max_target_length": settings.max_target_length},
    })


def _load_exactly(model, state: dict, source: Path) -> None:
    """Copy every assembled tensor into the model; a shape the model does not expect is refused."""
    own = model.state_dict()
    wrong = []
    for name, tensor in state.items():
        if tensor is None:  # a constant generator: zero weight (see hyperformer_keys)
            tensor = torch.zeros_like(own[name])
        if tensor.shape != own[name].shape:
            wrong.append(f"{name} {tuple(tensor.shape)} vs {tuple(own[name].shape)}")
            continue
        own[name].copy_(tensor)
    if wrong:
        raise UserError(f"{source} has {len(wrong)} tensors of another shape than its config and arguments describe "
                        f"(e.g. {wrong[0]}): check the training-arguments JSON and config.json belong to it")


def _write_run(model, recipe, tokenizer, destination: Path, weights_path: Path, settings: OriginalSettings) -> Path:
    import yaml

    from hyperexport.params import count_parameters
    from hyperexport.training.checkpoint import save_trainable

    with publish.building(destination) as tmp:
        model.backbone.save_pretrained(tmp / names.BACKBONE_DIR)  # legacy cross-attention table included
        save_trainable(model, tmp / names.WEIGHTS_FILE)
        plain = recipe_to_dict(recipe)
        plain["backbone"]["config"] = f"{names.BACKBONE_DIR}/{CONFIG_FILE}"  # relative: the run may move
        (tmp / names.RECIPE_FILE).write_text(yaml.safe_dump(plain, sort_keys=False))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / names.TOKENIZER_DIR)
        write_run_manifest(tmp, RunManifest(
            origin="import-hyperformer", recipe=recipe.name, variant=recipe.model.variant,
            tasks=tuple(model.task_names), source_checkpoint=sealing.relative_path(weights_path, destination),
            source_checkpoint_sha256=sealing.sha256_file(weights_path),
            original_arguments=settings.__dict__ | {"tasks": list(settings.tasks)},
            parameters=count_parameters(model)))
    publish.point_link(destination.parent / names.LATEST_LINK, destination)
    return destination
