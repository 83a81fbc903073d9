"""Issue 16's goals, read off one bench report: each a ratio measured in that run, its target and
whether it was met (None where the run did not measure it, e.g. peers without `--peers`)."""

from __future__ import annotations

# goal -> (target, "max" (value must be at most the target) or "min" (at least))
TARGETS = {
    "ort_int8_vs_ctranslate2_int8_b1": (1.3, "min"),
    "ort_int8_vs_ctranslate2_int8_b8": (2.0, "min"),
    "export_fp32_vs_weight_bytes": (1.1, "max"),
    "export_int8_vs_weight_bytes": (1.1, "max"),
    "export_int8_vs_ctranslate2_int8_files": (1.25, "max"),
    "resident_fp32_vs_files": (1.2, "max"),
    "resident_int8_vs_files": (1.2, "max"),
    "decode_step_fp32_vs_bound_b1": (1.2, "max"),
    "decode_step_int8_vs_bound_b1": (1.3, "max"),
    "adapter_cost_fp32_b8": (0.05, "max"),
    "adapter_cost_int8_b8": (0.05, "max"),
}


def goals(report: dict) -> dict[str, dict]:
    """{goal: {"value", "target", "met"}} plus the seed's runtime against our int8 export (reported only)."""
    p50 = {(r["head"], r["batch"], r["variant"]): r["p50_ms"] for r in report["results"]}
    values = {}
    for batch in (1, 8):
        peer = report.get("peers", {}).get("best", {}).get("ctranslate2_int8", {}).get(str(batch))
        ours = p50.get(("generate", batch, "ort_int8"))
        values[f"ort_int8_vs_ctranslate2_int8_b{batch}"] = peer["p50_ms"] / ours if peer and ours else None
    for precision in ("fp32", "int8"):
        size = report["export_sizes"].get(f"ort_{precision}", {}).get("generate")
        values[f"export_{precision}_vs_weight_bytes"] = size["files_mb"] / size["weights_mb"] if size else None
        memory = report.get("resident", {}).get(f"ort_{precision}")
        values[f"resident_{precision}_vs_files"] = memory["load_mb"] / memory["files_mb"] if memory else None
        step = next((r for r in report.get("decode_steps", [])
                     if r["variant"] == f"ort_{precision}" and r["batch"] == 1), None)
        values[f"decode_step_{precision}_vs_bound_b1"] = step["vs_bound"] if step else None
        plain = "ort_plain_backbone" if precision == "fp32" else "ort_int8_plain_backbone"
        adapted, floor = p50.get(("generate", 8, f"ort_{precision}")), p50.get(("generate", 8, plain))
        values[f"adapter_cost_{precision}_b8"] = adapted / floor - 1 if adapted and floor else None
    ct2 = report.get("peers", {}).get("sizes_mb", {}).get("ctranslate2_int8")
    int8 = report["export_sizes"].get("ort_int8", {}).get("generate")
    values["export_int8_vs_ctranslate2_int8_files"] = int8["files_mb"] / ct2 if int8 and ct2 else None
    out = {name: {"value": value, "target": TARGETS[name][0], "met": _met(value, *TARGETS[name])}
           for name, value in values.items()}
    # the seed's runtime at its best setting: in this process (the CLI's PASSIVE OpenMP) or in its own
    seeds = {v: p50[("generate", 1, v)] for v in ("torch_hypernet", "torch_eager_hypernet")
             if ("generate", 1, v) in p50}
    ours = p50.get(("generate", 1, "ort_int8"))
    best = min(seeds, key=seeds.__getitem__) if seeds else None
    out["torch_hypernet_vs_ort_int8_b1"] = {"value": seeds[best] / ours if best and ours else None, "target": None,
                                            "met": None, "torch_variant": best}
    return out


def _met(value: float | None, target: float, kind: str) -> bool | None:
    if value is None:
        return None
    return value <= target if kind == "max" else value >= target
