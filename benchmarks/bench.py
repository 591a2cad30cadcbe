"""CPU benchmark of fusedmlp against what users would otherwise run, in one process.

    python benchmarks/bench.py                       # everything, default shapes, fp32
    python benchmarks/bench.py --shapes 64x784x128 --no-compile --json out.json

Three tables, each timed with torch.utils.benchmark (median of blocked_autorange) and
given as speedup ratios baseline_time / fused_time (> 1: fusedmlp is faster):
  1. GEMM core: fusedmlp.linear (no bias) vs torch.mm(x, w.t()) at 1024^3 and 2048^3.
  2. Layers: fused Linear+ReLU vs eager F.relu(F.linear), torch.compile of it, and
     oneDNN's fused torch.ops.mkldnn._linear_pointwise(..., "relu") (forward only: it has
     no autograd), forward (no grad) and forward+backward (x, weight, bias all need grads).
  3. The seed's training step: 784->128->ReLU->10, CrossEntropyLoss, SGD(lr=0.01), batch 64,
     eager vs fusedmlp.fuse(model, plain_linear=True) (fc1+ReLU on FusedLinearReLU, fc2 on
     FusedLinear, one by one: fuse() runs chains of 3+ layers as one op) vs fuse(model)
     (fc2 stays nn.Linear) vs torch.compile(model).
  4. The same step at batch 1 and 64 with the network as fusedmlp.FusedMLP: the whole-MLP
     op (one op and one autograd node for both layers) vs its layers one by one vs eager.

"ceiling" columns: the largest speedup over eager that any implementation could reach on
this machine: eager time / (overhead floor + GEMM FLOPs / the FMA peak). The FMA peak is
measured at start-up (fusedmlp._C.fma_peak_gflops: 12 independent FMA chains per thread,
nothing loaded, on the active ISA and all threads). The overhead floor of a layer is the
cheapest graph with the layer's output shape (torch.add of two leaves, timed the same way:
forward, and forward + torch.autograd.grad); that of
the training step is the step with the model's forward and backward free (floor_step:
zero_grad, the loss and its backward on ready logits, gradients handed over, the SGD
step). A target above its ceiling would need more multiply-adds per second than the cores
can issue, or Python and the autograd engine to cost less than their own floor. At batch 1
the step's table also splits what the fused model adds to the floor ("model us") into its
fixed cost ("fixed us": the same step and floor at 16-16-10, where the GEMMs are free) and
the rest; "free-GEMM ceiling" is eager / (floor + fixed): the most that faster kernels alone
could give the fused model. The
ceiling counts FLOPs, not memory traffic: where the weights stream from L2 and little is
computed per byte (batch 1-4 at 784->128: W and grad_w are 400 KiB each), the true bound
is lower than printed (benchmarks/NOTES.md measures it for 1x784->128).

--device cuda runs benchmarks/bench_gpu.py (the GPU tables) with the remaining options.
"""
import argparse
import copy
import json
import platform
import sys
import time

import torch
import torch.nn.functional as F
import torch.utils.benchmark as tb
from torch import nn

import fusedmlp
from fusedmlp.train import ClassicNet

LAYER_SHAPES = ["1x784x128", "4x784x128", "16x784x128", "64x784x128", "256x784x128",
                "1024x784x128", "4096x784x128", "1x128x10", "4x128x10", "16x128x10",
                "64x128x10", "1024x1024x1024"]
GEMM_SIZES = [1024, 2048]


def parse_shape(text):
    try:
        m, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not BATCHxINxOUT, e.g. 64x784x128")
    return m, k, n


# "median" of torch.utils.benchmark's blocks, or "min" (--stat min): the fastest single
# call, which other processes on a busy shared host slow down least.
STAT = "median"


def median_us(fn, min_run_time):
    if STAT == "min":
        best, deadline = float("inf"), time.perf_counter() + min_run_time
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best * 1e6
    timer = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6


ROUNDS = 3  # interleaved turns per measurement (--rounds)


