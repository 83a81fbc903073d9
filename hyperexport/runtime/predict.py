"""`predict`: labels for new examples from an export folder: ONNX Runtime on the CPU, or TensorRT plans
(an engine folder, on an NVIDIA GPU).

The examples are dicts of the task's template fields (a list, one TEXT, or a JSONL file:
`runtime.examples`), formatted with the template in `task.json` and tokenised with the export's
tokenizer exactly as in training (one warning line on stderr per truncated example). The export's
backend runs them through `runtime.heads.label_examples`: the classify head where the export has it,
else the greedy generate loop. Nothing is written: the export folder is only read, after its
manifest check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.names import CLASSIFY_GRAPH, ENCODER_GRAPH
from hyperexport.errors import UserError
from hyperexport.runtime.examples import read_sources, read_task_sources, warn_about_inputs
from hyperexport.runtime.exports import export_backend
from hyperexport.runtime.heads import DEFAULT_BATCH_SIZE, label_examples
from hyperexport.runtime.multitask import label_task_examples

_EXPORT_HINT = "run `hyperexport export --task <task>` first"


def predict(export_dir: str | Path, examples: Sequence[dict] | None = None, *, text: str | None = None,
            input_file: str | Path | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
            task: str | None = None) -> list[dict]:
    """One result per example, in order: `{"index": i, "label": str}`, plus for a classify export
    `"scores"` (each label string's log-probability) and `"probabilities"` (their softmax).

    Give the examples one way: `examples` (dicts of fields), `text` (see `runtime.examples.read_examples`)
    or `input_file` (JSONL). A multi-task export's examples name their task in a `task` field, or all take
    `task`; their results say which task (`"task"`).
    """
    export = ExportFolder.open(export_dir)  # also refuses a folder of another stage
    if not export.heads:
        graphs = [export.graph_file(graph).name for graph in (CLASSIFY_GRAPH, ENCODER_GRAPH)]
        raise UserError(f"{export.path} has neither {graphs[0]} nor {graphs[1]}: {_EXPORT_HINT}")
    backend = export_backend(export)  # refuses what cannot run here (bf16 on a CPU, foreign plans) first
    if export.is_multitask:
        table = export.task_table
        rows, sources = read_task_sources(table, task, examples, text, input_file)
    else:
        facts = export.task_facts(task)
        sources = read_sources(facts, examples, text, input_file)
    if export.tokenizer_dir is None:
        raise UserError(f"{export.path} has no tokenizer (its run was imported without one): import the checkpoint "
                        "again with --tokenizer, then materialize and export")
    from hyperexport.model.build import load_tokenizer  # transformers: after every check

    tokenizer = load_tokenizer(str(export.tokenizer_dir))
    ids = export.generation_ids if "generate" in export.heads else None
    with backend:
        if export.is_multitask:
            lengths = [table.tasks[row].facts.max_source_length for row in rows]
            warn_about_inputs(tokenizer, sources, lengths)
            return label_task_examples(backend, tokenizer, table, rows, sources, ids, batch_size=batch_size)
        warn_about_inputs(tokenizer, sources, facts.max_source_length)
        return label_examples(backend, tokenizer, facts, sources, ids, batch_size=batch_size)
