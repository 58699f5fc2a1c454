"""Data-parallel training of the batch-norm LeNet: local against synchronized batch norm.

A script for ``torchrun``, and the function behind it. Every process builds the same LeNet
(:func:`d2lbn.models.lenet` with :class:`d2lbn.norm.BatchNorm`), wraps it in
:class:`torch.nn.parallel.DistributedDataParallel` (DDP), walks through the same shuffled
Fashion-MNIST batches and trains on its own :func:`d2lbn.distributed.shard` of each one; DDP
averages the gradients, so every replica takes the same step. The batch norms either normalize
each shard with its own statistics (``local``) or are converted to
:class:`d2lbn.distributed.SyncBatchNorm` (``sync``), or to PyTorch's
:class:`torch.nn.SyncBatchNorm` (``torch-sync``, GPUs only).

On the CPU, two processes::

    torchrun --standalone --nproc_per_node=2 -m d2lbn.ddp_lenet --epochs 1

On a machine with 4 GPUs, one process per GPU (the backend becomes NCCL)::

    torchrun --standalone --nproc_per_node=4 -m d2lbn.ddp_lenet --norm sync torch-sync

On two machines with 8 GPUs each, the same command on both, meeting at the first one::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=node0.example.com:29400 --rdzv_id=bn-lenet -m d2lbn.ddp_lenet

Without ``torchrun`` (``python -m d2lbn.ddp_lenet``) it trains in one process, which gives the
single-process reference. ``--out results.pt`` saves every process's results for later study.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from d2lbn.data import load_fashion_mnist
from d2lbn.distributed import convert_sync_batchnorm, group_size, shard
from d2lbn.models import lenet
from d2lbn.norm import BatchNorm
from d2lbn.train import evaluate_accuracy, set_seed

__all__ = ["NORMS", "build_lenet", "train_data_parallel", "running_mean_gap", "main"]

NORMS = ("local", "sync", "torch-sync")
"""The batch norms :func:`train_data_parallel` can train with."""


def build_lenet(norm: str = "sync") -> nn.Sequential:
    """The course's batch-norm LeNet, with its batch norms synchronized or not.

    Parameters
    ----------
    norm
        ``"local"``: :class:`d2lbn.norm.BatchNorm`, each process normalizing with its own
        batch's statistics; ``"sync"``: :class:`d2lbn.distributed.SyncBatchNorm`;
        ``"torch-sync"``: :class:`torch.nn.SyncBatchNorm` (whose synchronized path needs GPUs).

    Returns
    -------
    torch.nn.Sequential
        The network; under the same seed the three variants start from the same weights.

    Examples
    --------
    >>> type(build_lenet("sync")[1]).__name__, type(build_lenet("local")[1]).__name__
    ('SyncBatchNorm', 'BatchNorm')
    """
    if norm == "local":
        return lenet("scratch")
    if norm == "sync":
        return convert_sync_batchnorm(lenet("scratch"))
    if norm == "torch-sync":
        return nn.SyncBatchNorm.convert_sync_batchnorm(lenet("torch"))
    raise ValueError(f"unknown norm {norm!r}; use one of {', '.join(map(repr, NORMS))}")


# DDP's option to copy process 0's buffers to the others before each forward pass.
_SYNC_BUFFERS = (
    "forward_sync_buffers"
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else "broadcast_buffers"
)


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def train_data_parallel(
    norm: str = "sync",
    *,
    epochs: int = 1,
    batch_size: int = 256,
    lr: float = 1.0,
    seed: int = 0,
    max_steps: Optional[int] = None,
    sync_buffers: bool = True,
    device: Union[str, torch.device, None] = None,
) -> Dict[str, Any]:
    """Train the batch-norm LeNet on Fashion-MNIST with DDP in the current process group.

    Call it in every process of an initialized process group (under ``torchrun`` or
    :func:`d2lbn.distributed.launch`); without one it trains in this process alone, on whole
    batches, with no DDP. Every process draws the same shuffled batches of ``batch_size``
    examples and trains on its shard of each (``batch_size / world_size`` examples); DDP
    averages the gradients of the processes' mean losses, which is the gradient of the mean loss
    over the whole batch. With ``norm="sync"`` the training is therefore that of one process on
    whole batches, up to rounding.

    Parameters
    ----------
    norm
        ``"local"``, ``"sync"`` or ``"torch-sync"``; see :func:`build_lenet`.
    epochs
        Passes over the 60,000 training images (the last, incomplete batch is dropped).
    batch_size
        The *global* batch size, a multiple of the number of processes.
    lr
        Learning rate of plain SGD (1.0 is the recipe of chapter 5).
    seed
        Seeds the weights (the same in every process) and the order of the batches.
    max_steps
        Stop after this many steps (optimizer updates), even within an epoch.
    sync_buffers
        DDP's option (``forward_sync_buffers``; PyTorch 2.13 deprecated the older name,
        ``broadcast_buffers``, which earlier versions need): before each forward pass, copy
        process 0's buffers (the running statistics) to the others. With ``False`` and
        ``norm="local"``, each process keeps running statistics of its own shards.
    device
        Where to train; by default GPU ``LOCAL_RANK`` when there are GPUs, else the CPU.

    Returns
    -------
    dict
        This process's ``rank`` and the ``world_size``; ``norm``; ``losses``, the mean training
        loss over the whole batch at each step (the same list in every process);
        ``test_acc``, the test accuracy of this replica in evaluation mode (with its own
        running statistics); ``running``, a list with the ``(running_mean, running_var)`` of
        each batch norm; ``state_dict`` of the network; ``steps``, ``seconds`` (training time)
        and ``examples_per_sec`` (all processes together). Tensors are on the CPU.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; use one of {', '.join(map(repr, NORMS))}")
    if epochs < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError(f"nothing to train: epochs={epochs}, max_steps={max_steps}; give at least 1 of each")
    grouped = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if grouped else 0
    size = group_size()
    if batch_size % size:
        raise ValueError(
            f"batch_size {batch_size} does not split evenly over {size} processes; use a multiple of {size} "
            "so that averaging the processes' gradients gives the gradient over the whole batch"
        )
    device = _default_device() if device is None else torch.device(device)
    set_seed(seed)
    net = build_lenet(norm).to(device)
    model: nn.Module = net
    if grouped:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(net, device_ids=ids, **{_SYNC_BUFFERS: sync_buffers})
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    train_iter, test_iter = load_fashion_mnist(batch_size, seed=seed, drop_last=True)
    if len(train_iter) == 0:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {train_iter.num_examples} training images, and the "
            "incomplete batch is dropped, so there is nothing to train on; use a smaller batch_size"
        )

    losses: List[torch.Tensor] = []
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for X, y in train_iter:
            X, y = shard(X).to(device), shard(y).to(device)
            loss = loss_fn(model(X), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            if max_steps is not None and len(losses) >= max_steps:
                break
        if max_steps is not None and len(losses) >= max_steps:
            break
    step_losses = torch.stack(losses).double()
    if grouped:  # one collective for the whole run: the mean over processes of each step's loss
        dist.all_reduce(step_losses)
        step_losses /= size
    seconds = time.perf_counter() - start

    test_acc = evaluate_accuracy(net, test_iter, device)
    norms = [m for m in net.modules() if isinstance(m, (BatchNorm, nn.modules.batchnorm._BatchNorm))]
    return {
        "rank": rank,
        "world_size": size,
        "norm": norm,
        "losses": step_losses.cpu().tolist(),
        "test_acc": test_acc,
        "running": [(m.running_mean.detach().cpu().clone(), m.running_var.detach().cpu().clone()) for m in norms],
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "steps": len(losses),
        "seconds": seconds,
        "examples_per_sec": len(losses) * batch_size / max(seconds, 1e-9),
    }


def _save_atomically(obj: Any, path: str) -> None:
    """``torch.save`` into a temporary file next to ``path``, then rename it into place: an
    interrupted or failed save leaves ``path`` as it was, and no partial file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ddp_lenet-", suffix=".pt.part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def running_mean_gap(results: Sequence[Dict[str, Any]]) -> float:
    """The largest difference between two processes' running means, over every batch norm.

    Parameters
    ----------
    results
        :func:`train_data_parallel`'s results, one per process.

    Examples
    --------
    >>> one = {"running": [(torch.zeros(2), torch.ones(2))]}
    >>> two = {"running": [(torch.tensor([0.0, 0.5]), torch.ones(2))]}
    >>> running_mean_gap([one, two])
    0.5
    """
    gap = 0.0
    for other in results[1:]:
        for (mean_a, _), (mean_b, _) in zip(results[0]["running"], other["running"]):
            gap = max(gap, (mean_a - mean_b).abs().max().item())
    return gap


def _summary(results: Sequence[Dict[str, Any]], batch_size: int) -> str:
    first = results[0]
    accs = " ".join(f"{r['test_acc']:.3f}" for r in results)
    return (
        f"{first['norm']:>10}: {first['world_size']} x {batch_size // first['world_size']} examples, "
        f"{first['steps']} steps, loss {first['losses'][-1]:.3f}, test acc by process {accs}, "
        f"running-mean gap {running_mean_gap(results):.1e}, {first['examples_per_sec']:,.0f} examples/s"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``torchrun ... -m d2lbn.ddp_lenet``: train with each batch norm asked for, print one line each.

    Joins the process group that ``torchrun`` describes in the environment (NCCL on GPUs, gloo
    on the CPU), or trains in one process when started without ``torchrun``. Returns 0.
    """
    parser = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc_per_node=2 -m d2lbn.ddp_lenet",
        description="Train the batch-norm LeNet on Fashion-MNIST with DDP, local against synchronized batch norm.",
    )
    parser.add_argument("--norm", nargs="+", choices=NORMS, default=["local", "sync"], help="batch norms to train with, in turn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="stop each run after this many steps")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch size, split over the processes")
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-sync-buffers", action="store_true", help="let each process keep its own running statistics"
    )
    parser.add_argument("--backend", choices=("gloo", "nccl"), default=None, help="default: nccl with GPUs, else gloo")
    parser.add_argument("--out", default=None, help="save every process's results to this file (torch.save)")
    args = parser.parse_args(argv)

    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if launched:
        backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(_default_device())
        dist.init_process_group(backend)
    try:
        everything = {}
        for norm in args.norm:
            result = train_data_parallel(
                norm,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                max_steps=args.max_steps,
                sync_buffers=not args.no_sync_buffers,
            )
            results = [result]
            if launched:
                results = [None] * dist.get_world_size()
                dist.all_gather_object(results, result)
            everything[norm] = results
            if result["rank"] == 0:
                print(_summary(results, args.batch_size), flush=True)
        if args.out and (not launched or dist.get_rank() == 0):
            _save_atomically(everything, args.out)
    finally:
        if launched:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
