"""`bench --multitask N`: one multi-task export of N tasks against the single-task export of one of them,
side by side in one process, in ONNX Runtime (fp32 and int8) on the same inputs.

- same task: batches of the first task through its single-task graphs and through the multi-task graphs
  (`task_ids` all 0), per head and batch size; `slowdown` = multi p50 / single p50 (goal: <= 1.10 at batch 8);
- mixed: 8 examples of 8 different tasks in one multi-task call, against 8 examples of one task in one
  single-task call (goal: throughput >= 0.9x) and against 8 single-task calls of batch 1 (one task's
  graphs stand for each task's: the same shapes and work);
- disk: the graphs of the multi-task export, of one single-task export and of N of them (N x one); the
  goal is multi <= (1 + 0.0075 N) x one single-task export;
- memory: resident memory that opening every session of an export adds, measured in a fresh child process
  per export (N single-task exports: N x one).
Tasks: with `--backbone`, the task's spec under N names on that shape with random weights (N random task
embeddings, so N different adapter sets); with a trained run, its first N tasks (the benchmarked task first).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hyperexport.bench.inference import folder_mb, time_rounds
from hyperexport.bench.subject import Subject, check_settings, load_subject, machine_facts, random_inputs, torch_threads
from hyperexport.contracts.export import GenerationIds
from hyperexport.contracts.names import CLASSIFY_GRAPH
from hyperexport.contracts.task_table import TASK_IDS_INPUT
from hyperexport.errors import UserError
from hyperexport.export.tracing import DEFAULT_OPSET
from hyperexport.runtime.backends import OnnxRuntimeBackend
from hyperexport.runtime.generation import greedy_generate

HEADS = ("classify", "generate")
PRECISIONS = ("fp32", "int8")
MIXED_BATCH = 8
SLOWDOWN_GOAL, MIXED_THROUGHPUT_GOAL, DISK_GOAL_PER_TASK = 1.10, 0.9, 0.0075


def bench_multitask(run: str | Path | None = None, task: str = "", backbone: str | None = None,
                    recipe: str | Path | None = None, num_tasks: int = 8, batches: tuple[int, ...] = (1, 8, 32),
                    seq: int = 128, heads: tuple[str, ...] = HEADS, rounds: int = 10, threads: int | None = None,
                    progress_bar: bool = True) -> dict:
    """The figures of the module doc, as a JSON-ready dict."""
    from tqdm.auto import tqdm

    if num_tasks < 2:
        raise UserError(f"--multitask {num_tasks}: compare at least 2 tasks")
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise UserError(f"unknown head '{unknown[0]}': use {' or '.join(HEADS)}")
    check_settings(seq, rounds)
    subject = load_subject(run, task, backbone, recipe)
    names, tensors, labels = _tasks(subject, num_tasks, backbone is not None)
    with torch_threads(threads) as threads, tempfile.TemporaryDirectory(prefix="hyperexport-bench-") as scratch:
        folders = _exports(subject, tensors, labels, heads, Path(scratch))
        ids = GenerationIds.read(folders[("multitask", "fp32")]) if "generate" in heads else None
        same, mixed = [], {}
        for head in tqdm(heads, desc="bench", disable=not progress_bar):
            fns = {f"{kind}_{precision}": _fn(folders[(kind, precision)], head, subject.new_tokens, ids, threads)
                   for kind in ("single", "multitask") for precision in PRECISIONS}
            same += _same_task(subject, fns, head, batches, seq, rounds)
            mixed[head] = _mixed(subject, fns, num_tasks, seq, rounds)
        disk = {f"{kind}_{precision}": folder_mb(folders[(kind, precision)])
                for kind in ("single", "multitask") for precision in PRECISIONS}
        memory = {key: _session_rss_mb(folders[(key, "fp32")], threads) for key in ("single", "multitask")}
    return {"machine": machine_facts(threads), "source": subject.source, "tasks": names, "seq": seq,
            "batches": list(batches), "rounds": rounds, "new_tokens": subject.new_tokens, "same_task": same,
            "slowdown": slowdowns(same), "mixed": mixed, "disk_mb": _with_goal(disk, num_tasks),
            "resident_mb": {"multitask_fp32": memory["multitask"], "single_fp32": memory["single"],
                            f"{num_tasks}_single_fp32": num_tasks * memory["single"]},
            "goals": {"slowdown_at_batch_8": SLOWDOWN_GOAL, "mixed_throughput": MIXED_THROUGHPUT_GOAL,
                      "disk": 1 + DISK_GOAL_PER_TASK * num_tasks}}


def _tasks(subject: Subject, count: int, random_shape: bool) -> tuple[list[str], list[dict], list[torch.Tensor]]:
    """N task names, each one's task-file tensors, and label token ids [K, L]."""
    from hyperexport.export.classify import label_token_ids
    from hyperexport.materialize import task_tensors
    from hyperexport.model.build import build_model
    from hyperexport.training.task_data import task_spec

    if random_shape:  # N random task embeddings on the shape: N different adapter sets
        names = [subject.task] + [f"{subject.task}_{index}" for index in range(2, count + 1)]
        model = build_model(subject.recipe, names).eval()
        return names, [task_tensors(model, name) for name in names], [subject.label_ids] * count
    known = [t.name for t in subject.recipe.tasks]
    if len(known) < count:
        raise UserError(f"--multitask {count}, but the run has {len(known)} tasks: bench a --backbone shape, or fewer")
    names = [subject.task] + [name for name in known if name != subject.task][:count - 1]
    specs = {t.name: task_spec(t) for t in subject.recipe.tasks}
    labels = [label_token_ids(subject.tokenizer, list(specs[name].labels)) for name in names]
    return names, [task_tensors(subject.model, name) for name in names], labels


