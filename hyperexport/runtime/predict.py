"""`predict`: labels for new examples from an export folder: ONNX Runtime on the CPU, or TensorRT plans
(an engine folder, on an NVIDIA GPU).

The examples are dicts of the task's template fields (from a list, one TEXT, or a JSONL file). Each is
formatted with the template in `task.json` and tokenised with the export's tokenizer exactly as in
training: `</s>` appended, truncated to `max_source_length` tokens (one warning line on stderr per
truncated example). With `classify_model.onnx` the label is the argmax of the label strings'
log-probabilities; otherwise optimum's generate graphs decode greedily for `max_new_tokens` steps.
Nothing is written: the export folder is only read, after its manifest check.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.names import CLASSIFY_GRAPH, ENCODER_GRAPH
from hyperexport.contracts.task import TaskFacts
from hyperexport.errors import UserError
from hyperexport.model.build import load_tokenizer
from hyperexport.tasks.registry import template_fields
from hyperexport.verify.runners import onnxruntime_provider

BATCH_SIZE = 16
_EXPORT_HINT = "run `hyperexport export --task <task>` first"
_ONE_SOURCE = "pass the examples as TEXT or as --input FILE.jsonl (exactly one of them)"


def predict(export_dir: str | Path, examples: Sequence[dict] | None = None, *, text: str | None = None,
            input_file: str | Path | None = None, batch_size: int = BATCH_SIZE) -> list[dict]:
    """One result per example, in order: `{"index": i, "label": str}`, plus for a classify export
    `"scores"` (each label string's log-probability) and `"probabilities"` (their softmax).

    Give the examples one way: `examples` (dicts of fields), `text` (see `read_examples`) or
    `input_file` (JSONL). For a regression task (`is_regression`, e.g. stsb) the label is the grid value
    with the highest score (argmax), not the probability-weighted mean of the grid.
    """
    if sum(source is not None for source in (examples, text, input_file)) != 1:
        raise UserError(_ONE_SOURCE)
    export, provider = open_export(export_dir)
    folder, facts = export.path, export.facts
    if examples is not None:
        rows = _examples_from_list(examples, facts.task, template_fields(facts.template))
    else:
        rows = read_examples(facts.task, facts.template, text, input_file)
    sources = [facts.template.format(**row) for row in rows]
    if export.tokenizer_dir is None:
        raise UserError(f"{folder} has no tokenizer (its run was imported without one): import the checkpoint "
                        "again with --tokenizer, then materialize and export")
    tokenizer = load_tokenizer(str(export.tokenizer_dir))
    warn_truncated(tokenizer, sources, facts.max_source_length)
    if export.is_engine:
        return _tensorrt(export, tokenizer, sources, facts, batch_size)
    if export.has(CLASSIFY_GRAPH):
        return _classify(folder, provider, tokenizer, sources, facts, batch_size)
    return _generate(folder, provider, tokenizer, sources, facts, batch_size)


def open_export(export_dir: str | Path) -> tuple[ExportFolder, str | None]:
    """The export folder and the ONNX Runtime provider that runs it here (None for an engine folder),
    after checking every file against the manifest."""
    export = ExportFolder.open(export_dir)  # also refuses a folder of another stage
    if not export.heads:
        graphs = tuple(map(export.graph_file, (CLASSIFY_GRAPH, ENCODER_GRAPH)))
        raise UserError(f"{export.path} has neither {graphs[0].name} nor {graphs[1].name}: {_EXPORT_HINT}")
    if export.is_engine:  # the plans run on TensorRT, not ONNX Runtime
        return export, None
    precision = export.manifest.precision
    provider = onnxruntime_provider(precision)
    if provider is None:
        raise UserError(f"{export.path} holds {precision} graphs, which ONNX Runtime runs only on a GPU here: "
                        "install onnxruntime-gpu on a machine with an NVIDIA GPU, or export --precision fp32")
    return export, provider


# ---- reading examples -----------------------------------------------------------------------------
def read_examples(task: str, template: str, text: str | None = None,
                  input_file: str | Path | None = None) -> list[dict[str, str]]:
    """Dicts of the template's fields from exactly one of `text` and `input_file`.

    `text` starting with `{` is a JSON object of the fields; any other text is the value of the only
    field of a single-field template. `input_file` is JSONL: one JSON object per line, blank lines
    skipped. Extra keys are ignored; numbers become text. Anything else is a one-line `UserError`.
    """
    fields = template_fields(template)
    if (text is None) == (input_file is None):
        raise UserError(_ONE_SOURCE)
    if text is not None:
        return [_example_from_text(text, task, fields)]
    return [_example(value, where, task, fields) for where, value in _jsonl_values(Path(input_file))]


def _example_from_text(text: str, task: str, fields: tuple[str, ...]) -> dict[str, str]:
    if not text.strip():
        raise UserError("TEXT is empty: pass the example's text, or a JSON object of its fields")
    if text.lstrip().startswith("{"):
        return _example(_parse_json(text, "TEXT"), "TEXT", task, fields)
    if len(fields) > 1:
        raise UserError(f"task {task} needs fields {', '.join(fields)}: pass a JSON object")
    return {fields[0]: _checked_text(text, "TEXT", fields[0])}


def _jsonl_values(path: Path) -> Iterator[tuple[str, object]]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 may sit in a string
    except FileNotFoundError:
        raise UserError(f"no input file at {path}: check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: write one JSON object per line") from None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror}): check the path") from None
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise UserError(f"{path} is empty: write one JSON object per line")
    for number, line in numbered:
        yield f"{path}:{number}", _parse_json(line, f"{path}:{number}")


def _examples_from_list(examples: Sequence[dict], task: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    if not examples:
        raise UserError("no examples given: pass at least one dict of the task's fields")
    return [_example(value, f"example {index}", task, fields) for index, value in enumerate(examples)]


def _parse_json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, huge integers, deep nesting
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{where} is not JSON ({reason}): write a JSON object of the task's fields") from None


def _example(value: object, where: str, task: str, fields: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise UserError(f"{where} is {_kind(value)}, not a JSON object: give the fields {', '.join(fields)}")
    missing = [field for field in fields if field not in value]
    if missing:
        raise UserError(f"{where} lacks field {', '.join(missing)}: task {task} needs fields {', '.join(fields)}")
    return {field: _checked_text(value[field], where, field) for field in fields}


def _checked_text(value: object, where: str, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: field {field} is {_kind(value)}; give it as a string")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{where}: field {field} is not valid Unicode (a lone surrogate); fix its text") from None
    return text


def _kind(value: object) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


# ---- running the graphs ---------------------------------------------------------------------------
def warn_truncated(tokenizer, sources: list[str], max_source_length: int) -> None:
    """One stderr line per source longer than `max_source_length` tokens (with `</s>`)."""
    for index, ids in enumerate(tokenizer(sources, verbose=False).input_ids):
        if len(ids) > max_source_length:
            print(f"warning: example {index} has {len(ids)} tokens; truncated to max_source_length "
                  f"{max_source_length}", file=sys.stderr)


def _batches(tokenizer, sources: list[str], max_source_length: int, batch_size: int,
             tensors: str) -> Iterator[dict]:
    for start in range(0, len(sources), batch_size):  # the same tokenisation as training's collate
        encoded = tokenizer(sources[start:start + batch_size], padding="longest", truncation=True,
                            max_length=max_source_length, return_tensors=tensors)
        yield {key: encoded[key].astype(np.int64) if tensors == "np" else encoded[key].long()
               for key in ("input_ids", "attention_mask")}


def _classify(folder: Path, provider: str, tokenizer, sources: list[str], facts: TaskFacts, batch_size: int) -> list[dict]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / CLASSIFY_GRAPH), providers=[provider])
    scores = np.concatenate([session.run(["scores"], batch)[0] for batch in
                             _batches(tokenizer, sources, facts.max_source_length, batch_size, "np")])
    return label_results(scores, facts.labels)


def label_results(scores: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """Results from [N, K] label log-probabilities: the argmax label, the scores, and their softmax
    (the label set's renormalised probabilities). Regression grids too take the argmax value."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return [{"index": index, "label": labels[int(row.argmax())],
             "scores": {label: float(s) for label, s in zip(labels, row)},
             "probabilities": {label: float(p) for label, p in zip(labels, probs)}}
            for index, (row, probs) in enumerate(zip(scores, probabilities))]


