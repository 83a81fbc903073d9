"""Temperature-scaled multi-task batch sampling (method §7).

Task i is drawn with probability p_i ∝ (N_i / Σ_j N_j)^(1/T), then `batch_size` example indices are
drawn uniformly with replacement from that task, like the reference's `MultiTaskBatchSampler`.
Differences: one generator seeded once (the reference reseeds with seed + epoch, and epochs do not
matter when training runs for max_steps), and no per-replica sharding: with several processes each
builds its own sampler seeded with seed + process index, so replicas draw different tasks and examples.
"""

from collections.abc import Iterator, Mapping

import torch

from hyperexport.errors import UserError


def task_probabilities(sizes: Mapping[str, int], temperature: float) -> dict[str, float]:
    """p_i ∝ (N_i / ΣN)^(1/T), normalised to sum to 1."""
    if not sizes or any(size < 1 for size in sizes.values()):
        raise UserError(f"task sizes {dict(sizes)} need at least one example per task; check the data")
    if temperature <= 0:
        raise UserError(f"sampling temperature is {temperature}; use a positive value (paper: 10)")
    total = sum(sizes.values())
    weights = {task: (size / total) ** (1.0 / temperature) for task, size in sizes.items()}
    weight_sum = sum(weights.values())
    return {task: weight / weight_sum for task, weight in weights.items()}


class MultiTaskBatchSampler:
    """Endless batches of (task name, example index); single-task batches unless mixed."""

    def __init__(
        self,
        sizes: Mapping[str, int],
        batch_size: int,
        temperature: float = 10.0,
        seed: int = 0,
        mixed_task_batches: bool = False,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size is {batch_size}; use a positive batch size")
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.temperature = temperature
        self.seed = seed
        self.mixed_task_batches = mixed_task_batches
        self.task_names = tuple(self.sizes)
        probabilities = task_probabilities(self.sizes, temperature)
        self.probabilities = torch.tensor([probabilities[name] for name in self.task_names])  # [K]
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def next_batch(self) -> list[tuple[str, int]]:
        """The next batch: `batch_size` pairs of (task name, index into that task's train set)."""
        draws = self.batch_size if self.mixed_task_batches else 1
        task_ids = torch.multinomial(
            self.probabilities, draws, replacement=True, generator=self.generator
        )  # [draws]
        if self.mixed_task_batches:
            batch = [
                (self.task_names[task_id], self._draw_indices(task_id, 1)[0])
                for task_id in task_ids.tolist()
            ]
        else:
            task_id = int(task_ids[0])
            indices = self._draw_indices(task_id, self.batch_size)
            batch = [(self.task_names[task_id], index) for index in indices]
        self.batches_drawn += 1
        return batch

    def _draw_indices(self, task_id: int, count: int) -> list[int]:
        size = self.sizes[self.task_names[task_id]]
        return torch.randint(size, (count,), generator=self.generator).tolist()  # [count]

    def __iter__(self) -> Iterator[list[tuple[str, int]]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """Generator state, counters and settings; `load_state_dict` resumes bit-identically."""
        return {
            "generator_state": self.generator.get_state(),
            "batches_drawn": self.batches_drawn,
            "settings": self._settings(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from `state`; the sampler must be built with the same sizes and settings."""
        if dict(state["settings"]) != self._settings():
            raise UserError(
                "the saved sampler state was made with different task sizes or sampling settings; "
                "resume with the same recipe and data"
            )
        self.generator.set_state(state["generator_state"])
        self.batches_drawn = int(state["batches_drawn"])

    def _settings(self) -> dict:
        return {
            "sizes": dict(self.sizes),
            "batch_size": self.batch_size,
            "temperature": self.temperature,
            "seed": self.seed,
            "mixed_task_batches": self.mixed_task_batches,
        }
