"""GPU benchmark: fusedmlp.linear_relu vs eager F.relu(F.linear) (cuBLAS),
torch._addmm_activation (cuBLASLt's fused bias+ReLU epilogue) and, with --compile,
torch.compile, in one process, timed with CUDA events.

    python benchmarks/bench_gpu.py                      # all shapes, fp32/fp16/bf16
    python benchmarks/bench_gpu.py --quick              # fewer shapes, shorter timing
    python benchmarks/bench_gpu.py --json out.json --dtypes bfloat16 --shapes 64x784x128
    python benchmarks/bench_gpu.py --cases lease        # gpu_check.sh's short list

Forward runs under no_grad; forward+backward computes the grads of x, weight and bias.
TF32 is off, so float32 means float32 everywhere. TFLOP/s counts 2*M*K*N per GEMM
(forward 1 GEMM, forward+backward 3). Ratios are baseline time / ours (> 1: ours faster).
Results are printed as a markdown table row by row (and written to --json and --markdown
after each row), so a run cut short still leaves what it measured. --dry-run (no GPU
needed) prints the rows it would time and writes the files with no rows.
"""
import argparse
import json
import platform
import sys
import time

import torch
import torch.nn.functional as F

import fusedmlp

SHAPES = ["64x784x128", "4096x784x128", "65536x128x128", "8192x4096x4096", "8192x8192x8192"]
QUICK_SHAPES = ["64x784x128", "4096x784x128", "65536x128x128", "8192x4096x4096"]
DTYPES = ["float32", "float16", "bfloat16"]
# `--cases lease`: the rows that fit a short GPU lease (benchmarks/gpu_check.sh): a
# memory-bound layer in both kernel families, and one large GEMM per family.
LEASE_CASES = "65536x128x128:float32,65536x128x128:bfloat16,4096x4096x4096:float32," \
              "8192x8192x8192:bfloat16"
BASE_IMPLS = ["fusedmlp", "eager", "addmm_act"]


def parse_shape(text):
    try:
        m, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not MxKxN, e.g. 64x784x128")
    return m, k, n


def eager(x, w, b):
    return F.relu(F.linear(x, w, b))


def addmm_act(x, w, b):
    return torch._addmm_activation(b, x, w.t())


def fused(x, w, b):
    return fusedmlp.linear_relu(x, w, b)


