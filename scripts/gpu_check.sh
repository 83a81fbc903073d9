#!/usr/bin/env bash
# GPU check of the TensorRT path: on a machine with an NVIDIA GPU and `pip install -e '.[gpu,test]'`.
# Takes the demo run (runs/demo, or trains it: ~2.5 min on CPU, faster with --device cuda), materializes
# rte, builds its engines in fp32 and bf16, verifies both against the hypernetwork model, runs the
# GPU-marked tests and `bench --tensorrt` on the bf16 engines, and prints a short table. Target: under 10 minutes. Nothing here trains if
# runs/demo exists. Usage: scripts/gpu_check.sh [RUN]   (RUN default runs/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
HX=${HX:-.venv/bin/hyperexport}
PY=${PY:-.venv/bin/python}
RUN=${1:-runs/demo}
OUT=${GPU_CHECK_DIR:-gpu-check}
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
$PY -c "import polygraphy, tensorrt, torch; print('tensorrt', tensorrt.__version__, '| polygraphy', polygraphy.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"

[ -f "$RUN/model.safetensors" ] || $HX train --device cuda --output "$RUN"
[ -d "$RUN/tasks/rte" ] || $HX materialize --run "$RUN" --task rte

for precision in fp32 bf16; do
  start=$(date +%s)
  $HX export --run "$RUN" --task rte --format tensorrt --precision "$precision" --batch 1:8:32 --seq 1:64:128 \
      --timing-cache "$OUT/timing.cache" --output "$OUT/rte-$precision" --overwrite
  echo "$precision build_s $(( $(date +%s) - start ))" >> "$OUT/times.txt"
  $HX verify "$OUT/rte-$precision" --max-examples 200 --json > "$OUT/verify-$precision.json" || true
done
$PY -m pytest -q -m "gpu or trt" tests/test_tensorrt.py tests/test_trt_loaders.py | tail -3
$HX bench --run "$RUN" --task rte --tensorrt "$OUT/rte-bf16" --batch 1,8 --seq 64 --rounds 5 --json > "$OUT/bench.json"

$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
times = dict(line.split()[0::2] for line in (out / "times.txt").read_text().splitlines())
print(f"{'precision':9} {'build s':>7} {'logits max|d|':>13} {'scores max|d|':>13} {'token mismatch':>14} {'metric':>8} passed")
for precision in ("fp32", "bf16"):
    report = json.loads((out / f"verify-{precision}.json").read_text())
    rows = {r["output"]: r for r in report["comparisons"] if r["runner"] == "tensorrt" and r["inputs"] == "evaluation"}
    metric = [m["values"].get("tensorrt") or {} for m in report["metrics"] if m["head"] == "classify"]
    metric = "/".join(f"{v:.1f}" for v in metric[0].values()) if metric and metric[0] else "-"
    cell = lambda k: f"{rows[k]['max_abs_diff']:.3g}" if k in rows else "-"
    print(f"{precision:9} {times.get(precision, '?'):>7} {cell('logits'):>13} {cell('scores'):>13} {cell('tokens'):>14} "
          f"{metric:>8} {report['passed']}")
bench = json.loads((out / "bench.json").read_text())
for row in bench["results"]:
    print(f"bench {row['head']:8} batch {row['batch']:>2} {row['variant']:18} p50 {row['p50_ms']:8.2f} ms")
print("tensorrt_bf16 speed-up over ONNX Runtime fp32 (CPU):", bench["ratios"].get("tensorrt_bf16_vs_ort_fp32"))
PY
