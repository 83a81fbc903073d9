"""Printing figures: a rich table for people, JSON (`--json`) for machines."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table


def print_json(data) -> None:
    print(json.dumps(data, indent=2))


def print_metrics(result: dict) -> None:
    table = Table(title=f"{result.get('split', '')} metrics")
    for column in ("task", "metric", "model", "baseline"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, scores in result["tasks"].items():
        for name, value in scores["metrics"].items():
            baseline = scores.get("baseline", {}).get(name)
            table.add_row(task, name, f"{value:.2f}", "" if baseline is None else f"{baseline:.2f}")
    Console().print(table)
    Console().print(f"average: {result['average']:.2f}")


def print_parameters(report: dict) -> None:
    table = Table(title=f"parameters: {report['recipe']} ({report['variant']} on {report['backbone']})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if key in ("recipe", "variant", "backbone"):
            continue
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
    Console().print(table)


def print_parity(report: dict) -> None:
    table = Table(title=f"parity: {report['task']} ({report['export']}) against {report['reference']}")
    for column in ("inputs", "runner", "output", "max |delta|", "tolerance", "pass"):
        table.add_column(column, justify="right" if column in ("max |delta|", "tolerance") else "left")
    for row in report["comparisons"]:
        table.add_row(row["inputs"], row["runner"], row["output"], f"{row['max_abs_diff']:.3g}",
                      f"{row['tolerance']:g}", "yes" if row["passed"] else "NO")
    Console().print(table)
    for metric in report["metrics"]:
        values = "; ".join(f"{runner} {value}" for runner, value in metric["values"].items())
        Console().print(f"{metric['head']} metric: {values} -> {'equal' if metric['passed'] else 'DIFFERENT'}")
    compatibility = report.get("tensorrt_compatibility")
    if compatibility is not None:
        problems = [p for found in compatibility["graphs"].values() for p in found]
        Console().print(f"TensorRT {compatibility['tensorrt_operator_list']} compatibility: "
                        + ("ok" if not problems else f"{len(problems)} problem(s): {problems[0]}"), markup=False)
    for skipped in report.get("not_run", []):
        Console().print(f"not run: {skipped['runner']}: {skipped['reason']}")
    Console().print("parity passed" if report["passed"] else "parity FAILED")


def print_bench(report: dict) -> None:
    if "training" in report:
        table = Table(title=f"training steps/s: {report['source']} (batch {report['batch']}, seq {report['seq']})")
        for column in ("variant", "steps/s", "p50 ms"):
            table.add_column(column, justify="left" if column == "variant" else "right")
        for variant, row in report["training"].items():
            table.add_row(variant, f"{row['steps_per_s']:.2f}", f"{row['p50_ms']:.1f}")
        Console().print(table)
        Console().print(f"hypernetwork step overhead over plain adapters: {100 * report['overhead']:.1f}%")
        return
    table = Table(title=f"bench: {report['task']} on {report['source']} (seq {report['seq']}, "
                        f"{report['machine']['threads']} threads)")
    for column in ("head", "batch", "variant", "p50 ms", "p90 ms", "throughput"):
        table.add_column(column, justify="left" if column in ("head", "variant") else "right")
    for row in report["results"]:
        table.add_row(row["head"], str(row["batch"]), row["variant"], f"{row['p50_ms']:.1f}", f"{row['p90_ms']:.1f}",
                      f"{row['throughput']:.1f} {row['unit']}")
    Console().print(table)
    for name, values in report["ratios"].items():
        Console().print(f"{name} (speed-up): {_rounded(values)}")
    for row in report.get("decode_steps", []):
        Console().print(f"decode step {row['variant']} b{row['batch']}: {row['step_p50_ms']:.2f} ms, "
                        f"{row['vs_bound']:.2f}x the bound ({row['step_bytes_mb']:.0f} MB at "
                        f"{report['bandwidth_gb_s']['threads']:.1f} GB/s: {row['bound_ms']:.2f} ms)")
    for name, goal in report.get("goals", {}).items():
        if goal["value"] is not None:
            verdict = "" if goal["met"] is None else (" met" if goal["met"] else " missed")
            target = "" if goal["target"] is None else f" (target {goal['target']})"
            Console().print(f"goal {name}: {goal['value']:.3f}{target}{verdict}")


def _rounded(values):
    if isinstance(values, dict):
        return ", ".join(f"{key} {_rounded(value)}" if not isinstance(value, dict) else f"{key} [{_rounded(value)}]"
                         for key, value in values.items())
    return f"{values:.2f}x"


def print_adapt(report: dict) -> None:
    table = Table(title=f"adapt: {report['task']} from {report['shots']} shots, {report['steps']} steps "
                        f"(init {report['init_from'] or 'random'}, tune {report['tune']})")
    for column in ("metric", "at init", "adapted", "majority"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    test = report["test"]
    for name, value in test["adapted"].items():
        table.add_row(name, f"{test['init'][name]:.2f}", f"{value:.2f}", f"{test['majority_baseline'][name]:.2f}")
    Console().print(table)
    counts = report["parameters"]
    Console().print(f"test examples: {report['test_examples']}; parameters added: {counts['added']:,} "
                    f"(trained {counts['trained']:,}); a per-task adapter would add {counts['per_task_adapter']:,}")
    Console().print(f"updated run: {report['run']}")
