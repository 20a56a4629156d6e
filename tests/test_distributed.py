"""DDP is a mode of the same loop: 2 gloo processes on CPU match 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO, tiny_params_dict

WORKER = REPO / "tests" / "ddp_worker.py"


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


def _checkpoint(folder: Path, batch_size: int = 40) -> dict:
    return torch.load(folder / f"checkpoint-{batch_size}.pt", weights_only=True)


def _assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path, raw_root: Path):
    sizes = (40, 33)  # 33 = 17 + 16 per rank, and the last batch of 3 is 2 + 1
    single = _worker(raw_root, 2, tmp_path / "one", nproc=1, batch_sizes=sizes)
    double = _worker(raw_root, 2, tmp_path / "two", nproc=2, batch_sizes=sizes)
    for size in sizes:
        _assert_close(single[size], double[size], atol=1e-5)
        one, two = _checkpoint(tmp_path / "one", size), _checkpoint(tmp_path / "two", size)
        assert one.keys() == two.keys() and one["epoch"] == two["epoch"] == 2, size
        losses_one, losses_two = ([row["train_loss"] for row in c["history"]] for c in (one, two))
        assert losses_one[1] < losses_one[0], size  # it trained, so the match is not two untouched models
        assert losses_two == pytest.approx(losses_one, abs=1e-5), size  # metrics are summed across ranks


@pytest.mark.slow
def test_a_resumed_distributed_run_continues_from_its_checkpoint(tmp_path: Path, raw_root: Path):
    uninterrupted = _worker(raw_root, 3, tmp_path / "full", nproc=2)[40]
    _worker(raw_root, 1, tmp_path / "resumed", nproc=2)
    assert _checkpoint(tmp_path / "resumed")["epoch"] == 1
    resumed = _worker(raw_root, 3, tmp_path / "resumed", nproc=2, resume=True)[40]
    assert _checkpoint(tmp_path / "resumed")["epoch"] == 3
    _assert_close(uninterrupted, resumed, atol=1e-6)


@pytest.mark.slow
def test_the_train_stage_launches_torchrun_and_only_rank_zero_tracks_and_writes(tmp_path: Path, raw_root: Path):
    outputs = {}
    for nproc in (1, 2):
        raw = tiny_params_dict(epochs=2, batch_size=40, optimizer="sgd", lr=0.05, momentum=0.9)
        raw["models"]["mlp"]["train"]["distributed"] = {"nproc": nproc}
        params = tmp_path / f"params{nproc}.yaml"
        params.write_text(yaml.safe_dump(raw))
        out = tmp_path / f"mlp{nproc}"
        store = f"sqlite:///{tmp_path / f'mlflow{nproc}.db'}"  # one store per run: its runs are this stage's alone
        client = MlflowClient(tracking_uri=store)
        client.search_experiments()  # make the schema now, as a used store has it: ranks then race only on runs
        result = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--params", str(params),
                                 "--model", "mlp", "--data", str(raw_root), "--out", str(out)],
                                capture_output=True, text=True, timeout=300,
                                env={**os.environ, "MLFLOW_TRACKING_URI": store})
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json", "model.pt", "run.json"]
        runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
        assert len(runs) == 1, f"{nproc} process(es) left {len(runs)} runs: every rank tracked, not rank 0 alone"
        assert json.loads((out / "run.json").read_text())["run_id"] == runs[0].info.run_id
        assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [1, 2]
        outputs[nproc] = out
    one, two = (torch.load(outputs[n] / "model.pt", weights_only=True)["state_dict"] for n in (1, 2))
    _assert_close(one, two, atol=1e-5)
    history = json.loads((outputs[2] / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
