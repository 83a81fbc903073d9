"""How long the CLI takes to answer when it has no real work to do: `--help`, and errors in the
arguments or the input folders, each of which must be one line in under 0.5 s (torch, transformers and
optimum are imported only after the arguments and files are checked).

    python benchmarks/cli_latency.py [--repeats 5] [--json]

Each case runs the installed `hyperexport` in a fresh process, in an empty temporary folder (no runs,
no exports), `repeats` times; the median wall time is reported with the goal. Machines differ: compare
with `python -c pass` (the interpreter's own start), printed first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GOAL_S = 0.5
CASES = {
    "python -c pass (interpreter start)": [sys.executable, "-c", "pass"],
    "--help": ["--help"],
    "train --help": ["train", "--help"],
    "usage error: train --max-steps 0": ["train", "--max-steps", "0"],
    "usage error: export --head beam": ["export", "--task", "rte", "--head", "beam"],
    "missing recipe: train no.yaml": ["train", "no.yaml"],
    "no run: materialize --task rte": ["materialize", "--task", "rte"],
    "no run: export --task rte": ["export", "--task", "rte"],
    "no run: evaluate": ["evaluate"],
    "no export: predict nowhere x": ["predict", "nowhere", "x"],
    "no export: deploy --task rte": ["deploy", "--task", "rte"],
}


def seconds(command: list[str], folder: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cli = shutil.which("hyperexport") or sys.exit("error: the hyperexport command is not installed (pip install -e .)")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, case in CASES.items():
            command = case if case[0] == sys.executable else [cli, *case]
            times = [seconds(command, folder) for _ in range(args.repeats)]
            median = statistics.median(times)
            rows.append({"case": name, "median_s": round(median, 3), "max_s": round(max(times), 3),
                         "goal_s": None if case[0] == sys.executable else GOAL_S,
                         "met": None if case[0] == sys.executable else median < GOAL_S})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        verdict = "" if row["met"] is None else ("ok" if row["met"] else "SLOW")
        print(f"{row['median_s']:6.3f} s  (max {row['max_s']:.3f})  {verdict:4}  {row['case']}")


if __name__ == "__main__":
    main()
