"""Where the time of one classify call goes: ONNX Runtime's profiler by op type, torch.profiler for the
PyTorch hypernetwork model, and the encoder's share (the part both heads pay once per example).

    python benchmarks/profile_classify.py [--backbone t5-small] [--recipe recipes/glue-t5-small-hyperformer++.yaml]
                                          [--task rte] [--batch 1] [--seq 128] [--threads 2]

Prints the top op types of each runtime with their share of the measured time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="t5-small")
    parser.add_argument("--recipe", default="recipes/glue-t5-small-hyperformer++.yaml")
    parser.add_argument("--task", default="rte")
    for name, default in (("batch", 1), ("seq", 128), ("threads", 2), ("calls", 5)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from hyperexport.bench.subject import load_subject as _subject
    from hyperexport.bench.subject import random_inputs as _inputs
    from hyperexport.bench.variants import torch_fn
    from hyperexport.contracts.names import CLASSIFY_GRAPH
    from hyperexport.export.classify import export_classify_graph
    from hyperexport.fold import fold_task
    from hyperexport.materialize import task_tensors
    from hyperexport.model.build import load_backbone

    subject = _subject(None, args.task, args.backbone, args.recipe)
    recipe = subject.recipe
    folded = fold_task(load_backbone(recipe.backbone, recipe.train.seed).eval(),
                       task_tensors(subject.model, args.task), recipe.model.activation)
    input_ids, attention_mask = _inputs(subject, args.batch, args.seq)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / CLASSIFY_GRAPH
        export_classify_graph(folded, subject.label_ids, path)
        ort_shares = onnxruntime_op_shares(path, input_ids, attention_mask, args.threads, args.calls, Path(folder))
    torch_shares = torch_op_shares(torch_fn(subject, "classify", hypernet=True), input_ids, attention_mask, args.calls)
    encoder_share = encoder_time_share(folded, subject, input_ids, attention_mask, args.calls)
    print(json.dumps({"batch": args.batch, "seq": args.seq, "threads": args.threads,
                      "onnxruntime_op_shares": ort_shares, "torch_hypernet_op_shares": torch_shares,
                      "encoder_share_of_torch_folded_classify": encoder_share}, indent=2))


def onnxruntime_op_shares(path: Path, input_ids, attention_mask, threads: int, calls: int, folder: Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = threads, True
    options.profile_file_prefix = str(folder / "ort_profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    for _ in range(calls):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    return _shares(by_op)


def torch_op_shares(fn, input_ids, attention_mask, calls: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    fn(input_ids, attention_mask)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn(input_ids, attention_mask)
    by_op = Counter({e.key: e.self_cpu_time_total for e in prof.key_averages()})
    return _shares(by_op)


@torch.no_grad()
def encoder_time_share(folded, subject, input_ids, attention_mask, calls: int) -> float:
    from hyperexport.export.classify import LabelScorer

    scorer = LabelScorer(folded, subject.label_ids).eval()

    def timed(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - start

    encoder = timed(lambda: folded.encoder(input_ids=input_ids, attention_mask=attention_mask))
    return encoder / timed(lambda: scorer(input_ids, attention_mask))


def _shares(by_op: Counter, top: int = 8) -> dict:
    total = sum(by_op.values())
    return {op: round(value / total, 3) for op, value in by_op.most_common(top)}


if __name__ == "__main__":
    main()
