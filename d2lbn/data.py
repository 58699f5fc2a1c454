"""Fashion-MNIST held in memory, found offline or downloaded once.

The chapters train small networks for many epochs on 2-core machines, so the data pipeline must
cost next to nothing. This module parses the four IDX files once per process into ``uint8``
tensors and cuts batches out of them with tensor indexing: no PIL image, no per-example
transform, no worker processes.

Where the files are looked for, in order:

1. the ``root`` argument;
2. the folder named by the ``D2LBN_DATA`` environment variable;
3. the user cache, ``$XDG_CACHE_HOME/d2lbn/fashion-mnist`` (by default
   ``~/.cache/d2lbn/fashion-mnist``);
4. the copy Debian's ``dataset-fashion-mnist`` package installs in
   ``/usr/share/datasets/fashion-mnist``;
5. failing all of these, a download through torchvision into ``root`` when given, else into the
   user cache.

In each folder a file may be raw (``train-images-idx3-ubyte``) or gzipped
(``train-images-idx3-ubyte.gz``), and torchvision's layout (``<folder>/FashionMNIST/raw/``) is
recognised too, so an existing torchvision download is reused. A leading ``~`` in ``root`` or
``D2LBN_DATA`` stands for the home folder, as in a shell. Every file is checked against the
SHA-256 and size of the original decompressed content before it is used.

Run ``python -m d2lbn`` to see where the data is found (exit status 0), how to get it
(exit status 1), or which file of the copy found is corrupt (exit status 2).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "CLASSES",
    "FashionMNISTError",
    "TensorBatches",
    "fashion_mnist_tensors",
    "load_fashion_mnist",
    "locate_fashion_mnist",
    "text_labels",
]

PathLike = Union[str, "os.PathLike[str]"]
Device = Union[str, torch.device, None]

CLASSES: Tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The ten class names of Fashion-MNIST, indexed by label."""

# SHA-256 and size in bytes of the decompressed content of each file (Xiao, Rasul and Vollgraf's
# originals; Debian recompressed the .gz files, so only the decompressed content is comparable).
_EXPECTED: Dict[str, Tuple[str, int]] = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
}
_FILE_NAMES: Tuple[str, ...] = tuple(_EXPECTED)

_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_DEBIAN_PACKAGE = "dataset-fashion-mnist"
_ENV_VAR = "D2LBN_DATA"

# Parsed splits, keyed by (path, size, modification time) of the four files they came from.
_CACHE: Dict[Tuple[Tuple[str, int, int], ...], Tuple[Tensor, Tensor, Tensor, Tensor]] = {}
_CACHE_ENTRIES = 2


class FashionMNISTError(RuntimeError):
    """Fashion-MNIST could not be found, downloaded or verified; the message says what to do."""


def _three_ways() -> str:
    return (
        "Fashion-MNIST is needed and was not found. Any one of these three ways provides it:\n"
        f"  1. install Debian's package (no network needed afterwards): "
        f"sudo apt-get install {_DEBIAN_PACKAGE}\n"
        f"  2. point {_ENV_VAR} at a folder holding the four files "
        f"({', '.join(_FILE_NAMES)}; raw or .gz): export {_ENV_VAR}=/path/to/folder\n"
        "  3. connect to the internet, and torchvision downloads them on the next run"
    )


# ----------------------------------------------------------------------------- finding the files


def _user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/d2lbn/fashion-mnist``, or ``~/.cache/d2lbn/fashion-mnist``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "d2lbn" / "fashion-mnist"


def _folder(path: PathLike) -> Path:
    """A folder the user named (``root`` or ``$D2LBN_DATA``), with ``~`` expanded as a shell would."""
    return Path(path).expanduser()


def _search_dirs(root: Optional[PathLike]) -> List[Path]:
    """The folders to look in, in order of preference."""
    dirs = []
    if root is not None:
        dirs.append(_folder(root))
    env = os.environ.get(_ENV_VAR, "")
    if env:
        dirs.append(_folder(env))
    dirs.append(_user_cache_dir())
    dirs.append(_SYSTEM_DIR)
    return dirs


