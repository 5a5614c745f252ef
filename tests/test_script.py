"""The appendix's one-file script: self-contained, the book's network, and it runs end to end."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.data import default_root, ensure_mnist, mnist_tensors
from helpers.loop import accuracy
from helpers.models import SimpleNN

SCRIPT = Path(__file__).resolve().parents[1] / "book" / "train_mnist.py"
ALLOWED_IMPORTS = {"argparse", "torch", "torchvision", "tqdm"}


def load_script():
    spec = importlib.util.spec_from_file_location("train_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script_run(tmp_path_factory) -> tuple[str, Path]:
    """Run the script in quick mode once, on the book's data root; its stdout and checkpoint."""
    root = ensure_mnist(default_root())
    out = tmp_path_factory.mktemp("script") / "model.pt"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--data", str(root), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, out


def test_script_needs_nothing_but_torch_torchvision_and_tqdm():
    tree = ast.parse(SCRIPT.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
    assert len(SCRIPT.read_text().splitlines()) < 150, "a page a reader can read whole"


def test_script_network_is_the_book_s_network():
    torch.manual_seed(0)
    book = SimpleNN().eval()
    mine = load_script().SimpleNN().eval()
    shapes = {k: v.shape for k, v in book.state_dict().items()}
    assert {k: v.shape for k, v in mine.state_dict().items()} == shapes
    mine.load_state_dict(book.state_dict())
    x = torch.randn(8, 1, 28, 28)
    assert torch.equal(mine(x), book(x)), "same weights, same arithmetic, same logits"


def test_script_trains_evaluates_and_saves_a_checkpoint_that_loads_safely(script_run):
    stdout, out = script_run
    printed = float(re.search(r"test accuracy (\d+\.\d+)%", stdout).group(1))
    assert printed > 80, stdout  # 1 epoch on 10,000 images: 86.9% here; 80 leaves room for any CPU
    assert "validation accuracy" in stdout and "confusion matrix" in stdout
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"model_state_dict", "optimizer_state_dict", "history", "test_acc"}
    assert saved["test_acc"] == pytest.approx(printed, abs=0.005)
    model = SimpleNN()
    model.load_state_dict(saved["model_state_dict"])
    images, labels = mnist_tensors(train=False)
    # The book's own evaluation of the saved weights agrees with what the script printed, to
    # within one image of the 2,000 (batches of other sizes may round a near-tie differently).
    assert accuracy(model, images[:2000], labels[:2000]) == pytest.approx(printed, abs=0.051)