def _exports(subject: Subject, tensors: list[dict], labels: list[torch.Tensor], heads: tuple[str, ...],
             scratch: Path) -> dict[tuple[str, str], Path]:
    """{(single | multitask, fp32 | int8): graph folder}: the first task alone, and all of them."""
    from hyperexport.export.multitask import build_task_graphs, quantize_task_graphs
    from hyperexport.export.onnx import write_graphs
    from hyperexport.export.quantize import quantize_folder
    from hyperexport.export.weights import store_weights_once
    from hyperexport.fold import fold_task
    from hyperexport.model.build import load_backbone

    head = heads[0] if len(heads) == 1 else "both"
    activation = subject.recipe.model.activation
    fresh = lambda: load_backbone(subject.recipe.backbone, subject.recipe.train.seed, subject.backbone_dir)  # noqa: E731
    folders = {("single", "fp32"): scratch / "single-fp32", ("multitask", "fp32"): scratch / "multitask-fp32"}
    for folder in folders.values():
        folder.mkdir()
    write_graphs(fold_task(fresh(), tensors[0], activation), labels[0], head, "fp32", DEFAULT_OPSET,
                 folders[("single", "fp32")])
    build_task_graphs(fresh(), tensors, labels, activation, head, "fp32", DEFAULT_OPSET, folders[("multitask", "fp32")])
    for kind, quantize in (("single", quantize_folder), ("multitask", quantize_task_graphs)):
        int8 = scratch / f"{kind}-int8"
        shutil.copytree(folders[(kind, "fp32")], int8)
        quantize(int8)  # as export --precision int8 does, then each weight once again
        store_weights_once(int8)
        folders[(kind, "int8")] = int8
    return folders


def _fn(folder: Path, head: str, new_tokens: int, ids: GenerationIds | None, threads: int) -> Callable:
    """fn(input_ids, attention_mask, task_ids or None) over an export's graphs: scores, or exactly
    `new_tokens` greedy tokens."""
    backend = OnnxRuntimeBackend(folder, threads=threads)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray, task_ids: np.ndarray | None):
        extra = {} if task_ids is None else {TASK_IDS_INPUT: task_ids}
        if head == "classify":
            return backend.infer(CLASSIFY_GRAPH, {"input_ids": input_ids, "attention_mask": attention_mask, **extra})
        assert ids is not None  # a generate export has its generation ids
        return greedy_generate(backend, input_ids, attention_mask, new_tokens, ids, min_new_tokens=new_tokens,
                               extra=extra)
    return run