def _files_in(directory: Path) -> Optional[Dict[str, Path]]:
    """The four files in ``directory`` (or its torchvision layout), raw preferred over .gz."""
    for folder in (directory, directory / "FashionMNIST" / "raw"):
        found = {}
        for name in _FILE_NAMES:
            for candidate in (folder / name, folder / (name + ".gz")):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(_FILE_NAMES):
            return found
    return None


def _env_dir_note() -> Optional[str]:
    """What is wrong with ``$D2LBN_DATA`` when it is set but lacks some of the four files."""
    env = os.environ.get(_ENV_VAR, "")
    if not env or _files_in(_folder(env)) is not None:
        return None
    folder = _folder(env)
    if not folder.is_dir():
        return f"{_ENV_VAR}={env} is set, but there is no such folder; looking in the next places"
    missing = [name for name in _FILE_NAMES if not any((folder / n).is_file() for n in (name, name + ".gz"))]
    return f"{_ENV_VAR}={env} is set, but that folder lacks {', '.join(missing)}; looking in the next places"


def _locate_files(root: Optional[PathLike]) -> Optional[Dict[str, Path]]:
    for directory in _search_dirs(root):
        files = _files_in(directory)
        if files is not None:
            return files
    return None


def locate_fashion_mnist(root: Optional[PathLike] = None) -> Optional[Path]:
    """The folder :func:`load_fashion_mnist` would read the four files from, or ``None``.

    It follows the search order of the module (``root``, ``$D2LBN_DATA``, the user cache, the
    Debian copy); it downloads nothing, prints nothing and does not verify the checksums.

    Parameters
    ----------
    root
        A folder to look in first.

    Returns
    -------
    Path or None
        The folder holding the four files (for torchvision's layout, its ``FashionMNIST/raw``
        folder), or ``None`` when no complete copy is found.

    Examples
    --------
    >>> found = locate_fashion_mnist()
    >>> found is None or found.is_dir()
    True
    """
    files = _locate_files(root)
    return None if files is None else files[_FILE_NAMES[0]].parent


# ----------------------------------------------------------------------------- reading the files


_STAGING_PREFIX = ".download-"  # the temporary folder a download is fetched and verified in
# What a failed download can raise: OSError (URLError, a reset connection), RuntimeError
# (torchvision's MD5 check), HTTPException (IncompleteRead: a connection dropped mid-file).
_DOWNLOAD_ERRORS = (OSError, RuntimeError, http.client.HTTPException)


def _fix_hint(path: Path) -> str:
    if any(parent.name.startswith(_STAGING_PREFIX) for parent in path.parents):
        return "the download was damaged on the way and nothing was kept; run again to download a fresh copy"
    if _SYSTEM_DIR in path.parents:
        return f"reinstall Debian's package: sudo apt-get install --reinstall {_DEBIAN_PACKAGE}"
    if _user_cache_dir() in path.parents:
        return "delete it so that the next run fetches a fresh copy"
    # A folder of the user's choosing (root or D2LBN_DATA): a damaged copy there is not replaced
    # by a download, which only happens when no copy is found anywhere.
    return (
        "replace it with a good copy, or delete the folder's Fashion-MNIST files (or unset "
        f"{_ENV_VAR} if it points there) so that d2lbn looks further and downloads a fresh copy"
    )


