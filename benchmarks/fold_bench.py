"""Is the adapter's down projection worth folding into the sublayer's output projection?

    python benchmarks/fold_bench.py [--d 512] [--m 16] [--batch 8] [--seq 128] [--threads 2]

The exact fold: y = W a, z = D y + b  ->  [y; z] = [W; D W] a + [0; b], one matmul instead of two.
For self-attention's `o` (inner = d) both forms cost the same FLOPs; for the FFN's `wo` (inner = d_ff)
the fold costs m * d_ff more. Prints both timings side by side (median of repeats, milliseconds).
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def main() -> None:
    parser = argparse.ArgumentParser()
    for name, default in (("d", 512), ("m", 16), ("batch", 8), ("seq", 128), ("threads", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    d, m = args.d, args.m
    for sublayer, inner in (("self-attention o", d), ("feed-forward wo", 4 * d)):
        a = torch.randn(args.batch, args.seq, inner)  # [B, S, inner]
        w, down, bias = torch.randn(d, inner), torch.randn(m, d), torch.randn(m)
        fused_w, fused_b = torch.cat([w, down @ w]), torch.cat([torch.zeros(d), bias])  # [(d+m), inner]

        def separate(x):
            y = F.linear(x, w)
            return y, F.linear(y, down, bias)

        def folded(x):
            yz = F.linear(x, fused_w, fused_b)
            return yz[..., :d], yz[..., d:]

        torch.testing.assert_close(folded(a)[1], separate(a)[1], rtol=1e-3, atol=1e-2)
        timings = [(median_ms(separate, a), median_ms(folded, a)) for _ in range(2)]  # alternate: drift hits both
        s, f = (statistics.median(t[i] for t in timings) for i in (0, 1))
        print(f"{sublayer:18s} separate {s:7.3f} ms   folded {f:7.3f} ms   speed-up {s / f:5.2f}x")


if __name__ == "__main__":
    main()
