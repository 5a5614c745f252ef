"""Loss surfaces in two dimensions (chapter 06): test functions, optimizer paths, contour plots.

A surface is a function of a point (x, y), held in a tensor whose last dimension is 2, so that
autograd gives its gradient and the same function evaluates a whole grid for a contour plot.
Every plotting function returns its figure without showing it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

MakeOptimizer = Callable[[list[torch.Tensor]], object]


@dataclass(frozen=True)
class Surface:
    """A 2-D loss function with its minimum, a starting point and a window to draw."""

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    minimum: tuple[float, float]
    start: tuple[float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]


def quadratic(a: float = 1.0, b: float = 20.0) -> Surface:
    """f(x, y) = (a x^2 + b y^2) / 2: a bowl whose curvatures are a and b (poorly conditioned)."""

    def f(p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (a * p[..., 0] ** 2 + b * p[..., 1] ** 2)

    name = f"quadratic, curvatures {a:g} and {b:g}"
    return Surface(name, f, (0.0, 0.0), (-9.0, 2.0), (-10.0, 3.0), (-3.5, 3.5))


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Surface:
    """Rosenbrock's function (a - x)^2 + b (y - x^2)^2: a curved, flat-bottomed valley."""

    def f(p: torch.Tensor) -> torch.Tensor:
        x, y = p[..., 0], p[..., 1]
        return (a - x) ** 2 + b * (y - x**2) ** 2

    return Surface("Rosenbrock's function", f, (a, a**2), (-1.5, 2.5), (-2.0, 2.0), (-1.0, 3.0))


def gradient(surface: Surface, point: Iterable[float]) -> torch.Tensor:
    """The gradient of `surface` at `point`, by autograd, in float64."""
    p = torch.tensor(list(point), dtype=torch.float64, requires_grad=True)
    surface.f(p).backward()
    return p.grad


def trajectory(
    surface: Surface,
    make_optimizer: MakeOptimizer,
    steps: int,
    start: tuple[float, float] | None = None,
    noise: float = 0.0,
    seed: int = 0,
    escape: float = 1e6,
) -> torch.Tensor:
    """The points an optimizer visits on `surface`: a (steps + 1, 2) tensor, start included.

    `make_optimizer` receives the list [point] and returns an object with `step()` and
    `zero_grad()` (ours or `torch.optim`'s). With `noise`, Gaussian noise of that standard
    deviation is added to every gradient, a stand-in for minibatch noise. A run that leaves the
    window by more than `escape` stops early: the result is then shorter.
    """
    point = torch.tensor(start or surface.start, dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer([point])
    generator = torch.Generator().manual_seed(seed)
    path = [point.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        surface.f(point).backward()
        if noise:
            point.grad += noise * torch.randn(2, generator=generator, dtype=torch.float64)
        optimizer.step()
        path.append(point.detach().clone())
        if not torch.isfinite(point).all() or point.abs().max() > escape:
            break
    return torch.stack(path)


def draw_contours(ax: Axes, surface: Surface, levels: int = 30) -> None:
    """Log-spaced contour lines of `surface` over its window, and its minimum as a star."""
    xs = np.linspace(*surface.xlim, 300)
    ys = np.linspace(*surface.ylim, 300)
    grid = torch.tensor(np.stack(np.meshgrid(xs, ys), axis=-1))
    z = surface.f(grid).numpy()
    low = max(z.min(), 1e-3)
    levels_at = np.geomspace(low, z.max(), levels)
    ax.contour(xs, ys, z, levels=levels_at, cmap="viridis", norm=LogNorm(), linewidths=0.7)
    ax.plot(*surface.minimum, "*", color="black", markersize=12, zorder=5)
    ax.set(xlim=surface.xlim, ylim=surface.ylim, xlabel="x", ylabel="y")


def draw_paths(
    ax: Axes,
    paths: Mapping[str, torch.Tensor],
    legend: str = "lower right",
    faded: Collection[str] = (),
    on_top: Collection[str] = (),
) -> None:
    """Each path as a line from its start (a circle) to its end (a cross), with a legend.

    Paths labelled in `faded` are drawn half transparent; those in `on_top` are drawn again,
    dashed, above the others, so that a path hidden under another one shows.
    """
    for i, (label, path) in enumerate(paths.items()):
        xy = path.numpy()
        color = f"C{i}"
        alpha = 0.4 if label in faded else 1.0
        every = max(1, len(xy) // 50)  # dots at most 50 points apart, so long paths stay lines
        ax.plot(
            *xy.T,
            ".-",
            color=color,
            markersize=3,
            linewidth=1,
            markevery=every,
            label=label,
            alpha=alpha,
        )
        ax.plot(*xy[0], "o", color=color, markersize=8, markerfacecolor="none")
        ax.plot(*xy[-1], "X", color=color, markersize=8, markeredgecolor="white", zorder=6)
        if label in on_top:
            ax.plot(*xy.T, "--", color=color, linewidth=2, zorder=7)
            ax.plot(*xy[-1], "X", color=color, markersize=7, markeredgecolor="white", zorder=8)
    ax.legend(loc=legend, fontsize=8)


def paths_figure(
    panels: Mapping[str, tuple[Surface, Mapping[str, torch.Tensor]]],
    width: float = 5.0,
    height: float = 4.0,
    faded: Collection[str] = (),
    on_top: Collection[str] = (),
) -> Figure:
    """Contour plots side by side, one per panel: title -> (surface, {label: path})."""
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), squeeze=False)
    for ax, (title, (surface, paths)) in zip(axes[0], panels.items(), strict=True):
        draw_contours(ax, surface)
        draw_paths(ax, paths, faded=faded, on_top=on_top)
        ax.set_title(title)
    fig.tight_layout()
    return fig


def loss_figure(surface: Surface, paths: Mapping[str, torch.Tensor], title: str) -> Figure:
    """The loss along each path, step by step, on a log scale."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, path in paths.items():
        ax.plot(surface.f(path).numpy(), label=label)
    ax.set(yscale="log", xlabel="step", ylabel="loss", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