def _read_verified(name: str, path: Path) -> bytes:
    """The decompressed content of ``path``, checked against the known SHA-256 and size."""
    sha256, size = _EXPECTED[name]
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except PermissionError as err:
        raise FashionMNISTError(
            f"Fashion-MNIST file {path} is not readable by this user ({err}): give read permission "
            f"(chmod a+r), or set {_ENV_VAR} to a folder holding a readable copy."
        ) from err
    except (EOFError, OSError, zlib.error) as err:  # truncated or damaged gzip stream
        raise FashionMNISTError(
            f"Fashion-MNIST file {path} cannot be read ({err}); it is truncated or damaged: "
            f"{_fix_hint(path)}."
        ) from err
    if len(data) != size:
        raise FashionMNISTError(
            f"Fashion-MNIST file {path} holds {len(data)} bytes once decompressed, expected {size}: "
            f"it is truncated or not the right file; {_fix_hint(path)}."
        )
    if hashlib.sha256(data).hexdigest() != sha256:
        raise FashionMNISTError(
            f"Fashion-MNIST file {path} is corrupt: its SHA-256 differs from the original's; "
            f"{_fix_hint(path)}."
        )
    return data


def _parse_idx(data: bytes, ndim: int, source: str) -> np.ndarray:
    """An IDX array of unsigned bytes (magic 0x0000 0x08 ndim, then ndim big-endian sizes)."""
    header = 4 + 4 * ndim
    if len(data) < header or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise FashionMNISTError(
            f"{source} is not an IDX file of unsigned bytes with {ndim} dimension(s): "
            f"its header starts with {data[:4].hex()}"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) != header + int(np.prod(shape)):
        raise FashionMNISTError(f"{source}: the IDX header announces shape {shape}, which does not fit its size")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _load_tensors(files: Dict[str, Path]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Verify and parse the four files, once per process for the same files."""
    stats = [(files[name], files[name].stat()) for name in _FILE_NAMES]
    key = tuple((str(path.resolve()), st.st_size, st.st_mtime_ns) for path, st in stats)
    if key in _CACHE:
        return _CACHE[key]
    arrays = {}
    for name in _FILE_NAMES:
        data = _read_verified(name, files[name])
        arrays[name] = _parse_idx(data, 3 if "images" in name else 1, str(files[name]))
    tensors = []
    for split in ("train", "t10k"):
        images = torch.from_numpy(arrays[f"{split}-images-idx3-ubyte"].copy())
        labels = torch.from_numpy(arrays[f"{split}-labels-idx1-ubyte"].astype(np.int64))
        if len(images) != len(labels):
            raise FashionMNISTError(f"the {split} split has {len(images)} images but {len(labels)} labels")
        tensors += [images, labels]
    while len(_CACHE) >= _CACHE_ENTRIES:
        del _CACHE[next(iter(_CACHE))]
    _CACHE[key] = tuple(tensors)  # type: ignore[assignment]
    return _CACHE[key]


# ----------------------------------------------------------------------------- downloading


def _fetch(directory: Path) -> None:
    """Download the four gzipped files into ``directory`` with torchvision (MD5-checked).

    Kept small and separate so that tests can replace it (a failure half-way, no network).
    """
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    for filename, md5 in FashionMNIST.resources:
        errors: List[Exception] = []
        for mirror in FashionMNIST.mirrors:
            try:
                download_url(mirror + filename, root=str(directory), filename=filename, md5=md5)
                break
            except _DOWNLOAD_ERRORS as err:
                errors.append(err)
        else:
            raise errors[-1]


def _download(destination: Path) -> None:
    """Fetch, verify and move the four files into ``destination``, all or nothing per file.

    The files are fetched into a temporary folder inside ``destination`` and checked there; only
    verified files are moved into place, each with an atomic :func:`os.replace`. Whatever
    happens (including ``KeyboardInterrupt``), the temporary folder is removed.
    """
    created = [folder for folder in (destination, *destination.parents) if not folder.exists()]
    try:
        destination.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(destination)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=destination))
    except OSError as err:
        _remove_if_empty(created)
        raise FashionMNISTError(f"{_three_ways()}\n(No folder to download into: {err})") from err
    try:
        try:
            _fetch(staging)
        except _DOWNLOAD_ERRORS as err:
            raise FashionMNISTError(f"{_three_ways()}\n(The download through torchvision failed: {err!r})") from err
        fetched = _files_in(staging)
        if fetched is None:
            raise FashionMNISTError(f"{_three_ways()}\n(The download did not produce the four files.)")
        verified = []
        for name in _FILE_NAMES:
            data = _read_verified(name, fetched[name])
            raw = staging / (name + ".verified")
            try:
                raw.write_bytes(data)
            except OSError as err:  # a full disk, a quota
                raise FashionMNISTError(
                    f"Fashion-MNIST was downloaded and verified, but writing it into {destination} failed "
                    f"({err}); nothing was kept. Free some space there (the four files take about 55 MB), "
                    f"or set {_ENV_VAR} to a folder with room and run again."
                ) from err
            verified.append((raw, destination / name))
        for source, target in verified:
            os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(created)  # a failed download leaves no folder it made behind


def _remove_if_empty(folders: List[Path]) -> None:
    """Remove the folders (innermost first) that a download created, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the download succeeded), or already gone
            return


