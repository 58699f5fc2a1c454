"""Tests of d2lbn.train: the training loop, History, accuracy, seeding and the notebook displays."""

from __future__ import annotations

import importlib
import base64
import math
import random
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

train_module = importlib.import_module("d2lbn.train")  # the module; d2lbn.train is the function
from d2lbn.models import mlp  # noqa: E402
from d2lbn.train import EpochStats, History, evaluate_accuracy, in_notebook, set_seed, train, try_gpu  # noqa: E402


def separable(n: int = 256, batch_size: int = 32, seed: int = 0):
    """Two Gaussian blobs in 2-D, linearly separable: (train batches, test batches)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    X = torch.randn(n, 2, generator=g) * 0.5 + (y.float() * 2 - 1)[:, None] * 1.5
    batches = [(X[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]
    return batches[:-2], batches[-2:]


def small_net(norm="torch") -> nn.Sequential:
    return mlp(2, [8], 2, activation="relu", norm=norm, flatten=False)


# ------------------------------------------------------------------------------------ training


def test_loss_falls_and_accuracy_rises_on_a_separable_problem():
    set_seed(0)
    train_iter, test_iter = separable()
    net = mlp(2, [8], 2, activation="sigmoid", flatten=False)
    history = train(net, train_iter, test_iter, num_epochs=6, lr=0.5, device="cpu", progress=False)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.train_acc[-1] > history.train_acc[0]
    assert history.final.train_acc > 0.95 and history.final.test_acc > 0.95


def test_history_has_one_entry_per_epoch_and_a_summary():
    set_seed(0)
    train_iter, test_iter = separable()
    history = train(small_net(), train_iter, test_iter, num_epochs=3, lr=0.1, device="cpu", progress=False)
    for name in ("train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds", "num_examples"):
        assert len(getattr(history, name)) == 3, name
    assert history.num_epochs == 3
    assert history.num_examples == [192] * 3
    assert all(rate > 0 for rate in history.examples_per_sec)
    assert all(s > 0 for s in history.seconds)
    assert all(0 <= a <= 1 for a in history.train_acc + history.test_acc)
    assert history.device == "cpu"
    assert isinstance(history.final, EpochStats)
    assert history.final.test_acc == history.test_acc[-1]
    assert re.fullmatch(
        r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}, [\d,]+ examples/s on cpu", history.summary()
    )
    assert repr(history).startswith("History(3 epochs: loss ")


def test_history_summary_and_final_without_a_test_set_or_epochs():
    history = History(device="cuda:0")
    assert history.summary() == "no epochs recorded"
    with pytest.raises(IndexError):
        history.final
    history.append(EpochStats(0.5, 0.8, math.nan, 1000.0, 2.0), 2000)
    history.append(EpochStats(0.4, 0.9, math.nan, 3000.0, 1.0), 3000)
    # 5000 examples in 2 + 1 seconds of training
    assert history.overall_examples_per_sec == pytest.approx(5000 / 3)
    assert history.summary() == "loss 0.400, train acc 0.900, 1,667 examples/s on cuda:0"


def test_train_loss_and_accuracy_are_the_means_over_the_epoch():
    # a network that does not learn (lr 0), set so that the per-example means over the epoch (2/3
    # correct) differ from the means of the batch means (3/4 correct)
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
        net.bias.zero_()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    batches = [(X[:2], torch.tensor([0, 0])), (X[2:], torch.tensor([0]))]
    history = train(net, batches, None, 1, None, "cpu", optimizer=optimizer, progress=False)
    with torch.no_grad():
        logits = net(X)
        expected_loss = nn.functional.cross_entropy(logits, torch.tensor([0, 0, 0])).item()
        expected_acc = (logits.argmax(1) == 0).float().mean().item()
    assert history.train_loss[0] == pytest.approx(expected_loss, rel=1e-6)
    assert history.train_acc[0] == pytest.approx(expected_acc) == pytest.approx(2 / 3)
    batch_mean_loss = (nn.functional.cross_entropy(logits[:2], torch.tensor([0, 0])).item()
                       + nn.functional.cross_entropy(logits[2:], torch.tensor([0])).item()) / 2
    assert history.train_loss[0] != pytest.approx(batch_mean_loss, rel=1e-3)
    assert math.isnan(history.test_acc[0])


def test_on_step_is_called_once_per_step_in_training_mode():
    train_iter, test_iter = separable()
    calls = []

    def on_step(step, net, loss):
        assert net.training
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and not loss.requires_grad
        # evaluating in the middle of training must hand the network back in training mode
        evaluate_accuracy(net, test_iter)
        calls.append(step)

    train(small_net(), train_iter, test_iter, num_epochs=2, lr=0.1, device="cpu", progress=False, on_step=on_step)
    assert calls == list(range(1, 2 * len(train_iter) + 1))


def test_on_step_sees_each_optimizer_step():
    train_iter, _ = separable()
    net = small_net()
    snapshots = []
    train(net, train_iter[:3], None, 1, 0.1, "cpu", progress=False,
          on_step=lambda step, net, loss: snapshots.append(net[0].weight.detach().clone()))
    assert len(snapshots) == 3
    assert not torch.equal(snapshots[0], snapshots[1]) and not torch.equal(snapshots[1], snapshots[2])


def test_train_does_not_reinitialize_the_network():
    net = small_net()
    with torch.no_grad():
        net[0].weight.fill_(0.25)
    train(net, [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))], None, 1, 0.1, "cpu", progress=False)
    assert torch.allclose(net[0].weight, torch.full_like(net[0].weight, 0.25))  # zero input: no gradient


def test_train_accepts_a_dataloader_an_optimizer_and_a_binary_loss():
    set_seed(0)
    X = torch.randn(128, 20)
    y = (X[:, :3].sum(1) > 0).float()[:, None]
    loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True)
    net = mlp(20, [64, 32], 1, activation="relu", norm="torch", flatten=False)
    history = train(
        net, loader, loader, 8, None, "cpu",
        optimizer=torch.optim.Adam(net.parameters(), lr=0.01), loss_fn=nn.BCEWithLogitsLoss(), progress=False,
    )  # fmt: skip
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.final.test_acc > 0.9


class RecordsMoves(torch.Tensor):
    """A tensor that records where ``.to`` was asked to move it (on a CPU-only machine a move to
    the CPU changes nothing visible, so the request itself is what the test checks)."""

    moves: list = []

    def to(self, *args, **kwargs):
        RecordsMoves.moves.append(torch.device(args[0] if args else kwargs["device"]))
        return torch.Tensor.to(self.as_subclass(torch.Tensor), *args, **kwargs)


def test_batches_are_moved_to_the_device():
    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append(x.device)
            return super().forward(x)

    RecordsMoves.moves = []
    X = torch.zeros(2, 2).as_subclass(RecordsMoves)
    y = torch.zeros(2, dtype=torch.long).as_subclass(RecordsMoves)
    train(Probe(2, 2), [(X, y)], None, 1, 0.1, torch.device("cpu"), progress=False)
    assert RecordsMoves.moves == [torch.device("cpu")] * 2, "both X and y are sent to the device"
    assert seen == [torch.device("cpu")]


# ---------------------------------------------------------------------------- evaluation modes


class ModeProbe(nn.Module):
    """Records the training flag of each forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.linear(x)


