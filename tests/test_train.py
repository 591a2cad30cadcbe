"""python -m fusedmlp.train and its data: the IDX reader, the MNIST and digits loaders, the
training loop (fused and plain losses agree) and the command itself."""
import gzip
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

import fusedmlp
from fusedmlp import data, train

FINAL_LINE = re.compile(
    r"^test accuracy: fused (\d+\.\d)% \| nn\.Linear (\d+\.\d)% \| speedup (\d+\.\d)x$")


def write_idx(path, array, type_code=0x08):
    """An IDX file written from the format's definition: magic (0, 0, type, ndim), the
    dimensions as big-endian uint32, then the big-endian data."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    payload = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += np.asarray(array, dtype=dtype).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as file:
        file.write(payload)
    return path


@pytest.mark.parametrize("name", ["plain-idx", "compressed-idx.gz"])
@pytest.mark.parametrize("type_code,values", [
    (0x08, np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10),
    (0x0B, np.array([[-300, 2], [7, 32000]], dtype=np.int16)),
    (0x0D, np.array([1.5, -2.25, 1e30], dtype=np.float32)),
])
def test_read_idx_round_trip(tmp_path, name, type_code, values):
    path = write_idx(tmp_path / name, values, type_code)
    array = data.read_idx(path)  # a pathlib.Path; str paths are read in the other tests
    assert array.shape == values.shape and array.dtype.isnative
    np.testing.assert_array_equal(array, values)


@pytest.mark.parametrize("content,match", [
    (b"\x08\x03\x00\x00", "not an IDX file"),                        # magic bytes swapped
    (b"\x00\x00\x42\x01\x00\x00\x00\x01\x00", "not an IDX file"),    # unknown type code
    (b"\x00\x00", "not an IDX file"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x02\x01\x02\x03", r"shape \(2, 2\) \(4 bytes"),
])
def test_read_idx_corrupt_header_or_size_names_the_file(tmp_path, content, match):
    path = tmp_path / "broken-idx"
    path.write_bytes(content)
    with pytest.raises(data.IDXError, match=match) as error:
        data.read_idx(str(path))
    assert str(path) in str(error.value)


def test_read_idx_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "broken-idx.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-6])  # cut short
    with pytest.raises(data.IDXError, match="not a valid gzip file") as error:
        data.read_idx(str(path))
    assert str(path) in str(error.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-idx"):
        data.read_idx(str(tmp_path / "missing-idx"))


def make_mnist_dir(directory, n_train=80, n_test=30, gzip_names=("train-images-idx3-ubyte",)):
    """A small MNIST-shaped data set in IDX files: random images, labels 0..9."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(str(directory / (name + ".gz" if name in gzip_names else name)), array)
    return arrays


