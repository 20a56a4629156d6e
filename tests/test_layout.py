"""A model folder's file names are defined once (dltorch/layout.py); dvc.yaml, which must spell paths out, names the
same files, so what a stage writes is what the code reads back."""

from __future__ import annotations

from pathlib import Path

import yaml

from dltorch import layout
from dltorch.layout import ModelFiles
from tests.conftest import REPO

FOLDER = ModelFiles(Path("models/${key}"))


def _stage(name: str) -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]["do"]


def _paths(entries: list) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}


def test_the_train_stage_writes_the_files_layout_names():
    stage = _stage("train")
    assert f"--out {FOLDER.folder}" in stage["cmd"]
    outs = _paths(stage["outs"])
    folder = FOLDER.folder
    assert {str(FOLDER.model), f"{folder}/{layout.CHECKPOINT_FILE}", f"{folder}/{layout.RUN_FILE}"} == outs
    assert _paths(stage["plots"]) == {str(FOLDER.history)}


def test_evaluate_writes_its_headline_metrics_and_details_where_layout_says():
    stage = _stage("evaluate")
    assert f"--out {FOLDER.metrics.parent}" in stage["cmd"]
    assert _paths(stage["metrics"]) == {str(FOLDER.metrics)}
    assert f"{FOLDER.metrics.parent}/{layout.DETAILS_FILE}" in _paths(stage["outs"])


def test_export_writes_its_files_where_layout_says_and_keeps_audit_reports_out_of_dvc_metrics():
    stage = _stage("export")
    for flag, path in (("--onnx", FOLDER.onnx), ("--int8", FOLDER.int8), ("--report", FOLDER.parity),
                       ("--deploy", FOLDER.deploy), ("--metrics", FOLDER.metrics)):
        assert f"{flag} {path}" in stage["cmd"], flag
    assert {str(FOLDER.onnx), str(FOLDER.int8), str(FOLDER.parity), str(FOLDER.deploy)} == _paths(stage["outs"])
    assert "metrics" not in stage  # parity and deploy are audit detail: `dltorch results` summarizes them


def test_every_model_writes_out_each_params_key_dvc_tracks():
    """DVC refuses a stage whose tracked params key is absent (`gate` defaults to None in config.py, but `dvc repro`
    stops with 'Parameters models.<name>.gate are missing'): every model entry must spell each one out."""
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    for stage in ("train", "evaluate", "export"):
        tracked = [key.removeprefix("models.${key}.") for key in _stage(stage)["params"]
                   if key.startswith("models.${key}.")]
        for name, entry in models.items():
            missing = [key for key in tracked if key not in entry]
            assert not missing, f"params.yaml: models.{name}: no {', '.join(missing)}, which {stage}@{name} tracks"