def _remove_stale_staging(destination: Path, max_age_s: float = 3600.0) -> None:
    """Delete temporary download folders left by a process that was killed (older than an hour,
    so that a download running in another process at the same time is left alone)."""
    for staging in destination.glob(_STAGING_PREFIX + "*"):
        try:
            if staging.is_dir() and time.time() - staging.stat().st_mtime > max_age_s:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            pass


def fashion_mnist_tensors(
    root: Optional[PathLike] = None, device: Device = None
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The whole of Fashion-MNIST as four tensors, for chapters that need entire splits.

    Parameters
    ----------
    root
        A folder to look in first, and to download into if no copy is found anywhere.
    device
        Where to put the tensors (default: the CPU).

    Returns
    -------
    tuple of four Tensors
        ``(train_images, train_labels, test_images, test_labels)``: images of shape
        ``(N, 28, 28)`` and dtype ``uint8`` (0 to 255), labels of shape ``(N,)`` and dtype
        ``int64``; N is 60,000 for training and 10,000 for test. The CPU tensors are shared
        with later calls in the same process: do not modify them in place.

    Raises
    ------
    FashionMNISTError
        When no copy is found and none can be downloaded, or a file is corrupt.
    """
    files = _locate_files(root)
    from_root = root is not None and files is not None and _files_in(_folder(root)) is not None
    note = None if from_root else _env_dir_note()  # the search never reached D2LBN_DATA when root had the files
    if note is not None:  # an incomplete D2LBN_DATA is never the folder the files came from
        warnings.warn(note, stacklevel=3)
    if files is None:
        _download(_folder(root) if root is not None else _user_cache_dir())
        files = _locate_files(root)
        if files is None:  # pragma: no cover - the download just put the files in place
            raise FashionMNISTError(_three_ways())
    tensors = _load_tensors(files)
    if device is not None:
        tensors = tuple(t.to(device) for t in tensors)  # type: ignore[assignment]
    return tensors


# ----------------------------------------------------------------------------- batches


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _check_resize(resize: Union[int, Sequence[int], None]) -> Optional[Tuple[int, int]]:
    if resize is None:
        return None
    size = (resize, resize) if isinstance(resize, (int, np.integer)) and not isinstance(resize, bool) else resize
    try:
        h, w = size  # type: ignore[misc]
    except (TypeError, ValueError):
        h = w = None
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in (h, w)):
        raise ValueError(f"resize must be a positive int or a pair (height, width) of positive ints, got {resize!r}")
    return int(h), int(w)  # type: ignore[arg-type]


class TensorBatches:
    """Mini-batches cut from images and labels held as tensors; one pass is an epoch.

    The images stay ``uint8``; each batch is converted on the fly to ``float32`` in [0, 1] with
    shape ``(B, 1, H, W)`` (resized when asked), the labels are ``int64``. With ``shuffle``,
    every epoch visits the examples in a fresh random order drawn from the iterator's own
    :class:`torch.Generator`, so two iterators with the same seed give the same orders and the
    global random state is left alone. An iterator that has served some epochs goes on with the
    next order of its sequence; to replay the first epochs, make a new one.

    Parameters
    ----------
    images
        ``uint8`` images of shape ``(N, H, W)``.
    labels
        Integer labels of shape ``(N,)``.
    batch_size
        Examples per batch (the last one may be smaller unless ``drop_last``).
    shuffle
        Visit the examples in a new random order each epoch (default: file order).
    seed
        Seed of the generator behind the orders.
    resize
        Resize each batch to this size, an int or ``(height, width)`` (bilinear, antialiased).
    drop_last
        Leave out the last batch when it is smaller than ``batch_size``.

    Attributes
    ----------
    images
        The ``uint8`` images the batches are cut from.
    labels
        Their ``int64`` labels.
    num_examples
        N, the number of examples.
    batch_size
        Examples per batch.

    Examples
    --------
    >>> images = torch.arange(5 * 2 * 2, dtype=torch.uint8).reshape(5, 2, 2)
    >>> batches = TensorBatches(images, torch.arange(5), batch_size=2)
    >>> len(batches), batches.num_examples
    (3, 5)
    >>> [y.tolist() for _, y in batches]
    [[0, 1], [2, 3], [4]]
    >>> X, y = next(iter(batches))
    >>> X.shape, X.dtype, y.dtype
    (torch.Size([2, 1, 2, 2]), torch.float32, torch.int64)
    >>> shuffled = TensorBatches(images, torch.arange(5), batch_size=5, shuffle=True, seed=0)
    >>> sorted(next(iter(shuffled))[1].tolist())
    [0, 1, 2, 3, 4]
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        resize: Union[int, Tuple[int, int], None] = None,
        drop_last: bool = False,
    ) -> None:
        if images.dim() != 3 or images.dtype != torch.uint8:
            raise ValueError(
                f"images must be a uint8 tensor of shape (N, H, W), got dtype {images.dtype} "
                f"and shape {tuple(images.shape)}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.images = images
        self.labels = labels.long()
        self.batch_size = _check_batch_size(batch_size)
        self.num_examples = len(images)
        self.shuffle = bool(shuffle)
        self.resize = _check_resize(resize)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def __len__(self) -> int:
        """The number of batches in an epoch."""
        if self.drop_last:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        order = None
        if self.shuffle:  # drawn now, on the CPU, so the order is the same on every device
            order = torch.randperm(self.num_examples, generator=self._generator).to(self.images.device)
        return self._batches(order)

    def _batches(self, order: Optional[Tensor]) -> Iterator[Tuple[Tensor, Tensor]]:
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, self.num_examples), self.batch_size):
            end = start + self.batch_size
            if order is None:
                X, y = self.images[start:end], self.labels[start:end].clone()
            else:
                index = order[start:end]
                X, y = self.images.index_select(0, index), self.labels.index_select(0, index)
            yield self._to_float(X), y

    def _to_float(self, X: Tensor) -> Tensor:
        X = X.unsqueeze(1).to(torch.float32).div_(255)
        if self.resize is not None and tuple(X.shape[-2:]) != self.resize:
            X = F.interpolate(X, size=self.resize, mode="bilinear", align_corners=False, antialias=True)
        return X

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_examples={self.num_examples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, resize={self.resize}, drop_last={self.drop_last})"
        )


