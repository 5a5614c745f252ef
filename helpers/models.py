"""The networks of the book (chapter 03; chapter 09 adds two CNNs, chapter 10 more)."""

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
        # it is given: a batch of 56 x 56 images would become four rows per image. flatten(1)
        # keeps the batch dimension, so the first layer refuses such a batch (exercise 5 of 03).
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
    """A small convolutional network built for speed on a CPU (chapters 09 and 11).

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


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) for 28 x 28 digits: tanh and average pooling (chapter 09)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),  # framed like the paper's 32 x 32 input: 6 x 28 x 28
            nn.Tanh(),
            nn.AvgPool2d(2),  # 6 x 14 x 14 (the paper's pooling also had a trainable scale)
            nn.Conv2d(6, 16, 5),  # 16 x 10 x 10, each map from all 6 (the paper's: from some)
            nn.Tanh(),
            nn.AvgPool2d(2),  # 16 x 5 x 5
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.Tanh(),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, num_classes),  # logits, where the paper had distances to prototypes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


# ---------------------------------------------------------------------------------------------
# Chapter 10: wider, deeper, residual and convolutional variants
# ---------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """A multilayer perceptron of any width and depth, built like the seed's network.

    Each hidden layer is Linear -> BatchNorm -> ReLU -> Dropout; `hidden=(128, 64)` with
    `dropout=0.5` is `SimpleNN` layer for layer (the same parameters, in another order).
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (128, 64),
        dropout: float = 0.5,
        input_size: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)))


class ResidualBlock(nn.Module):
    """ReLU(x + f(x)), with f = Linear -> BatchNorm -> ReLU -> Dropout -> Linear -> BatchNorm.

    The addition gives the gradient a direct path around f, whatever f does, so stacking many
    blocks does not make the network much harder to train.
    """

    def __init__(self, width: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.f = nn.Sequential(
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.f(x))


class ResidualMLP(nn.Module):
    """784 -> width, then `blocks` residual blocks of that width, then the 10 logits."""

    def __init__(
        self,
        width: int = 128,
        blocks: int = 2,
        dropout: float = 0.1,
        input_size: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(input_size, width), nn.BatchNorm1d(width), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(width, dropout) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x.flatten(1))))


class LeNetLike(nn.Module):
    """A CNN in the spirit of LeNet-5: two convolutions, then two fully connected layers.

    The convolutions are `SmallCNN`'s (5 x 5 stride 2 to c1 x 14 x 14, then 3 x 3 stride 2 to
    c2 x 7 x 7, each with BatchNorm and ReLU; striding replaces LeNet's pooling, for speed on a
    CPU); a hidden Linear layer with BatchNorm, ReLU and Dropout comes before the output layer.
    """

    def __init__(
        self,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = SmallCNN(channels).features
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 7 * 7, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


# The models a `helpers.recipe.Recipe` can name. A chapter that adds a model registers it here,
# so every loop and cache can build it by name.
MODELS: dict[str, type[nn.Module]] = {
    "SimpleNN": SimpleNN,
    "SmallCNN": SmallCNN,
    "LeNet5": LeNet5,
    "MLP": MLP,
    "ResidualMLP": ResidualMLP,
    "LeNetLike": LeNetLike,
}
