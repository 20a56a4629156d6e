"""Moving off one laptop: a DVC remote and DVC experiments (a shared tracking server: tests/test_team.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dltorch.studies import names as study_names
from tests.helpers import MLP_STAGES, dvc, tiny_mlp_repo
from tests.test_studies import shrunk_study

# one worker runs this file: its repo is built once
pytestmark = pytest.mark.xdist_group("scale_out")


@pytest.fixture(scope="session")  # not module: a pytest-xdist worker may run another file's tests in between
def mlp_repo(tmp_path_factory) -> Path:
    """A fresh copy of the repo whose pipeline is just a tiny MLP on the real data, reproduced once."""
    # the studies tiny, should anything reproduce them
    repo = tiny_mlp_repo(tmp_path_factory.mktemp("scale") / "repo",
                         {study: shrunk_study(study) for study in study_names()})
    dvc(repo, "repro", *MLP_STAGES)
    return repo


def _digests(repo: Path) -> dict[str, str]:
    files = [p for folder in ("data/raw", "models") for p in (repo / folder).rglob("*")
             if p.is_file() and p.name != ".gitignore"]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_dvc_remote_round_trip_is_byte_identical(mlp_repo: Path, tmp_path: Path):
    before = _digests(mlp_repo)
    assert "models/mlp/model.onnx" in before and "data/raw/FashionMNIST/raw/train-images-idx3-ubyte" in before
    dvc(mlp_repo, "remote", "add", "--local", "-f", "-d", "scratch", str(tmp_path / "remote"))
    dvc(mlp_repo, "push", *MLP_STAGES)
    shutil.rmtree(mlp_repo / ".dvc" / "cache")
    shutil.rmtree(mlp_repo / "data" / "raw")
    shutil.rmtree(mlp_repo / "models" / "mlp")
    dvc(mlp_repo, "pull", *MLP_STAGES)
    assert _digests(mlp_repo) == before
    assert "up to date" in dvc(mlp_repo, "status", *MLP_STAGES).stdout


@pytest.mark.slow
def test_experiments_run_and_queue_into_the_same_store(mlp_repo: Path):
    # the mlp's training and evaluation only (an experiment of one model; without a target it reproduces every
    # stage): what is compared is each run's params and test metrics
    dvc(mlp_repo, "exp", "run", "evaluate@mlp", "-n", "lr-3e-3", "-S", "models.mlp.train.lr=0.003")
    dvc(mlp_repo, "exp", "run", "evaluate@mlp", "--queue", "-n", "lr-1e-2", "-S", "models.mlp.train.lr=0.01")
    dvc(mlp_repo, "exp", "run", "evaluate@mlp", "--queue", "-n", "lr-5e-4", "-S", "models.mlp.train.lr=0.0005")
    dvc(mlp_repo, "queue", "start", "-j", "2")  # two at once: they must not collide on the store
    deadline = time.monotonic() + 300
    while "Running" in (status := dvc(mlp_repo, "queue", "status").stdout) or "Queued" in status:
        assert time.monotonic() < deadline, status
        time.sleep(3)
    assert "Success" in status, status
    shown = json.loads(dvc(mlp_repo, "exp", "show", "--json").stdout)
    assert {"lr-3e-3", "lr-1e-2", "lr-5e-4"} <= set(json.dumps(shown).replace('"', " ").split())
    client = MlflowClient(tracking_uri=f"sqlite:///{mlp_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dltorch")
    runs = client.search_runs([experiment.experiment_id])
    tagged = {run.data.tags.get("dvc_exp"): run for run in runs}
    for name, lr in (("lr-3e-3", "0.003"), ("lr-1e-2", "0.01"), ("lr-5e-4", "0.0005")):
        assert name in tagged, f"no MLflow run tagged dvc_exp={name}: {sorted(map(str, tagged))}"
        assert tagged[name].data.params["train.lr"] == lr and "test_accuracy" in tagged[name].data.metrics
