"""Few-shot adaptation on the demo run (method §10): the held-out scitail-like task learned from K
examples by (a) a new task embedding only (`hyperexport adapt`'s path; started from rte's embedding or
from N(0, 1)), (b) a fresh plain adapter (the `adapters` variant, one task) on the same frozen backbone
and the run's trained layer norms, with the same K examples, steps and batch size, and (c) zero-shot
with each trained task's embedding; and which task `--init-from auto` picks. Test accuracy on 200 held-out
examples, mean ± std over seeds.

    python benchmarks/fewshot_bench.py [--run runs/demo] [--json results.json]

Needs a trained demo run (`hyperexport train`, a few minutes). Nothing is written into the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))

from demo_scitail_data import write_demo_scitail  # noqa: E402

from hyperexport.contracts.run import RunFolder  # noqa: E402
from hyperexport.model.build import build_model  # noqa: E402
from hyperexport.recipe.load import load_recipe  # noqa: E402
from hyperexport.tasks.registry import get_task  # noqa: E402
from hyperexport.training.accelerator import accelerator_for  # noqa: E402
from hyperexport.training.adapt import DEFAULT_LEARNING_RATE, PRECISION  # noqa: E402
from hyperexport.training.adapt_loop import evaluate_new_task, nearest_task, train_steps  # noqa: E402
from hyperexport.training.adapt_model import (  # noqa: E402
    RunToAdapt,
    adaptation_model,
    initial_embedding,
    set_trainable,
)
from hyperexport.training.few_shot import read_labelled_file, split_few_shot  # noqa: E402

TASK = "scitail"
SHOTS = (4, 16, 32, 100)
SEEDS = (0, 1, 2)
STEPS = 100
EMBEDDING_LR = DEFAULT_LEARNING_RATE
ADAPTER_LR = 1e-2


def plain_adapter_model(run: RunToAdapt):
    """A one-task `adapters` model on the run's backbone with the run's trained layer norms (frozen):
    only the new adapter (and its post-LayerNorm) learns."""
    plain = dataclasses.replace(run.recipe, model=dataclasses.replace(run.recipe.model, variant="adapters"))
    model = build_model(plain, [TASK], run.folder.backbone_dir)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if param.requires_grad:
                param.copy_(run.trained[f"backbone.{name}"])
                param.requires_grad_(False)
    return model.to(run.accelerator.device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--data", type=Path, default=Path("data/scitail"))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.time()
    folder = RunFolder.resolve(args.run)
    run = RunToAdapt.load(folder, load_recipe(folder.recipe_file), accelerator_for(args.device, PRECISION))
    recipe, trained, names = run.recipe, run.trained, run.task_names
    spec = get_task(TASK)
    files = write_demo_scitail(args.data)
    rows = read_labelled_file(spec, files["train"], "--data")
    eval_rows = read_labelled_file(spec, files["eval"], "--eval-data")

    def accuracy(model, task_data) -> float:
        return evaluate_new_task(run, model, task_data)["metrics"]["accuracy"]

    results: dict[str, dict] = {}
    test_data = split_few_shot(spec, rows, eval_rows, 4, 0, recipe.data.data_seed).task_data(spec)
    for name in names:  # (c) zero-shot: a trained task's embedding as the new task's
        model = adaptation_model(run, TASK, initial_embedding(trained, names, name, 0))
        results[f"zero-shot, {name} embedding"] = {"all": accuracy(model, test_data)}
    methods = {
        "embedding only, init rte": lambda seed: adaptation_model(
            run, TASK, initial_embedding(trained, names, "rte", seed)),
        "embedding only, init random": lambda seed: adaptation_model(
            run, TASK, initial_embedding(trained, names, None, seed)),
        "plain adapter (fresh)": lambda seed: plain_adapter_model(run),
    }
    for shots in SHOTS:  # what `--init-from auto` would pick: the lowest loss on the shots
        for seed in SEEDS:
            task_data = split_few_shot(spec, rows, eval_rows, shots, seed, recipe.data.data_seed).task_data(spec)
            choice, _ = nearest_task(run, task_data.train)
            results.setdefault("--init-from auto picks", {}).setdefault(shots, []).append(choice)
    for method, make in methods.items():
        for shots in SHOTS:
            for seed in SEEDS:
                task_data = split_few_shot(spec, rows, eval_rows, shots, seed, recipe.data.data_seed).task_data(spec)
                model = make(seed)
                if method.startswith("embedding"):
                    set_trainable(model, "embedding")
                lr = EMBEDDING_LR if method.startswith("embedding") else ADAPTER_LR
                train_steps(run, model, task_data.train, steps=args.steps, learning_rate=lr, seed=seed,
                            progress_bar=False)
                results.setdefault(method, {}).setdefault(shots, []).append(accuracy(model, task_data))
                print(f"{method:30s} K={shots:<4d} seed {seed}: {results[method][shots][-1]:.1f}", file=sys.stderr,
                      flush=True)
    table = ["| method | " + " | ".join(f"K = {k}" for k in SHOTS) + " |", "|---|" + "---|" * len(SHOTS)]
    for method, by_shots in results.items():
        if "all" in by_shots:
            cells = [f"{by_shots['all']:.1f}"] * len(SHOTS)
        elif method.endswith("picks"):
            cells = [", ".join(f"{name} {picks.count(name)}/{len(picks)}" for name in dict.fromkeys(picks))
                     for picks in by_shots.values()]
        else:
            cells = [f"{statistics.fmean(v):.1f} ± {statistics.stdev(v):.1f}" for v in by_shots.values()]
        table.append(f"| {method} | " + " | ".join(cells) + " |")
    print("\n".join(table))
    print(f"test examples: {len(test_data.test)}, steps: {args.steps}, seeds: {len(SEEDS)}, "
          f"wall clock: {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
