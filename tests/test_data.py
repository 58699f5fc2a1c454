"""d2lbn.data: parsing, batching, the search order, integrity checks, downloads, the command line.

Most tests write a tiny Fashion-MNIST (a dozen images) in IDX format to a temporary folder and
patch the known checksums to match it; the search locations (HOME, XDG_CACHE_HOME, D2LBN_DATA,
the Debian folder) and the downloader are patched too, so no test reads the real cache or touches
the network. The last tests check the real data when a copy is installed.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import os
import re
import subprocess
import sys
import time
import urllib.error
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import d2lbn.data as data
from d2lbn.data import (
    CLASSES,
    FashionMNISTError,
    TensorBatches,
    fashion_mnist_tensors,
    load_fashion_mnist,
    locate_fashion_mnist,
    text_labels,
)

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
N_TRAIN, N_TEST = 12, 5


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x00 0x00 0x08 ndim, big-endian sizes, the data."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_arrays() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in [("train", N_TRAIN), ("t10k", N_TEST)]:
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)  # pixel (0, 0) tells the examples apart
        arrays[f"{split}-images-idx3-ubyte"] = images
        arrays[f"{split}-labels-idx1-ubyte"] = (np.arange(n) % 10).astype(np.uint8)
    return arrays


class Fake:
    """A tiny Fashion-MNIST and an isolated set of search locations."""

    def __init__(self, tmp_path: Path) -> None:
        self.arrays = make_arrays()
        self.content = {name: idx_bytes(self.arrays[name]) for name in NAMES}
        self.root = tmp_path / "root"
        self.env = tmp_path / "env"
        self.home = tmp_path / "home"
        self.cache = self.home / ".cache" / "d2lbn" / "fashion-mnist"
        self.system = tmp_path / "system"
        self.fetches: List[Path] = []

    def write(self, directory: Path, gz: bool = False, names: Optional[List[str]] = None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name in names or NAMES:
            if gz:
                (directory / (name + ".gz")).write_bytes(gzip.compress(self.content[name]))
            else:
                (directory / name).write_bytes(self.content[name])
        return directory

    def fetcher(self, fail_after: Optional[int] = None, exc: BaseException = KeyboardInterrupt()) -> Callable:
        """A stand-in for ``data._fetch`` that writes the .gz files, or stops half-way."""

        def fetch(directory: Path) -> None:
            self.fetches.append(directory)
            for i, name in enumerate(NAMES):
                blob = gzip.compress(self.content[name])
                if fail_after is not None and i == fail_after:
                    (directory / (name + ".gz")).write_bytes(blob[: len(blob) // 2])
                    raise exc
                (directory / (name + ".gz")).write_bytes(blob)

        return fetch


def no_network(directory: Path) -> None:
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    f = Fake(tmp_path)
    expected = {name: (hashlib.sha256(c).hexdigest(), len(c)) for name, c in f.content.items()}
    monkeypatch.setattr(data, "_EXPECTED", expected)
    monkeypatch.setattr(data, "_SYSTEM_DIR", f.system)
    monkeypatch.setattr(data, "_CACHE", {})
    monkeypatch.setattr(data, "_fetch", no_network)
    monkeypatch.delenv("D2LBN_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(f.home))
    return f


def files_under(directory: Path) -> List[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("layout", ["raw", "gz", "mixed", "torchvision"])
def test_parses_the_four_files_in_every_accepted_layout(fake: Fake, layout: str) -> None:
    if layout == "torchvision":
        fake.write(fake.root / "FashionMNIST" / "raw", gz=True)
    elif layout == "mixed":
        fake.write(fake.root, gz=True, names=NAMES[:2])
        fake.write(fake.root, gz=False, names=NAMES[2:])
    else:
        fake.write(fake.root, gz=layout == "gz")
    train_x, train_y, test_x, test_y = fashion_mnist_tensors(fake.root)
    assert train_x.dtype == test_x.dtype == torch.uint8
    assert train_y.dtype == test_y.dtype == torch.int64
    assert train_x.shape == (N_TRAIN, 28, 28) and test_x.shape == (N_TEST, 28, 28)
    assert torch.equal(train_x, torch.from_numpy(fake.arrays[NAMES[0]]))
    assert torch.equal(train_y, torch.from_numpy(fake.arrays[NAMES[1]]).long())
    assert torch.equal(test_x, torch.from_numpy(fake.arrays[NAMES[2]]))
    assert torch.equal(test_y, torch.from_numpy(fake.arrays[NAMES[3]]).long())


def test_raw_file_is_preferred_over_its_gz_twin(fake: Fake) -> None:
    fake.write(fake.root)
    (fake.root / (NAMES[0] + ".gz")).write_bytes(b"not gzip at all")
    train_x, *_ = fashion_mnist_tensors(fake.root)
    assert torch.equal(train_x, torch.from_numpy(fake.arrays[NAMES[0]]))


def test_a_file_that_is_not_idx_is_refused(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fake.root)
    bad = b"\x00\x00\x0d\x03" + fake.content[NAMES[0]][4:]  # dtype 0x0d (float) instead of 0x08
    (fake.root / NAMES[0]).write_bytes(bad)
    monkeypatch.setitem(data._EXPECTED, NAMES[0], (hashlib.sha256(bad).hexdigest(), len(bad)))
    with pytest.raises(FashionMNISTError, match="not an IDX file"):
        fashion_mnist_tensors(fake.root)


def test_images_and_labels_of_different_lengths_are_refused(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fake.root)
    short = idx_bytes(fake.arrays[NAMES[1]][:-1])
    (fake.root / NAMES[1]).write_bytes(short)
    monkeypatch.setitem(data._EXPECTED, NAMES[1], (hashlib.sha256(short).hexdigest(), len(short)))
    with pytest.raises(FashionMNISTError, match=f"{N_TRAIN} images but {N_TRAIN - 1} labels"):
        fashion_mnist_tensors(fake.root)


def test_parsed_tensors_are_cached_per_process_and_refreshed_when_a_file_changes(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.write(fake.root)
    reads: List[str] = []
    read = data._read_verified
    monkeypatch.setattr(data, "_read_verified", lambda name, path: reads.append(name) or read(name, path))
    first = fashion_mnist_tensors(fake.root)
    load_fashion_mnist(4, root=fake.root)
    assert fashion_mnist_tensors(fake.root)[0] is first[0]
    assert len(reads) == 4, "a second load must not read the files again"
    path = fake.root / NAMES[1]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fashion_mnist_tensors(fake.root)
    assert len(reads) == 8, "a file that changed must be read again"


# ----------------------------------------------------------------------------- batches


def test_batches_have_the_documented_shapes_dtypes_and_values(fake: Fake) -> None:
    fake.write(fake.root)
    train_iter, test_iter = load_fashion_mnist(5, root=fake.root)
    assert (len(train_iter), len(test_iter)) == (3, 1)
    assert (train_iter.num_examples, test_iter.num_examples) == (N_TRAIN, N_TEST)
    assert train_iter.batch_size == test_iter.batch_size == 5
    sizes = []
    for X, y in train_iter:
        sizes.append(len(y))
        assert X.shape == (len(y), 1, 28, 28) and X.dtype == torch.float32
        assert y.dtype == torch.int64
        assert 0.0 <= X.min().item() and X.max().item() <= 1.0
        index = (X[:, 0, 0, 0] * 255).round().long()  # pixel (0, 0) is the example's index
        expected = torch.from_numpy(fake.arrays[NAMES[0]][index.numpy()]).float().div(255).unsqueeze(1)
        torch.testing.assert_close(X, expected, rtol=0, atol=0)
        assert torch.equal(y, index % 10)
    assert sizes == [5, 5, 2]


def test_test_iterator_keeps_file_order_and_training_iterator_is_shuffled(fake: Fake) -> None:
    fake.write(fake.root)
    train_iter, test_iter = load_fashion_mnist(2, root=fake.root, seed=3)
    test_order = torch.cat([(X[:, 0, 0, 0] * 255).round().long() for X, _ in test_iter])
    assert test_order.tolist() == list(range(N_TEST))
    assert test_order.tolist() == torch.cat([(X[:, 0, 0, 0] * 255).round().long() for X, _ in test_iter]).tolist()
    train_order = torch.cat([(X[:, 0, 0, 0] * 255).round().long() for X, _ in train_iter])
    assert sorted(train_order.tolist()) == list(range(N_TRAIN))
    assert train_order.tolist() != list(range(N_TRAIN))


def epoch_order(batches: TensorBatches) -> List[int]:
    return [i for _, y in batches for i in y.tolist()]


def test_same_seed_same_orders_new_epoch_new_order() -> None:
    images = torch.zeros(200, 2, 2, dtype=torch.uint8)
    a = TensorBatches(images, torch.arange(200), 16, shuffle=True, seed=7)
    b = TensorBatches(images, torch.arange(200), 16, shuffle=True, seed=7)
    c = TensorBatches(images, torch.arange(200), 16, shuffle=True, seed=8)
    a1, a2 = epoch_order(a), epoch_order(a)
    assert a1 == epoch_order(b) and a2 == epoch_order(b), "same seed, same sequence of epochs"
    assert a1 != a2, "every epoch draws a new order"
    assert epoch_order(c) != a1, "another seed, another order"
    assert sorted(a1) == sorted(a2) == list(range(200))


def test_shuffling_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    epoch_order(TensorBatches(torch.zeros(50, 2, 2, dtype=torch.uint8), torch.arange(50), 8, shuffle=True))
    assert torch.equal(torch.rand(3), expected)


def test_loaders_with_the_same_seed_agree(fake: Fake) -> None:
    fake.write(fake.root)
    first, _ = load_fashion_mnist(4, root=fake.root, seed=11)
    second, _ = load_fashion_mnist(4, root=fake.root, seed=11)
    for (X1, y1), (X2, y2) in zip(first, second):
        assert torch.equal(X1, X2) and torch.equal(y1, y2)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    batch_size=st.integers(1, 70),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_an_epoch_visits_every_example_at_most_once(n, batch_size, shuffle, drop_last, seed) -> None:
    batches = TensorBatches(
        torch.zeros(n, 1, 1, dtype=torch.uint8), torch.arange(n), batch_size,
        shuffle=shuffle, seed=seed, drop_last=drop_last,
    )
    sizes = [len(y) for _, y in batches]
    seen = epoch_order(batches)
    assert len(sizes) == len(batches)
    assert len(set(seen)) == len(seen) and set(seen) <= set(range(n))
    if drop_last:
        assert sizes == [batch_size] * (n // batch_size)
    else:
        assert sorted(seen) == list(range(n)), "every example exactly once"
        assert all(s == batch_size for s in sizes[:-1]) and (not sizes or 1 <= sizes[-1] <= batch_size)
    if not shuffle:
        assert seen == list(range(len(seen)))


def test_drop_last_applies_to_training_only(fake: Fake) -> None:
    fake.write(fake.root)
    train_iter, test_iter = load_fashion_mnist(5, root=fake.root, drop_last=True)
    assert len(train_iter) == 2 and [len(y) for _, y in train_iter] == [5, 5]
    assert len(test_iter) == 1 and [len(y) for _, y in test_iter] == [N_TEST]


@pytest.mark.parametrize("resize, size", [(32, (32, 32)), ((40, 20), (40, 20)), (14, (14, 14)), (224, (224, 224))])
def test_resize_resizes_each_batch(fake: Fake, resize, size) -> None:
    fake.write(fake.root)
    train_iter, test_iter = load_fashion_mnist(4, resize=resize, root=fake.root)
    for batches in (train_iter, test_iter):
        X, _ = next(iter(batches))
        assert X.shape == (4, 1) + size and X.dtype == torch.float32
        assert X.min().item() >= -1e-6 and X.max().item() <= 1 + 1e-6
    # the test set keeps file order: its first batch is the first four images, resized as documented
    first = test_iter.images[:4].float().div(255).unsqueeze(1)
    expected = F.interpolate(first, size=size, mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(next(iter(test_iter))[0], expected)
    assert train_iter.images.shape == (N_TRAIN, 28, 28), "the stored images keep their size"


def test_resize_keeps_a_constant_image_constant() -> None:
    images = torch.full((3, 28, 28), 51, dtype=torch.uint8)
    for size in (7, 64):
        X, _ = next(iter(TensorBatches(images, torch.zeros(3), 3, resize=size)))
        torch.testing.assert_close(X, torch.full((3, 1, size, size), 0.2))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_argument_puts_data_and_batches_there(fake: Fake, device: str) -> None:
    fake.write(fake.root)
    train_iter, test_iter = load_fashion_mnist(4, root=fake.root, device=device)
    assert train_iter.images.device.type == device
    reference, _ = load_fashion_mnist(4, root=fake.root)
    for (X, y), (X_ref, y_ref) in zip(train_iter, reference):  # same order on every device
        assert X.device.type == y.device.type == device
        assert torch.equal(X.cpu(), X_ref) and torch.equal(y.cpu(), y_ref)
    assert all(t.device.type == device for t in fashion_mnist_tensors(fake.root, device=device))


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, "8", None])
def test_bad_batch_size_is_refused(fake: Fake, batch_size) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        load_fashion_mnist(batch_size, root=fake.root)


@pytest.mark.parametrize("resize", [0, -28, (28,), (0, 28), (28, 28, 1), 2.0, "224", (28.0, 28)])
def test_bad_resize_is_refused(fake: Fake, resize) -> None:
    with pytest.raises(ValueError, match="resize must be a positive int or a pair"):
        load_fashion_mnist(8, resize=resize, root=fake.root)


def test_tensor_batches_checks_its_tensors() -> None:
    with pytest.raises(ValueError, match="uint8 tensor of shape"):
        TensorBatches(torch.zeros(4, 28, 28), torch.zeros(4), 2)
    with pytest.raises(ValueError, match="labels must have shape"):
        TensorBatches(torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(3), 2)
    with pytest.raises(ValueError, match="seed must be an int"):
        TensorBatches(torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4), 2, seed=0.5)


# ----------------------------------------------------------------------------- search order


def test_search_order_root_then_env_then_cache_then_system(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    for directory in (fake.root, fake.env, fake.cache, fake.system):
        fake.write(directory, gz=directory == fake.system)
    monkeypatch.setenv("D2LBN_DATA", str(fake.env))
    assert locate_fashion_mnist(fake.root) == fake.root
    assert locate_fashion_mnist() == fake.env
    monkeypatch.delenv("D2LBN_DATA")
    assert locate_fashion_mnist() == fake.cache
    for name in NAMES:
        (fake.cache / name).unlink()
    assert locate_fashion_mnist() == fake.system
    for name in NAMES:
        (fake.system / (name + ".gz")).unlink()
    assert locate_fashion_mnist() is None


def test_a_leading_tilde_is_the_home_folder(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    """``~`` in root or D2LBN_DATA is expanded, as torchvision and a shell do."""
    fake.write(fake.home / "fm")
    fake.write(fake.system, gz=True)
    assert locate_fashion_mnist("~/fm") == fake.home / "fm"
    monkeypatch.setenv("D2LBN_DATA", "~/fm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "there is no such folder" note
        assert locate_fashion_mnist() == fake.home / "fm"
        load_fashion_mnist(4)


def test_a_download_into_a_tilde_root_goes_to_the_home_folder(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "_fetch", fake.fetcher())
    monkeypatch.chdir(tmp_path)
    load_fashion_mnist(4, root="~/downloaded")
    assert files_under(fake.home / "downloaded") == sorted(NAMES)
    assert not (tmp_path / "~").exists()


def test_an_incomplete_folder_is_passed_over(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fake.root, names=NAMES[:3])
    fake.write(fake.system, gz=True)
    assert locate_fashion_mnist(fake.root) == fake.system


def test_loading_follows_the_search_order(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt copy further down the order is never read when an earlier one is complete."""
    fake.write(fake.root)
    fake.write(fake.env)
    (fake.env / NAMES[0]).write_bytes(b"\x00" * len(fake.content[NAMES[0]]))
    monkeypatch.setenv("D2LBN_DATA", str(fake.env))
    load_fashion_mnist(4, root=fake.root)
    with pytest.raises(FashionMNISTError, match=str(fake.env / NAMES[0])):
        load_fashion_mnist(4)