def median_ms(fn, min_time):
    """Median over 5 samples of the mean time of n back-to-back calls, n sized so that a
    sample takes about min_time / 5 (CUDA events, on the current stream)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    once = max(start.elapsed_time(end), 1e-3)
    n = max(1, min(1000, int(min_time * 1e3 / 5 / once)))
    samples = []
    for _ in range(5):
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / n)
    return sorted(samples)[2]


def parse_cases(text):
    """'MxKxN:dtype,...' (or 'lease') -> [((m, k, n), dtype name)]."""
    cases = []
    for item in (LEASE_CASES if text == "lease" else text).split(","):
        shape, _, dtype = item.partition(":")
        if dtype not in DTYPES + ["float64"]:
            raise SystemExit(f"case {item!r} is not MxKxN:dtype (dtype one of {DTYPES})")
        cases.append((parse_shape(shape), dtype))
    return cases


def bench_row(m, k, n, dtype, mode, impls, min_time):
    torch.manual_seed(0)
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    w = torch.randn(n, k, dtype=dtype, device="cuda") / k ** 0.5
    b = torch.randn(n, dtype=dtype, device="cuda")
    g = torch.randn(m, n, dtype=dtype, device="cuda")
    row = {"dtype": str(dtype).replace("torch.", ""), "shape": f"{m}x{k}->{n}", "mode": mode}
    with torch.no_grad():  # how far ours is from cuBLAS (a sanity check, not a test)
        ref = eager(x, w, b).float()
        row["max_rel_err_vs_eager"] = ((fused(x, w, b).float() - ref).abs().max()
                                       / ref.abs().max().clamp_min(1e-30)).item()
    if mode == "fwd+bwd":
        for t in (x, w, b):
            t.requires_grad_()
    for name, fn in impls.items():
        if mode == "fwd":
            def call(fn=fn):
                with torch.no_grad():
                    fn(x, w, b)
        else:
            def call(fn=fn):
                torch.autograd.grad(fn(x, w, b), (x, w, b), g)
        try:
            row[f"{name}_ms"] = median_ms(call, min_time)
        except Exception as e:  # a baseline that cannot run here: report, keep going
            row[f"{name}_ms"] = None
            first_line = (str(e).splitlines() or [""])[0]
            row[f"{name}_error"] = f"{type(e).__name__}: {first_line[:200]}"
    flop = 2.0 * m * k * n * (1 if mode == "fwd" else 3)
    for name in impls:
        t = row[f"{name}_ms"]
        row[f"{name}_tflops"] = flop / (t * 1e-3) / 1e12 if t else None
    ours = row["fusedmlp_ms"]
    for name in list(impls)[1:]:
        t = row[f"{name}_ms"]
        row[f"ratio_vs_{name}"] = t / ours if (t and ours) else None
    return row


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def table_header(impls):
    cells = ["dtype", "shape", "mode", "ours ms", "ours TFLOP/s"]
    cells += [f"{name} TFLOP/s" for name in impls[1:]]
    cells += [f"{name}/ours" for name in impls[1:]] + ["max rel err"]
    return "| " + " | ".join(cells) + " |\n|" + "---|" * len(cells)


def table_line(r, impls):
    cells = [r["dtype"], r["shape"], r["mode"], fmt(r["fusedmlp_ms"], ".3f"),
             fmt(r["fusedmlp_tflops"], ".1f")]
    cells += [fmt(r[f"{name}_tflops"], ".1f") for name in impls[1:]]
    cells += [fmt(r[f"ratio_vs_{name}"], ".2f") for name in impls[1:]]
    cells += [fmt(r["max_rel_err_vs_eager"], ".1e")]
    return "| " + " | ".join(cells) + " |"


def write_outputs(args, meta, impls, rows):
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(meta["title"] + "\n\n" + table_header(impls) + "\n")
            f.writelines(table_line(r, impls) + "\n" for r in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=None, help="comma-separated MxKxN list")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--modes", default="fwd,fwd+bwd")
    parser.add_argument("--quick", action="store_true",
                        help="skip 8192^3 and time each case for less long")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds of timed calls per measurement (default 0.25, quick 0.1)")
    parser.add_argument("--cases", default=None,
                        help="MxKxN:dtype list timed instead of --shapes x --dtypes; "
                             "'lease' = " + LEASE_CASES)
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile (a fresh inductor compile per row)")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    parser.add_argument("--markdown", default=None, help="write the table to this file")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the rows that would be timed, write empty outputs")
    args = parser.parse_args(argv)
    modes = [mode for mode in args.modes.split(",") if mode]
    if any(mode not in ("fwd", "fwd+bwd") for mode in modes):
        sys.exit(f"--modes: fwd and/or fwd+bwd, got {args.modes!r}")
    if args.cases:
        cases = parse_cases(args.cases)
    else:
        shapes = [parse_shape(s) for s in (args.shapes or ",".join(
            QUICK_SHAPES if args.quick else SHAPES)).split(",") if s]
        # Shapes outermost, smallest first: a run cut short still covers every dtype.
        cases = [(shape, d) for shape in shapes for d in args.dtypes.split(",") if d]
    impls = BASE_IMPLS + (["compile"] if args.compile else [])
    if args.dry_run:
        meta = {"title": "# dry run: nothing timed", "dry_run": True}
        for (m, k, n), dtype in cases:
            for mode in modes:
                print(f"would time {dtype} {m}x{k}->{n} {mode}: {', '.join(impls)}")
        write_outputs(args, meta, impls, [])
        return
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # One compiled graph per shape, dtype and mode: allow them all (the knob's name varies).
    for knob in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 256)
    min_time = args.min_time or (0.1 if args.quick else 0.25)
    fns = {"fusedmlp": fused, "eager": eager, "addmm_act": addmm_act}
    if args.compile:
        fns["compile"] = torch.compile(eager, dynamic=False)

    info = fusedmlp.info()
    props = torch.cuda.get_device_properties(0)
    meta = {"gpu": props.name, "sm_count": props.multi_processor_count,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "fusedmlp": info["fusedmlp"], "cuda_built": info["cuda_built"],
            "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    meta["title"] = (f"# {meta['gpu']} ({meta['sm_count']} SMs), torch {meta['torch']} "
                     f"(CUDA {meta['cuda']}), fusedmlp {meta['fusedmlp']}, TF32 off, "
                     f"{meta['date']}")
    print(meta["title"])
    print(table_header(impls))
    rows = []
    for (m, k, n), dtype in cases:
        for mode in modes:
            row = bench_row(m, k, n, getattr(torch, dtype), mode, fns, min_time)
            rows.append(row)
            print(table_line(row, impls))
            for name in impls:
                if row.get(f"{name}_error"):
                    print(f"<!-- {name}: {row[f'{name}_error']} -->")
            sys.stdout.flush()
            write_outputs(args, meta, impls, rows)


if __name__ == "__main__":
    main()
