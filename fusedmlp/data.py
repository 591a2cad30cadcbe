"""Handwritten digits for ``python -m fusedmlp.train``, with no download: the 8x8 digits
that scikit-learn ships inside its package (resized to 28x28), or MNIST read from the
standard IDX files already on disk."""
import gzip
import os
import zlib
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Digits", "IDXError", "read_idx", "load_sklearn_digits", "load_mnist",
           "MNIST_FILES", "IMAGE_SIZE"]

IMAGE_SIZE = 28  # MNIST's, so the classic network is exactly 784 -> 128 -> 10
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX element type codes (the third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Digits:
    """Images ``(N, 1, 28, 28)`` float32, standardised with the training images' mean and
    standard deviation; labels ``(N,)`` int64 in 0..9."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


class IDXError(ValueError):
    """A file that is not a well-formed IDX file (the message names the file)."""


def read_idx(path: str) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip-compressed if it ends in ``.gz``)."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise IDXError(f"{path}: not a valid gzip file ({error})") from None

    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise IDXError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'none'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IDXError(f"{path}: truncated IDX header ({ndim} dimensions need "
                       f"{header_size} bytes, the file has {len(data)})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise IDXError(f"{path}: the header says shape {shape} ({expected} bytes of data) "
                       f"but the file has {len(data) - header_size}")
    array = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native byte order, writable


def load_mnist(data_dir: str) -> Digits:
    """MNIST from ``data_dir``, which holds the four standard IDX files
    (``train-images-idx3-ubyte`` etc., each optionally ``.gz``)."""
    arrays = {}
    for key, name in MNIST_FILES.items():
        path = _find_file(data_dir, name)
        array = read_idx(path)
        if key.endswith("images"):
            if array.dtype != np.uint8 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise IDXError(f"{path}: expected uint8 images of shape (N, {IMAGE_SIZE}, "
                               f"{IMAGE_SIZE}), got {array.dtype} {array.shape}")
        elif array.dtype != np.uint8 or array.ndim != 1 or (array > 9).any():
            raise IDXError(f"{path}: expected uint8 labels 0..9 of shape (N,), "
                           f"got {array.dtype} {array.shape}")
        arrays[key] = (path, torch.from_numpy(array))
    for split in ("train", "test"):
        images_path, images = arrays[f"{split}_images"]
        labels_path, labels = arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise IDXError(f"{images_path} has {len(images)} images but {labels_path} has "
                           f"{len(labels)} labels")
    train_images, test_images = _standardise(
        arrays["train_images"][1].unsqueeze(1).float() / 255,
        arrays["test_images"][1].unsqueeze(1).float() / 255)
    return Digits("MNIST", train_images, arrays["train_labels"][1].long(),
                  test_images, arrays["test_labels"][1].long())


def load_sklearn_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Digits:
    """scikit-learn's 1797 handwritten 8x8 digits, resized to 28x28 (bilinear), split into
    train and test (stratified by label) with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # pixels 0..16
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                           align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=split_seed,
        stratify=digits.target)
    train_index, test_index = torch.from_numpy(train_index), torch.from_numpy(test_index)
    train_images, test_images = _standardise(images[train_index], images[test_index])
    return Digits("scikit-learn digits", train_images, labels[train_index],
                  test_images, labels[test_index])


def _find_file(data_dir: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"MNIST file not found: {os.path.join(data_dir, name)} (nor .gz)")


def _standardise(train: torch.Tensor, test: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    # With the training set's statistics only (for MNIST: the classic 0.1307 and 0.3081).
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (test - mean) / std
