"""Training speed of LeNet with d2lbn's batch norm against nn.BatchNorm, from one run.

Three copies of the d2l recipe's LeNet (SGD, lr 1.0, batch 256, Fashion-MNIST held in memory)
differ only in their batch norm:

- ``torch``: ``nn.BatchNorm2d`` / ``nn.BatchNorm1d`` (a fused C++ kernel);
- ``scratch``: ``d2lbn.BatchNorm`` with its hand-derived backward pass (the default);
- ``autograd``: ``d2lbn.BatchNorm(manual_backward=False)``, the op-by-op formula that autograd
  differentiates.

A small machine's speed drifts during a run (other processes, frequency, neighbours on a shared
host), so the models take turns batch by batch, in a rotating order: each round trains every
model on the same batch, and a ratio is the median over rounds of the two models' times in that
round. Target: ``scratch`` at least 0.95x ``torch``.

Last, it times one ingredient of ``scratch``'s speed: a per-channel sum over LeNet's two
convolutional batch-norm inputs taken in two steps (each image's plane, then the batch), as
``d2lbn.norm`` does, against one ``sum(dim=(0, 2, 3))``.

    .venv/bin/python benchmarks/bench_batchnorm.py [--rounds 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import torch
from torch import nn

import d2lbn


def make_models() -> dict[str, nn.Module]:
    scratch_autograd = partial(d2lbn.BatchNorm, manual_backward=False)
    models = {}
    for name, norm in [("torch", "torch"), ("scratch", "scratch"), ("autograd", scratch_autograd)]:
        d2lbn.set_seed(0)
        models[name] = d2lbn.lenet(norm=norm)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=400, help="batches each model trains on")
    args = parser.parse_args()

    train_iter, _ = d2lbn.load_fashion_mnist(batch_size=256)
    batches = list(train_iter)
    models = make_models()
    names = list(models)
    optimizers = {name: torch.optim.SGD(net.parameters(), lr=1.0) for name, net in models.items()}
    loss_fn = nn.CrossEntropyLoss()

    def step(name: str, X: torch.Tensor, y: torch.Tensor) -> float:
        net, optimizer = models[name], optimizers[name]
        start = time.perf_counter()
        loss = loss_fn(net(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for X, y in batches[:20]:  # warm-up: allocator, thread pool, first-call overheads
        for name in names:
            step(name, X, y)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.rounds):
        X, y = batches[(20 + i) % len(batches)]
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(step(name, X, y))

    def ratio(a: str, b: str) -> float:
        """How many times faster a trains than b: the median of the per-round ratios."""
        return statistics.median(tb / ta for ta, tb in zip(seconds[a], seconds[b]))

    print(f"LeNet training, batch 256, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("glibc malloc thresholds (mmap, trim): "
          f"{os.environ.get('MALLOC_MMAP_THRESHOLD_', 'default')}, {os.environ.get('MALLOC_TRIM_THRESHOLD_', 'default')}")
    print(f"{args.rounds} rounds, one batch per model per round\n")
    print(f"{'batch norm':<12}{'examples/s':>12}{'vs torch':>10}")
    for name in names:
        speed = 256 / statistics.median(seconds[name])
        print(f"{name:<12}{speed:>12,.0f}{ratio(name, 'torch'):>9.3f}x")
    target = ratio("scratch", "torch")
    verdict = "meets" if target >= 0.95 else "misses"
    print(f"\nd2lbn.BatchNorm / nn.BatchNorm = {target:.3f} ({verdict} the 0.95 target)")
    print(f"hand-derived backward / autograd backward = {ratio('scratch', 'autograd'):.3f}")
    per_channel_sums()


def per_channel_sums(rounds: int = 2000) -> None:
    """Print how much faster the two-step per-channel sum is on LeNet's conv batch-norm inputs."""
    print("\nper-channel sum of a batch-norm input: one sum over (0, 2, 3) vs two steps")
    for shape in [(256, 6, 24, 24), (256, 16, 8, 8)]:
        x = torch.randn(shape)
        # The two reduction orders themselves, as the text compares them; d2lbn.norm._channel_sum
        # does the second and adds about a microsecond of reshaping on top.
        ways = {"one": lambda: x.sum(dim=(0, 2, 3)), "two": lambda: x.sum(dim=(2, 3)).sum(0)}
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for i in range(rounds):
            for name in (["one", "two"] if i % 2 else ["two", "one"]):
                start = time.perf_counter()
                ways[name]()
                seconds[name].append(time.perf_counter() - start)
        one, two = (statistics.median(seconds[name][rounds // 10 :]) for name in ways)
        print(f"{str(shape):<18}{1e6 * one:>7.0f} us {1e6 * two:>7.0f} us   two steps {one / two:.1f}x as fast")


if __name__ == "__main__":
    main()
