"""What a run stores of a model, and the resumable training state.

- trained tensors (`model.safetensors`): every trainable parameter by its module path — hypernets or
  adapters, task embeddings and T5's layer norms; the frozen backbone is referenced, not copied
  (a random-init backbone is saved once in `backbone/`).
- resume state (`checkpoint/`): those tensors plus optimizer, scheduler, sampler and RNG states and a
  manifest of their sha256, written atomically; read back with `torch.load(weights_only=True)` (no
  arbitrary unpickling).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names, publish
from hyperexport.errors import UserError


@dataclass
class TrainProgress:
    """The loop's own counters, saved with the checkpoint."""

    step: int = 0
    best_average: float = float("-inf")
    best_step: int | None = None
    history: list[dict] = field(default_factory=list)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_trainable(model, path: Path) -> None:
    publish.write_bytes(path, save(trainable_state(model)))  # bytes first: a failed write is an OSError


def load_trainable(model, path: Path) -> None:
    """Load trained tensors; a file from another backbone, variant or task list is refused by name."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise UserError(f"cannot read {path}: {error}; the file is corrupted or truncated") from None
    expected = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unknown = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    wrong = sorted(n for n in set(expected) & set(tensors) if tensors[n].shape != expected[n].shape)
    if missing or unknown or wrong:
        raise UserError(
            f"{path} does not match this model ({len(missing)} missing, {len(unknown)} unknown, "
            f"{len(wrong)} wrongly shaped tensors, e.g. {(missing + unknown + wrong)[0]}): "
            "it was trained with another backbone, variant or task list"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor)


def save_checkpoint(folder: Path, model, optimizer, scheduler, sampler, progress: TrainProgress) -> None:
    """Write the resume state into `folder` atomically (a temporary sibling, then a rename)."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "sampler": sampler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "progress": asdict(progress),
    }
    buffer = io.BytesIO()  # torch.save to a file reports a full disk as a RuntimeError; bytes give an OSError
    torch.save(state, buffer)
    with publish.building(folder) as tmp:
        publish.write_bytes(tmp / names.TRAINABLE_FILE, save(trainable_state(model)))
        publish.write_bytes(tmp / names.STATE_FILE, buffer.getvalue())
        sealing.seal(tmp, "checkpoint", {"step": progress.step})


def load_checkpoint(folder: Path, model, optimizer, scheduler, sampler) -> TrainProgress:
    """Restore everything `save_checkpoint` wrote; returns the loop's counters."""
    if not (folder / names.STATE_FILE).is_file() or not (folder / names.TRAINABLE_FILE).is_file():
        raise UserError(f"no resumable checkpoint at {folder}: run `hyperexport train` without --resume")
    sealing.unseal(folder, "checkpoint")  # a damaged file is named before anything is read
    load_trainable(model, folder / names.TRAINABLE_FILE)
    try:
        state = torch.load(folder / names.STATE_FILE, weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise UserError(f"cannot read {folder / names.STATE_FILE}: {str(error).splitlines()[0]}") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return TrainProgress(**state["progress"])
