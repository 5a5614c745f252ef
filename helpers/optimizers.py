"""Gradient descent by hand (chapter 06): the update rules inside `torch.optim`, a few lines each.

Every optimizer here updates a list of tensors in place from their `.grad`, under
`torch.no_grad()`, with the same arithmetic as PyTorch's `SGD` and `Adam` (weight decay off), so
the two can be compared step for step. Like `torch.optim`, each has `step()` and `zero_grad()`.
The module also holds a short training loop that records every step, and a measurement of how
noisy minibatch gradients are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from helpers.data import tensor_batches


class HandOptimizer:
    """What the hand-written optimizers share: the tensors they update and `zero_grad`."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params = list(params)
        self.lr = lr

    def zero_grad(self) -> None:
        """Forget the gradients of the last step, as `torch.optim.Optimizer.zero_grad` does."""
        for p in self.params:
            p.grad = None


class SGD(HandOptimizer):
    """Gradient descent: p <- p - lr * g. With minibatch gradients, it is SGD."""

    @torch.no_grad()
    def step(self) -> None:
        """One step downhill along each tensor's gradient."""
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


class Momentum(HandOptimizer):
    """Gradient descent with momentum, in PyTorch's form: v <- mu * v + g; p <- p - lr * v.

    `textbook=True` uses the other common form instead, v <- mu * v - lr * g; p <- p + v. With a
    constant lr the two make the same steps; they differ when lr changes during training.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.9,
        textbook: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = momentum
        self.textbook = textbook
        self.velocity = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        """One step along the velocity, a running sum of past gradients."""
        for p, v in zip(self.params, self.velocity, strict=True):
            if p.grad is None:
                continue
            if self.textbook:
                v.mul_(self.momentum).add_(p.grad, alpha=-self.lr)  # v <- mu v - lr g
                p.add_(v)  # p <- p + v
            else:
                v.mul_(self.momentum).add_(p.grad)  # v <- mu v + g
                p.add_(v, alpha=-self.lr)  # p <- p - lr v


class Adam(HandOptimizer):
    """Adam (Kingma and Ba, 2015) as PyTorch computes it, eps outside the square root."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.t = 0  # steps taken so far
        self.m = [torch.zeros_like(p) for p in self.params]  # running mean of g
        self.v = [torch.zeros_like(p) for p in self.params]  # running mean of g * g

    @torch.no_grad()
    def step(self) -> None:
        """One step of size about lr per coordinate, in the direction of the averaged gradient."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)  # m <- b1 m + (1 - b1) g
            v.mul_(b2).addcmul_(g, g, value=1 - b2)  # v <- b2 v + (1 - b2) g^2
            m_hat = m / (1 - b1**self.t)  # bias correction: m and v start at 0
            v_hat = v / (1 - b2**self.t)
            p.addcdiv_(m_hat, v_hat.sqrt().add_(self.eps), value=-self.lr)


def current_lr(optimizer: object) -> float:
    """The learning rate of a hand-written optimizer or of a `torch.optim` one (first group)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer.param_groups[0]["lr"]
    return optimizer.lr


def train_steps(
    model: nn.Module,
    optimizer: object,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train for `steps` minibatches; per step: the loss, the lr used and the gradient's norm.

    Batches are shuffled by a generator seeded with `seed`, reshuffled every epoch. Gradients
    are clipped to `max_grad_norm` as in the seed (the norm recorded is before clipping), and
    `scheduler`, if any, steps after every optimizer step, not every epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"loss": [], "lr": [], "grad_norm": []}
    model.train()
    while len(history["loss"]) < steps:
        for x, y in tensor_batches(images, labels, batch_size, generator=generator):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            limit = max_grad_norm if max_grad_norm is not None else float("inf")
            norm = nn.utils.clip_grad_norm_(model.parameters(), limit)
            history["lr"].append(current_lr(optimizer))
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            history["loss"].append(loss.item())
            history["grad_norm"].append(norm.item())
            if len(history["loss"]) == steps:
                break
    return history


def flat_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The gradient of the mean cross-entropy on (images, labels), as one flat vector."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return torch.cat(grads)


def gradient_noise(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_sizes: Sequence[int],
    draws: int = 50,
    seed: int = 0,
    chunk: int = 10_000,
) -> tuple[torch.Tensor, dict[int, float]]:
    """The full-batch gradient and, per batch size B, the mean of |g_B - g|^2 over `draws` batches.

    The model is put in eval mode, so that the loss is a plain mean over examples (no Dropout, no
    batch statistics) and a random minibatch's gradient is an unbiased estimate of the full one.
    Each minibatch is B distinct examples drawn at random.
    """
    model.eval()
    n = len(images)
    full = (
        sum(
            flat_gradient(model, images[i : i + chunk], labels[i : i + chunk])
            * len(images[i : i + chunk])
            for i in range(0, n, chunk)
        )
        / n
    )
    generator = torch.Generator().manual_seed(seed)
    noise = {}
    for b in batch_sizes:
        total = 0.0
        for _ in range(draws):
            index = torch.randperm(n, generator=generator)[:b]
            total += (
                (flat_gradient(model, images[index], labels[index]) - full).square().sum().item()
            )
        noise[b] = total / draws
    return full, noise
