"""A small forward+backward workload for compute-sanitizer (memcheck, racecheck), and
the smoke test of benchmarks/gpu_check.sh:

    compute-sanitizer --tool memcheck python benchmarks/sanitize_cuda.py
    CUDA_LAUNCH_BLOCKING=1 python benchmarks/sanitize_cuda.py --smoke

Runs both ops and their backwards over every dtype, on odd, tile-aligned, strided, empty
and multi-chunk (grad_b) shapes, plus one problem big enough for the large GEMM tiles.
--smoke: one small and one big-tile problem per dtype and op, each case printed before
it runs (so that with CUDA_LAUNCH_BLOCKING=1 a trap or fault is pinned to its case).
--dry-run: list the cases, run nothing (no GPU needed).
Inputs are made on the CPU and the reference is computed there in float64, so under the
sanitizer almost every GPU kernel launched is one of ours. Exits non-zero on a wrong
result (the sanitizer reports memory errors and races itself).
"""
import argparse
import sys

import torch
import torch.nn.functional as F

import fusedmlp

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(37, 53, 29), (64, 128, 64), (515, 72, 40), (0, 8, 8), (5, 0, 3), (1, 1, 1),
          (1664, 40, 1408)]  # last: >= 132 tiles of 128 x 128, the big-tile kernels
SMOKE_SHAPES = [(37, 53, 29), (1664, 40, 1408)]


def tolerance(dtype):
    return {torch.float64: 1e-9, torch.float32: 1e-4}.get(dtype, 2e-2)


def check(name, actual, expected, dtype):
    actual = actual.detach().double().cpu()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    ok = err <= tolerance(dtype) * max(1.0, scale)
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs err {err:.2e} (scale {scale:.2e})")
    return ok


def run_case(op, shape, dtype, layout):
    rows, k, n = shape
    gen = torch.Generator().manual_seed(rows * 1000 + k * 10 + n)
    x64 = torch.randn(rows, k, dtype=torch.float64, generator=gen)
    w64 = torch.randn(n, k, dtype=torch.float64, generator=gen) / max(k, 1) ** 0.5
    b64 = torch.randn(n, dtype=torch.float64, generator=gen)
    g64 = torch.randn(rows, n, dtype=torch.float64, generator=gen)
    # Round to the dtype first, so the reference sees exactly the inputs the kernel sees.
    x64, w64, b64, g64 = (t.to(dtype).double() for t in (x64, w64, b64, g64))

    def to_cuda(t):
        return t.to(dtype).cuda()

    if layout == "transposed":  # x and weight column-major: the loaders' other direction
        x = to_cuda(x64.t().contiguous()).t()
        w = to_cuda(w64.t().contiguous()).t()
    else:
        x, w = to_cuda(x64), to_cuda(w64)
    b, g = to_cuda(b64), to_cuda(g64)
    for t in (x, w, b):
        t.requires_grad_()

    y = getattr(fusedmlp, op)(x, w, b)
    grads = torch.autograd.grad(y, (x, w, b), g)
    torch.cuda.synchronize()

    xr, wr, br = (t.clone().requires_grad_() for t in (x64, w64, b64))
    pre = F.linear(xr, wr, br)
    yr, masked = pre, pre
    if op == "linear_relu":
        yr = F.relu(pre)
        # The backward's ReLU mask is the kernel's own y (a pre-activation within rounding
        # of 0 may have either sign there); y itself is checked against yr.
        masked = torch.where(y.detach().double().cpu() <= 0, torch.zeros_like(pre), pre)
    grads_ref = torch.autograd.grad(masked, (xr, wr, br), g64)
    label = f"{op} {dtype} {rows}x{k}->{n} {layout}"
    ok = check(label + " y", y, yr.detach(), dtype)
    for name, got, want in zip(("grad_x", "grad_w", "grad_b"), grads, grads_ref):
        ok &= check(f"{label} {name}", got, want, dtype)
    return ok


def cases(smoke):
    for dtype in DTYPES:
        for shape in SMOKE_SHAPES if smoke else SHAPES:
            for op in ("linear_relu", "linear"):
                yield op, shape, dtype, "contiguous"
        if not smoke:
            yield "linear_relu", (37, 53, 29), dtype, "transposed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the short case list")
    parser.add_argument("--dry-run", action="store_true", help="list the cases only")
    args = parser.parse_args()
    if args.dry_run:
        for case in cases(args.smoke):
            print("would run", *case)
        return
    if not torch.cuda.is_available() or not fusedmlp.info()["cuda_built"]:
        sys.exit("sanitize_cuda.py needs a GPU and a fusedmlp build with CUDA kernels")
    ok = True
    for op, shape, dtype, layout in cases(args.smoke):
        if args.smoke:
            print(f"running {op} {dtype} {shape} {layout}", flush=True)
        ok &= run_case(op, shape, dtype, layout)
    print("ALL OK" if ok else "SOME RESULTS WRONG")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
