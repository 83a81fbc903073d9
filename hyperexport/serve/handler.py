"""One served model at work: the requests Triton's dynamic batcher joined, in; one result or one error
per request, out. It runs inside a Python-backend process (`serve.python_model` adapts it to Triton)
and needs nothing of Triton, so it is tested in-process too.

Each request is checked on its own: a bad one (text that is not UTF-8, empty or too long, an unknown
task, token ids outside the vocabulary, ...) gets a one-line error and the others of its batch still
run. The good rows of every request are then padded into batches and run through the export's backend
(`runtime.exports.export_backend`: ONNX Runtime, or TensorRT for an engine folder) by the heads every
client uses (`runtime.heads`, `runtime.generation`), so a served answer is `predict`'s answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hyperexport.contracts.export import ExportFolder
from hyperexport.errors import UserError
from hyperexport.runtime.backends import Feeds
from hyperexport.runtime.examples import example_from_text
from hyperexport.runtime.exports import export_backend
from hyperexport.runtime.generation import greedy_generate
from hyperexport.runtime.heads import decoded_texts, label_results, label_scores
from hyperexport.serve.interfaces import (
    ATTENTION_MASK,
    INPUT_IDS,
    INTERFACES,
    LABEL,
    PROBABILITIES,
    SCORES,
    TASK_INPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
    TOKENS,
)
from hyperexport.serve.tasks import ServedTasks, UnknownTask
from hyperexport.tasks.registry import template_fields

MAX_TEXT_BYTES = 65536  # per row: refused before it is decoded or tokenized


class RequestError(ValueError):
    """What is wrong with one request, in one line: the error response its client gets. `internal`: the
    request was fine and the model failed (a server error, not a bad request)."""

    def __init__(self, message: str, internal: bool = False):
        super().__init__(message)
        self.internal = internal


@dataclass
class Rows:
    """The rows of one request, ready to run: unpadded token ids (with `</s>`), masks, task-ids."""
    ids: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)


def export_tokenizer(export: ExportFolder):
    """The export's tokenizer: JSON and vocabulary files only, never remote code."""
    from transformers import AutoTokenizer

    if export.tokenizer_dir is None:
        raise UserError(f"{export.path} has no tokenizer: import its run again with --tokenizer, then export")
    try:
        return AutoTokenizer.from_pretrained(str(export.tokenizer_dir), trust_remote_code=False)
    except (OSError, ValueError) as error:  # e.g. a tokenizer that asks for its own code: refused, not run
        raise UserError(f"cannot load the tokenizer of {export.path}: {str(error).strip().splitlines()[0]}") from None


