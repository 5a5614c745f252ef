"""What a trained model gets right and wrong (chapter 08), with scikit-learn's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn
from torch.utils.data import DataLoader

from helpers.data import DIGITS


@dataclass(frozen=True)
class Predictions:
    """A model's class probabilities for every sample of a dataset, with the true labels."""

    probs: torch.Tensor  # (N, 10), rows sum to 1
    targets: torch.Tensor  # (N,)

    @property
    def preds(self) -> torch.Tensor:
        """The predicted class: the most probable one."""
        return self.probs.argmax(1)

    @property
    def confidence(self) -> torch.Tensor:
        """The probability the model gave its own prediction."""
        return self.probs.max(1).values

    @property
    def accuracy(self) -> float:
        """Accuracy in %."""
        return 100.0 * (self.preds == self.targets).double().mean().item()


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device | None = None
) -> Predictions:
    """Softmax probabilities of `model` (in eval mode) on every batch of `loader`, in order."""
    device = device or next(model.parameters()).device
    model.eval()
    probs, targets = [], []
    for images, labels in loader:
        probs.append(model(images.to(device)).softmax(dim=1).cpu())
        targets.append(labels)
    return Predictions(torch.cat(probs), torch.cat(targets))


def confusion(p: Predictions) -> np.ndarray:
    """The 10 x 10 confusion matrix: row = true digit, column = predicted digit."""
    return confusion_matrix(p.targets.numpy(), p.preds.numpy(), labels=DIGITS)


def per_class_report(p: Predictions) -> pd.DataFrame:
    """Per digit: accuracy (= recall), precision and F1 in %, and support (its test images).

    Accuracy is the share of that digit recognised; precision is the share of the model's
    answers "d" that really were d; the seed reported only the first. Percentages, as every
    accuracy in the book.
    """
    precision, recall, f1, support = precision_recall_fscore_support(
        p.targets.numpy(), p.preds.numpy(), labels=DIGITS, zero_division=0
    )
    return pd.DataFrame(
        {
            "accuracy": 100 * recall,
            "precision": 100 * precision,
            "f1": 100 * f1,
            "support": support,
        },
        index=pd.Index(DIGITS, name="digit"),
    )


def misclassified(p: Predictions) -> torch.Tensor:
    """Indices of the wrong predictions, the most confident first."""
    wrong = torch.nonzero(p.preds != p.targets).flatten()
    return wrong[p.confidence[wrong].argsort(descending=True, stable=True)]


def most_confused_pairs(cm: np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The `k` largest off-diagonal cells of a confusion matrix as (true, predicted, count)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    return [
        (int(i), int(j), int(off[i, j]))
        for i, j in zip(*np.unravel_index(order, off.shape), strict=True)
    ]


@torch.no_grad()
def layer_outputs(model: nn.Module, images: torch.Tensor, layers: Sequence[str]) -> dict:
    """The outputs of the named submodules (e.g. 'bn2') for `images`, in eval mode, on the CPU.

    Forward hooks record what each layer returns while the model runs once; afterwards the hooks
    are removed and the model's train/eval mode restored, so it is left as it was found.
    """
    was_training = model.training
    model.eval()
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise KeyError(f"no submodule named {missing}; the model has {list(modules)[1:]}")
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach().cpu())
        )
        for name in layers
    ]
    try:
        model(images.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return seen


def input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d loss / d image for every image (a *saliency map*), in eval mode, on the CPU.

    The same backward pass as training, carried one step further, to the pixels: it says how
    each pixel would have to change to raise (positive) or lower (negative) the loss.
    """
    was_training = model.training
    model.eval()
    try:
        x = images.to(next(model.parameters()).device).clone().requires_grad_()
        loss = nn.functional.cross_entropy(model(x), labels.to(x.device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    finally:
        model.train(was_training)
    return grad.cpu()
