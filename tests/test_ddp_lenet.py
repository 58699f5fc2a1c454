"""d2lbn.ddp_lenet: the torchrun script, against training in one process."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest
import torch

import d2lbn.ddp_lenet as ddp_lenet
from d2lbn.distributed import SyncBatchNorm
from d2lbn.norm import BatchNorm

STEPS = 4
TORCHRUN_TIMEOUT = 300  # seconds; the run takes about 10


def test_build_lenet_variants_start_from_the_same_weights():
    nets = {}
    for norm in ddp_lenet.NORMS:
        torch.manual_seed(0)
        nets[norm] = ddp_lenet.build_lenet(norm)
    assert type(nets["local"][1]) is BatchNorm
    assert type(nets["sync"][1]) is SyncBatchNorm
    assert type(nets["torch-sync"][1]) is torch.nn.SyncBatchNorm
    for norm in ("sync", "torch-sync"):
        assert torch.equal(nets[norm][0].weight, nets["local"][0].weight)
    with pytest.raises(ValueError, match="unknown norm 'group'; use one of 'local', 'sync', 'torch-sync'"):
        ddp_lenet.build_lenet("group")


def test_refuses_what_it_cannot_train(monkeypatch):
    with pytest.raises(ValueError, match="unknown norm 'batch'; use one of 'local', 'sync', 'torch-sync'"):
        ddp_lenet.train_data_parallel("batch")
    for steps in ({"epochs": 0}, {"max_steps": 0}):
        with pytest.raises(ValueError, match="nothing to train.*give at least 1"):
            ddp_lenet.train_data_parallel("sync", **steps)
    monkeypatch.setattr(ddp_lenet, "group_size", lambda: 3)
    with pytest.raises(ValueError, match="multiple of 3"):
        ddp_lenet.train_data_parallel("sync", batch_size=256)


@pytest.mark.fashion_mnist
def test_refuses_a_batch_larger_than_the_training_set():
    with pytest.raises(ValueError, match="larger than the 60000 training images.*smaller batch_size"):
        ddp_lenet.train_data_parallel("local", batch_size=60_002)


def test_an_interrupted_save_leaves_the_old_results_and_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "results.pt"
    ddp_lenet._save_atomically({"run": 1}, str(out))
    real_save = torch.save

    def interrupted(obj, f):
        real_save(obj, f)  # written in full, then stopped before it is renamed into place
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ddp_lenet._save_atomically({"run": 2}, str(out))
    assert [p.name for p in tmp_path.iterdir()] == ["results.pt"]
    assert torch.load(out) == {"run": 1}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """``python -m d2lbn.ddp_lenet`` without torchrun, in this process: the single-process reference."""
    out = tmp_path_factory.mktemp("one") / "one.pt"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("RANK", "WORLD_SIZE"):
            patch.delenv(name, raising=False)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert ddp_lenet.main(["--norm", "local", "--max-steps", str(STEPS), "--out", str(out)]) == 0
    return printed.getvalue(), torch.load(out, weights_only=False)


@pytest.mark.fashion_mnist
def test_main_without_torchrun_trains_in_one_process(one_process):
    printed, saved = one_process
    assert printed.strip().startswith(f"local: 1 x 256 examples, {STEPS} steps")
    assert list(saved) == ["local"] and len(saved["local"]) == 1
    result = saved["local"][0]
    assert result["rank"] == 0 and result["world_size"] == 1 and len(result["losses"]) == STEPS
    assert len(result["running"]) == 4 and 0 <= result["test_acc"] <= 1


@pytest.fixture(scope="module")
def torchrun_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "results.pt"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "d2lbn.ddp_lenet", "--norm", "local", "sync", "--max-steps", str(STEPS), "--no-sync-buffers",
        "--out", str(out),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            stdout, stderr = run.communicate(timeout=TORCHRUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGTERM, not SIGKILL: torchrun then stops the workers it started in sessions of
            # their own, which would otherwise wait for their peers after the test has ended.
            run.terminate()
            stdout, stderr = run.communicate()
            pytest.fail(f"torchrun did not finish in {TORCHRUN_TIMEOUT} s; its output:\n{stdout}{stderr[-3000:]}")
    assert run.returncode == 0, stderr[-3000:]
    return stdout, torch.load(out, weights_only=False)


@pytest.mark.fashion_mnist
def test_torchrun_prints_one_line_per_norm(torchrun_results):
    lines = torchrun_results[0].strip().splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["local", "sync"]
    assert all(f"2 x 128 examples, {STEPS} steps" in line for line in lines)


@pytest.mark.fashion_mnist
def test_torchrun_sync_trains_like_one_process_and_local_does_not(torchrun_results, one_process):
    results = torchrun_results[1]
    reference = one_process[1]["local"][0]
    for part in results["sync"]:
        assert part["world_size"] == 2 and part["steps"] == STEPS
        torch.testing.assert_close(torch.tensor(part["losses"]), torch.tensor(reference["losses"]), rtol=1e-5, atol=1e-5)
        for name, value in reference["state_dict"].items():
            torch.testing.assert_close(part["state_dict"][name], value, rtol=1e-4, atol=1e-4, msg=name)
    assert ddp_lenet.running_mean_gap(results["sync"]) == 0.0
    local = results["local"]
    assert ddp_lenet.running_mean_gap(local) > 0, "without buffer sync, each process keeps its own statistics"
    gap = max((local[0]["state_dict"][k] - v).abs().max().item() for k, v in reference["state_dict"].items())
    assert gap > 1e-3