def interleaved_us(fns, min_run_time, rounds=None):
    """{name: us}: each callable timed in `rounds` interleaved turns (a, b, a, b, ...), the
    fastest turn's median kept. The host is shared: its speed drifts over seconds, and
    timing a baseline and ours back to back once lets that drift decide the ratio."""
    rounds = rounds or ROUNDS
    best = {name: float("inf") for name in fns}
    for fn in fns.values():  # warm-up (torch.compile compiles here)
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], median_us(fn, min_run_time / rounds))
    return best


def compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, dynamic=False)


def bench_gemm(size, dtype, min_run_time):
    x = torch.randn(size, size, dtype=dtype)
    w = torch.randn(size, size, dtype=dtype)
    with torch.no_grad():
        t = interleaved_us({"mm": lambda: torch.mm(x, w.t()),
                            "fused": lambda: fusedmlp.linear(x, w)}, min_run_time)
    mm_us, ours_us = t["mm"], t["fused"]
    flop = 2.0 * size ** 3
    return {"size": size, "mm_us": mm_us, "fused_us": ours_us,
            "mm_gflops": flop / mm_us / 1e3, "fused_gflops": flop / ours_us / 1e3,
            "ratio": mm_us / ours_us}


def add_peak_shares(results):
    for row in results["gemm"]:
        for who in ("mm", "fused"):
            row[f"{who}_peak_share"] = row[f"{who}_gflops"] / results["fma_peak_gflops"]


def eager_linear_relu(x, w, b):
    return F.relu(F.linear(x, w, b))


# act(F.linear(...)) as a user writes it in eager PyTorch, per fusedmlp activation name.
EAGER_ACTS = {
    "identity": lambda z: z,
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu_squared": lambda z: F.relu(z).square(),
}


def layer_impls(activation):
    """(fused, eager) callables (x, w, b) for one activation."""
    if activation == "relu":  # the ReLU entry point itself, as before
        return fusedmlp.linear_relu, eager_linear_relu
    act = EAGER_ACTS[activation]
    return (lambda x, w, b: fusedmlp.linear(x, w, b, activation=activation),
            lambda x, w, b: act(F.linear(x, w, b)))


def bench_layer(m, k, n, dtype, min_run_time, with_compile, activation="relu"):
    torch.manual_seed(0)
    x = torch.randn(m, k, dtype=dtype, requires_grad=True)
    w = (torch.randn(n, k, dtype=dtype) / k ** 0.5).requires_grad_()
    b = torch.randn(n, dtype=dtype, requires_grad=True)
    g = torch.randn(m, n, dtype=dtype)
    fused, eager = layer_impls(activation)
    impls = {"fused": fused, "eager": eager}
    if with_compile:
        impls["compile"] = compiled(eager)
    row = {"shape": f"{m}x{k}->{n}", "activation": activation}
    forward = {name: (lambda fn=fn: fn(x, w, b)) for name, fn in impls.items()}
    # The overhead floor: the cheapest graph found with an output of this shape, one add
    # of two leaves (its backward hands grad_y to both, no arithmetic). A layer called from
    # Python through torch's dispatcher and autograd engine, whose backward returns three
    # gradients, hardly costs less (measured: one view of one leaf is ~2 us cheaper; an
    # addcmul of three, whose backward does arithmetic, ~10 us dearer).
    za, zb = (torch.randn(m, n, dtype=dtype, requires_grad=True) for _ in range(2))
    forward["floor"] = lambda: torch.add(za, zb)
    if (torch.backends.mkldnn.is_available() and dtype == torch.float32
            and activation == "relu"):
        onednn = torch.ops.mkldnn._linear_pointwise
        forward["onednn"] = lambda: onednn(x, w, b, "relu", [], "")
    with torch.no_grad():
        for name, t in interleaved_us(forward, min_run_time).items():
            row[f"fwd_{name}_us"] = t
    both = {name: (lambda fn=fn: torch.autograd.grad(fn(x, w, b), (x, w, b), g))
            for name, fn in impls.items()}
    both["floor"] = lambda: torch.autograd.grad(torch.add(za, zb), (za, zb), g)
    for name, t in interleaved_us(both, min_run_time).items():
        row[f"fwdbwd_{name}_us"] = t
    for kind in ("fwd", "fwdbwd"):
        for base in ("eager", "compile", "onednn"):
            if f"{kind}_{base}_us" in row:
                row[f"{kind}_vs_{base}"] = row[f"{kind}_{base}_us"] / row[f"{kind}_fused_us"]
    row["fwd_fused_gflops"] = 2.0 * m * k * n / row["fwd_fused_us"] / 1e3
    row["fwd_flop"], row["fwdbwd_flop"] = 2.0 * m * k * n, 6.0 * m * k * n
    return row


