"""The networks of the book (chapter 03; chapter 09 adds more)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimpleNN(nn.Module):
    """The seed's network: 784 -> 128 -> 64 -> 10, with BatchNorm, ReLU and Dropout.

    It returns logits (no softmax): `nn.CrossEntropyLoss` applies log-softmax itself.
    """

    def __init__(
        self,
        input_size: int = 784,
        hidden_size: int = 128,
        num_classes: int = 10,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size // 2)
        self.fc3 = nn.Linear(hidden_size // 2, num_classes)
        self.bn1 = nn.BatchNorm1d(hidden_size)
        self.bn2 = nn.BatchNorm1d(hidden_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, 1, 28, 28) -> (batch, 784). The seed's `x.view(-1, 28*28)` reshapes whatever
        # it is given: a bare (28, 28) image becomes a batch of one, and 56 x 56 images become
        # four rows each. flatten(1) keeps the batch dimension, so such mistakes fail loudly.
        x = x.flatten(1)
        x = self.dropout(F.relu(self.bn1(self.fc1(x))))
        x = self.dropout(F.relu(self.bn2(self.fc2(x))))
        return self.fc3(x)

    def get_num_parameters(self) -> tuple[int, int]:
        """(total, trainable) parameter counts, as the seed's method of the same name."""
        return count_parameters(self)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) number of parameters of any model."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, count) for every parameter, in registration order."""
    return [(name, tuple(p.shape), p.numel()) for name, p in model.named_parameters()]


class SmallCNN(nn.Module):
    """A small convolutional network built for speed on a CPU (chapter 10).

    Two strided convolutions, each followed by BatchNorm and ReLU, take the image from
    1 x 28 x 28 to 32 x 14 x 14 (5 x 5 kernel, stride 2) and then to 64 x 7 x 7 (3 x 3, stride 2);
    one Linear layer maps that to the 10 logits. Striding instead of max-pooling keeps the
    element-wise work (BatchNorm, ReLU, pooling), which dominates a CPU's time here, small.
    """

    def __init__(self, channels: tuple[int, int] = (32, 64), num_classes: int = 10) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, stride=2, padding=2, bias=False),  # 28 x 28 -> 14 x 14
            nn.BatchNorm2d(c1),  # its shift makes a convolution bias redundant
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False),  # 14 x 14 -> 7 x 7
            nn.BatchNorm2d(c2),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(c2 * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
