"""The book's loop on several processes at once: torch.distributed and DDP (chapter 11).

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m helpers.distributed \\
        [--quick] [--check gradients|train|all] [--sync-bn] [--out FILE] [--cpu]

(`torchrun` is the same program under a shorter name.) torchrun starts one process per copy of
the model and tells each its place in the environment: RANK (0 to WORLD_SIZE - 1), WORLD_SIZE
and LOCAL_RANK (its number on this machine, which picks its GPU). Every process builds the same
model; `DistributedDataParallel` (DDP) averages the gradients of all copies during `backward`,
so every copy takes the same optimizer step and the copies stay equal.

`--check gradients` backs that promise with numbers: two processes of 32 images each produce
the gradients of one process on all 64 images, except where BatchNorm computes statistics per
process. `--check train` trains a recipe with DDP. Rank 0 writes what it measured, as JSON, to
`--out`. The backend is NCCL where each process has a CUDA GPU of its own, else (or with `--cpu`)
gloo on the CPU.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

from helpers import artifacts
from helpers.data import atomic_write, mnist_tensors
from helpers.fast import swap_modules
from helpers.loop import Tensors, accuracy, train_step
from helpers.recipe import Recipe, build_model, build_optimizer, build_schedule, steps_per_epoch

# The training runs of `main`: the seed's recipe for two epochs, and its quick version.
DDP_RECIPE = Recipe(epochs=2)

# Two processes of 32 images against one of 64 must agree to this fraction of the largest
# gradient entry. Measured on this book's machine: 2e-7 without BatchNorm and 3e-7 with synced
# BatchNorm (float32 sums taken in another order: a few units of float32's 6e-8 resolution).
# Plain BatchNorm differs by 0.5, and a real bug, such as gradients summed instead of averaged
# (twice the gradient), would differ by 1. So 1e-5 leaves a margin of 30 above the rounding and
# of 100,000 below the bug.
GRADIENT_TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------------------
# The process group
# ---------------------------------------------------------------------------------------------


def init_distributed(timeout_s: float = 60.0, cpu: bool = False) -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, ...); this process's device.

    NCCL and the process's own GPU (number LOCAL_RANK) where this machine has a GPU for each of
    its processes, else (or with `cpu`) gloo on the CPU. A peer that never arrives, or a
    collective that waits longer than `timeout_s`, raises an error instead of hanging.
    """
    gpus_needed = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if not cpu and torch.cuda.is_available() and torch.cuda.device_count() >= gpus_needed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(
        backend, timeout=timeout, device_id=device if backend == "nccl" else None
    )
    return device


def close_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's number, 0 to world size - 1 (0 when not distributed)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_rank0() -> bool:
    """Whether this process is the one that logs and writes files."""
    return rank() == 0


def log(message: str) -> None:
    """Print `message` from rank 0 only: N copies of every line would say nothing more."""
    if is_rank0():
        print(f"[rank {rank()}] {message}", flush=True)


def save_checkpoint(model: nn.Module, path: Path) -> None:
    """Rank 0 writes the model's weights atomically; every process waits until it has.

    Pass the DDP-wrapped model: `model.module` is the network itself, so the checkpoint's keys
    are those of a plain model (no "module." prefix). The copies are equal, so one file holds
    them all; N processes writing one file would race, and N files would be N equal copies.
    """
    if is_rank0():
        artifacts.write(path, model.module.state_dict())  # atomically, as every trained file
    dist.barrier()


# ---------------------------------------------------------------------------------------------
# BatchNorm across processes
# ---------------------------------------------------------------------------------------------