def _generate(folder: Path, provider: str, tokenizer, sources: list[str], facts: TaskFacts, batch_size: int) -> list[dict]:
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    model = ORTModelForSeq2SeqLM.from_pretrained(folder, use_cache=True, use_merged=False, provider=provider)
    texts: list[str] = []
    for batch in _batches(tokenizer, sources, facts.max_source_length, batch_size, "pt"):
        out = model.generate(**batch, max_new_tokens=facts.max_new_tokens, do_sample=False, num_beams=1)
        texts += [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return [{"index": index, "label": text} for index, text in enumerate(texts)]


def _tensorrt(export: ExportFolder, tokenizer, sources: list[str], facts: TaskFacts, batch_size: int) -> list[dict]:
    """Classify or generate with an engine folder's plans (needs an NVIDIA GPU and tensorrt)."""
    from hyperexport.runtime.generation import greedy_generate
    from hyperexport.runtime.tensorrt import TensorRTEngines

    with TensorRTEngines(export.path) as engines:
        batches = _batches(tokenizer, sources, facts.max_source_length, min(batch_size, engines.max_batch), "np")
        if engines.has(CLASSIFY_GRAPH):
            scores = np.concatenate([engines.run(CLASSIFY_GRAPH, batch)["scores"] for batch in batches])
            return label_results(scores, facts.labels)
        ids = export.generation_ids
        texts: list[str] = []
        for batch in batches:
            tokens = greedy_generate(engines.graph_infer(), batch["input_ids"], batch["attention_mask"],
                                     facts.max_new_tokens, ids.decoder_start_token_id, ids.eos_token_id,
                                     ids.pad_token_id)
            texts += [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    return [{"index": index, "label": text} for index, text in enumerate(texts)]
