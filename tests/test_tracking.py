"""Tracking: a run goes to the store its tracker names; tests keep to their own store."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from dltorch import tracking
from dltorch.pipeline.train import train
from tests.conftest import REPO


def _state(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_size, path.stat().st_mtime_ns) if path.exists() else None


def test_a_test_tracks_into_its_temporary_store_and_leaves_the_repositorys_untouched(tmp_path: Path):
    repo_store = REPO / tracking.STORE_FILE
    before = _state(repo_store)
    try:
        with tracking.Tracker.for_project("tests").model_run("mlp", "train@mlp"):
            raise RuntimeError("a failing stage")  # the run the old regression test left FAILED in the repo store
    except RuntimeError:
        pass
    assert _state(repo_store) == before
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"


def test_a_run_goes_to_its_trackers_store_whatever_the_environment_names(tmp_path, raw_root, tiny_params,
                                                                        mlflow_store):
    own = f"sqlite:///{tmp_path / 'own.db'}"
    train(tiny_params, "mlp", raw_root, tmp_path / "mlp", tracker=tracking.Tracker(own, "tests"))
    run_id = json.loads((tmp_path / "mlp" / "run.json").read_text())["run_id"]
    run = MlflowClient(tracking_uri=own).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["arch"] == "mlp" and "train_loss" in run.data.metrics
    assert MlflowClient(tracking_uri=mlflow_store).get_experiment_by_name("tests") is None  # MLFLOW_TRACKING_URI's