def test_xdg_cache_home_moves_the_user_cache(fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    fake.write(xdg / "d2lbn" / "fashion-mnist")
    fake.write(fake.system)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    assert locate_fashion_mnist() == xdg / "d2lbn" / "fashion-mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty means unset: back to ~/.cache
    assert locate_fashion_mnist() == fake.system
    fake.write(fake.cache)
    assert locate_fashion_mnist() == fake.cache


def test_torchvision_download_in_d2lbn_data_is_found(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = fake.write(fake.env / "FashionMNIST" / "raw", gz=True)
    fake.write(raw)  # torchvision keeps both the .gz and the extracted file
    monkeypatch.setenv("D2LBN_DATA", str(fake.env))
    assert locate_fashion_mnist() == raw
    train_x, *_ = fashion_mnist_tensors()
    assert train_x.shape == (N_TRAIN, 28, 28)


# ----------------------------------------------------------------------------- integrity


@pytest.mark.parametrize("where", ["root", "cache"])
def test_corrupt_file_error_names_the_file_and_the_fix(fake: Fake, where: str) -> None:
    """The user cache is refilled by a download; a folder the user chose is not, so say so."""
    folder = getattr(fake, where)
    fake.write(folder)
    path = folder / NAMES[2]
    blob = bytearray(path.read_bytes())
    blob[500] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(FashionMNISTError) as info:
        load_fashion_mnist(4, root=fake.root if where == "root" else None)
    message = str(info.value)
    assert str(path) in message and "SHA-256" in message
    if where == "cache":
        assert "delete it so that the next run fetches a fresh copy" in message
    else:
        assert "replace it with a good copy" in message and "delete it so" not in message


def test_incomplete_d2lbn_data_folder_is_reported_not_silently_skipped(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    fake.write(fake.system, gz=True)
    fake.write(fake.env)
    (fake.env / NAMES[3]).unlink()
    monkeypatch.setenv("D2LBN_DATA", str(fake.env))
    with pytest.warns(UserWarning, match=f"D2LBN_DATA={re.escape(str(fake.env))} is set, but that folder lacks {NAMES[3]}"):
        load_fashion_mnist(4)
    assert data.main([]) == 0
    out = capsys.readouterr().out
    assert f"lacks {NAMES[3]}" in out and str(fake.system) in out
    monkeypatch.setenv("D2LBN_DATA", str(fake.env / "missing"))
    with pytest.warns(UserWarning, match="there is no such folder"):
        load_fashion_mnist(4)
    fake.write(fake.root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # root has the files: the search never reached D2LBN_DATA
        load_fashion_mnist(4, root=fake.root)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_error_names_the_file(fake: Fake, gz: bool) -> None:
    fake.write(fake.root, gz=gz)
    path = fake.root / (NAMES[0] + (".gz" if gz else ""))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FashionMNISTError, match="truncated") as info:
        fashion_mnist_tensors(fake.root)
    assert str(path) in str(info.value) and "replace it with a good copy" in str(info.value)


def test_unreadable_file_says_to_fix_its_permissions(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fake.system, gz=True)
    path = fake.system / (NAMES[0] + ".gz")

    def refuse(filename, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(filename))

    monkeypatch.setattr(data.gzip, "open", refuse)  # the tests may run as root, whom chmod does not stop
    with pytest.raises(FashionMNISTError, match=r"not readable by this user.*chmod a\+r.*D2LBN_DATA") as info:
        load_fashion_mnist(4)
    assert str(path) in str(info.value) and "reinstall" not in str(info.value)


def test_corrupt_debian_copy_says_to_reinstall_the_package(fake: Fake) -> None:
    fake.write(fake.system, gz=True)
    path = fake.system / (NAMES[1] + ".gz")
    path.write_bytes(gzip.compress(b"\x00" * len(fake.content[NAMES[1]])))
    with pytest.raises(FashionMNISTError, match="apt-get install --reinstall dataset-fashion-mnist") as info:
        load_fashion_mnist(4)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- downloading


def assert_three_ways(message: str) -> None:
    assert "apt-get install dataset-fashion-mnist" in message
    assert "D2LBN_DATA" in message and all(name in message for name in NAMES)
    assert "internet" in message and "torchvision" in message


def test_no_copy_and_no_network_gives_one_error_with_the_three_ways(fake: Fake) -> None:
    with pytest.raises(FashionMNISTError) as info:
        load_fashion_mnist(4)
    assert_three_ways(str(info.value))
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert files_under(fake.cache) == [], "a failed download leaves nothing behind"
    assert not fake.home.exists(), "not even the folders it made to download into"
    typo = fake.root / "typo" / "data"
    with pytest.raises(FashionMNISTError):
        load_fashion_mnist(4, root=typo)
    assert not typo.exists() and not typo.parent.exists()


def test_missing_data_downloads_once_into_the_user_cache(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_fetch", fake.fetcher())
    train_iter, test_iter = load_fashion_mnist(4)
    assert (train_iter.num_examples, test_iter.num_examples) == (N_TRAIN, N_TEST)
    assert files_under(fake.cache) == sorted(NAMES), "the verified raw files, and nothing else"
    assert fake.fetches[0].parent == fake.cache, "the temporary folder sits next to the files"
    monkeypatch.setattr(data, "_CACHE", {})
    load_fashion_mnist(4)
    assert len(fake.fetches) == 1, "the next run finds the cache"


def test_missing_data_downloads_into_root_when_given(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_fetch", fake.fetcher())
    load_fashion_mnist(4, root=fake.root)
    assert files_under(fake.root) == sorted(NAMES)
    assert not fake.cache.exists()


@pytest.mark.parametrize(
    "exc",
    [KeyboardInterrupt(), ConnectionResetError("connection reset by peer"), http.client.IncompleteRead(b"x" * 100, 900)],
)
def test_download_interrupted_half_way_leaves_nothing_behind(fake: Fake, monkeypatch: pytest.MonkeyPatch, exc) -> None:
    monkeypatch.setattr(data, "_fetch", fake.fetcher(fail_after=2, exc=exc))
    expected = KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else FashionMNISTError
    with pytest.raises(expected):
        load_fashion_mnist(4)
    assert files_under(fake.cache) == [] and not fake.cache.exists()
    monkeypatch.setattr(data, "_fetch", fake.fetcher())  # the network is back
    train_x, *_ = fashion_mnist_tensors()
    assert torch.equal(train_x, torch.from_numpy(fake.arrays[NAMES[0]]))


def test_download_that_does_not_match_the_checksums_is_not_kept(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.content[NAMES[3]] = idx_bytes(np.zeros(N_TEST, dtype=np.uint8))  # the mirror serves other labels
    monkeypatch.setattr(data, "_fetch", fake.fetcher())
    with pytest.raises(FashionMNISTError, match=NAMES[3]) as caught:
        load_fashion_mnist(4)
    assert files_under(fake.cache) == []
    # The advice fits a download: nothing was kept, so there is no file to delete; try again.
    assert "run again to download a fresh copy" in str(caught.value)
    assert "delete it" not in str(caught.value)


def test_a_connection_dropped_mid_file_moves_on_to_the_next_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets import utils as tv_utils

    tried = []
    monkeypatch.setattr(FashionMNIST, "mirrors", ["https://first.invalid/", "https://second.invalid/"])

    def download_url(url: str, root: str, filename: str, md5: str) -> None:
        tried.append(url)
        if url.startswith("https://first.invalid/"):
            raise http.client.IncompleteRead(b"x" * 100, 900)  # not an OSError
        (Path(root) / filename).write_bytes(b"fetched")

    monkeypatch.setattr(tv_utils, "download_url", download_url)
    data._fetch(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(name for name, _ in FashionMNIST.resources)
    assert len(tried) == 2 * len(FashionMNIST.resources), "each file: the first mirror, then the second"


def test_a_full_disk_while_saving_the_download_says_what_to_do(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_fetch", fake.fetcher())
    real_write_bytes = Path.write_bytes

    def write_bytes(self: Path, content: bytes) -> int:
        if self.name == NAMES[2] + ".verified":
            real_write_bytes(self, content[:10])  # part of it went in before the disk filled up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, content)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(FashionMNISTError, match=r"No space left on device.*Free some space.*D2LBN_DATA"):
        load_fashion_mnist(4)
    assert files_under(fake.cache) == [] and not fake.cache.exists(), "nothing kept, not even the folder"


def test_leftovers_of_a_killed_download_are_not_trusted(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process killed outright (no cleanup) can leave a staging folder; it is never read."""
    fake.write(fake.cache / ".download-killed", gz=True)
    partial = fake.cache / ".download-killed" / (NAMES[0] + ".gz")
    partial.write_bytes(partial.read_bytes()[:100])
    assert locate_fashion_mnist() is None
    two_hours_ago = time.time() - 7200
    os.utime(fake.cache / ".download-killed", (two_hours_ago, two_hours_ago))
    fake.write(fake.cache / ".download-running")  # another process's download, under way
    monkeypatch.setattr(data, "_fetch", fake.fetcher())
    train_x, *_ = fashion_mnist_tensors()
    assert torch.equal(train_x, torch.from_numpy(fake.arrays[NAMES[0]]))
    assert not (fake.cache / ".download-killed").exists(), "the next download clears old leftovers"
    assert (fake.cache / ".download-running").is_dir(), "but not a folder a running download may be using"


def test_a_partial_file_in_a_complete_folder_is_refused(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fake.cache)
    path = fake.cache / NAMES[0]
    path.write_bytes(path.read_bytes()[:1000])
    monkeypatch.setattr(data, "_fetch", fake.fetcher())
    with pytest.raises(FashionMNISTError, match="truncated") as info:
        load_fashion_mnist(4)
    assert str(path) in str(info.value)
    assert fake.fetches == []


# ----------------------------------------------------------------------------- command line


def test_main_exit_codes(fake: Fake, capsys: pytest.CaptureFixture) -> None:
    assert data.main([]) == 1
    assert_three_ways(capsys.readouterr().out)
    fake.write(fake.system, gz=True)
    assert data.main([]) == 0
    assert str(fake.system) in capsys.readouterr().out
    fake.write(fake.root)
    assert data.main(["--root", str(fake.root)]) == 0
    assert str(fake.root) in capsys.readouterr().out
    (fake.root / NAMES[1]).write_bytes(b"\x00" * 10)
    assert data.main(["--root", str(fake.root)]) == 2
    assert str(fake.root / NAMES[1]) in capsys.readouterr().out


def run_module(env: dict, *python_args: str) -> subprocess.CompletedProcess:
    """Run ``python -m d2lbn`` in a fresh interpreter, or ``python *python_args`` when given."""
    args = python_args or ("-m", "d2lbn")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.fashion_mnist
def test_python_m_d2lbn_exits_0_when_the_data_is_there() -> None:
    result = run_module(dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(locate_fashion_mnist()) in result.stdout
    assert result.stderr == ""  # no warning from runpy or anything else


def test_python_m_d2lbn_exits_1_with_the_three_ways_when_missing(tmp_path: Path) -> None:
    # A fresh interpreter with no copy anywhere: empty HOME, no D2LBN_DATA, and the Debian
    # folder pointed at an empty one (a machine with the package installed cannot hide it).
    env = {k: v for k, v in os.environ.items() if k not in ("D2LBN_DATA", "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path)
    no_system_copy = (
        "import pathlib, sys, d2lbn.data as data; "
        f"data._SYSTEM_DIR = pathlib.Path({str(tmp_path / 'no-system-copy')!r}); "
        "sys.exit(data.main([]))"
    )
    result = run_module(env, "-c", no_system_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_three_ways(result.stdout)


# ----------------------------------------------------------------------------- labels


def test_text_labels() -> None:
    assert text_labels(range(10)) == list(CLASSES)
    assert text_labels(torch.tensor([[1, 2], [8, 9]])) == ["Trouser", "Pullover", "Bag", "Ankle boot"]
    assert text_labels(np.array([5, 6], dtype=np.int64)) == ["Sandal", "Shirt"]
    assert text_labels(4) == ["Coat"]
    assert text_labels(torch.tensor(0)) == ["T-shirt/top"]
    assert text_labels([]) == []
    for bad in ([10], [-1], [1.0], torch.tensor([0.5]), ["Bag"]):
        with pytest.raises(ValueError, match="ints from 0 to 9"):
            text_labels(bad)


# ----------------------------------------------------------------------------- the real data


@pytest.mark.fashion_mnist
def test_real_data_passes_its_checksums_and_has_the_known_sizes() -> None:
    train_x, train_y, test_x, test_y = fashion_mnist_tensors()
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    assert torch.bincount(train_y).tolist() == [6000] * 10
    assert torch.bincount(test_y).tolist() == [1000] * 10
    assert int(train_x.max()) == 255 and int(train_x.min()) == 0


@pytest.mark.fashion_mnist
def test_real_data_batches() -> None:
    train_iter, test_iter = load_fashion_mnist(256)
    assert (train_iter.num_examples, test_iter.num_examples) == (60000, 10000)
    assert (len(train_iter), len(test_iter)) == (235, 40)
    X, y = next(iter(train_iter))
    assert X.shape == (256, 1, 28, 28) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= X.min().item() and X.max().item() <= 1.0
    assert text_labels(next(iter(test_iter))[1][:3]) == ["Ankle boot", "Pullover", "Trouser"]  # file order
