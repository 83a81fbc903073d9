"""Examples in, model inputs out: dicts of a task's template fields read from TEXT, a JSONL file or a
list (every bad input a one-line `UserError`), formatted with the task's template and tokenised
exactly as in training: `</s>` appended, truncated to `max_source_length` tokens, batches padded to
their longest row."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hyperexport.errors import UserError
from hyperexport.tasks.registry import template_fields

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hyperexport.contracts.task import TaskFacts
    from hyperexport.contracts.task_table import TaskTable

ONE_SOURCE = "pass the examples as TEXT or as --input FILE.jsonl (exactly one of them)"
TASK_FIELD = "task"  # an example of a multi-task export names its task (or the task's row) in this field
Batch = dict[str, np.ndarray]  # input_ids, attention_mask: [B, S] int64


def read_sources(facts: TaskFacts, examples: Sequence[dict] | None = None, text: str | None = None,
                 input_file: str | Path | None = None) -> list[str]:
    """The formatted source text of each example, given exactly one way (see `read_examples`)."""
    if sum(source is not None for source in (examples, text, input_file)) != 1:
        raise UserError(ONE_SOURCE)
    if examples is not None:
        rows = examples_from_list(examples, facts.task, template_fields(facts.template))
    else:
        rows = read_examples(facts.task, facts.template, text, input_file)
    return [facts.template.format(**row) for row in rows]


def read_task_sources(table: TaskTable, task: str | None, examples: Sequence[dict] | None = None,
                      text: str | None = None, input_file: str | Path | None = None) -> tuple[list[int], list[str]]:
    """For a multi-task export: each example's row in `table` and its formatted source. An example's task is
    its `task` field (a task name, or its row number), else `task` (--task, which a field may not contradict)."""
    if sum(source is not None for source in (examples, text, input_file)) != 1:
        raise UserError(ONE_SOURCE)
    values: list[tuple[str, object]]
    if examples is not None:
        if not examples:
            raise UserError("no examples given: pass at least one dict of the task's fields")
        values = [(f"example {index}", value) for index, value in enumerate(examples)]
    elif text is not None and not text.lstrip().startswith("{"):  # the plain text of a one-field task
        row = table.index(_default_task(table, task, "TEXT"))
        facts = table.tasks[row].facts
        return [row], [facts.template.format(**example_from_text(text, facts.task, template_fields(facts.template)))]
    elif text is not None:
        values = [("TEXT", _parse_json(text, "TEXT"))]
    else:
        assert input_file is not None  # exactly one source, checked above
        values = list(jsonl_values(Path(input_file)))
    rows = [_task_row(table, value, where, task) for where, value in values]
    sources = []
    for row, (where, value) in zip(rows, values):
        facts = table.tasks[row].facts
        sources.append(facts.template.format(**_example(value, where, facts.task, template_fields(facts.template))))
    return rows, sources


def _task_row(table: TaskTable, value: object, where: str, task: str | None) -> int:
    named = value.get(TASK_FIELD) if isinstance(value, dict) else None
    if named is None:
        return table.index(_default_task(table, task, where))
    if isinstance(named, bool) or not isinstance(named, (str, int)):
        raise UserError(f"{where}: field {TASK_FIELD} is {json_kind(named)}; "
                        f"give a task name ({', '.join(table.names)}) or its row number")
    if isinstance(named, int) and not 0 <= named < len(table.names):
        raise UserError(f"{where}: task id {named} is out of range: the export has {len(table.names)} tasks "
                        f"({table.describe()})")
    row = named if isinstance(named, int) else table.index(named)
    if task is not None and table.names[row] != task:
        raise UserError(f"{where} is an example of task {table.names[row]}, but --task is {task}: drop one of them")
    return row


def _default_task(table: TaskTable, task: str | None, where: str) -> str:
    if task is None:
        raise UserError(f"{where} names no task and the export holds {len(table.names)} ({', '.join(table.names)}): "
                        f"add a \"{TASK_FIELD}\" field, or pass --task")
    return task


def read_examples(task: str, template: str, text: str | None = None,
                  input_file: str | Path | None = None) -> list[dict[str, str]]:
    """Dicts of the template's fields from exactly one of `text` and `input_file`.

    `text` starting with `{` is a JSON object of the fields; any other text is the value of the only
    field of a single-field template. `input_file` is JSONL: one JSON object per line, blank lines
    skipped. Extra keys are ignored; numbers become text. Anything else is a one-line `UserError`.
    """
    fields = template_fields(template)
    if (text is None) == (input_file is None):
        raise UserError(ONE_SOURCE)
    if text is not None:
        return [example_from_text(text, task, fields)]
    assert input_file is not None  # exactly one source, checked above
    return [_example(value, where, task, fields) for where, value in jsonl_values(Path(input_file))]


def example_from_text(text: str, task: str, fields: tuple[str, ...], where: str = "TEXT") -> dict[str, str]:
    """The fields of one example given as text (`where` names it in errors): a JSON object of the fields,
    or the plain text of a one-field template."""
    if not text.strip():
        raise UserError(f"{where} is empty: pass the example's text, or a JSON object of its fields")
    if text.lstrip().startswith("{"):
        return _example(_parse_json(text, where), where, task, fields)
    if len(fields) > 1:
        raise UserError(f"task {task} needs fields {', '.join(fields)}: pass a JSON object")
    return {fields[0]: _checked_text(text, where, fields[0])}


def jsonl_values(path: Path) -> Iterator[tuple[str, object]]:
    """(`<path>:<line>`, the parsed JSON value) per non-blank line of a JSONL file; bad files are one line."""
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


def examples_from_list(examples: Sequence[dict], task: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
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
        raise UserError(f"{where} is {json_kind(value)}, not a JSON object: give the fields {', '.join(fields)}")
    missing = [field for field in fields if field not in value]
    if missing:
        raise UserError(f"{where} lacks field {', '.join(missing)}: task {task} needs fields {', '.join(fields)}")
    return {field: _checked_text(value[field], where, field) for field in fields}


def _checked_text(value: object, where: str, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: field {field} is {json_kind(value)}; give it as a string")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{where}: field {field} is not valid Unicode (a lone surrogate); fix its text") from None
    return text


def json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


MOSTLY_UNKNOWN = 0.5  # warn when more than this share of an example's tokens are the tokenizer's <unk>


def warn_about_inputs(tokenizer: PreTrainedTokenizerBase, sources: Sequence[str],
                      max_source_length: int | Sequence[int]) -> None:
    """One stderr line per source longer than `max_source_length` tokens (with `</s>`; a multi-task export:
    each source's own task's), and per source whose words the tokenizer mostly does not know (the model
    then sees little of it)."""
    unknown = tokenizer.unk_token_id
    limits = [max_source_length] * len(sources) if isinstance(max_source_length, int) else list(max_source_length)
    for index, (ids, limit) in enumerate(zip(tokenizer(list(sources), verbose=False).input_ids, limits)):
        if len(ids) > limit:
            print(f"warning: example {index} has {len(ids)} tokens; truncated to max_source_length {limit}",
                  file=sys.stderr)
        words = [token for token in ids if token not in tokenizer.all_special_ids or token == unknown]
        unknowns = sum(token == unknown for token in words) if unknown is not None else 0
        if words and unknowns / len(words) > MOSTLY_UNKNOWN:
            print(f"warning: example {index} is mostly unknown to the tokenizer ({unknowns} of {len(words)} tokens "
                  "are <unk>): its label says little", file=sys.stderr)


def token_batches(tokenizer: PreTrainedTokenizerBase, sources: list[str], max_source_length: int,
                  batch_size: int) -> Iterator[Batch]:
    """The sources in batches of at most `batch_size`, tokenised as training's collate does."""
    for start in range(0, len(sources), batch_size):
        encoded = tokenizer(sources[start:start + batch_size], padding="longest", truncation=True,
                            max_length=max_source_length, return_tensors="np")
        yield {key: encoded[key].astype(np.int64) for key in ("input_ids", "attention_mask")}