def test_evaluate_accuracy_runs_in_eval_mode_and_restores_every_module_mode():
    net = nn.Sequential(ModeProbe(), nn.BatchNorm1d(2), nn.Dropout(0.5))
    net.train()
    net[1].eval()  # a frozen batch norm inside a network in training: a mixed state
    batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    evaluate_accuracy(net, batches)
    assert net[0].modes == [False]
    assert [m.training for m in net] == [True, False, True] and net.training
    net.eval()
    evaluate_accuracy(net, batches)
    assert not any(m.training for m in net.modules())


def test_evaluate_accuracy_restores_the_mode_after_an_error():
    net = nn.Sequential(nn.Linear(2, 2))
    net.train()
    with pytest.raises(RuntimeError):
        evaluate_accuracy(net, [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))])
    assert net.training


def test_evaluate_accuracy_binary_logits_and_one_hot_targets():
    net = nn.Identity()
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    assert evaluate_accuracy(net, [(logits, torch.tensor([[1.0], [0.0], [0.0], [0.0]]))], "cpu") == 0.75
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert evaluate_accuracy(net, [(scores, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))], "cpu") == 0.5


def test_evaluate_accuracy_takes_class_indices_as_a_column_too():
    net = nn.Identity()
    scores = torch.tensor([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 0, 0])
    assert evaluate_accuracy(net, [(scores, labels)], "cpu") == 2 / 3
    assert evaluate_accuracy(net, [(scores, labels.view(-1, 1))], "cpu") == 2 / 3
    with pytest.raises(ValueError, match=r"labels of shape \(3, 2\) do not fit class scores of shape \(3, 3\)"):
        evaluate_accuracy(net, [(scores, torch.zeros(3, 2))], "cpu")


