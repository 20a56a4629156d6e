"""DDP is a mode of the same loop: 2 gloo processes on CPU match 1 process with the same global batch, through the
engine (ddp_worker.py), the train stage's own torchrun launch, and two torchrun nodes meeting on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO, tiny_params_dict, write_tiny_raw
from tests.helpers import free_port

# one worker runs this file: the one-process references are trained once, and launches do not share 2 cores
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ddp")]

WORKER = REPO / "tests" / "ddp_worker.py"
SIZES = (40, 33)  # 33 = 17 + 16 per rank, and the last batch of 3 is 2 + 1
EPOCHS = 2


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_raw(tmp_path_factory.mktemp("ddp") / "raw")


def _worker(raw: Path, epochs: int, folder: Path, nproc: int, resume: bool = False,
            batch_sizes: tuple[int, ...] = (40,)) -> dict[int, dict]:
    """ddp_worker.py's weights per batch size, trained in one launch; its checkpoints stay in `folder`."""
    folder.mkdir(exist_ok=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = [*(launcher if nproc > 1 else [sys.executable]), str(WORKER), "--raw", str(raw), "--epochs",
               str(epochs), "--folder", str(folder), "--batch-size", *map(str, batch_sizes),
               *(["--resume"] if resume else [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {size: torch.load(folder / f"weights-{size}.pt", weights_only=True) for size in batch_sizes}


@pytest.fixture(scope="module")
def engine_runs(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """ddp_worker.py's folders, {processes: folder}, after EPOCHS epochs at each of SIZES. The two-process run is
    interrupted after epoch 1 and resumed: one launch fewer than a separate resume test's own (three processes, a
    seventh of this file's time). Its match with one uninterrupted process covers DDP and the resume together;
    the resume test checks what it kept. Its checkpoints after epoch 1 are `interrupted-<size>.pt`."""
    folders = {nproc: tmp_path_factory.mktemp(f"engine{nproc}") for nproc in (1, 2)}
    _worker(raw, EPOCHS, folders[1], nproc=1, batch_sizes=SIZES)
    _worker(raw, 1, folders[2], nproc=2, batch_sizes=SIZES)
    for size in SIZES:
        shutil.copyfile(folders[2] / f"checkpoint-{size}.pt", folders[2] / f"interrupted-{size}.pt")
    _worker(raw, EPOCHS, folders[2], nproc=2, batch_sizes=SIZES, resume=True)
    return folders


def _weights(folder: Path, batch_size: int = 40) -> dict:
    return torch.load(folder / f"weights-{batch_size}.pt", weights_only=True)


def _checkpoint(folder: Path, batch_size: int = 40) -> dict:
    return torch.load(folder / f"checkpoint-{batch_size}.pt", weights_only=True)


def _assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0)


def test_two_processes_match_one_with_the_same_global_batch(engine_runs: dict[int, Path]):
    one, two = engine_runs[1], engine_runs[2]
    for size in SIZES:
        _assert_close(_weights(one, size), _weights(two, size), atol=1e-5)
        single, double = _checkpoint(one, size), _checkpoint(two, size)
        assert single.keys() == double.keys() and single["epoch"] == double["epoch"] == EPOCHS, size
        losses_one, losses_two = ([row["train_loss"] for row in c["history"]] for c in (single, double))
        assert losses_one[1] < losses_one[0], size  # it trained, so the match is not two untouched models
        assert losses_two == pytest.approx(losses_one, abs=1e-5), size  # metrics are summed across ranks


def test_a_resumed_distributed_run_continues_from_its_checkpoint(engine_runs: dict[int, Path]):
    for size in SIZES:
        interrupted = torch.load(engine_runs[2] / f"interrupted-{size}.pt", weights_only=True)
        resumed = _checkpoint(engine_runs[2], size)
        assert (interrupted["epoch"], resumed["epoch"]) == (1, EPOCHS), size
        # epoch 1 was not trained again: its record, timings included, is the interrupted run's
        assert resumed["history"][0] == interrupted["history"][0], size
        assert len(resumed["history"]) == EPOCHS, size
    # as if never interrupted: test_two_processes_match_one_with_the_same_global_batch compares its weights with
    # those of one process that ran every epoch in one go


def _params(folder: Path, nproc: int) -> Path:
    # ddp_worker.py's recipe: the stage's weights are compared with the engine's one-process run of it
    raw = tiny_params_dict(epochs=EPOCHS, batch_size=40, optimizer="sgd", lr=0.05, momentum=0.9, val_size=0)
    raw["models"]["mlp"]["train"]["distributed"] = {"nproc": nproc}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _store(folder: Path) -> MlflowClient:
    """A store of the run's own (its runs are this stage's alone), its schema made now, as a used store has it:
    ranks then race only on runs."""
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    client.search_experiments()
    return client


def _train_stage(folder: Path, raw: Path, launcher: list[str]) -> subprocess.Popen:
    command = [*launcher, str(REPO / "stages" / "train.py"), "--params", str(folder / "params.yaml"), "--model",
               "mlp", "--data", str(raw), "--out", str(folder / "mlp")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(processes: list[subprocess.Popen]) -> None:
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), \
        "\n".join(output[-2000:] for output in outputs)


def _assert_one_tracked_run(folder: Path, client: MlflowClient, what: str) -> None:
    out = folder / "mlp"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json", "model.pt", "run.json"]
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 1, f"{what} left {len(runs)} runs: every rank tracked, not rank 0 alone"
    assert json.loads((out / "run.json").read_text())["run_id"] == runs[0].info.run_id
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [1, 2]
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]  # it trained: a match is not two untouched models


def _stage_weights(folder: Path) -> dict:
    return torch.load(folder / "mlp" / "model.pt", weights_only=True)["state_dict"]


def test_the_train_stage_launches_torchrun_and_only_rank_zero_tracks_and_writes(raw: Path, engine_runs: dict[int, Path],
                                                                               tmp_path: Path):
    _params(tmp_path, nproc=2)
    client = _store(tmp_path)
    _finish([_train_stage(tmp_path, raw, [sys.executable])])  # the stage itself starts torchrun
    _assert_one_tracked_run(tmp_path, client, "2 processes")
    _assert_close(_weights(engine_runs[1]), _stage_weights(tmp_path), atol=1e-5)


def test_two_torchrun_nodes_match_one_process(raw: Path, engine_runs: dict[int, Path], tmp_path: Path):
    """README's two-host command, the two hosts being two torchrun launches meeting through c10d on loopback."""
    _params(tmp_path, nproc=1)  # one process per node
    client = _store(tmp_path)
    endpoint = f"127.0.0.1:{free_port()}"
    _finish([_train_stage(tmp_path, raw, [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
        "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=dltorch-test"]) for rank in (0, 1)])
    _assert_one_tracked_run(tmp_path, client, "2 nodes")
    _assert_close(_weights(engine_runs[1]), _stage_weights(tmp_path), atol=1e-5)
