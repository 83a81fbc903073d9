"""TensorRT optimization profiles from two flags: `--batch min:opt:max` and `--seq min:opt:max`.

Every dynamic input dimension of an export's graphs is named (optimum's and the classify graph's axis
names, recorded in `io_spec.json`); each name maps to a range derived from those two flags, so all
inputs of one graph share one (batch, source length, target length) tuple and their min/opt/max
shapes stay consistent (TensorRT refuses profiles whose inputs disagree):

| axis | range |
|---|---|
| `batch_size` | `--batch` |
| `sequence_length`, `encoder_sequence_length` | `--seq` (source tokens) |
| `decoder_sequence_length` | 1 : 1 : seq max (first decoder step 1 token; teacher forcing up to seq max) |
| `past_decoder_sequence_length` | 1 : seq opt : seq max - 1 (tokens already generated) |

A dimension with any other name cannot be covered by a profile and is refused. The Triton config's
`max_batch_size` is the batch range's max.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hyperexport.errors import UserError
from hyperexport.options import DEFAULT_ENGINE_BATCH, DEFAULT_ENGINE_SEQ

if TYPE_CHECKING:
    from hyperexport.contracts.export import IoSpec
    from hyperexport.contracts.task import TaskFacts

DEFAULT_BATCH, DEFAULT_SEQ = DEFAULT_ENGINE_BATCH, DEFAULT_ENGINE_SEQ
MAX_DIMENSION = 1 << 20  # a sanity bound on any profile value


@dataclass(frozen=True)
class Range:
    min: int
    opt: int
    max: int

    def as_list(self) -> list[int]:
        return [self.min, self.opt, self.max]


def parse_range(text: str, flag: str) -> Range:
    """`min:opt:max` (or one number N for N:N:N) with 1 <= min <= opt <= max; else a one-line UserError."""
    parts = str(text).strip().split(":")
    if len(parts) == 1:
        parts = parts * 3
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise UserError(f"{flag} '{text}' is not min:opt:max: write three whole numbers, e.g. {flag} 1:8:32")
    low, opt, high = values
    if low < 1:
        raise UserError(f"{flag} '{text}': min must be at least 1")
    if not low <= opt <= high:
        raise UserError(f"{flag} '{text}': need min <= opt <= max, e.g. "
                        f"{flag} {low}:{max(low, min(opt, high))}:{max(low, high)}")
    if high > MAX_DIMENSION:
        raise UserError(f"{flag} '{text}': max {high} is above {MAX_DIMENSION}")
    return Range(low, opt, high)


@dataclass(frozen=True)
class ShapeRanges:
    """The ranges every named axis maps to; built from the two flags."""

    batch: Range
    seq: Range

    @classmethod
    def from_flags(cls, batch: str = DEFAULT_BATCH, seq: str = DEFAULT_SEQ) -> ShapeRanges:
        ranges = cls(parse_range(batch, "--batch"), parse_range(seq, "--seq"))
        if ranges.seq.max < 2:
            raise UserError(f"--seq '{seq}': max must be at least 2 (one source token and </s>; "
                            "generation needs a past of at least one token)")
        return ranges

    def axes(self) -> dict[str, Range]:
        seq = self.seq
        past_max = seq.max - 1
        return {
            "batch_size": self.batch,
            "sequence_length": seq,
            "encoder_sequence_length": seq,
            "decoder_sequence_length": Range(1, 1, seq.max),
            "past_decoder_sequence_length": Range(1, min(seq.opt, past_max), past_max),
        }

    def as_dict(self) -> dict:
        return {"batch": self.batch.as_list(), "seq": self.seq.as_list()}


def input_profile(shape: list, ranges: ShapeRanges, where: str) -> dict[str, list[int]]:
    """min/opt/max shapes of one input whose io-spec shape mixes numbers and axis names."""
    axes = ranges.axes()
    rows: dict[str, list[int]] = {"min": [], "opt": [], "max": []}
    for dim in shape:
        if isinstance(dim, int) and dim > 0:
            fixed = Range(dim, dim, dim)
        elif isinstance(dim, str) and dim in axes:
            fixed = axes[dim]
        else:
            known = ", ".join(sorted(axes))
            raise UserError(f"{where} has dimension {dim!r} that no profile covers (known axes: {known}): "
                            "export the graph with named dynamic axes")
        for key, value in zip(("min", "opt", "max"), fixed.as_list()):
            rows[key].append(value)
    return rows


def graph_profiles(io_spec: IoSpec, ranges: ShapeRanges) -> dict[str, dict[str, dict[str, list[int]]]]:
    """{graph file: {input name: {"min": shape, "opt": shape, "max": shape}}} for every graph."""
    return {graph: {tensor.name: input_profile(list(tensor.shape), ranges, f"{graph} input {tensor.name}")
                    for tensor in described.inputs}
            for graph, described in io_spec.graphs.items()}


def check_task_fits(ranges: ShapeRanges, facts: TaskFacts) -> None:
    """Refuse a --seq range too short for the task (task.json): every source of up to
    `max_source_length` tokens and every generation of `max_new_tokens` steps must fit the profile."""
    source, new_tokens = facts.max_source_length, facts.max_new_tokens
    if ranges.seq.max < source:
        raise UserError(f"--seq max {ranges.seq.max} is below the task's max_source_length {source}: "
                        f"use --seq {ranges.seq.min}:{min(max(ranges.seq.opt, 1), source)}:{source} or more")
    if ranges.axes()["past_decoder_sequence_length"].max < new_tokens:
        raise UserError(f"--seq max {ranges.seq.max} leaves no room for {new_tokens} generated tokens: "
                        f"raise it to at least {new_tokens + 1}")