def test_train_uses_training_mode_and_evaluates_in_eval_mode():
    probe = ModeProbe()
    train_iter = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))] * 2
    test_iter = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    probe.eval()
    train(probe, train_iter, test_iter, 2, 0.1, "cpu", progress=False)
    assert probe.modes == [True, True, False] * 2


# -------------------------------------------------------------------------------------- errors


def test_empty_or_lengthless_iterators_are_refused_with_a_clear_message():
    train_iter, test_iter = separable()
    with pytest.raises(ValueError, match="train_iter has no batches"):
        train(small_net(), [], test_iter, 1, 0.1, "cpu", progress=False)
    steps = []  # an empty test_iter is refused before any training, not after the first epoch
    with pytest.raises(ValueError, match="test_iter has no batches; check the test set's size"):
        train(small_net(), train_iter, [], 1, 0.1, "cpu", progress=False, on_step=lambda *a: steps.append(a))
    assert steps == []
    with pytest.raises(TypeError, match="must have a length.*list"):
        train(small_net(), (batch for batch in train_iter), test_iter, 1, 0.1, "cpu", progress=False)
    with pytest.raises(ValueError, match=r"data_iter yielded no batches \(is it empty or exhausted\?\)"):
        evaluate_accuracy(small_net(), [])


def test_a_one_shot_iterator_fails_in_the_second_epoch():
    class OneShot:
        def __init__(self, batches):
            self.batches, self.iterator = batches, iter(batches)

        def __len__(self):
            return len(self.batches)

        def __iter__(self):
            return self.iterator

    train_iter, _ = separable()
    with pytest.raises(ValueError, match="epoch 2.*re-iterable"):
        train(small_net(), OneShot(train_iter), None, 2, 0.1, "cpu", progress=False)


def test_a_diverging_loss_says_to_lower_the_learning_rate():
    set_seed(0)
    X = torch.randn(64, 2)
    batches = [(X[i : i + 16], (X[i : i + 16, 0] > 0).long()) for i in range(0, 64, 16)]
    net = mlp(2, [16, 16], 2, activation="relu", flatten=False)
    with pytest.raises(FloatingPointError, match=r"(nan|inf) in epoch 1.*Lower the learning rate \(it is 10000.0\)"):
        train(net, batches, None, 3, 1e4, "cpu", progress=False)
    nan_loss = lambda y_hat, y: (y_hat * float("nan")).sum()  # noqa: E731
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        train(nn.Linear(2, 2), batches, None, 1, 0.1, "cpu", loss_fn=nan_loss, progress=False)


@pytest.mark.parametrize("num_epochs", [0, -1, 1.5, True])
def test_bad_num_epochs(num_epochs):
    with pytest.raises(ValueError, match=f"num_epochs must be a positive integer, got {num_epochs}"):
        train(small_net(), separable()[0], None, num_epochs, 0.1, "cpu", progress=False)


@pytest.mark.parametrize("lr", [None, 0.0, -0.1])
def test_bad_lr_without_an_optimizer(lr):
    with pytest.raises(ValueError, match="lr must be a positive learning rate"):
        train(small_net(), separable()[0], None, 1, lr, "cpu", progress=False)


# --------------------------------------------------------------------------- seeds and devices


def run_once(seed: int) -> tuple[History, list[torch.Tensor], float, float]:
    set_seed(seed)
    net = mlp(2, [16], 2, norm="scratch", dropout=0.3, flatten=False)  # dropout draws random numbers
    train_iter, test_iter = separable()
    history = train(net, train_iter, test_iter, 2, 0.2, "cpu", progress=False)
    return history, [p.detach().clone() for p in net.parameters()], random.random(), float(np.random.rand())


def test_set_seed_makes_two_runs_identical():
    first, second, other = run_once(7), run_once(7), run_once(8)
    assert first[0].train_loss == second[0].train_loss and first[0].test_acc == second[0].test_acc
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    assert first[2:] == second[2:]
    assert first[0].train_loss != other[0].train_loss