class AllReduceSum(torch.autograd.Function):
    """A sum over all processes that autograd can differentiate: its gradient is one, too."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `x` over every process."""
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        """Each process's input fed every process's output: sum their gradients."""
        total = grad.clone()
        dist.all_reduce(total)
        return total


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device.

    torch's `nn.SyncBatchNorm` does this on GPUs only: on a CPU its forward raises "SyncBatchNorm
    expected input tensor to be on GPU" (torch 2.14). Here each process sums its share, the sums
    are added up over all processes (`AllReduceSum`), and mean and variance follow as on one big
    batch; autograd carries the gradients back through the same sums. Outside training, or in a
    single process, it is plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        """Accept (batch, channels, ...) of any rank, as BatchNorm1d, 2d and 3d together do."""
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (batch, channels, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize with the statistics of every process's batch together, in training."""
        if not (self.training and dist.is_initialized() and world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]  # all but the channels
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        sums = AllReduceSum.apply(torch.cat([x.sum(dims), local]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = x - mean.view(shape)
        var = AllReduceSum.apply(centred.square().sum(dims)) / count  # two passes, as torch's
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * count / (count - 1), m)  # unbiased, as torch's
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `model` made to use the global batch's statistics; the model.

    On CUDA, torch's own `nn.SyncBatchNorm`; elsewhere `CPUSyncBatchNorm`, with the same state.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def synced(bn: nn.modules.batchnorm._BatchNorm) -> CPUSyncBatchNorm:
        new = CPUSyncBatchNorm(
            bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats
        )
        new.load_state_dict(bn.state_dict())
        return new.to(device)

    return swap_modules(model, is_batchnorm, synced)


def is_batchnorm(module: nn.Module) -> bool:
    """Whether `module` is a BatchNorm layer of any dimension (synced ones included)."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def without_batchnorm(model: nn.Module) -> nn.Module:
    """`model` with every BatchNorm replaced by the identity (for a comparison without it)."""
    return swap_modules(model, is_batchnorm, lambda bn: nn.Identity())


# ---------------------------------------------------------------------------------------------
# DDP's promise, checked: the gradients of one big batch
# ---------------------------------------------------------------------------------------------


def gradient_difference(model: nn.Module, reference: nn.Module) -> dict[str, float]:
    """The largest gap between two models' gradients, alone and as a fraction of the largest one."""
    gaps = [
        (p.grad - q.grad).abs().max()
        for p, q in zip(model.parameters(), reference.parameters(), strict=True)
    ]
    scale = max(q.grad.abs().max().item() for q in reference.parameters())
    gap = max(g.item() for g in gaps)
    return {"max_abs_diff": gap, "max_abs_grad": scale, "relative": gap / scale}


def check_gradients(
    images: torch.Tensor, labels: torch.Tensor, per_process: int = 32, seed: int = 0
) -> dict[str, dict[str, float]] | None:
    """DDP's averaged gradients against one process's on all the images; rank 0 gets the gaps.

    Each process takes `per_process` of the first `per_process * world_size` images (its shard,
    from a DistributedSampler); rank 0 also runs the untouched model on all of them. Dropout is
    off (rate 0: each process would draw other masks), and BatchNorm stays in training mode, so
    three variants are compared: without BatchNorm, with plain BatchNorm (statistics of each
    process's shard) and with synced BatchNorm (statistics of all the images).
    """
    device = images.device
    n = per_process * world_size()
    shard = torch.tensor(list(DistributedSampler(range(n), shuffle=False)), device=device)
    result = {}
    for variant in ("no batchnorm", "batchnorm", "synced batchnorm"):
        torch.manual_seed(seed)
        model = build_model(Recipe(seed=seed, dropout=0.0)).to(device)
        if variant == "no batchnorm":
            model = without_batchnorm(model)
        reference = copy.deepcopy(model)  # before any syncing: the plain one-process model
        if variant == "synced batchnorm":
            model = sync_batchnorm(model, device)
        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        ddp.train()
        F.cross_entropy(ddp(images[shard]), labels[shard]).backward()  # averaged over processes
        if is_rank0():
            reference.train()
            F.cross_entropy(reference(images[:n]), labels[:n]).backward()
            result[variant] = gradient_difference(model, reference)
            log(f"{variant}: gradients differ by {result[variant]['relative']:.1e} of the largest")
    return result if is_rank0() else None


# ---------------------------------------------------------------------------------------------
# Training with DDP
# ---------------------------------------------------------------------------------------------


def train_ddp(
    recipe: Recipe,
    train: Tensors,
    held: Tensors,
    checkpoint: Path | None = None,
    sync_bn: bool = False,
) -> dict | None:
    """Train `recipe` on every process with DDP; rank 0's result (the others get None).

    Each process runs `recipe.batch_size // world_size` images a step, so the global batch, and
    so each optimizer step, is the single-process recipe's. Every epoch a DistributedSampler,
    reseeded with `set_epoch`, deals a new shuffle of the training indices out in equal shares;
    with `drop_last=False` it repeats a few indices to make the shares equal, and every process
    then takes the same number of steps (a process with one step more would wait forever for
    the others in its all-reduce). Rank 0 logs, scores `held` and writes the checkpoint.
    """
    images, labels = train
    if recipe.train_subset is not None:
        images, labels = images[: recipe.train_subset], labels[: recipe.train_subset]
    device, world = images.device, world_size()
    if recipe.batch_size % world:
        raise ValueError(f"batch_size {recipe.batch_size} does not split over {world} processes")
    batch = recipe.batch_size // world
    torch.manual_seed(recipe.seed)  # the same model everywhere (DDP also copies rank 0's)
    model = build_model(recipe).to(device)
    if sync_bn:
        model = sync_batchnorm(model, device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(recipe, model)
    sampler = DistributedSampler(
        range(len(images)), shuffle=True, seed=recipe.seed, drop_last=False
    )
    steps = steps_per_epoch(len(sampler), batch)
    schedule, per_batch = build_schedule(recipe, optimizer, steps)
    augment = torch.Generator().manual_seed(recipe.seed + 1 + rank())
    log(f"{world} process(es) ({dist.get_backend()}), {batch} images each a step, {steps} steps")
    history: dict[str, list[float]] = {"train_loss": [], "seconds": []}
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        sampler.set_epoch(epoch)  # else every epoch deals the same shuffle
        order = torch.tensor(list(sampler), device=device)
        ddp.train()
        loss_sum = torch.zeros((), device=device)
        for first in range(0, len(order), batch):
            index = order[first : first + batch]
            x, y = images.index_select(0, index), labels.index_select(0, index)
            # fit's step; through `ddp`, the backward all-reduces the gradients, bucket by bucket
            loss_sum += train_step(ddp, optimizer, recipe, x, y, augment)
            if per_batch:
                schedule.step()
        if not per_batch:
            schedule.step()
        dist.all_reduce(loss_sum)  # every process's losses, for the log
        history["train_loss"].append(loss_sum.item() / (steps * world))
        history["seconds"].append(time.perf_counter() - start)
        loss, seconds = history["train_loss"][-1], history["seconds"][-1]
        log(f"epoch {epoch + 1}: loss {loss:.3f}, {seconds:.1f} s")
    if checkpoint is not None:
        save_checkpoint(ddp, checkpoint)
    result = None
    if is_rank0():
        result = {
            "recipe": recipe.to_dict(),
            "world_size": world,
            "backend": dist.get_backend(),
            "per_process_batch": batch,
            "global_batch": batch * world,
            "steps_per_epoch": steps,
            "train_images": len(images),
            "history": history,
            "seconds": history["seconds"][-1],
            "test_acc": accuracy(model, *held),
            "checkpoint": None if checkpoint is None else str(checkpoint),
        }
        log(f"test accuracy {result['test_acc']:.2f}%")
    dist.barrier()  # the others wait while rank 0 scores
    return result


# ---------------------------------------------------------------------------------------------
# What the network carries
# ---------------------------------------------------------------------------------------------


def gradient_bytes(model: nn.Module, bytes_per_number: int = 4) -> int:
    """Bytes of one step's gradients: one float32 (4 bytes) per trainable parameter."""
    return bytes_per_number * sum(p.numel() for p in model.parameters() if p.requires_grad)


def ring_allreduce_bytes(grad_bytes: float, processes: int) -> float:
    """Bytes each process sends per all-reduce in a ring: 2 (N - 1) / N of the gradients."""
    return 2 * (processes - 1) / processes * grad_bytes


def allreduce_seconds(grad_bytes: float, processes: int, gbit_per_s: float) -> float:
    """The least time a ring all-reduce takes on links of `gbit_per_s` (bandwidth only)."""
    return ring_allreduce_bytes(grad_bytes, processes) * 8 / (gbit_per_s * 1e9)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: --quick, --check, --sync-bn, --out, --checkpoint, --timeout, ..."""
    parser = argparse.ArgumentParser(prog="helpers.distributed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="train 1 epoch on 2,000 images")
    parser.add_argument("--check", choices=("gradients", "train", "all"), default="all")
    parser.add_argument("--sync-bn", action="store_true", help="train with synced BatchNorm")
    parser.add_argument("--out", type=Path, help="rank 0 writes its results here, as JSON")
    parser.add_argument("--checkpoint", type=Path, help="rank 0 saves the trained weights here")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a wait fails")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads per process")
    parser.add_argument("--cpu", action="store_true", help="gloo on the CPU even if GPUs are here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the gradient check and/or a DDP training; rank 0 writes the results to --out."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = init_distributed(args.timeout, args.cpu)
    try:
        images, labels = mnist_tensors(True, device=device)
        results: dict[str, object] = {}
        if args.check in ("gradients", "all"):
            results["gradients"] = check_gradients(images, labels)
        if args.check in ("train", "all"):
            recipe = DDP_RECIPE.shortened() if args.quick else DDP_RECIPE
            held = mnist_tensors(False, device=device)
            results["train"] = train_ddp(
                recipe, (images, labels), held, args.checkpoint, args.sync_bn
            )
        if is_rank0() and args.out is not None:
            atomic_write(args.out, json.dumps(results, indent=1).encode())
    finally:
        close_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
