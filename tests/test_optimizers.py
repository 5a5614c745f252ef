"""The hand-written optimizers against torch.optim, the 2-D surfaces, and the training helpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import optimizers, surfaces
from helpers.optimizers import SGD, Adam, Momentum

STEPS = 20


def small_problem(dtype: torch.dtype) -> tuple[list[torch.Tensor], object]:
    """Two parameter tensors and a non-linear least-squares loss of them, on random data."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(30, 5, generator=g, dtype=dtype), torch.randn(30, generator=g, dtype=dtype)
    w, c = torch.randn(5, 3, generator=g, dtype=dtype), torch.randn(3, generator=g, dtype=dtype)

    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        return ((torch.tanh(a @ params[0] + params[1]).sum(1) - b) ** 2).mean()

    return [w, c], loss


def run(make, dtype=torch.float64, steps=STEPS) -> list[torch.Tensor]:
    """The parameters after `steps` steps of the optimizer `make(params)` on the small problem."""
    start, loss = small_problem(dtype)
    params = [p.clone().requires_grad_() for p in start]
    opt = make(params)
    for _ in range(steps):
        opt.zero_grad()
        loss(params).backward()
        opt.step()
    return [p.detach() for p in params]


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


PAIRS = {
    "sgd": (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "momentum": (
        lambda p: Momentum(p, lr=0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
    "adam": (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam, other betas": (
        lambda p: Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
        lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
    ),
}


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_same_parameters_as_torch_optim_after_many_steps(name, dtype, tol):
    mine, theirs = PAIRS[name]
    ours, torchs = run(mine, dtype), run(theirs, dtype)
    assert max_difference(ours, torchs) <= tol
    assert max_difference(ours, run(lambda p: SGD(p, lr=0.0), dtype)) > 1e-2  # they did move


@pytest.mark.parametrize("name", ["sgd", "momentum"])
def test_sgd_and_momentum_are_bit_for_bit_torch(name):
    mine, theirs = PAIRS[name]
    assert all(torch.equal(a, b) for a, b in zip(run(mine), run(theirs), strict=True))


def test_every_optimizer_lowers_the_loss():
    start, loss = small_problem(torch.float64)
    for mine, _ in PAIRS.values():
        assert loss(run(mine)) < 0.9 * loss(start)


# --- Mutants: each breaks one thing; the step-for-step comparison must notice ---------------


class WrongSignSGD(SGD):
    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            p.add_(p.grad, alpha=self.lr)


class NoBiasCorrectionAdam(Adam):
    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            m.mul_(self.beta1).add_(p.grad, alpha=1 - self.beta1)
            v.mul_(self.beta2).addcmul_(p.grad, p.grad, value=1 - self.beta2)
            p.addcdiv_(m, v.sqrt().add_(self.eps), value=-self.lr)


class OffByOneAdam(Adam):
    """Bias correction with t + 1, as a step counter incremented one step early would give."""

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            m_hat = m / (1 - b1 ** (self.t + 1))
            v_hat = v / (1 - b2 ** (self.t + 1))
            p.addcdiv_(m_hat, v_hat.sqrt().add_(self.eps), value=-self.lr)


class EpsInsideAdam(Adam):
    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            m_hat, v_hat = m / (1 - b1**self.t), v / (1 - b2**self.t)
            p.addcdiv_(m_hat, (v_hat + self.eps).sqrt(), value=-self.lr)


class NoVelocityMomentum(Momentum):
    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            p.add_(p.grad, alpha=-self.lr)


ADAM_EPS = (lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-3),)


@pytest.mark.parametrize(
    "mutant, reference",
    [
        (lambda p: WrongSignSGD(p, lr=0.1), PAIRS["sgd"][1]),
        (lambda p: NoVelocityMomentum(p, lr=0.05, momentum=0.9), PAIRS["momentum"][1]),
        (lambda p: NoBiasCorrectionAdam(p, lr=0.01), PAIRS["adam"][1]),
        (lambda p: OffByOneAdam(p, lr=0.01), PAIRS["adam"][1]),
        # eps = 1e-3 so that where it sits matters
        (lambda p: EpsInsideAdam(p, lr=0.01, eps=1e-3), ADAM_EPS[0]),
    ],
    ids=["wrong sign", "no velocity", "no bias correction", "t off by one", "eps inside sqrt"],
)
def test_the_comparison_catches_a_broken_update(mutant, reference):
    assert max_difference(run(mutant), run(reference)) > 1e-4


# --- Known values: what each rule must do, independently of torch.optim -------------------


def one_parameter(value: float, grad: float) -> torch.Tensor:
    p = torch.tensor([value], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([grad], dtype=torch.float64)
    return p


def test_sgd_steps_against_the_gradient():
    p = one_parameter(1.0, 2.0)
    SGD([p], lr=0.1).step()
    assert p.item() == pytest.approx(1.0 - 0.1 * 2.0)


def test_momentum_velocity_is_a_running_sum_of_gradients():
    p = one_parameter(0.0, 1.0)
    opt = Momentum([p], lr=0.1, momentum=0.9)
    for t in range(1, 6):
        opt.step()  # constant gradient 1: v_t = 1 + 0.9 + ... + 0.9^(t-1)
        assert opt.velocity[0].item() == pytest.approx((1 - 0.9**t) / (1 - 0.9))
    assert p.item() == pytest.approx(-0.1 * sum((1 - 0.9**t) / 0.1 for t in range(1, 6)))


def test_textbook_momentum_matches_pytorch_form_only_while_lr_is_constant():
    torch_form, textbook = (
        run(lambda p: Momentum(p, 0.05)),
        run(lambda p: Momentum(p, 0.05, textbook=True)),
    )
    assert max_difference(torch_form, textbook) < 1e-12

    def halved_midway(textbook_form: bool) -> list[torch.Tensor]:
        start, loss = small_problem(torch.float64)
        params = [p.clone().requires_grad_() for p in start]
        opt = Momentum(params, 0.05, textbook=textbook_form)
        for step in range(STEPS):
            opt.lr = 0.05 if step < STEPS // 2 else 0.025
            opt.zero_grad()
            loss(params).backward()
            opt.step()
        return [p.detach() for p in params]

    assert max_difference(halved_midway(False), halved_midway(True)) > 1e-4


@pytest.mark.parametrize("grad", [3.0, -0.02, 500.0])
def test_adam_first_step_moves_each_coordinate_by_lr(grad):
    p = one_parameter(1.0, grad)
    Adam([p], lr=0.01, eps=0.0).step()  # m_hat = g, v_hat = g^2: the step is lr * sign(g)
    assert p.item() == pytest.approx(1.0 - 0.01 * math.copysign(1, grad), abs=1e-15)


def test_adam_steps_are_lr_at_every_step_under_a_constant_gradient():
    # Exact bias correction makes m_hat = g and v_hat = g^2 at every t; a missing correction or
    # a t off by one makes the first steps too long or too short.
    p = one_parameter(0.0, 4.0)
    opt = Adam([p], lr=0.01, eps=0.0)
    for t in range(1, 30):
        before = p.item()
        opt.step()
        assert opt.t == t
        assert before - p.item() == pytest.approx(0.01, rel=1e-9)


def test_adam_without_bias_correction_would_step_sqrt_1_minus_beta2_over_1_minus_beta1_too_far():
    p = one_parameter(0.0, 4.0)
    NoBiasCorrectionAdam([p], lr=0.01, eps=0.0).step()
    assert -p.item() == pytest.approx(0.01 * 0.1 / math.sqrt(0.001))  # 3.16 lr


def test_zero_grad_and_parameters_without_gradient():
    p, q = one_parameter(1.0, 1.0), torch.zeros(2, requires_grad=True)
    for opt in (SGD([p, q], 0.1), Momentum([p, q], 0.1), Adam([p, q], 0.1)):
        p.grad = torch.ones_like(p)
        opt.step()  # q has no gradient: left alone
        assert torch.equal(q, torch.zeros(2))
        opt.zero_grad()
        assert p.grad is None


def test_current_lr_reads_both_kinds():
    w = torch.zeros(1, requires_grad=True)
    assert optimizers.current_lr(SGD([w], 0.3)) == 0.3
    assert optimizers.current_lr(torch.optim.Adam([w], 0.004)) == 0.004


# --- Surfaces ------------------------------------------------------------------------------

POINTS = [(-1.5, 2.5), (0.3, -0.7), (1.0, 1.0), (2.0, -3.0)]


def test_surface_functions_and_gradients_by_hand():
    q, r = surfaces.quadratic(1.0, 20.0), surfaces.rosenbrock()
    for x, y in POINTS:
        p = torch.tensor([x, y], dtype=torch.float64)
        assert q.f(p).item() == pytest.approx(0.5 * (x**2 + 20 * y**2))
        assert r.f(p).item() == pytest.approx((1 - x) ** 2 + 100 * (y - x**2) ** 2)
        assert surfaces.gradient(q, (x, y)).tolist() == pytest.approx([x, 20 * y])
        expected = [-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)]
        assert surfaces.gradient(r, (x, y)).tolist() == pytest.approx(expected)
    for s in (q, r):
        assert s.f(torch.tensor(s.minimum)).item() == 0.0
        assert surfaces.gradient(s, s.minimum).abs().max() == 0.0


def test_surfaces_evaluate_a_whole_grid_at_once():
    grid = torch.randn(7, 9, 2, dtype=torch.float64)
    for s in (surfaces.quadratic(), surfaces.rosenbrock()):
        values = s.f(grid)
        assert values.shape == (7, 9)
        assert values[3, 4] == s.f(grid[3, 4])


def test_gradient_descent_on_the_quadratic_obeys_the_stability_bound():
    a, b = 1.0, 20.0
    q = surfaces.quadratic(a, b)
    bound = 2 / max(a, b)  # lr < 2 / L_max, L_max the largest curvature
    good = surfaces.trajectory(q, lambda p: SGD(p, 0.95 * bound), 200)
    assert len(good) == 201 and q.f(good[-1]) < 1e-6
    bad = surfaces.trajectory(q, lambda p: SGD(p, 1.05 * bound), 200)
    assert q.f(bad[-1]) > 1e6 * q.f(bad[0])  # diverged (and stopped early once far out)
    assert len(bad) < 201
    # along y, each step multiplies by (1 - lr * b): exactly
    path = surfaces.trajectory(q, lambda p: SGD(p, 0.07), 5)
    ratios = path[1:, 1] / path[:-1, 1]
    assert ratios.tolist() == pytest.approx([1 - 0.07 * b] * 5)


def test_trajectories_on_rosenbrock_and_with_noise():
    r = surfaces.rosenbrock()
    path = surfaces.trajectory(r, lambda p: Momentum(p, 1e-3, 0.9), 1500)
    assert r.f(path[-1]) < 1e-4 < r.f(path[0])
    quiet = surfaces.trajectory(surfaces.quadratic(), lambda p: SGD(p, 0.05), 50)
    noisy = surfaces.trajectory(surfaces.quadratic(), lambda p: SGD(p, 0.05), 50, noise=1.0)
    again = surfaces.trajectory(surfaces.quadratic(), lambda p: SGD(p, 0.05), 50, noise=1.0)
    assert torch.equal(noisy, again) and not torch.equal(noisy, quiet)
    assert torch.equal(quiet[0], noisy[0])
    # torch.optim works too
    torch_path = surfaces.trajectory(r, lambda p: torch.optim.SGD(p, 1e-3, momentum=0.9), 1500)
    assert torch.allclose(torch_path, path)


def test_figures_have_one_panel_per_picture():
    q = surfaces.quadratic()
    paths = {"GD": surfaces.trajectory(q, lambda p: SGD(p, 0.05), 10)}
    fig = surfaces.paths_figure({"a": (q, paths), "b": (surfaces.rosenbrock(), paths)})
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert len(surfaces.loss_figure(q, paths, "loss").axes) == 1
    fig = surfaces.paths_figure({"a": (q, paths)}, faded=["GD"], on_top=["GD"])
    lines = fig.axes[0].get_lines()
    assert lines[1].get_alpha() == 0.4 and lines[-2].get_linestyle() == "--"


# --- Training helpers ----------------------------------------------------------------------


def tiny_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.randn(n, 1, 2, 2, generator=g) + labels.view(-1, 1, 1, 1).float()
    return images, labels


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_train_steps_records_every_step_and_is_reproducible():
    images, labels = tiny_data()
    runs = []
    for _ in range(2):
        model = tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
        runs.append(optimizers.train_steps(model, opt, images, labels, 25, 32, sched))
    history = runs[0]
    assert runs[0] == runs[1]
    assert all(len(v) == 25 for v in history.values())  # 25 steps span 4 epochs of 8 batches
    assert history["lr"][:10] == [0.5] * 10 and history["lr"][10:20] == [0.25] * 10
    assert sum(history["loss"][-5:]) < 0.8 * sum(history["loss"][:5])


def test_train_steps_clips_and_reports_the_norm_before_clipping():
    images, labels = tiny_data()
    model = tiny_model()
    free = optimizers.train_steps(model, SGD(model.parameters(), 0.0), images, labels, 1, 32)
    model = tiny_model()
    before = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    opt = SGD(model.parameters(), 1.0)
    clipped = optimizers.train_steps(model, opt, images, labels, 1, 32, max_grad_norm=0.1)
    moved = (nn.utils.parameters_to_vector(model.parameters()) - before).norm().item()
    assert clipped["grad_norm"] == free["grad_norm"] and free["grad_norm"][0] > 0.1
    assert moved == pytest.approx(0.1, rel=1e-5)  # a step of lr 1 along a gradient clipped to 0.1


def per_example_trace(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    grads = torch.stack(
        [
            optimizers.flat_gradient(model, images[i : i + 1], labels[i : i + 1])
            for i in range(len(images))
        ]
    )
    return (grads - grads.mean(0)).square().sum(1).mean().item()


def test_gradient_noise_follows_the_sampling_formula():
    images, labels = tiny_data(200)
    model = tiny_model()
    full, noise = optimizers.gradient_noise(model, images, labels, [1, 10, 50], draws=400, chunk=64)
    model.eval()
    torch.testing.assert_close(full, optimizers.flat_gradient(model, images, labels))
    trace, n = per_example_trace(model, images, labels), len(images)
    for b, measured in noise.items():
        expected = trace / b * (n - b) / (n - 1)  # sampling B of N without replacement
        assert measured == pytest.approx(expected, rel=0.15)
    assert optimizers.gradient_noise(model, images, labels, [200], draws=2)[1][200] < 1e-12
