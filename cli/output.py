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


def print_predictions(results: list[dict]) -> None:
    """index, (task,) label with its name, and the label's probability from the classify head, per example."""
    from rich.text import Text

    with_probability, with_task = "probabilities" in results[0], "task" in results[0]
    table = Table("index", *(["task"] if with_task else []), "label", *(["probability"] if with_probability else []))
    for row in results:  # Text: a generated label is never read as rich markup
        extra = [f"{row['probabilities'][row['label']]:.3f}"] if with_probability else []
        name = row.get("label_name", row["label"])
        shown = name if name == row["label"] else f"{name} ({row['label']})"
        table.add_row(str(row["index"]), *([row["task"]] if with_task else []), Text(shown), *extra)
    Console().print(table)


def print_parity(report: dict) -> None:
    if "tasks" in report:
        print_task_parity(report)
        return
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
    _print_checks(report)


def print_task_parity(report: dict) -> None:
    """A multi-task export's report: a row per task (its worst output against the reference), then the mixed batch."""
    table = Table(title=f"parity: {report['export']} ({len(report['tasks'])} tasks) against {report['reference']}")
    for column in ("task", "row", "max |delta| scores", "max |delta| logits", "tokens differ", "metric", "pass"):
        table.add_column(column, justify="left" if column in ("task", "pass") else "right")
    for task in report["tasks"]:
        worst = {name: max((c["max_abs_diff"] for c in task["comparisons"] if c["output"] == name
                            and c["runner"] == "onnxruntime"), default=None) for name in ("scores", "logits", "tokens")}
        metric = "equal" if all(m["passed"] for m in task["metrics"]) else "DIFFERENT"
        table.add_row(task["task"], str(task["row"]),
                      *(_figure(worst[name]) for name in ("scores", "logits", "tokens")),
                      metric if task["metrics"] else "-", "yes" if task["passed"] else "NO")
    Console().print(table)
    mixed = report["mixed_batch"]
    if mixed is not None:
        for check in mixed["comparisons"]:
            Console().print(f"mixed batch ({mixed['rows']} rows), {check['task']} {check['output']} against its "
                            f"single-task graphs: {check['max_abs_diff']:.3g} (tolerance {check['tolerance']:g}) "
                            f"-> {'ok' if check['passed'] else 'DIFFERENT'}")
    _print_checks(report)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _print_checks(report: dict) -> None:
    compatibility = report.get("tensorrt_compatibility")
    if compatibility is not None:
        problems = [p for found in compatibility["graphs"].values() for p in found]
        Console().print(f"TensorRT {compatibility['tensorrt_operator_list']} compatibility: "
                        + ("ok" if not problems else f"{len(problems)} problem(s): {problems[0]}"), markup=False)
    for skipped in report.get("not_run", []):
        Console().print(f"not run: {skipped['runner']}: {skipped['reason']}")
    Console().print(parity_verdict(report))


def parity_verdict(report: dict) -> str:
    """passed; FAILED (a comparison or metric out of tolerance); or not run here (what ran agreed, but the
    export's own runtime needs a GPU): the last two both exit 1."""
    if report["passed"]:
        return "parity passed"
    parts = report["tasks"] + [report["mixed_batch"] or {"comparisons": []}] if "tasks" in report else [report]
    checks = [check for part in parts for check in part["comparisons"] + part.get("metrics", [])]
    checks.append(report.get("tensorrt_compatibility") or {"passed": True})
    if report.get("not_run") and all(check["passed"] for check in checks):
        return "parity not run here (the export's runtime needs a GPU); the PyTorch runners agree"
    return "parity FAILED"


def print_bench(report: dict) -> None:
    if "mixed" in report:
        print_multitask_bench(report)
        return
    if "training" in report:
        table = Table(title=f"training steps/s: {report['source']} (batch {report['batch']}, seq {report['seq']})")
        for column in ("variant", "steps/s", "p50 ms"):
            table.add_column(column, justify="left" if column == "variant" else "right")
        for variant, row in report["training"].items():
            table.add_row(variant, f"{row['steps_per_s']:.2f}", f"{row['p50_ms']:.1f}")
        Console().print(table)
        Console().print(f"hypernetwork step overhead over plain adapters: {100 * report['overhead']:.1f}%")
        return
    Console().print(_latency_table(f"bench: {report['task']} on {report['source']} (seq {report['seq']}, "
                                   f"{report['machine']['threads']} threads)", report["results"]))
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


def _latency_table(title: str, rows: list[dict]) -> Table:
    """A row per head, batch and variant: p50, p90 and throughput (in the row's `unit`, else per second)."""
    table = Table(title=title)
    for column in ("head", "batch", "variant", "p50 ms", "p90 ms", "throughput"):
        table.add_column(column, justify="left" if column in ("head", "variant") else "right")
    for row in rows:
        table.add_row(row["head"], str(row["batch"]), row["variant"], f"{row['p50_ms']:.1f}", f"{row['p90_ms']:.1f}",
                      f"{row['throughput']:.1f}" + (f" {row['unit']}" if "unit" in row else "/s"))
    return table


def print_multitask_bench(report: dict) -> None:
    tasks = len(report["tasks"])
    Console().print(_latency_table(f"bench: {tasks}-task export against {report['tasks'][0]}'s single-task export on "
                                   f"{report['source']} (seq {report['seq']}, {report['machine']['threads']} threads)",
                                   report["same_task"]))
    goals = report["goals"]
    Console().print(f"multi-task p50 / single-task p50 (goal at batch 8: <= {goals['slowdown_at_batch_8']:.2f}): "
                    f"{_rounded(report['slowdown'])}")
    for head, mixed in report["mixed"].items():
        Console().print(f"{head}: 8 examples of 8 tasks in one call: {mixed['throughput_vs_single_batch']:.2f}x the "
                        f"throughput of one task's 8 in one single-task call (goal >= {goals['mixed_throughput']}), "
                        f"{mixed['throughput_vs_single_calls']:.2f}x that of 8 single-task calls of 1")
    disk, memory = report["disk_mb"], report["resident_mb"]
    Console().print(f"disk MB: {_megabytes(disk)} (goal: ratio <= {goals['disk']:.4f})")
    Console().print(f"resident MB (sessions opened): {_megabytes(memory)}")


def _megabytes(values: dict) -> str:
    return ", ".join(f"{key} {value:.3f}" if key.startswith("ratio") else f"{key} {value:.1f}"
                     for key, value in values.items())


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
