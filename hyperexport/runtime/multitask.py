"""Running a multi-task export on any `GraphBackend`: each example's task as its row of `task_ids`, examples of
different tasks in one batch, and each result in its own task's terms.

- `TaskIdsChecked`: a backend that refuses a `task_ids` feed outside the task table before the graph runs
  (an out-of-range row would make ONNX Runtime fail inside a Gather, and TensorRT read past the table).
- `label_task_examples`: `predict`'s results for examples of mixed tasks, batched as they come: each
  source tokenised with its own task's `max_source_length`; classify: the row's own labels' slice of
  `scores`; generate: one greedy loop for the batch, each row cut at its own task's generation length
  (greedy decoding is causal, so the row's tokens are those a batch of its task alone produces).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hyperexport.contracts.names import CLASSIFY_GRAPH
from hyperexport.contracts.task_table import TASK_IDS_INPUT, TaskTable
from hyperexport.errors import UserError
from hyperexport.runtime.backends import Feeds, GraphBackend, Outputs, Wrapping
from hyperexport.runtime.examples import Batch
from hyperexport.runtime.generation import greedy_generate
from hyperexport.runtime.heads import DEFAULT_BATCH_SIZE, available_heads, decoded_texts, label_results

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hyperexport.contracts.export import GenerationIds


class TaskIdsChecked(Wrapping):
    """`backend` whose every `task_ids` feed is checked against the number of tasks before it runs."""

    def __init__(self, backend: GraphBackend, table: TaskTable):
        self.backend, self.table = backend, table

    def infer(self, graph: str, feeds: Feeds) -> Outputs:
        if TASK_IDS_INPUT in feeds:
            check_task_ids(np.asarray(feeds[TASK_IDS_INPUT]), self.table)
        return self.backend.infer(graph, feeds)


def check_task_ids(task_ids: np.ndarray, table: TaskTable) -> None:
    """Refuse task ids outside the table (one line naming the tasks)."""
    count = len(table.names)
    outside = task_ids[(task_ids < 0) | (task_ids >= count)]
    if outside.size:
        raise UserError(f"task id {int(outside[0])} is out of range: the export has {count} tasks ({table.describe()})")


def task_token_batch(tokenizer: PreTrainedTokenizerBase, sources: Sequence[str],
                     max_lengths: Sequence[int]) -> Batch:
    """Sources tokenised as training's collate does, each truncated to its own length, padded to the longest."""
    encoded = [tokenizer(source, truncation=True, max_length=length).input_ids
               for source, length in zip(sources, max_lengths)]
    width = max(len(ids) for ids in encoded)
    input_ids = np.full((len(encoded), width), tokenizer.pad_token_id, dtype=np.int64)  # [B, S]
    attention_mask = np.zeros((len(encoded), width), dtype=np.int64)  # [B, S]
    for row, ids in enumerate(encoded):
        input_ids[row, :len(ids)], attention_mask[row, :len(ids)] = ids, 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def label_task_examples(backend: GraphBackend, tokenizer: PreTrainedTokenizerBase, table: TaskTable,
                        rows: Sequence[int], sources: Sequence[str], ids: GenerationIds | None = None,
                        head: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict]:
    """One result per source (`rows[i]`: its task's row), in order: `{"index", "task", "label"}`, plus
    `"scores"` and `"probabilities"` over its task's labels from the classify head."""
    present = available_heads(backend)
    head = head or present[0]
    if head not in present or (head == "generate" and ids is None):
        raise UserError(f"head '{head}' is not available in this export: use {' or '.join(present)}")
    backend = TaskIdsChecked(backend, table)
    step = min(batch_size, backend.max_batch or batch_size)
    results = []
    for start in range(0, len(sources), step):
        batch_rows = np.asarray(rows[start:start + step], dtype=np.int64)  # [B]
        facts = [table.tasks[row].facts for row in batch_rows]
        batch = task_token_batch(tokenizer, sources[start:start + step], [f.max_source_length for f in facts])
        if head == "classify":
            results += _classify(backend, table, batch, batch_rows)
        else:
            assert ids is not None  # a generate head without ids was refused above
            results += _generate(backend, tokenizer, table, batch, batch_rows, ids)
    return [{"index": index, **result} for index, result in enumerate(results)]


def _classify(backend: GraphBackend, table: TaskTable, batch: Batch, rows: np.ndarray) -> list[dict]:
    scores = backend.infer(CLASSIFY_GRAPH, {**batch, TASK_IDS_INPUT: rows})["scores"]  # [B, K]
    results = []
    for row, row_scores in zip(rows, scores):
        facts = table.tasks[row].facts
        result = label_results(row_scores[None, :len(facts.labels)], facts.labels)[0]
        results.append({"task": facts.task, **{key: value for key, value in result.items() if key != "index"},
                        "label_name": facts.label_name(result["label"])})
    return results


def _generate(backend: GraphBackend, tokenizer: PreTrainedTokenizerBase, table: TaskTable, batch: Batch,
              rows: np.ndarray, ids: GenerationIds) -> list[dict]:
    lengths = [table.tasks[row].facts.max_new_tokens for row in rows]
    tokens = greedy_generate(backend, batch["input_ids"], batch["attention_mask"], max(lengths), ids,
                             extra={TASK_IDS_INPUT: rows})  # [B, 1 + n]
    texts = decoded_texts(tokenizer, cut_rows(tokens, lengths, ids.pad_token_id))
    return [{"task": table.names[row], "label": text, "label_name": table.tasks[row].facts.label_name(text)}
            for row, text in zip(rows, texts)]


def cut_rows(tokens: np.ndarray, lengths: Sequence[int], pad_token_id: int) -> np.ndarray:
    """Generated tokens [B, 1 + n], each row padded after its own `1 + lengths[b]` tokens, as long as
    the longest row still is (what each task's own greedy loop would have returned, padded)."""
    cut = tokens.copy()
    for row, length in enumerate(lengths):
        cut[row, 1 + length:] = pad_token_id
    width = max(1 + min(length, tokens.shape[1] - 1) for length in lengths)
    return cut[:, :width]
