"""The whole-MLP op vs the same FusedMLP layer by layer (and eager), in CPU time of the
calling thread on 1 thread (time.thread_time: what other processes on a shared host do
moves it far less than wall time), interleaved rounds, best round kept.

    python benchmarks/mlp_op_cpu_time.py [--isa avx2]

1. The seed's training step (784-128-10, CrossEntropyLoss, SGD lr 0.01, zero_grad /
   forward / loss / backward / step) at batch 1 and 64: eager, FusedMLP per layer,
   FusedMLP as one op.
2. Forward (no grad) and forward+backward of FusedMLP alone, op vs per layer, on shapes
   where the op's row blocks or its single autograd node could matter.
"""
import argparse
import copy
import time

import torch
from torch import nn

import fusedmlp
from bench import FlattenThenMLP, PerLayerFusedMLP, training_step
from fusedmlp.train import ClassicNet


def best_us(fns, inner, rounds):
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.thread_time()
            for _ in range(inner):
                fn()
            best[name] = min(best[name], (time.thread_time() - start) / inner * 1e6)
    return best


def training_steps(batch):
    torch.manual_seed(0)
    plain = ClassicNet()
    seq = nn.Sequential(plain.fc1, nn.ReLU(), plain.fc2)
    models = {"eager": plain,
              "per-layer": FlattenThenMLP(PerLayerFusedMLP.from_sequential(seq)),
              "op": FlattenThenMLP(fusedmlp.FusedMLP.from_sequential(seq))}
    return {name: training_step(copy.deepcopy(model), batch) for name, model in models.items()}


def mlp_passes(in_features, hidden, out_features, rows):
    torch.manual_seed(0)
    mlp = fusedmlp.FusedMLP(in_features, hidden, out_features)
    per_layer = PerLayerFusedMLP(in_features, hidden, out_features)
    per_layer.load_state_dict(mlp.state_dict())
    x = torch.randn(rows, in_features)

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)
        return run
    return ({"op": forward(mlp), "per-layer": forward(per_layer)},
            {"op": lambda: mlp(x).sum().backward(),
             "per-layer": lambda: per_layer(x).sum().backward()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", help="CPU micro-kernel ISA (default: the best)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.isa:
        fusedmlp.set_cpu_isa(args.isa)
    print(f"# 1 thread, CPU time, fusedmlp ISA {fusedmlp.info()['cpu_isa']}, best of "
          f"{args.rounds} interleaved rounds")
    print("| seed training step | eager us | FusedMLP per-layer us | FusedMLP op us "
          "| op vs per-layer | op vs eager |")
    print("|---|---:|---:|---:|---:|---:|")
    for batch, inner in ((1, 200), (64, 30)):
        t = best_us(training_steps(batch), inner, args.rounds)
        print(f"| batch {batch} | {t['eager']:.1f} | {t['per-layer']:.1f} | {t['op']:.1f} "
              f"| {t['per-layer'] / t['op']:.2f}x | {t['eager'] / t['op']:.2f}x |")
    print("\n| FusedMLP | rows | fwd op us | fwd per-layer us | f+b op us | f+b per-layer us "
          "| f+b op vs per-layer |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for sizes, rows, inner in (((784, [128], 10), 1, 300), ((64, [64] * 7, 10), 1, 300),
                               ((784, [128], 10), 64, 30), ((784, [128], 10), 4096, 1),
                               ((64, [64, 64, 64], 10), 65536, 1),
                               ((256, [1024, 1024], 256), 4096, 1)):
        fwd, fwdbwd = mlp_passes(*sizes, rows)
        f = best_us(fwd, inner, max(3, args.rounds // 3))
        fb = best_us(fwdbwd, inner, max(3, args.rounds // 3))
        name = "-".join(map(str, [sizes[0], *sizes[1], sizes[2]]))
        print(f"| {name} | {rows} | {f['op']:.1f} | {f['per-layer']:.1f} | {fb['op']:.1f} "
              f"| {fb['per-layer']:.1f} | {fb['per-layer'] / fb['op']:.2f}x |")


if __name__ == "__main__":
    main()
