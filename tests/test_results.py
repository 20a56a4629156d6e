"""`dltorch results`: one row per model from the files the pipeline leaves, under 120 columns."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dltorch.config import load_params
from dltorch.io import write_json
from dltorch.layout import ModelFiles
from dltorch.results import accuracy_over_time, collect, format_table, time_to_accuracy
from tests.conftest import REPO


def _leave_files(root: Path, name: str, accuracy: float) -> None:
    """What train, evaluate and export leave for a classifier (values chosen, not computed)."""
    files = ModelFiles.of(name, root)
    write_json(files.history, [{"epoch": 1, "seconds": 12.25}, {"epoch": 2, "seconds": 20.5}])
    write_json(files.metrics, {"test_accuracy": accuracy, "test_loss": 0.3, "train_seconds": 32.8})
    write_json(files.parity, {"passed": True, "checks": {"max_abs_diff": {"measured": 2.7e-5}}})
    write_json(files.deploy, {"int8": {"passed": False, "accurate": True, "drop": -0.0003}, "registry": {}})


def test_a_row_reads_the_headline_metric_its_goal_parity_int8_and_training_time(tmp_path: Path):
    params = load_params(REPO / "params.yaml")
    _leave_files(tmp_path, "mlp", 0.8834)
    rows = {row.model: row for row in collect(params, tmp_path)}
    assert set(rows) == set(params.models)
    mlp = rows["mlp"]
    assert (mlp.metric, mlp.value, mlp.goal) == ("test_accuracy", "0.8834", ">= 0.865")
    assert (mlp.parity, mlp.int8, mlp.training) == ("ok 2.7e-05", "slower +0.0003", "33 s / 2 ep")
    assert rows["lstm"].goal == "<= 0.2" and rows["lstm"].value == "-"  # nothing run yet: a dash, not an error


def test_the_table_of_every_model_fits_a_120_column_terminal(tmp_path: Path):
    params = load_params(REPO / "params.yaml")
    for name in params.models:
        _leave_files(tmp_path, name, 0.9)
    table = format_table(collect(params, tmp_path)).splitlines()
    assert len(table) == 1 + len(params.models)
    assert max(len(line) for line in table) <= 120, max(table, key=len)


def test_the_console_command_prints_the_table(tmp_path: Path):
    _leave_files(tmp_path, "mlp", 0.8834)
    result = subprocess.run([str(REPO / ".venv/bin/dltorch"), "results", "--params", str(REPO / "params.yaml"),
                             "--root", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("mlp "))
    assert "0.8834" in line and ">= 0.865" in line and json.dumps("mlp") not in line


def test_time_to_accuracy_counts_the_seconds_of_every_epoch_until_the_first_to_reach_the_target():
    """A dip after the target does not move it; epochs without a validation score still take their seconds."""
    history = [{"epoch": 1, "seconds": 10.0, "train_loss": 1.0},
               {"epoch": 2, "seconds": 12.5, "val_accuracy": 0.91},
               {"epoch": 3, "seconds": 11.0, "val_accuracy": 0.935},
               {"epoch": 4, "seconds": 9.0, "val_accuracy": 0.925},
               {"epoch": 5, "seconds": 10.0, "val_accuracy": 0.941}]
    curve = accuracy_over_time(history)
    assert curve == [(22.5, 0.91), (33.5, 0.935), (42.5, 0.925), (52.5, 0.941)]
    assert time_to_accuracy(curve, 0.93) == 33.5
    assert time_to_accuracy(curve, 0.935) == 33.5  # reaching the target counts
    assert time_to_accuracy(curve, 0.94) == 52.5
    assert time_to_accuracy(curve, 0.95) is None
