"""``python -m fusedmlp.train``: the classic MNIST MLP (784 -> 128 -> ReLU -> 10,
CrossEntropyLoss, SGD) trained twice from the same initial weights and data order, once on
``nn.Linear`` and once after ``fusedmlp.fuse``, comparing losses, accuracy and time.

By default it trains on the handwritten digits bundled with scikit-learn (no download);
``--data mnist --data-dir DIR`` reads MNIST's IDX files from DIR.
"""
import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import data as digit_data
from .fuse import fuse
from ._info import info

WARM_UP_STEPS = 5  # per model, on a throwaway copy, before anything is timed


class ClassicNet(nn.Module):
    """The classic MNIST MLP, written as in the PyTorch tutorials."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


@dataclass
class EpochStats:
    loss: float  # mean training loss over the epoch's samples
    seconds: float  # the training steps only (zero_grad, forward, loss, backward, step)
    accuracy: float  # on the test set after the epoch, in %


@dataclass
class Run:
    """One model being trained, with its optimizer and its results."""

    label: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: List[EpochStats] = field(default_factory=list)
    step_seconds: List[float] = field(default_factory=list)  # every timed training step


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The classic loop body; returns the batch's (detached) mean loss."""
    run.optimizer.zero_grad()
    loss = F.cross_entropy(run.model(images), labels)
    loss.backward()
    run.optimizer.step()
    return loss.detach()


def train_epoch(runs: List[Run], images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                shuffle: torch.Generator,
                progress: Optional[tqdm] = None) -> List[Tuple[float, float]]:
    """One pass over the training set in one shuffled order, shared by all runs; returns
    (mean loss, seconds) per run and adds each step's time to ``run.step_seconds``. The runs
    take turns batch by batch and each step is timed on its own, so a slow spell of a busy
    machine hits every run alike."""
    for run in runs:
        run.model.train()
    order = torch.randperm(len(labels), generator=shuffle).to(labels.device)
    loss_sums = [torch.zeros((), device=labels.device) for _ in runs]
    first_step = [len(run.step_seconds) for run in runs]
    for batch in order.split(batch_size):
        batch_images, batch_labels = images[batch], labels[batch]
        for i, run in enumerate(runs):
            _synchronize(images.device)
            start = time.perf_counter()
            loss_sums[i] += train_step(run, batch_images, batch_labels) * len(batch)
            _synchronize(images.device)
            run.step_seconds.append(time.perf_counter() - start)
        if progress is not None:
            progress.update()
    return [(loss_sum.item() / len(labels), sum(run.step_seconds[first:]))
            for loss_sum, run, first in zip(loss_sums, runs, first_step)]


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return 100.0 * (model(images).argmax(dim=1) == labels).float().mean().item()


