"""CPU benchmark: fusedmlp.linear_relu vs eager F.relu(F.linear(...)), same process.

    python benchmarks/bench.py                 # default shapes, fp32, all threads
    python benchmarks/bench.py --shapes 64x784x128,1024x1024x1024 --dtype float64

Each row times forward and forward+backward (x, weight and bias all require grad) with
torch.utils.benchmark and prints the median times and the speedup ratio eager/fused
(> 1 means fusedmlp is faster).
"""
import argparse
import platform
import sys

import torch
import torch.nn.functional as F
import torch.utils.benchmark as tb

import fusedmlp

DEFAULT_SHAPES = ["64x784x128", "256x784x128", "1024x784x128", "4096x784x128",
                  "64x128x10", "1024x1024x1024"]


def parse_shape(text):
    try:
        m, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not BATCHxINxOUT, e.g. 64x784x128")
    return m, k, n


def median_us(stmt, env, min_run_time):
    timer = tb.Timer(stmt=stmt, globals=env, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6


def bench_shape(m, k, n, dtype, min_run_time):
    torch.manual_seed(0)
    x = torch.randn(m, k, dtype=dtype, requires_grad=True)
    w = (torch.randn(n, k, dtype=dtype) / k ** 0.5).requires_grad_()
    b = torch.randn(n, dtype=dtype, requires_grad=True)
    g = torch.randn(m, n, dtype=dtype)
    env = {"F": F, "fm": fusedmlp, "x": x, "w": w, "b": b, "g": g, "torch": torch}
    eager_f = "F.relu(F.linear(x, w, b))"
    fused_f = "fm.linear_relu(x, w, b)"
    row = {"shape": f"{m}x{k}->{n}"}
    with torch.no_grad():
        row["fwd_eager_us"] = median_us(eager_f, env, min_run_time)
        row["fwd_fused_us"] = median_us(fused_f, env, min_run_time)
    grads = "torch.autograd.grad({}, (x, w, b), g)"
    row["fwdbwd_eager_us"] = median_us(grads.format(eager_f), env, min_run_time)
    row["fwdbwd_fused_us"] = median_us(grads.format(fused_f), env, min_run_time)
    row["fwd_ratio"] = row["fwd_eager_us"] / row["fwd_fused_us"]
    row["fwdbwd_ratio"] = row["fwdbwd_eager_us"] / row["fwdbwd_fused_us"]
    flop = 2.0 * m * k * n
    row["fwd_fused_gflops"] = flop / row["fwd_fused_us"] / 1e3
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help="comma-separated BATCHxINxOUT list")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--min-run-time", type=float, default=0.5,
                        help="seconds per measurement (torch.utils.benchmark)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [parse_shape(s) for s in args.shapes.split(",") if s]
    dtype = getattr(torch, args.dtype)
    info = fusedmlp.info()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, fusedmlp ISA {info['cpu_isa']}, {args.dtype}")
    header = (f"| {'shape':>16} | {'fwd eager us':>12} | {'fwd fused us':>12} | {'fwd ratio':>9} "
              f"| {'fused GF/s':>10} | {'f+b eager us':>12} | {'f+b fused us':>12} | {'f+b ratio':>9} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for m, k, n in shapes:
        r = bench_shape(m, k, n, dtype, args.min_run_time)
        print(f"| {r['shape']:>16} | {r['fwd_eager_us']:12.1f} | {r['fwd_fused_us']:12.1f} "
              f"| {r['fwd_ratio']:8.2f}x | {r['fwd_fused_gflops']:10.1f} "
              f"| {r['fwdbwd_eager_us']:12.1f} | {r['fwdbwd_fused_us']:12.1f} "
              f"| {r['fwdbwd_ratio']:8.2f}x |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