def add_ceilings(results):
    """The most any implementation could gain over eager here: eager time / (the overhead
    floor + FLOPs at the FMA peak)."""
    peak = results["fma_peak_gflops"]
    for row in results["layers"]:
        for kind in ("fwd", "fwdbwd"):
            row[f"{kind}_ceiling"] = row[f"{kind}_eager_us"] / (
                row[f"{kind}_floor_us"] + row[f"{kind}_flop"] / peak / 1e3)
    for row in results["train"]:
        # A step cannot beat its GEMMs at the FMA peak plus the work that is not the
        # model's: zero_grad, the loss, the engine's start, the optimizer (floor_step).
        row["ceiling"] = row["eager_us"] / (row["gemm_flop"] / peak / 1e3 + row["floor_us"])
        row["ceiling_batch1"] = row["eager_batch1_us"] / (
            row["gemm_flop"] / 64 / peak / 1e3 + row["floor_batch1_us"])


def training_step(model, rows, loss_fn=nn.CrossEntropyLoss(), image_side=28):
    """The seed's training step on `model` and a fixed random batch of `rows` images:
    zero_grad, forward, CrossEntropyLoss, backward, SGD(lr=0.01) step."""
    images = torch.randn(rows, 1, image_side, image_side)
    labels = torch.randint(0, 10, (rows,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        opt.step()
    return step


def floor_step(model, rows, loss_fn=nn.CrossEntropyLoss()):
    """The seed's step with the model's forward and backward free: zero_grad, the loss on
    ready logits and its backward (the engine's start), finished gradients handed to the
    parameters, and the SGD step over the same parameters. No implementation of the model
    makes the step faster than this."""
    params = list(model.parameters())
    grads = [torch.randn_like(p) * 1e-3 for p in params]
    logits = torch.randn(rows, 10, requires_grad=True)
    labels = torch.randint(0, 10, (rows,))
    opt = torch.optim.SGD(params, lr=0.01)

    def step():
        opt.zero_grad()
        loss_fn(logits, labels).backward()
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
    return step


class SeedShapedNet(ClassicNet):
    """The seed's network (flatten, Linear, ReLU, Linear to 10 classes) on side x side
    images: at 4 x 4 with 16 hidden units its GEMMs cost next to nothing, so a step with it
    measures the model's fixed cost (Python, dispatch, autograd nodes, allocations)."""

    def __init__(self, side, hidden):
        nn.Module.__init__(self)
        self.fc1 = nn.Linear(side * side, hidden)
        self.fc2 = nn.Linear(hidden, 10)


def bench_training_step(batch, min_run_time, with_compile):
    torch.manual_seed(0)

    def make_step(model, rows=batch):
        return training_step(model, rows)

    plain = ClassicNet()
    # What a user runs: the same model with fc1+ReLU fused, fc2 on our kernels too (or not).
    # fuse()'s default runs the 2-layer chain as one whole-MLP op; fc1-only keeps fc2 an
    # nn.Linear (mlp=False: no chain).
    fused = fusedmlp.fuse(plain, plain_linear=True)
    fused_fc1 = fusedmlp.fuse(plain, mlp=False)
    # GEMM work of a step: fc1 forward and grad_w (the input needs no grad), fc2 forward,
    # grad_x and grad_w.
    steps = {"eager": make_step(plain), "fused": make_step(fused),
             "fused_fc1": make_step(fused_fc1),
             # The same steps on one sample: GEMMs ~1/64 of the work, the rest is not.
             "eager_batch1": make_step(copy.deepcopy(plain), rows=1),
             "fused_batch1": make_step(copy.deepcopy(fused), rows=1),
             "floor": floor_step(copy.deepcopy(plain), batch),
             "floor_batch1": floor_step(copy.deepcopy(plain), 1),
             # The fused model's fixed cost at batch 1: its step at 16-16-10 over that
             # step's floor.
             "fused_batch1_tiny": training_step(
                 fusedmlp.fuse(SeedShapedNet(4, 16), plain_linear=True), 1, image_side=4),
             "floor_batch1_tiny": floor_step(SeedShapedNet(4, 16), 1)}
    if with_compile:
        torch._dynamo.reset()
        steps["compile"] = make_step(torch.compile(ClassicNet()))
    row = {"batch": batch, "gemm_flop": 2.0 * batch * (784 * 128 * 2 + 128 * 10 * 3)}
    for name, t in interleaved_us(steps, min_run_time).items():
        row[f"{name}_us"] = t
    if with_compile:
        row["vs_compile"] = row["compile_us"] / row["fused_us"]
    row["vs_eager"] = row["eager_us"] / row["fused_us"]
    row["fc1_vs_eager"] = row["eager_us"] / row["fused_fc1_us"]
    row["vs_eager_batch1"] = row["eager_batch1_us"] / row["fused_batch1_us"]
    # What the model adds to the floor at batch 1, in all and without its GEMMs; with the
    # GEMMs free, the step could at best run at eager / (floor + that fixed cost).
    row["model_batch1_us"] = row["fused_batch1_us"] - row["floor_batch1_us"]
    row["model_fixed_batch1_us"] = row["fused_batch1_tiny_us"] - row["floor_batch1_tiny_us"]
    row["free_gemm_ceiling_batch1"] = row["eager_batch1_us"] / (
        row["floor_batch1_us"] + row["model_fixed_batch1_us"])
    return row


class PerLayerFusedMLP(fusedmlp.FusedMLP):
    """FusedMLP that always runs its layers one by one (nn.Sequential's forward), as it does
    when a slot holds another module: the per-layer baseline of the whole-MLP op."""

    def _plain_chain(self):
        return None


class FlattenThenMLP(nn.Module):
    """The seed's network as flatten + an MLP module."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        return self.mlp(torch.flatten(x, 1))


def bench_mlp_op_step(batch, min_run_time):
    """The seed's training step with FusedMLP: whole-MLP op vs per layer vs eager."""
    torch.manual_seed(0)
    plain = ClassicNet()
    seq = nn.Sequential(plain.fc1, nn.ReLU(), plain.fc2)
    mlp = fusedmlp.FusedMLP.from_sequential(seq)
    per_layer = PerLayerFusedMLP.from_sequential(seq)

    def make_step(model):  # each on its own copy of the weights
        return training_step(copy.deepcopy(model), batch)

    steps = {"eager": make_step(plain), "layers": make_step(FlattenThenMLP(per_layer)),
             "op": make_step(FlattenThenMLP(mlp))}
    row = {"batch": batch}
    for name, t in interleaved_us(steps, min_run_time).items():
        row[f"{name}_us"] = t
    row["op_vs_layers"] = row["layers_us"] / row["op_us"]
    row["op_vs_eager"] = row["eager_us"] / row["op_us"]
    row["layers_vs_eager"] = row["eager_us"] / row["layers_us"]
    return row


def print_table(title, columns, rows):
    print(f"\n{title}\n")
    print("| " + " | ".join(label for label, _ in columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for row in rows:
        cells = []
        for _, fmt in columns:
            try:
                cells.append(fmt(row))
            except KeyError:
                cells.append("-")
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


def us(key):
    return lambda r: f"{r[key]:.1f}"


def ratio(key):
    return lambda r: f"{r[key]:.2f}x"


def plot(path, layers):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = [(f"{kind} vs {base}", f"{kind}_vs_{base}")
              for kind in ("fwd", "fwdbwd") for base in ("eager", "compile", "onednn")
              if any(f"{kind}_vs_{base}" in r for r in layers)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(series), 1)
    for i, (label, key) in enumerate(series):
        values = [r.get(key, 0.0) for r in layers]
        ax.bar([j + i * width for j in range(len(layers))], values, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(layers))])
    ax.set_xticklabels([r["shape"] for r in layers], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("speedup of fusedmlp (x)")
    ax.set_title("fusedmlp Linear+ReLU vs baselines (CPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    global ROUNDS
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--device" in argv:  # the GPU benchmark has its own script and options
        i = argv.index("--device")
        device = argv[i + 1] if i + 1 < len(argv) else ""
        if device not in ("cpu", "cuda"):
            raise SystemExit(f"--device must be cpu or cuda, got {device!r}")
        del argv[i:i + 2]
        if device == "cuda":
            import bench_gpu  # benchmarks/bench_gpu.py, next to this file
            return bench_gpu.main(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(LAYER_SHAPES),
                        help="comma-separated BATCHxINxOUT list for the layer table")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--min-run-time", type=float, default=0.5,
                        help="seconds per measurement (torch.utils.benchmark)")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="interleaved turns per measurement, the best kept (more on a busy "
                             "host: a turn whose threads were descheduled is dropped)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile baselines")
    parser.add_argument("--skip", default="", help="comma list of tables to skip: gemm,layers,train,mlp")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="PNG bar chart of the layer ratios")
    parser.add_argument("--activation", default="relu",
                        help="comma list of activations for the layer table, or 'all' "
                             f"({', '.join(EAGER_ACTS)}); the baselines are act(F.linear(...))")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="per-measurement statistic: the median block time, or the fastest "
                             "single call (steadier when other processes share the host)")
    args = parser.parse_args(argv)
    global STAT
    STAT = args.stat
    activations = list(EAGER_ACTS) if args.activation == "all" else args.activation.split(",")
    for activation in activations:
        if activation not in EAGER_ACTS:
            parser.error(f"--activation: unknown {activation!r}; expected 'all' or some of "
                         f"{', '.join(EAGER_ACTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    ROUNDS = max(1, args.rounds)
    shapes = [parse_shape(s) for s in args.shapes.split(",") if s]
    dtype = getattr(torch, args.dtype)
    skip = set(filter(None, args.skip.split(",")))
    with_compile = not args.no_compile
    info = fusedmlp.info()
    # The CPU model, its caches and the kernel ISA: every results table must name them.
    from fusedmlp._info import cpu_description
    header = (f"{platform.machine()} {cpu_description()}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {args.dtype}")
    # float64 vectors hold half the lanes of float32 ones, at the same FMA rate.
    peak = fusedmlp._C.fma_peak_gflops() / (2 if dtype == torch.float64 else 1)
    print(f"# {header}; {args.dtype} FMA peak {peak:.1f} GF/s")
    results = {"machine": header, "cpu": info["cpu"], "cpu_caches": info["cpu_caches"],
               "cpu_isa": info["cpu_isa"], "fma_peak_gflops": peak, "gemm": [], "layers": [], "train": []}

    if "gemm" not in skip:
        results["gemm"] = [bench_gemm(s, dtype, args.min_run_time) for s in GEMM_SIZES]
        add_peak_shares(results)
        print_table("GEMM core (fusedmlp.linear, no bias, vs torch.mm; % of the FMA peak)",
                    [("size", lambda r: f"{r['size']}^3"), ("torch.mm us", us("mm_us")),
                     ("fused us", us("fused_us")), ("torch.mm GF/s", lambda r: f"{r['mm_gflops']:.1f}"),
                     ("fused GF/s", lambda r: f"{r['fused_gflops']:.1f}"),
                     ("torch.mm % peak", lambda r: f"{100 * r['mm_peak_share']:.0f}%"),
                     ("fused % peak", lambda r: f"{100 * r['fused_peak_share']:.0f}%"),
                     ("ratio", ratio("ratio"))],
                    results["gemm"])
    if "layers" not in skip:
        for activation in activations:
            for m, k, n in shapes:
                results["layers"].append(bench_layer(m, k, n, dtype, args.min_run_time,
                                                     with_compile, activation))
        add_ceilings(results)
        title = "Linear+ReLU" if activations == ["relu"] else "Linear+activation"
        print_table(f"{title} layer: times (us) and speedups of fused over each baseline "
                    "(eager: act(F.linear(...)))",
                    [("activation", lambda r: r["activation"]),
                     ("shape", lambda r: r["shape"]), ("fwd fused", us("fwd_fused_us")),
                     ("fwd eager", us("fwd_eager_us")), ("vs eager", ratio("fwd_vs_eager")),
                     ("vs compile", ratio("fwd_vs_compile")), ("vs oneDNN", ratio("fwd_vs_onednn")),
                     ("fwd ceiling", ratio("fwd_ceiling")),
                     ("f+b fused", us("fwdbwd_fused_us")), ("f+b eager", us("fwdbwd_eager_us")),
                     ("vs eager", ratio("fwdbwd_vs_eager")), ("vs compile", ratio("fwdbwd_vs_compile")),
                     ("f+b ceiling", ratio("fwdbwd_ceiling"))],
                    results["layers"])
    if "train" not in skip and dtype == torch.float32:
        results["train"] = [bench_training_step(64, args.min_run_time, with_compile)]
        add_ceilings(results)
        print_table("Seed training step (784-128-10, CE, SGD, batch 64; fused: fuse(model, "
                    "plain_linear=True), fc1+ReLU and fc2 as one whole-MLP op; fc1-only: "
                    "fuse(model, mlp=False), fc2 stays nn.Linear)",
                    [("batch", lambda r: str(r["batch"])), ("eager us", us("eager_us")),
                     ("compile us", us("compile_us")), ("fused us", us("fused_us")),
                     ("fc1-only us", us("fused_fc1_us")),
                     ("eager us, batch 1", us("eager_batch1_us")),
                     ("fused us, batch 1", us("fused_batch1_us")),
                     ("vs eager", ratio("vs_eager")), ("vs compile", ratio("vs_compile")),
                     ("fc1-only vs eager", ratio("fc1_vs_eager")),
                     ("ceiling", ratio("ceiling")),
                     ("floor us, batch 1", us("floor_batch1_us")),
                     ("vs eager, batch 1", ratio("vs_eager_batch1")),
                     ("ceiling, batch 1", ratio("ceiling_batch1")),
                     ("model us, batch 1", us("model_batch1_us")),
                     ("fixed us, batch 1", us("model_fixed_batch1_us")),
                     ("free-GEMM ceiling, batch 1", ratio("free_gemm_ceiling_batch1"))],
                    results["train"])
    if "mlp" not in skip and dtype == torch.float32:
        results["mlp"] = [bench_mlp_op_step(b, args.min_run_time) for b in (1, 64)]
        print_table("Seed training step with FusedMLP (784-128-10, CE, SGD): the whole-MLP op "
                    "vs the same FusedMLP layer by layer vs eager",
                    [("batch", lambda r: str(r["batch"])), ("eager us", us("eager_us")),
                     ("per-layer us", us("layers_us")), ("op us", us("op_us")),
                     ("op vs per-layer", ratio("op_vs_layers")),
                     ("op vs eager", ratio("op_vs_eager")),
                     ("per-layer vs eager", ratio("layers_vs_eager"))],
                    results["mlp"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot and results["layers"]:
        plot(args.plot, results["layers"])


if __name__ == "__main__":
    main()