def warm_up(runs: List[Run], images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
    """A few steps on copies, so one-time costs (allocator, thread pool, first kernel
    calls) are not timed; the runs' own models and optimizers are untouched."""
    copies = []
    for run in runs:
        model = copy.deepcopy(run.model)
        optimizer = type(run.optimizer)(model.parameters(), **run.optimizer.defaults)
        copies.append(Run(run.label, model, optimizer))
    for step in range(WARM_UP_STEPS):
        batch = slice(step * batch_size, (step + 1) * batch_size)
        for run in copies:
            train_step(run, images[batch], labels[batch])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" errors
    return parse


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fusedmlp.train",
        description="Train the classic MNIST MLP (784->128->10) with nn.Linear and with "
                    "fusedmlp from the same initial weights and data order; compare losses, "
                    "test accuracy and time.")
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits",
                        help="digits: scikit-learn's bundled 8x8 digits resized to 28x28 "
                             "(default, no download); mnist: IDX files from --data-dir")
    parser.add_argument("--data-dir", help="folder with MNIST's train-images-idx3-ubyte, "
                                           "train-labels-idx1-ubyte, t10k-... (each may be .gz)")
    parser.add_argument("--epochs", type=_positive(int), default=10)
    parser.add_argument("--batch-size", type=_positive(int), default=64)
    parser.add_argument("--lr", type=_positive(float), default=0.01)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=0,
                        help="initial weights and shuffling (the digits' split is fixed)")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of both loss curves and "
                                                       "the per-epoch training time")
    parser.add_argument("--fused-only", action="store_true",
                        help="train only the fused model (no nn.Linear baseline, no speedup)")
    parser.add_argument("--keep-fc2", action="store_true",
                        help="fuse only fc1 + ReLU; fc2 stays nn.Linear and runs as one, "
                             "fusedmlp.fuse(..., mlp=False) (default: fc2 on FusedLinear "
                             "and fc1 -> fc2 as one whole-MLP op, "
                             "fusedmlp.fuse(..., plain_linear=True))")
    args = parser.parse_args(argv)
    if args.data == "mnist" and not args.data_dir:
        parser.error("--data mnist needs --data-dir DIR (the folder with MNIST's IDX files)")
    if args.data_dir and args.data != "mnist":
        parser.error("--data-dir is only read with --data mnist")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA GPU is visible")
        if not info()["cuda_built"]:
            parser.error("--device cuda: this build of fusedmlp has no CUDA kernels")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        digits = (digit_data.load_mnist(args.data_dir) if args.data == "mnist"
                  else digit_data.load_sklearn_digits())
    except (OSError, digit_data.IDXError) as error:
        print(f"python -m fusedmlp.train: error: {error}", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    train_images, train_labels = digits.train_images.to(device), digits.train_labels.to(device)
    test_images, test_labels = digits.test_images.to(device), digits.test_labels.to(device)

    torch.manual_seed(args.seed)
    plain = ClassicNet().to(device)
    # A copy: the same initial weights; fc1 + ReLU on FusedLinearReLU, fc2 on FusedLinear.
    fused = fuse(plain, plain_linear=not args.keep_fc2, mlp=not args.keep_fc2)
    models = {"fused": fused} if args.fused_only else {"nn.Linear": plain, "fused": fused}
    runs = [Run(label, model, torch.optim.SGD(model.parameters(), lr=args.lr))
            for label, model in models.items()]
    shuffle = torch.Generator().manual_seed(args.seed)

    print(f"{digits.name}: {len(train_labels)} training / {len(test_labels)} test images of "
          f"28x28; MLP 784->128->10, SGD lr {args.lr}, batch {args.batch_size}, "
          f"{args.epochs} epochs on {args.device} ({torch.get_num_threads()} threads)")
    print(f"fusedmlp.fuse: {fused.fuse_report}")
    warm_up(runs, train_images, train_labels, args.batch_size)

    print(" | ".join(["epoch", *(f"{'loss ' + r.label:>14}" for r in runs),
                      *(f"{'time ' + r.label:>14}" for r in runs),
                      *(f"{'test acc ' + r.label:>18}" for r in runs)]))
    batches = -(-len(train_labels) // args.batch_size)
    with tqdm(total=args.epochs * batches, unit="batch", leave=False, disable=None) as progress:
        for epoch in range(1, args.epochs + 1):
            progress.set_description(f"epoch {epoch}/{args.epochs}")
            results = train_epoch(runs, train_images, train_labels, args.batch_size, shuffle,
                                  progress)
            for run, (loss, seconds) in zip(runs, results):
                test_accuracy = accuracy(run.model, test_images, test_labels)
                run.epochs.append(EpochStats(loss, seconds, test_accuracy))
            stats = [run.epochs[-1] for run in runs]
            progress.write(" | ".join([f"{epoch:>5}", *(f"{s.loss:>14.6f}" for s in stats),
                                       *(f"{s.seconds:>12.3f} s" for s in stats),
                                       *(f"{s.accuracy:>17.1f}%" for s in stats)]))

    if args.plot:
        plot(runs, args.plot)
        print(f"plot written to {args.plot}")
    print(summary(runs))
    return 0


def summary(runs: List[Run]) -> str:
    """Totals, loss agreement, and the final ``test accuracy: ...`` line."""
    by_label = {run.label: run for run in runs}
    fused = by_label["fused"]
    if "nn.Linear" not in by_label:
        return (f"training time: fused {sum(s.seconds for s in fused.epochs):.2f} s\n"
                f"test accuracy: fused {fused.epochs[-1].accuracy:.1f}%")
    plain = by_label["nn.Linear"]
    loss_difference = max(abs(f.loss - p.loss) / abs(p.loss)
                          for f, p in zip(fused.epochs, plain.epochs))
    # Median step times: steps slowed down by something else on the machine do not decide
    # the result (on a busy machine the totals can be many times the quiet-machine time).
    speedup = statistics.median(plain.step_seconds) / statistics.median(fused.step_seconds)
    return "\n".join([
        f"training time: nn.Linear {sum(s.seconds for s in plain.epochs):.2f} s, "
        f"fused {sum(s.seconds for s in fused.epochs):.2f} s; median training step: "
        f"nn.Linear {statistics.median(plain.step_seconds) * 1e3:.3f} ms, "
        f"fused {statistics.median(fused.step_seconds) * 1e3:.3f} ms",
        f"largest relative difference of the epoch losses, fused vs nn.Linear: "
        f"{loss_difference:.1e}",
        f"test accuracy: fused {fused.epochs[-1].accuracy:.1f}% | "
        f"nn.Linear {plain.epochs[-1].accuracy:.1f}% | speedup {speedup:.1f}x",
    ])


def plot(runs: List[Run], path: str) -> None:
    """Loss per epoch (left) and training time per epoch (right) of every run, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    figure, (loss_axes, time_axes) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        epochs = range(1, len(run.epochs) + 1)
        # Dashed over solid: the curves should coincide, and both must stay visible.
        loss_axes.plot(epochs, [s.loss for s in run.epochs], label=run.label,
                       marker="os"[i % 2], linestyle="-" if i == 0 else "--")
        time_axes.bar([e + (i - (len(runs) - 1) / 2) * width for e in epochs],
                      [s.seconds for s in run.epochs], width, label=run.label)
    loss_axes.set(title="training loss", xlabel="epoch", ylabel="mean cross-entropy")
    time_axes.set(title="training time per epoch", xlabel="epoch", ylabel="seconds")
    time_axes.margins(y=0.2)  # room for the legend above the bars
    for axes in (loss_axes, time_axes):
        axes.legend(loc="upper right", ncols=len(runs))
        axes.set_xticks(list(range(1, len(runs[0].epochs) + 1)))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