def load_fashion_mnist(
    batch_size: int,
    resize: Union[int, Tuple[int, int], None] = None,
    root: Optional[PathLike] = None,
    device: Device = None,
    *,
    seed: int = 0,
    drop_last: bool = False,
) -> Tuple[TensorBatches, TensorBatches]:
    """Training and test iterators over Fashion-MNIST, held in memory.

    The files are found offline when possible (see the module's search order), verified against
    their known SHA-256, parsed once per process, and kept as ``uint8`` tensors; batches are
    converted to ``float32`` as they are drawn.

    Parameters
    ----------
    batch_size
        Examples per batch.
    resize
        Resize the 28 x 28 images of each batch to this size, an int or ``(height, width)``
        (bilinear, antialiased).
    root
        A folder to look in first, and to download into if no copy is found anywhere.
    device
        Where the images live and the batches are made (default: the CPU).
    seed
        Seed of the training iterator's generator: the same seed gives the same order of
        examples, and each epoch draws a new order.
    drop_last
        Leave out the training iterator's last, smaller batch. The test iterator always
        covers every example.

    Returns
    -------
    tuple of two TensorBatches
        ``(train_iter, test_iter)``: the training iterator (shuffled each epoch; 60,000
        examples) and the test iterator (in file order; 10,000 examples). Batches are
        ``(X, y)`` with ``X`` of shape ``(B, 1, 28, 28)`` (or the resized size), ``float32`` in
        [0, 1], and ``y`` of shape ``(B,)``, ``int64``.

    Raises
    ------
    ValueError
        For a batch size or resize that is not a positive int (or pair of them).
    FashionMNISTError
        When no copy is found and none can be downloaded, or a file is corrupt.

    Examples
    --------
    >>> train_iter, test_iter = load_fashion_mnist(256)
    >>> len(train_iter), train_iter.num_examples
    (235, 60000)
    >>> X, y = next(iter(train_iter))
    >>> X.shape, X.dtype, y.dtype
    (torch.Size([256, 1, 28, 28]), torch.float32, torch.int64)
    """
    batch_size = _check_batch_size(batch_size)
    size = _check_resize(resize)
    train_images, train_labels, test_images, test_labels = fashion_mnist_tensors(root, device)
    train_iter = TensorBatches(
        train_images, train_labels, batch_size, shuffle=True, seed=seed, resize=size, drop_last=drop_last
    )
    test_iter = TensorBatches(test_images, test_labels, batch_size, resize=size)
    return train_iter, test_iter