def test_set_seed_accepts_a_numpy_integer():
    set_seed(np.int64(3))
    a = torch.rand(2)
    set_seed(3)
    assert torch.equal(a, torch.rand(2))


def test_set_seed_rejects_a_non_integer():
    with pytest.raises(TypeError, match="integer"):
        set_seed(1.5)


def test_try_gpu_returns_the_best_device():
    device = try_gpu()
    assert isinstance(device, torch.device)
    if torch.cuda.is_available():
        assert device == torch.device("cuda:0")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        assert device.type == "mps"
    else:
        assert device == torch.device("cpu")
        assert try_gpu(3) == torch.device("cpu")


def test_try_gpu_prefers_cuda_then_mps_then_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert (try_gpu(), try_gpu(1)) == (torch.device("cuda:0"), torch.device("cuda:1"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert try_gpu() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert try_gpu() == torch.device("cpu")


def test_default_device_is_try_gpu(monkeypatch):
    train_iter, _ = separable()
    history = train(small_net(), train_iter[:1], None, 1, 0.1, progress=False)
    assert history.device == str(try_gpu())
    calls = []
    monkeypatch.setattr(train_module, "try_gpu", lambda i=0: calls.append(i) or torch.device("cpu"))
    train(small_net(), train_iter[:1], None, 1, 0.1, progress=False)
    assert calls == [0]


# ---------------------------------------------------------------------------------- displays


class FakeHandle:
    def __init__(self, data):
        self.versions = [data]

    def update(self, data, raw=False):
        assert raw
        self.versions.append(data)


@pytest.fixture
def fake_notebook(monkeypatch):
    """Pretend to run in a kernel: record every display and its updates."""
    import IPython.display

    handles: list[FakeHandle] = []

    def display(data, raw=False, display_id=False):
        assert raw and display_id is True
        handles.append(FakeHandle(data))
        return handles[-1]

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(train_module, "in_notebook", lambda: True)
    return handles


def test_in_a_notebook_train_leaves_one_summary_line_and_one_figure(fake_notebook):
    train_iter, test_iter = separable()
    history = train(small_net(), train_iter, test_iter, 3, 0.1, "cpu")
    line, figure = fake_notebook  # exactly two displays
    assert line.versions[-1] == {"text/plain": history.summary()}
    assert any("epoch" in v["text/plain"] and "batch" in v["text/plain"] for v in line.versions[1:-1])
    assert len(figure.versions) == 3  # shown after epoch 1, updated after epochs 2 and 3
    for version in figure.versions:
        assert base64.b64decode(version["image/png"]).startswith(b"\x89PNG")
        assert "training loss and accuracy" in version["text/plain"]
    assert plt.get_fignums() == []  # nothing left for the inline backend to show again


def test_in_a_notebook_the_displays_can_be_turned_off(fake_notebook):
    train_iter, _ = separable()
    train(small_net(), train_iter, None, 1, 0.1, "cpu", progress=False, live_plot=False)
    assert fake_notebook == []
    train(small_net(), train_iter, None, 1, 0.1, "cpu", progress=False)  # live_plot=None: auto, on
    assert len(fake_notebook) == 1 and "image/png" in fake_notebook[0].versions[0]


def test_outside_a_notebook_there_is_a_terminal_bar_and_no_figure(capsys, monkeypatch):
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: pytest.fail("displayed outside a notebook"))
    assert not in_notebook()
    train_iter, test_iter = separable()
    train(small_net(), train_iter, test_iter, 2, 0.1, "cpu")
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "test acc" in err
    assert plt.get_fignums() == []


def test_live_plot_can_be_forced_in_an_ipython_shell_but_not_in_plain_python(monkeypatch):
    import IPython.display

    shown = []

    def display(data, raw, display_id):
        shown.append(data)
        return FakeHandle(data)

    monkeypatch.setattr(IPython.display, "display", display)
    with pytest.warns(UserWarning, match="plain Python interpreter.*plot_history"):
        train(small_net(), separable()[0], None, 1, 0.1, "cpu", progress=False, live_plot=True)
    assert shown == []
    monkeypatch.setattr(train_module, "_in_ipython", lambda: True)  # the terminal IPython, say
    train(small_net(), separable()[0], None, 1, 0.1, "cpu", progress=False, live_plot=True)
    assert len(shown) == 1 and "image/png" in shown[0]
