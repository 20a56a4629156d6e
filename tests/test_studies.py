"""Each study on shrunken params: its figure, metrics, dvc plots data and MLflow parent/child runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from dltorch.config import STUDIES, load_params, parse_params
from dltorch.data.synthetic import write_sets
from dltorch.studies import run_study
from dltorch.studies.capacity import summarize as summarize_capacity
from dltorch.studies.common import VariantResult, load_set, train_variant
from tests.conftest import REPO

REPO_PARAMS = load_params(REPO / "params.yaml")
PNG = b"\x89PNG\r\n\x1a\n"


def shrunk_study(name: str, epochs: int = 2) -> dict:
    """The repo's study section, every variant cut to `epochs` epochs (capped steps for batch-1 variants)."""
    study = REPO_PARAMS.study(name).model_dump(mode="json", exclude_none=True)
    study["train"]["epochs"] = epochs
    for variant in study["variants"].values():
        variant["train"] = {**variant["train"], "epochs": epochs}
        if variant["train"].get("batch_size", study["train"]["batch_size"]) < 8:
            variant["train"]["batch_size"] = 50  # a batch-1 epoch on parabola is 1000 steps
    return study


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    folder = tmp_path / "synthetic"
    write_sets(REPO_PARAMS.synth, folder)
    return folder


@pytest.mark.parametrize("name", STUDIES)
def test_each_study_writes_its_figure_metrics_curves_and_runs(name, tmp_path, synthetic, mlflow_store):
    params = parse_params({"mlflow": {"experiment": "tests"}, "models": {}, name: shrunk_study(name)})
    study = params.study(name)
    out = tmp_path / name
    metrics = run_study(name, params, synthetic / f"{study.data}.csv", out)

    assert (out / "comparison.png").read_bytes()[:8] == PNG
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert set(metrics["variants"]) == set(study.variants)
    for summary in metrics["variants"].values():
        assert all(value == value and value >= 0 for value in summary.values())  # finite-ish, not NaN
    with open(out / "curves.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["variant"] for row in rows} == set(study.variants)

    client = MlflowClient()
    parents = client.search_runs([client.get_experiment_by_name("tests").experiment_id],
                                 f"tags.study = '{name}' and tags.dvc_stage = '{name}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.data.tags["variant"] for c in children} == set(study.variants)
    for child in children:
        variant = child.data.tags["variant"]
        first = next(iter(metrics["variants"][variant]))
        assert child.data.metrics[first] == pytest.approx(metrics["variants"][variant][first])
        epochs = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss") if m.step > 0]
        assert epochs == [1, 2]  # the per-epoch curve (a summary of the same name sits at step 0)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, name)}
    assert {f"{name}/comparison.png", f"{name}/metrics.json", f"{name}/curves.csv"} <= artifacts


def test_optimizer_variants_start_from_the_same_weights(synthetic):
    study = REPO_PARAMS.study("optimizers")
    train, test = load_set(synthetic / "parabola.csv")
    starts = []
    for name in ("sgd", "adam"):
        arch, args, cfg = study.variant(name)
        starts.append(train_variant(arch, args, cfg.model_copy(update={"epochs": 1}), train, test).steps[0]["loss"])
    assert starts[0] == starts[1]  # the first step's loss is computed before any update


def test_lr_schedule_variants_record_their_learning_rates(synthetic):
    study = REPO_PARAMS.study("lr_schedules")
    train, test = load_set(synthetic / "parabola.csv")
    rates = {}
    for name in ("constant", "cosine", "onecycle"):
        arch, args, cfg = study.variant(name)
        steps = train_variant(arch, args, cfg.model_copy(update={"epochs": 2}), train, test).steps
        rates[name] = [s["lr"] for s in steps]
    assert set(rates["constant"]) == {0.01}
    assert rates["cosine"][0] == pytest.approx(0.01) and rates["cosine"][-1] < 0.001  # anneals towards 0
    assert rates["onecycle"][0] < 0.001 and max(rates["onecycle"]) == pytest.approx(0.01, rel=0.01)


def test_capacity_verdicts_follow_the_losses():
    def result(train: float, test: float) -> VariantResult:
        return VariantResult(torch.nn.Identity(), epochs=[{"epoch": 1, "train_loss": train, "test_loss": test}])

    metrics = summarize_capacity({"line": result(40.0, 44.0), "small": result(28.0, 30.0),
                                  "big": result(20.0, 36.0)})
    assert (metrics["underfits"], metrics["overfits"]) == ("line", "big")
    assert metrics["variants"]["big"]["test_train_ratio"] == pytest.approx(1.8)


def test_study_errors_name_the_key():
    from dltorch.errors import ParamsError

    bad_set = {"models": {}, "dropout": {**shrunk_study("dropout"), "data": "circles"}}
    with pytest.raises(ParamsError, match="dropout.data: Input should be 'line'"):
        parse_params(bad_set)
    bad_variant = shrunk_study("optimizers")
    bad_variant["variants"]["adam"]["train"]["optimizer"] = "adamax"
    with pytest.raises(ParamsError, match="optimizers: variants.adam.train.optimizer: "):
        parse_params({"models": {}, "optimizers": bad_variant})