def test_load_mnist_reads_plain_and_gz_files(tmp_path):
    arrays = make_mnist_dir(tmp_path)
    digits = data.load_mnist(str(tmp_path))
    assert digits.train_images.shape == (80, 1, 28, 28) and digits.test_images.shape == (30, 1, 28, 28)
    assert torch.equal(digits.train_labels, torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long())
    assert torch.equal(digits.test_labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    # standardised with the training images' statistics, the same map for the test images
    assert abs(digits.train_images.mean().item()) < 1e-5
    assert digits.train_images.std().item() == pytest.approx(1, rel=1e-5)
    pixels = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255
    test_pixels = arrays["t10k-images-idx3-ubyte"].astype(np.float64) / 255
    expected = (test_pixels - pixels.mean()) / pixels.std(ddof=1)
    np.testing.assert_allclose(digits.test_images[:, 0].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_load_mnist_missing_file_is_named(tmp_path):
    make_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist(str(tmp_path))


def test_load_mnist_checks_shapes_labels_and_counts(tmp_path):
    arrays = make_mnist_dir(tmp_path)
    write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.full(80, 12, dtype=np.uint8))
    with pytest.raises(data.IDXError, match="train-labels-idx1-ubyte: expected uint8 labels 0..9"):
        data.load_mnist(str(tmp_path))
    write_idx(str(tmp_path / "train-labels-idx1-ubyte"), arrays["train-labels-idx1-ubyte"][:70])
    with pytest.raises(data.IDXError, match="has 80 images but .*train-labels-idx1-ubyte has 70 labels"):
        data.load_mnist(str(tmp_path))
    write_idx(str(tmp_path / "t10k-images-idx3-ubyte"), np.zeros((30, 8, 8), dtype=np.uint8))
    with pytest.raises(data.IDXError,
                       match=r"t10k-images-idx3-ubyte: expected uint8 images of shape \(N, 28, 28\)"):
        data.load_mnist(str(tmp_path))


def test_sklearn_digits_split():
    digits = data.load_sklearn_digits()
    assert digits.train_images.shape == (1437, 1, 28, 28) and digits.test_images.shape == (360, 1, 28, 28)
    assert digits.train_images.dtype == torch.float32 and digits.train_labels.dtype == torch.int64
    assert set(digits.test_labels.tolist()) == set(range(10))
    again = data.load_sklearn_digits()  # the split is fixed
    assert torch.equal(again.test_labels, digits.test_labels)
    assert torch.equal(again.test_images, digits.test_images)


def test_fused_and_plain_training_losses_match():
    digits = data.load_sklearn_digits()
    images, labels = digits.train_images[:640], digits.train_labels[:640]
    torch.manual_seed(0)
    plain = train.ClassicNet()
    fused = fusedmlp.fuse(plain)
    assert isinstance(fused.fc1, fusedmlp.FusedLinearReLU)  # really two different models
    runs = [train.Run(label, model, torch.optim.SGD(model.parameters(), lr=0.01))
            for label, model in (("nn.Linear", plain), ("fused", fused))]
    shuffle = torch.Generator().manual_seed(0)
    for epoch in range(3):
        (loss_plain, _), (loss_fused, _) = train.train_epoch(runs, images, labels, 64, shuffle)
        assert loss_fused == pytest.approx(loss_plain, rel=1e-5), epoch
    assert loss_plain < 2.0  # it did learn: the loss starts near ln(10) = 2.3
    for p, q in zip(plain.parameters(), fused.parameters()):
        torch.testing.assert_close(q, p)


def test_default_run_reaches_90_percent_and_losses_agree(capsys):
    assert train.main([]) == 0
    out = capsys.readouterr().out
    assert ("fusedmlp.fuse: fused 1 Linear->activation pair(s): fc1 (relu)\n"
            "ran 1 Linear layer(s) on FusedLinear: fc2") in out
    assert "as one fusedmlp.mlp op each" in out and "fc1 -> fc2" in out
    rows = [line.split("|") for line in out.splitlines() if re.match(r"^\s+\d+ \|", line)]
    assert [int(row[0]) for row in rows] == list(range(1, 11))
    for row in rows:
        loss_plain, loss_fused = float(row[1]), float(row[2])
        assert loss_fused == pytest.approx(loss_plain, rel=1e-4)
    fused_accuracy, plain_accuracy, speedup = FINAL_LINE.match(out.splitlines()[-1]).groups()
    assert float(fused_accuracy) >= 90 and float(plain_accuracy) >= 90
    assert float(speedup) > 0


def test_command_smoke_run_with_plot(tmp_path):
    plot = tmp_path / "curves.png"
    command = [sys.executable, "-m", "fusedmlp.train", "--epochs", "1", "--plot", str(plot),
               "--keep-fc2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert FINAL_LINE.match(lines[-1]), lines[-1]
    assert "fusedmlp.fuse: fused 1 Linear->activation pair(s): fc1 (relu)\n" in result.stdout
    assert "FusedLinear" not in result.stdout  # --keep-fc2: fc2 stays nn.Linear,
    assert "fusedmlp.mlp" not in result.stdout  # and runs as one (no whole-MLP op)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fused_only_on_mnist_files(tmp_path, capsys):
    make_mnist_dir(tmp_path)
    assert train.main(["--data", "mnist", "--data-dir", str(tmp_path), "--fused-only",
                       "--epochs", "2", "--batch-size", "16", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "MNIST: 80 training / 30 test images" in out
    assert "loss nn.Linear" not in out
    assert re.fullmatch(r"test accuracy: fused \d+\.\d%", out.splitlines()[-1])


def test_missing_mnist_file_is_a_clear_error(tmp_path, capsys):
    make_mnist_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    assert train.main(["--data", "mnist", "--data-dir", str(tmp_path)]) == 1
    assert "MNIST file not found: " in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["--epochs", "0"], "argument --epochs: must be positive, got 0"),
    (["--lr", "-1"], "argument --lr: must be positive"),
    (["--batch-size", "x"], "argument --batch-size: invalid int value"),
    (["--data", "mnist"], "--data mnist needs --data-dir"),
    (["--data-dir", "somewhere"], "--data-dir is only read with --data mnist"),
])
def test_bad_arguments_are_named(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


def test_summary_speedup_is_the_ratio_of_median_step_times():
    def run(label, step_seconds, loss):
        result = train.Run(label, torch.nn.Identity(), None)
        result.step_seconds = step_seconds
        result.epochs = [train.EpochStats(loss, sum(step_seconds), 91.3)]
        return result
    # one step of each slowed down 100x by something else on the machine
    plain = run("nn.Linear", [0.002, 0.002, 0.2, 0.002, 0.002], loss=0.5)
    fused = run("fused", [0.2, 0.001, 0.001, 0.001, 0.001], loss=0.5 * (1 + 3e-6))
    lines = train.summary([plain, fused]).splitlines()
    assert lines[-1] == "test accuracy: fused 91.3% | nn.Linear 91.3% | speedup 2.0x"
    assert lines[-2].endswith("fused vs nn.Linear: 3.0e-06")
