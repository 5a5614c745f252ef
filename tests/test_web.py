"""The Draw-a-digit page's models and JavaScript (chapter 12): current, exact, run by Node."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import data, inference, shifts

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "_static" / "mnist" / "weights.mjs"
SPEC = importlib.util.spec_from_file_location("book_tools", ROOT / "scripts" / "book_tools.py")


@pytest.fixture(scope="module")
def book_tools():
    module = importlib.util.module_from_spec(SPEC)
    SPEC.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def book_models(book_tools) -> dict:
    return {key: model for key, (_, model) in book_tools.web_models().items()}


def test_the_page_offers_the_books_models_robust_first(book_models, book_tools):
    payload = inference.read_web_bundle(BUNDLE.read_text())
    assert [k for k in payload if k != "examples"] == [
        "robust",
        "robust_mlp",
        "lenet",
        "cnn",
        "mlp",
    ]
    kinds = {key: type(model).__name__ for key, model in book_models.items()}
    assert kinds == {
        "robust": "LeNetLike",
        "robust_mlp": "SimpleNN",
        "lenet": "LeNetLike",
        "cnn": "SmallCNN",
        "mlp": "SimpleNN",
    }
    assert "chapter 13" in payload["robust"]["name"] and "chapter 7" in payload["mlp"]["name"]
    # the robust models carry chapter 13's "not sure" rule, as their shipped results record it
    for key, rule in book_tools.page_rules().items():
        assert payload[key]["temperature"] == rule["temperature"] > 0
        assert 0 < payload[key]["not_sure_below"] == rule["not_sure_below"] < 1
    assert all("temperature" not in payload[key] for key in ("lenet", "cnn", "mlp"))


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    raw = data.mnist_datasets(raw=True)[1]
    return raw.data.numpy(), raw.targets.numpy()


def test_the_committed_bundle_is_what_export_web_writes_today(book_tools):
    assert BUNDLE.read_text() == book_tools.web_bundle_text(), (
        "the page's models are stale: python scripts/book_tools.py export-web"
    )


def test_the_bundle_reproduces_the_book_models_logits(book_models, test_set):
    payload = inference.read_web_bundle(BUNDLE.read_text())
    images = inference.normalize(test_set[0][:500] / 255)
    x = torch.from_numpy(images).float().unsqueeze(1)
    for key, model in book_models.items():
        entry = payload[key]
        logits = inference.numpy_forward(entry, entry["data"], images)
        with torch.inference_mode():
            expected = model(x).numpy()
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
        assert (logits.argmax(1) == expected.argmax(1)).all()


def test_the_bundle_shows_each_digit_and_each_models_mistakes(book_models, test_set):
    examples = inference.read_web_bundle(BUNDLE.read_text())["examples"]
    labels = examples["labels"]
    images = np.frombuffer(base64.b64decode(examples["images"]), np.uint8)
    images = images.reshape(len(labels), 28, 28)
    assert labels[:10] == list(range(10))
    x = torch.from_numpy(inference.normalize(images / 255)).float().unsqueeze(1)
    for model in book_models.values():
        with torch.inference_mode():
            preds = model(x).argmax(1).numpy()
        assert (preds != np.array(labels)).sum() >= 2, "each model gets some shown digits wrong"


def _drawings(test_images: np.ndarray) -> list[np.ndarray]:
    """Inks of several sizes and positions: digits enlarged off-centre, and uneven scales."""
    inks = []
    for n, (factor, top, left) in enumerate(((3, 5, 40), (2, 30, 3), (5, 0, 0))):
        canvas = np.zeros((28 * factor + 50, 28 * factor + 45))
        big = np.kron(test_images[n] / 255, np.ones((factor, factor)))
        canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
        inks.append(canvas)
    gen = np.random.default_rng(0)
    blob = np.clip(gen.normal(size=(53, 37)), 0, None)  # no aspect ratio or scale is round
    blob[:5] = 0
    inks.append(blob / blob.max())
    return inks


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_runs_the_pages_forward_pass_and_preprocessing(
    book_models, book_tools, test_set, tmp_path
):
    # 40 test digits, and 20 with noise (chapter 13's shift), on which the robust CNN is unsure
    noisy = shifts.apply("noise", torch.from_numpy(test_set[0][:20] / 255).float()[:, None])
    raw = np.concatenate([test_set[0][:40] / 255, noisy[:, 0].double().numpy()])
    images = inference.normalize(raw)
    x = torch.from_numpy(images).float().unsqueeze(1)
    with torch.inference_mode():
        logits = {key: model(x).tolist() for key, model in book_models.items()}
    drawings = [
        {
            "ink": ink.ravel().tolist(),
            "height": ink.shape[0],
            "width": ink.shape[1],
            "expected": inference.mnist_style(ink).ravel().tolist(),
        }
        for ink in _drawings(test_set[0])
    ]
    rules = book_tools.page_rules()
    decisions = {}
    for key, rule in rules.items():  # chapter 13's rule, computed in Python
        probs = torch.softmax(
            torch.tensor(logits[key], dtype=torch.float64) / rule["temperature"], 1
        )
        p, digit = probs.max(1)
        decisions[key] = [
            {"digit": int(d), "sure": bool(q >= rule["not_sure_below"])}
            for d, q in zip(digit, p, strict=True)
        ]
    golden = {
        "bundle": str(BUNDLE),
        "images": images.reshape(len(images), -1).tolist(),
        "logits": logits,
        "decisions": decisions,
        "drawings": drawings,
    }
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(golden))
    done = subprocess.run(
        ["node", "--test", str(ROOT / "tests" / "js")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MNIST_GOLDEN": str(path)},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# pass 4" in done.stdout and "# skipped 0" in done.stdout, done.stdout[-2000:]
