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
