"""Tracking: tests keep to their own store."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from dltorch import tracking
from tests.conftest import REPO


def _state(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_size, path.stat().st_mtime_ns) if path.exists() else None


def test_a_test_tracks_into_its_temporary_store_and_leaves_the_repositorys_untouched(tmp_path: Path):
    repo_store = REPO / tracking.STORE_FILE
    before = _state(repo_store)
    try:
        with tracking.model_run("tests", "mlp", "train@mlp"):
            raise RuntimeError("a failing stage")  # the run the old regression test left FAILED in the repo store
    except RuntimeError:
        pass
    assert _state(repo_store) == before
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"