def _with_task_ids(fn: Callable, task_ids: np.ndarray | None, input_ids: np.ndarray, attention_mask: np.ndarray):
    return fn(input_ids, attention_mask, task_ids)


def _same_task(subject: Subject, fns: dict, head: str, batches: tuple[int, ...], seq: int, rounds: int) -> list[dict]:
    rows = []
    for batch in batches:
        input_ids, attention_mask = (t.numpy() for t in random_inputs(subject, batch, seq))
        zeros = np.zeros(batch, dtype=np.int64)  # the first task: the single-task export's
        timed: dict[str, Callable] = {
            name: functools.partial(_with_task_ids, fn, zeros if name.startswith("multitask") else None)
            for name, fn in fns.items()}
        for variant, seconds in time_rounds(timed, input_ids, attention_mask, rounds).items():
            rows.append(_row(head, batch, variant, seconds, batch * (subject.new_tokens if head == "generate" else 1)))
    return rows


def _mixed(subject: Subject, fns: dict, num_tasks: int, seq: int, rounds: int) -> dict:
    """8 examples of 8 tasks (cycling through the N) in one multi-task call against one task's 8 in one
    single-task call and in 8 calls of one."""
    input_ids, attention_mask = (t.numpy() for t in random_inputs(subject, MIXED_BATCH, seq))
    task_ids = np.arange(MIXED_BATCH, dtype=np.int64) % num_tasks
    single = fns["single_fp32"]
    timed = {"multitask_mixed_batch": lambda i, m: fns["multitask_fp32"](i, m, task_ids),
             "single_same_task_batch": lambda i, m: single(i, m, None),
             "single_calls_of_1": lambda i, m: [single(i[r:r + 1], m[r:r + 1], None) for r in range(MIXED_BATCH)]}
    p50 = {name: float(np.percentile(seconds, 50)) for name, seconds in
           time_rounds(timed, input_ids, attention_mask, rounds).items()}
    return {"p50_ms": {name: 1e3 * value for name, value in p50.items()},
            "throughput_vs_single_batch": p50["single_same_task_batch"] / p50["multitask_mixed_batch"],
            "throughput_vs_single_calls": p50["single_calls_of_1"] / p50["multitask_mixed_batch"]}


def _row(head: str, batch: int, variant: str, seconds: list[float], items: int) -> dict:
    p50, p90 = (float(np.percentile(seconds, q)) for q in (50, 90))
    return {"head": head, "batch": batch, "variant": variant, "p50_ms": 1e3 * p50, "p90_ms": 1e3 * p90,
            "throughput": items / p50}


def slowdowns(rows: list[dict]) -> dict:
    """multi-task p50 / single-task p50 per precision, head and batch (1.05: 5% slower)."""
    p50 = {(r["head"], r["batch"], r["variant"]): r["p50_ms"] for r in rows}
    found: dict = {}
    for (head, batch, variant), single in p50.items():
        if variant.startswith("single_"):
            precision = variant.removeprefix("single_")
            multi = p50[(head, batch, f"multitask_{precision}")]
            found.setdefault(precision, {}).setdefault(head, {})[str(batch)] = multi / single
    return found


def _with_goal(disk: dict[str, float], num_tasks: int) -> dict:
    """Graph sizes, N single-task exports (N x one), and multi / one single-task export per precision."""
    return {**disk, **{f"{num_tasks}_single_{p}": num_tasks * disk[f"single_{p}"] for p in PRECISIONS},
            **{f"ratio_{p}": disk[f"multitask_{p}"] / disk[f"single_{p}"] for p in PRECISIONS}}


def _session_rss_mb(folder: Path, threads: int) -> float:
    """Resident memory that opening every graph of `folder` in ONNX Runtime adds to a fresh process."""
    import json
    import subprocess
    import sys

    code = ("import sys; from hyperexport.bench.multitask import open_sessions; "
            "print(open_sessions(sys.argv[1], int(sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(threads)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def open_sessions(folder: str, threads: int) -> float:
    """The resident MB this process grows by when it opens every graph of `folder` (run in a child)."""
    import onnxruntime as ort

    before = _resident_mb()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for path in sorted(Path(folder).glob("*.onnx"))]
    grown = _resident_mb() - before
    del sessions
    return grown


def _resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

