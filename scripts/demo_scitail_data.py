"""Write the held-out demo task's data: `python scripts/demo_scitail_data.py [FOLDER]` (default data/scitail).

FOLDER/train.jsonl: 2,000 examples to draw shots from; FOLDER/eval.jsonl: 400 others (the demo's
validation texts), which `hyperexport adapt --eval-data` halves into validation and test. Synthetic
scitail-like entailment (hyperexport/data/demo.py), seeded: the same files on every machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hyperexport.data.demo import DEMO_SPLIT_SIZES, demo_examples

SEED = 42


def write_demo_scitail(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train": folder / "train.jsonl", "eval": folder / "eval.jsonl"}
    for name, split in (("train", "train"), ("eval", "validation")):
        rows = demo_examples("scitail", split, DEMO_SPLIT_SIZES[split], SEED)
        files[name].write_text("".join(json.dumps(row) + "\n" for row in rows))
    return files


if __name__ == "__main__":
    for path in write_demo_scitail(Path(sys.argv[1] if len(sys.argv) > 1 else "data/scitail")).values():
        print(path)
