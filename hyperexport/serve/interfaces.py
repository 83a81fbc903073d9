"""What `serve` offers per export: four models, their tensors, in one place.

    <name>_classify       text_input [1] BYTES (+ task)  -> label [1] BYTES, scores [K] FP32, probabilities [K] FP32
    <name>_generate       text_input [1] BYTES (+ task)  -> text_output [1] BYTES (greedy decoding on the server)
    <name>_classify_ids   input_ids [S], attention_mask [S] INT64 (+ task) -> scores [K] FP32
    <name>_generate_ids   input_ids [S], attention_mask [S] INT64 (+ task) -> tokens [T] INT64

Every tensor has a leading batch axis (Triton's `max_batch_size` > 0), so one request may carry several
rows and the dynamic batcher joins requests. `text_input` is what `predict` takes as TEXT: a JSON object
of the task's fields, or the plain text of a one-field task. `task` names each row's task; it is optional
for a single-task export and required for a multi-task one. The token-id models are for clients that
tokenize themselves (the export's tokenizer, `</s>` appended); their sequence axes may differ between
requests (ragged batching), since the model pads the rows it runs together. The config writer
(`triton_config.python_model_config`), the models (`serve.handler`) and the clients read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXT_INPUT, TEXT_OUTPUT, TASK_INPUT = "text_input", "text_output", "task"  # Triton's generate extension's names
INPUT_IDS, ATTENTION_MASK = "input_ids", "attention_mask"
LABEL, SCORES, PROBABILITIES, TOKENS = "label", "scores", "probabilities", "tokens"
NUMPY_TYPES = {"TYPE_STRING": np.object_, "TYPE_INT64": np.int64, "TYPE_FP32": np.float32}
PARAMETER_EXPORT, PARAMETER_INTERFACE, PARAMETER_LABELS = "export", "interface", "labels"  # config.pbtxt parameters
PARAMETER_LABEL_NAMES = "label_names"


@dataclass(frozen=True)
class ServedTensor:
    name: str
    data_type: str  # Triton's DataType name: TYPE_STRING, TYPE_INT64, TYPE_FP32
    dims: tuple[int, ...]  # without the batch axis; -1: any length
    optional: bool = False
    ragged: bool = False  # requests with other lengths still batch together


@dataclass(frozen=True)
class Interface:
    name: str  # the model name's suffix
    head: str  # the export head whose graphs it runs: classify or generate
    text: bool  # text in (tokenized on the server) or token ids in
    inputs: tuple[ServedTensor, ...]
    outputs: tuple[ServedTensor, ...]


_TASK = ServedTensor(TASK_INPUT, "TYPE_STRING", (1,), optional=True)
_TEXT = (ServedTensor(TEXT_INPUT, "TYPE_STRING", (1,)), _TASK)
_IDS = (ServedTensor(INPUT_IDS, "TYPE_INT64", (-1,), ragged=True),
        ServedTensor(ATTENTION_MASK, "TYPE_INT64", (-1,), ragged=True), _TASK)
_SCORES = ServedTensor(SCORES, "TYPE_FP32", (-1,))

INTERFACES = {interface.name: interface for interface in (
    Interface("classify", "classify", True, _TEXT, (ServedTensor(LABEL, "TYPE_STRING", (1,)), _SCORES,
                                                     ServedTensor(PROBABILITIES, "TYPE_FP32", (-1,)))),
    Interface("generate", "generate", True, _TEXT, (ServedTensor(TEXT_OUTPUT, "TYPE_STRING", (1,)),)),
    Interface("classify_ids", "classify", False, _IDS, (_SCORES,)),
    Interface("generate_ids", "generate", False, _IDS, (ServedTensor(TOKENS, "TYPE_INT64", (-1,)),)),
)}


def served_model_name(name: str, interface: str) -> str:
    """`rte`, `classify_ids` -> `rte_classify_ids`."""
    return f"{name}_{interface}"


def interfaces_for(heads: tuple[str, ...]) -> tuple[Interface, ...]:
    """The interfaces an export with these heads offers (text first, then token ids)."""
    return tuple(interface for interface in INTERFACES.values() if interface.head in heads)