class ServedModel:
    """One interface (`serve.interfaces`) of one export; a context manager around the export's backend."""

    def __init__(self, export_dir: str | Path, interface: str, model_name: str):
        export = ExportFolder.open(export_dir)  # the manifest check again, in the process that loads the graphs
        self.interface, self.name = INTERFACES[interface], model_name
        self.table = ServedTasks.of(export)
        self.backend = export_backend(export)
        self.tokenizer = export_tokenizer(export)
        self.generation_ids = export.generation_ids if self.interface.head == "generate" else None

    def __enter__(self) -> ServedModel:
        self.backend.__enter__()
        warm = Rows([np.array([self.tokenizer.eos_token_id])], [np.array([1])], [0])
        self._run_rows([warm])  # loads every graph now, not on the first request
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.__exit__(*exc)

    def run(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray] | RequestError]:
        """One result (output name -> array with the request's batch axis) or one error per request."""
        parsed: list[Rows | RequestError] = []
        for request in requests:
            try:
                parsed.append(self._text_rows(request) if self.interface.text else self._id_rows(request))
            except (RequestError, UserError, UnknownTask) as error:
                parsed.append(RequestError(str(error)))
        good = [rows for rows in parsed if isinstance(rows, Rows)]
        try:
            answers = iter(self._run_rows(good) if good else [])
        except Exception as error:  # a runtime failure fails this batch, not the server
            import traceback

            traceback.print_exc()
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            failed = RequestError(f"{self.name} failed: {reason}", internal=True)
            return [rows if isinstance(rows, RequestError) else failed for rows in parsed]
        return [rows if isinstance(rows, RequestError) else next(answers) for rows in parsed]

    # ---- checking one request ------------------------------------------------------------------------
    def _tasks(self, request: Mapping[str, np.ndarray], batch: int) -> list[int]:
        if TASK_INPUT not in request:
            return [self.table.index(None, self.name)] * batch
        names = request[TASK_INPUT].reshape(-1)
        return [self.table.index(_utf8(value, _where(TASK_INPUT, row, batch)), self.name)
                for row, value in enumerate(names)]

    def _text_rows(self, request: Mapping[str, np.ndarray]) -> Rows:
        texts = request[TEXT_INPUT].reshape(-1)
        tasks = self._tasks(request, len(texts))
        sources = []
        for row, (value, task) in enumerate(zip(texts, tasks)):
            where, facts = _where(TEXT_INPUT, row, len(texts)), self.table.facts[task]
            if len(value) > MAX_TEXT_BYTES:
                raise RequestError(f"{where} is {len(value)} bytes; {self.name} takes at most {MAX_TEXT_BYTES} "
                                   "bytes of text per row")
            example = example_from_text(_utf8(value, where), facts.task, template_fields(facts.template), where)
            sources.append(facts.template.format(**example))
        rows = Rows(tasks=tasks)
        for row, (ids, task) in enumerate(zip(self.tokenizer(sources, verbose=False).input_ids, tasks)):
            limit = self.table.facts[task].max_source_length
            if len(ids) > limit:
                raise RequestError(f"{_where(TEXT_INPUT, row, len(texts))} has {len(ids)} tokens; {self.name} takes "
                                   f"at most {limit} (the task's max_source_length): shorten the text")
            rows.ids.append(np.asarray(ids, dtype=np.int64))
            rows.masks.append(np.ones(len(ids), dtype=np.int64))
        return rows

    def _id_rows(self, request: Mapping[str, np.ndarray]) -> Rows:
        ids, mask = request[INPUT_IDS], request.get(ATTENTION_MASK)
        if mask is None or ids.shape != mask.shape:
            shape = "missing" if mask is None else f"shape {list(mask.shape)}"
            raise RequestError(f"{ATTENTION_MASK} is {shape}, {INPUT_IDS} has shape {list(ids.shape)}: send one "
                               "mask value per token")
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise RequestError(f"{INPUT_IDS} is empty (shape {list(ids.shape)}): send at least one token id")
        tasks = self._tasks(request, ids.shape[0])
        limit = min(self.table.facts[task].max_source_length for task in tasks)
        if ids.shape[1] > limit:
            raise RequestError(f"{INPUT_IDS} has {ids.shape[1]} tokens per row; {self.name} takes at most {limit} "
                               "(the task's max_source_length): shorten the rows")
        vocabulary = len(self.tokenizer)
        if ids.min() < 0 or ids.max() >= vocabulary:
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise RequestError(f"{INPUT_IDS} holds {bad}, outside the tokenizer's {vocabulary} token ids (0 to "
                               f"{vocabulary - 1})")
        if not np.isin(mask, (0, 1)).all() or not mask.any(axis=1).all():
            raise RequestError(f"{ATTENTION_MASK} must be 1 for tokens and 0 for padding, with a 1 in every row")
        return Rows(list(ids.astype(np.int64)), list(mask.astype(np.int64)), tasks)

    # ---- running the good rows of every request together ---------------------------------------------
    def _run_rows(self, requests: list[Rows]) -> list[dict[str, np.ndarray]]:
        ids = [row for rows in requests for row in rows.ids]
        masks = [row for rows in requests for row in rows.masks]
        tasks = [task for rows in requests for task in rows.tasks]
        step = self.backend.max_batch or len(ids)
        answers: list = []
        for start in range(0, len(ids), step):
            chunk = slice(start, start + step)
            batch = {**_padded(ids[chunk], masks[chunk], self.tokenizer.pad_token_id), **self.table.feeds(tasks[chunk])}
            answers.extend(self._head(batch, tasks[chunk]))
        outputs, start = [], 0
        for rows in requests:
            outputs.append(self._outputs(answers[start:start + len(rows.ids)], rows.tasks))
            start += len(rows.ids)
        return outputs

    def _head(self, batch: Feeds, tasks: list[int]) -> list[np.ndarray]:
        """Per row: the task's label scores [K], or the generated ids up to `</s>` (start token first)."""
        facts = [self.table.facts[task] for task in tasks]
        if self.interface.head == "classify":
            scores = label_scores(self.backend, [batch])  # [B, K_max]
            return [row[:len(f.labels)] for row, f in zip(scores, facts)]
        ids = self.generation_ids
        assert ids is not None
        extra = {name: value for name, value in batch.items() if name not in (INPUT_IDS, ATTENTION_MASK)}
        tokens = greedy_generate(self.backend, batch[INPUT_IDS], batch[ATTENTION_MASK],
                                 max(f.max_new_tokens for f in facts), ids, extra=extra)
        return [_until_eos(row[:1 + f.max_new_tokens], ids.eos_token_id) for row, f in zip(tokens, facts)]

    def _outputs(self, answers: list[np.ndarray], tasks: list[int]) -> dict[str, np.ndarray]:
        name = self.interface.name
        if name == "generate_ids":
            return {TOKENS: _stacked(answers, self.tokenizer.pad_token_id, np.int64)}
        if name == "generate":
            texts = decoded_texts(self.tokenizer, [row.tolist() for row in answers])
            return {TEXT_OUTPUT: np.array([[text.encode()] for text in texts], dtype=np.object_)}
        scores = _stacked(answers, -np.inf, np.float32)  # rows of one request share K unless tasks mix
        if name == "classify_ids":
            return {SCORES: scores}
        results = [label_results(row[None], self.table.facts[task].labels)[0] for row, task in zip(answers, tasks)]
        probabilities = [np.array(list(result["probabilities"].values()), dtype=np.float32) for result in results]
        return {LABEL: np.array([[result["label"].encode()] for result in results], dtype=np.object_),
                SCORES: scores, PROBABILITIES: _stacked(probabilities, 0.0, np.float32)}


def _where(name: str, row: int, rows: int) -> str:
    return name if rows == 1 else f"{name} row {row}"


def _utf8(value: bytes | str, where: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(f"{where} is not UTF-8 ({error.reason} at byte {error.start}): send UTF-8 text") from None


def _padded(ids: list[np.ndarray], masks: list[np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
    """Rows padded on the right to the longest, as the tokenizer pads a batch: [B, S] each."""
    width = max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)
    for index, (row, mask) in enumerate(zip(ids, masks)):
        input_ids[index, :len(row)], attention_mask[index, :len(mask)] = row, mask
    return {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}


def _until_eos(row: np.ndarray, eos_id: int) -> np.ndarray:
    """A generated row up to and including its first `</s>` (what the row would be if generated alone)."""
    ends = np.flatnonzero(row == eos_id)
    return row[:ends[0] + 1] if len(ends) else row


def _stacked(rows: list[np.ndarray], fill: float, dtype: type) -> np.ndarray:
    """Rows of unequal length as one [B, longest] array, filled on the right."""
    out: np.ndarray = np.full((len(rows), max(len(row) for row in rows)), fill, dtype=dtype)
    for index, row in enumerate(rows):
        out[index, :len(row)] = row
    return out
