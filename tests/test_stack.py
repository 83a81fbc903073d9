"""The pieces of a multi-task export on tiny models built here: stacked adapters (each example its own task's,
equal to the task's folded model), the task tables in a graph (named, refused when missing, grown), the
task-id check before a graph runs, and the task table contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_t5
from hyperexport.contracts.task import ADAPTER_PREFIX, BACKBONE_PREFIX, AdapterFacts, TaskFacts
from hyperexport.contracts.task_table import TaskEntry, TaskSource, TaskTable
from hyperexport.errors import UserError
from hyperexport.export.add_task import appended
from hyperexport.export.task_tables import LABEL_TABLE, name_tables, padded_labels, sentinel_tables, task_rows
from hyperexport.fold import fold_task
from hyperexport.model.adapter import POSITIONS
from hyperexport.runtime.multitask import TaskIdsChecked, cut_rows
from hyperexport.stack import stack_tasks

SHAPES = {"down_weight": (8, 32), "down_bias": (8,), "up_weight": (32, 8), "up_bias": (32,), "ln_weight": (32,),
          "ln_bias": (32,)}


def task_tensors(seed: int, layers: dict[str, int], norm_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A task file's tensors for a tiny T5 (d_model 32, bottleneck 8): random adapters, shared layer norms."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {f"{ADAPTER_PREFIX}{stack}.{name}": torch.randn(count, len(POSITIONS), *shape, generator=generator)
               for stack, count in layers.items() for name, shape in SHAPES.items()}
    tensors[f"{BACKBONE_PREFIX}encoder.final_layer_norm.weight"] = torch.full((32,), norm_scale)
    return tensors


LAYERS = {"encoder": 3, "decoder": 2}  # tests/conftest.py's tiny_t5


def test_a_mixed_batch_adapts_each_example_with_its_own_task(token_batch):
    tasks = [task_tensors(seed, LAYERS) for seed in range(3)]
    stacked = stack_tasks(tiny_t5(), tasks, "gelu_new")
    task_ids = torch.tensor([2, 0, 1, 2])
    with torch.no_grad(), stacked.router.routing(task_ids):
        mixed = stacked.model(**token_batch).logits
    for row, task in enumerate(task_ids.tolist()):
        alone = fold_task(tiny_t5(), tasks[task], "gelu_new")
        with torch.no_grad():
            expected = alone(**token_batch).logits[row]
        torch.testing.assert_close(mixed[row], expected, atol=1e-5, rtol=0)
    assert not torch.allclose(mixed[1], mixed[2])


def test_stacking_refuses_tasks_with_other_layer_norms_and_running_without_task_ids(token_batch):
    with pytest.raises(ValueError, match="layer norms differ"):
        stack_tasks(tiny_t5(), [task_tensors(0, LAYERS), task_tensors(1, LAYERS, norm_scale=2.0)], "gelu_new")
    stacked = stack_tasks(tiny_t5(), [task_tensors(0, LAYERS)], "gelu_new")
    with pytest.raises(RuntimeError, match="without task_ids"):
        stacked.model(**token_batch)


def test_tables_are_found_by_their_sentinels_and_a_missing_one_is_refused(tmp_path):
    from hyperexport.export.multitask_classify import TaskLabelScorer, export_task_classify_graph

    tasks = [task_tensors(seed, LAYERS) for seed in range(2)]
    scorer = TaskLabelScorer(stack_tasks(tiny_t5(), tasks, "gelu_new"),
                             padded_labels([torch.tensor([[5, 1], [6, 1]])] * 2))
    path = tmp_path / "classify.onnx"
    with sentinel_tables(scorer, 384) as sentinels:
        export_task_classify_graph(scorer, path)
    expected = set(sentinels.values())
    assert len(expected) == 6 * 2 * (3 + 2) + 1  # six tensors per adapter site, and the label table
    with pytest.raises(RuntimeError, match="does not hold every task table"):
        name_tables(path, sentinels, expected | {"task_table.encoder.9.self_attention.down_weight"})
    name_tables(path, sentinels, expected)


def test_rows_of_a_task_and_growing_tables():
    rows = task_rows(task_tensors(0, LAYERS), torch.tensor([[5, 1]]))
    assert rows["task_table.decoder.1.self_attention.up_weight"].shape == (32, 8) and rows[LABEL_TABLE].shape == (1, 2)
    table = padded_labels([torch.tensor([[5, 1], [6, 1]])])  # one task, two labels of two tokens
    grown = appended(LABEL_TABLE, table, torch.tensor([[7, 8, 1], [9, 1, -100], [4, 1, -100]]))
    assert grown.shape == (2, 3, 3) and grown[0, 2].tolist() == [-100] * 3 and grown[0, 0].tolist() == [5, 1, -100]
    with pytest.raises(UserError, match="has shape"):
        appended("task_table.encoder.0.feed_forward.down_bias", torch.zeros(2, 8), torch.zeros(16))


def facts(task: str, labels: tuple[str, ...] = ("0", "1")) -> TaskFacts:
    return TaskFacts(task=task, template="sentence: {sentence}", labels=labels, metrics=("accuracy",),
                     postprocess="string", is_regression=False, max_new_tokens=2, max_source_length=64,
                     adapter=AdapterFacts("gelu_new", 1e-5, POSITIONS, "hyperformer++"))


def test_the_task_table_reads_back_and_names_what_it_lacks(tmp_path):
    source = TaskSource("../runs/tiny/tasks/x", "a" * 64, "../runs/tiny", "b" * 64)
    table = TaskTable((TaskEntry(facts("rte"), source), TaskEntry(facts("mnli", ("0", "1", "2")), source)),
                      "c" * 64, None)
    table.write(tmp_path)
    assert TaskTable.read(tmp_path) == table and table.max_labels == 3 and table.index("mnli") == 1
    with pytest.raises(UserError, match="task 'cola' is not in this export: its tasks are rte, mnli"):
        table.index("cola")


class Recorder:
    """A backend that records the graphs it was asked to run."""

    max_batch = None

    def __init__(self):
        self.ran: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def has(self, graph: str) -> bool:
        return True

    def infer(self, graph, feeds):
        self.ran.append(graph)
        return {}


def test_task_ids_out_of_range_are_refused_before_any_graph_runs():
    source = TaskSource("t", "a" * 64, "r", "b" * 64)
    table = TaskTable((TaskEntry(facts("rte"), source), TaskEntry(facts("sst2"), source)), "c" * 64, None)
    recorder = Recorder()
    checked = TaskIdsChecked(recorder, table)
    checked.infer("encoder_model.onnx", {"task_ids": np.array([0, 1])})
    for bad in ([0, 2], [-1]):
        with pytest.raises(UserError, match=f"task id {bad[-1]} is out of range: the export has 2 tasks"):
            checked.infer("encoder_model.onnx", {"task_ids": np.array(bad)})
    assert recorder.ran == ["encoder_model.onnx"]


def test_generated_rows_are_cut_at_their_own_tasks_length():
    tokens = np.array([[0, 5, 6, 7], [0, 8, 1, 0]])
    assert cut_rows(tokens, [1, 3], 0).tolist() == [[0, 5, 0, 0], [0, 8, 1, 0]]
    assert cut_rows(tokens, [1, 1], 0).tolist() == [[0, 5], [0, 8]]
