"""CUDA check of training (run on a machine with an NVIDIA GPU; not part of the test suite).

    python scripts/cuda_train_check.py [--steps 200] [--json OUT.json]

1. Trains the demo recipe on the GPU in fp32, bf16 and fp16 autocast (same seed, same steps) and
   reports steps/s, the final test metrics and their average.
2. Evaluates one HyperT5 forward in each autocast precision against fp32 on the same batch and
   reports max |delta logits| and whether anything overflowed (inf/NaN).
Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from hyperexport.data.collate import collate
from hyperexport.model.build import build_model, load_tokenizer
from hyperexport.recipe.load import load_recipe
from hyperexport.training.loop import train
from hyperexport.training.task_data import load_task_data

PRECISIONS = ("fp32", "bf16", "fp16")


def train_in(precision: str, steps: int, workdir: Path) -> dict:
    recipe = load_recipe(None)
    recipe = replace(recipe, train=replace(recipe.train, precision=precision, eval_every=steps))
    torch.cuda.synchronize()
    start = time.perf_counter()
    run = train(recipe, output=workdir / precision / "demo", max_steps=steps, device="cuda", progress_bar=False)
    seconds = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    return {"precision": precision, "steps": steps, "seconds_with_eval": round(seconds, 2),
            "steps_per_second_with_eval": round(steps / seconds, 2), "test_average": round(metrics["average"], 2),
            "tasks": {t: r["metrics"] for t, r in metrics["tasks"].items()}}


@torch.no_grad()
def autocast_parity() -> list[dict]:
    recipe = load_recipe(None)
    data = load_task_data(recipe, splits=("train",))
    tokenizer = load_tokenizer(recipe.backbone.tokenizer)
    model = build_model(recipe, list(data)).cuda().eval()
    examples = [ex for d in data.values() for ex in d.train[:8]]
    batch = collate(tokenizer, examples, {n: i for i, n in enumerate(data)}, 96, 8)
    batch = {k: v.cuda() for k, v in batch.items()}
    inputs = dict(task_ids=batch["task_ids"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  decoder_input_ids=model.backbone._shift_right(batch["labels"]))
    reference = model(**inputs).logits.float()
    rows = []
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with torch.autocast("cuda", dtype=dtype):
            logits = model(**inputs).logits.float()
        rows.append({"precision": name, "finite": bool(torch.isfinite(logits).all()),
                     "max_abs_delta_logits_vs_fp32": float((logits - reference).abs().max()),
                     "reference_logit_scale": float(reference.abs().max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible; run this on a machine with an NVIDIA GPU")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [train_in(p, args.steps, Path(tmp)) for p in PRECISIONS]
    parity = autocast_parity()
    for row in runs:
        print(f"train {row['precision']:>4}: {row['steps_per_second_with_eval']:6.2f} steps/s (eval included), "
              f"test average {row['test_average']:.2f}")
    for row in parity:
        print(f"autocast {row['precision']}: finite={row['finite']} "
              f"max|dlogits|={row['max_abs_delta_logits_vs_fp32']:.4f} "
              f"(logit scale {row['reference_logit_scale']:.1f})")
    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "train": runs, "autocast": parity}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
