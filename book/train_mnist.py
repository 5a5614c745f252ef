"""The whole book in one file: MNIST in, a trained and evaluated 784-128-64-10 network out.

This is the seed's pipeline as the book leaves it (chapters 1-8), with its bugs fixed, and with
nothing from the book's `helpers`: it needs only torch, torchvision and tqdm. Run it with
`python train_mnist.py` (tens of seconds per epoch on a laptop CPU; a GPU helps less than you might
expect, since preparing the images one by one with PIL takes most of an epoch on any device), or
`python train_mnist.py --quick` for a one-epoch check on 10,000 images.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, random_split
from torchvision import datasets, transforms
from tqdm import tqdm


class SimpleNN(nn.Module):
    """The seed's network (chapter 3): Linear, BatchNorm, ReLU and Dropout, twice, then Linear."""

    def __init__(self, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(784, hidden), nn.BatchNorm1d(hidden)
        self.fc2, self.bn2 = nn.Linear(hidden, hidden // 2), nn.BatchNorm1d(hidden // 2)
        self.fc3 = nn.Linear(hidden // 2, 10)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # N x 1 x 28 x 28 -> N x 784 (the seed's view(-1, 784) hid shape errors)
        x = self.dropout(F.relu(self.bn1(self.fc1(x))))
        x = self.dropout(F.relu(self.bn2(self.fc2(x))))
        return self.fc3(x)  # logits: the loss applies log-softmax itself (chapter 3)


def loaders(root: str, batch_size: int, quick: bool) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train, validation and test loaders (chapter 1): 55,000 / 5,000 / 10,000 images."""
    normalize = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    full = datasets.MNIST(root, train=True, download=True, transform=normalize)
    test = datasets.MNIST(root, train=False, download=True, transform=normalize)
    train, val = random_split(full, [55_000, 5_000], generator=torch.Generator().manual_seed(0))
    if quick:  # a check that everything runs, not a result
        train, val = Subset(train, range(10_000)), Subset(val, range(1000))
        test = Subset(test, range(2000))
    shuffled = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=2)
    return shuffled, DataLoader(val, batch_size=1000), DataLoader(test, batch_size=1000)


def train_epoch(model, loader, optimizer, device, epoch: int) -> float:
    """One pass over the training set (chapter 7); returns the mean loss."""
    model.train()
    total = 0.0
    for x, y in (bar := tqdm(loader, desc=f"epoch {epoch}")):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)  # forward: the graph is recorded (chapter 4)
        loss.backward()  # backpropagation (chapter 5)
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()  # a gradient-descent step (chapter 6)
        total += loss.item()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / len(loader)


@torch.no_grad()
def predict(model, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels of a whole split, in eval mode (BatchNorm's running statistics)."""
    model.eval()
    pairs = [(model(x.to(device)).argmax(1).cpu(), y) for x, y in loader]
    return torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])


def accuracy(model, loader, device) -> float:
    predicted, true = predict(model, loader, device)
    return 100.0 * (predicted == true).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="folder for MNIST (downloaded once)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="mnist_model.pt", help="where to save the checkpoint")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 10,000 images")
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train, val, test = loaders(args.data, args.batch_size, args.quick)
    model = SimpleNN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)

    history = {"train_loss": [], "val_acc": []}
    for epoch in range(1, epochs + 1):
        history["train_loss"].append(train_epoch(model, train, optimizer, device, epoch))
        history["val_acc"].append(accuracy(model, val, device))  # choose by validation...
        scheduler.step()
        print(
            f"epoch {epoch}: train loss {history['train_loss'][-1]:.4f}, "
            f"validation accuracy {history['val_acc'][-1]:.2f}%"
        )

    predicted, true = predict(model, test, device)  # ...and look at the test set once (chapter 8)
    confusion = torch.bincount(10 * true + predicted, minlength=100).view(10, 10)
    per_class = 100.0 * confusion.diag() / confusion.sum(1)
    test_acc = 100.0 * confusion.diag().sum().item() / len(true)
    print(
        f"test accuracy {test_acc:.2f}%; per digit:",
        " ".join(f"{d}:{a:.1f}" for d, a in enumerate(per_class.tolist())),
    )
    print("confusion matrix (rows: true digit, columns: predicted)", confusion, sep="\n")

    # The seed saved `optimizer` outside the function that made it (a NameError): save it here.
    torch.save(
        {
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "history": history,
            "test_acc": test_acc,
        },
        args.out,
    )
    print(f"saved {args.out}: load it with torch.load({args.out!r}, weights_only=True)")


if __name__ == "__main__":  # the guard lets DataLoader's worker processes import this file
    main()