def text_labels(labels: Union[int, Iterable[int], Tensor]) -> List[str]:
    """The class names of Fashion-MNIST labels.

    Parameters
    ----------
    labels
        Labels from 0 to 9: an int, a sequence of ints, or a tensor of any shape.

    Returns
    -------
    list of str
        One name per label (a one-element list for a single int).

    Examples
    --------
    >>> text_labels([0, 9, 3])
    ['T-shirt/top', 'Ankle boot', 'Dress']
    >>> text_labels(torch.tensor([7, 8]))
    ['Sneaker', 'Bag']
    """
    if isinstance(labels, Tensor):
        values = labels.reshape(-1).tolist()
    elif isinstance(labels, (int, np.integer)):
        values = [labels]
    else:
        values = list(labels)
    names = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < len(CLASSES):
            raise ValueError(f"Fashion-MNIST labels are ints from 0 to 9, got {value!r}")
        names.append(CLASSES[int(value)])
    return names


# ----------------------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m d2lbn``: say where Fashion-MNIST is, verified, or how to get it.

    Returns 0 when a copy is found and its checksums match, 1 when none is found (the message
    gives the three ways to get it), 2 when the copy found is corrupt. Nothing is downloaded.
    """
    parser = argparse.ArgumentParser(
        prog="python -m d2lbn",
        description="Find the Fashion-MNIST files d2lbn would use, and verify them. Downloads nothing.",
    )
    parser.add_argument("--root", help="a folder to look in first")
    args = parser.parse_args(argv)
    note = _env_dir_note()
    if note is not None:
        print(f"Note: {note}.")
    files = _locate_files(args.root)
    if files is None:
        print(_three_ways())
        return 1
    try:
        _load_tensors(files)
    except FashionMNISTError as err:
        print(err)
        return 2
    print(f"Fashion-MNIST found, checksums match: {files[_FILE_NAMES[0]].parent}")
    return 0

