"""Is the adapter's down projection worth folding into the sublayer's output projection?

    python benchmarks/fold_bench.py [--runtime torch|onnxruntime] [--d 512] [--m 16] [--batch 8] [--seq 128]
                                    [--threads 2]

The exact fold: y = W a, z = D y + b  ->  [y; z] = [W; D W] a + [0; b], one matmul instead of two.
For self-attention's `o` (inner = d) both forms cost the same FLOPs; for the FFN's `wo` (inner = d_ff)
the fold costs m * d_ff more. Prints both timings side by side (median of repeats, milliseconds).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def median_ms(fn, a: torch.Tensor, repeats: int = 7, calls: int = 50) -> float:
    for _ in range(5):
        fn(a)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn(a)
        samples.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(samples)


class Projection(torch.nn.Module):
    """One of the two forms as a module, for ONNX export: a -> (y, z)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, a: torch.Tensor):
        return self.fn(a)


def onnxruntime_callable(fn, a: torch.Tensor, threads: int, folder: Path):
    """`fn` exported to ONNX and wrapped as a callable over an ONNX Runtime session."""
    import onnxruntime as ort

    path = folder / f"{fn.__name__}.onnx"
    torch.onnx.export(Projection(fn), (a,), str(path), input_names=["a"], output_names=["y", "z"], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"a": x})


def both_forms(w: torch.Tensor, down: torch.Tensor, bias: torch.Tensor):
    """(separate, folded): a -> (y, z) as two matmuls, and as one over the stacked [W; D W] weight."""
    d = w.shape[0]
    fused_w, fused_b = torch.cat([w, down @ w]), torch.cat([torch.zeros(d), bias])  # [(d+m), inner]

    def separate(x):
        y = F.linear(x, w)
        return y, F.linear(y, down, bias)

    def folded(x):
        yz = F.linear(x, fused_w, fused_b)
        return yz[..., :d], yz[..., d:]

    return separate, folded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch")
    for name, default in (("d", 512), ("m", 16), ("batch", 8), ("seq", 128), ("threads", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    d, m = args.d, args.m
    for sublayer, inner in (("self-attention o", d), ("feed-forward wo", 4 * d)):
        a = torch.randn(args.batch, args.seq, inner)  # [B, S, inner]
        separate, folded = both_forms(torch.randn(d, inner), torch.randn(m, d), torch.randn(m))
        torch.testing.assert_close(folded(a)[1], separate(a)[1], rtol=1e-3, atol=1e-2)
        candidates, x = (separate, folded), a
        if args.runtime == "onnxruntime":
            folder = Path(tempfile.mkdtemp())
            candidates, x = [onnxruntime_callable(fn, a, args.threads, folder) for fn in candidates], a.numpy()
        timings = [tuple(median_ms(fn, x) for fn in candidates) for _ in range(3)]  # alternate: drift hits both
        s, f = (statistics.median(t[i] for t in timings) for i in (0, 1))
        print(f"{args.runtime:11s} {sublayer:18s} separate {s:7.3f} ms   folded {f:7.3f} ms   speed-up {s / f:5.2f}x")


if __name__ == "__main__":
    main()
