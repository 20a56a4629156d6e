"""Each study on shrunken params: its figure, metrics, dvc plots data and MLflow parent/child runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from dltorch import engine, studies
from dltorch.config import load_params, parse_params
from dltorch.data.regression import generate
from dltorch.data.tensors import TensorData
from dltorch.errors import ParamsError
from dltorch.models import create
from dltorch.studies.common import Study, VariantResult, load_set, run_study, train_variant
from dltorch.studies.registry import register_study
from tests.conftest import REPO

STUDIES = studies.names()
VARIANT_STUDIES = [name for name in STUDIES if name != "transfer"]  # transfer: tests/test_transfer.py

REPO_PARAMS = load_params(REPO / "params.yaml")
PNG = b"\x89PNG\r\n\x1a\n"


def plot_axes(name: str) -> set[str]:
    """The columns dvc.yaml's plot of the study's curves.csv draws: its x and y."""
    item = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["study"]["foreach"][name]
    return {item["x"], item["y"]}


def shrunk_study(name: str, epochs: int = 2) -> dict:
    """The repo's study section, every variant cut to `epochs` epochs (capped steps for batch-1 variants)."""
    if name == "transfer":  # one pretraining epoch, `epochs` steps per target run, 2 and 4 labels per class
        section = REPO_PARAMS.transfer.model_dump(mode="json")
        section["pretrain"]["epochs"] = 1
        return {**section, "steps": epochs, "budgets": [2, 4]}
    study = REPO_PARAMS.study(name).model_dump(mode="json", exclude_none=True)
    study["train"]["epochs"] = epochs
    for variant in study["variants"].values():
        variant["train"] = {**variant["train"], "epochs": epochs}
        if variant["train"].get("batch_size", study["train"]["batch_size"]) < 8:
            variant["train"]["batch_size"] = 50  # a batch-1 epoch on parabola is 1000 steps
    return study


@pytest.mark.parametrize("name", VARIANT_STUDIES)
def test_each_study_writes_its_figure_metrics_curves_and_runs(name, tmp_path, synthetic_sets, mlflow_store):
    params = parse_params({"mlflow": {"experiment": "tests"}, "models": {}, name: shrunk_study(name)})
    study = params.study(name)
    out = tmp_path / name
    metrics = run_study(name, params, synthetic_sets / f"{study.data}.csv", out)

    assert (out / "comparison.png").read_bytes()[:8] == PNG
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert set(metrics["variants"]) == set(study.variants)
    for summary in metrics["variants"].values():
        assert all(value == value and value >= 0 for value in summary.values())  # finite-ish, not NaN
    with open(out / "curves.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["variant"] for row in rows} == set(study.variants)
    assert plot_axes(name) <= set(rows[0])  # what `dvc plots show` draws is there

    client = MlflowClient()
    parents = client.search_runs([client.get_experiment_by_name("tests").experiment_id],
                                 f"tags.study = '{name}' and tags.dvc_stage = 'study@{name}'")
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


def test_optimizer_variants_start_from_the_same_weights(synthetic_sets):
    study = REPO_PARAMS.study("optimizers")
    train, test = load_set(synthetic_sets / "parabola.csv")
    starts = []
    for name in ("sgd", "adam"):
        arch, args, cfg = study.variant(name)
        starts.append(train_variant(arch, args, cfg.model_copy(update={"epochs": 1}), train, test).steps[0]["loss"])
    assert starts[0] == starts[1]  # the first step's loss is computed before any update


def test_lr_schedule_variants_record_their_learning_rates(synthetic_sets):
    study = REPO_PARAMS.study("lr_schedules")
    train, test = load_set(synthetic_sets / "parabola.csv")
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

    metrics = studies.get("capacity").summarize({"line": result(40.0, 44.0), "small": result(28.0, 30.0),
                                  "big": result(20.0, 36.0)})
    assert (metrics["underfits"], metrics["overfits"]) == ("line", "big")
    assert metrics["variants"]["big"]["test_train_ratio"] == pytest.approx(1.8)


def test_study_errors_name_the_key():
    bad_set = {"models": {}, "dropout": {**shrunk_study("dropout"), "data": "circles"}}
    with pytest.raises(ParamsError, match="dropout.data: Input should be 'line'"):
        parse_params(bad_set)
    bad_variant = shrunk_study("optimizers")
    bad_variant["variants"]["adam"]["train"]["optimizer"] = "adamax"
    with pytest.raises(ParamsError, match="optimizers: variants.adam.train.optimizer: "):
        parse_params({"models": {}, "optimizers": bad_variant})


def test_fresh_batches_draw_a_new_random_batch_every_step():
    """The course's mini-batch lesson: next(iter(a shuffled DataLoader)) each step, not one permutation per epoch."""
    rows = torch.arange(10.0).unsqueeze(1)
    drawn = [b.targets.squeeze(1).tolist()
             for b in engine.batches(TensorData(rows, rows), 4, torch.Generator().manual_seed(0), fresh=True)]
    assert len(drawn) == 3 and all(len(set(batch)) == 4 for batch in drawn)  # every step a full batch, no repeat in it
    epoch = [b.targets.squeeze(1).tolist() for b in engine.batches(TensorData(rows, rows), 4,
                                                                   torch.Generator().manual_seed(0))]
    assert [len(batch) for batch in epoch] == [4, 4, 2]  # the usual epoch: one permutation cut into batches


def test_gd_variants_keep_the_course_momentum_beside_the_conventional_one():
    study = REPO_PARAMS.study("gd_variants")
    momentum = {name: study.variant(name)[2].momentum for name in study.variants}
    assert momentum["full_batch_momentum_1"] == momentum["mini_batch_momentum_1"] == 1.0
    assert momentum["full_batch"] == momentum["mini_batch"] == 0.9 and momentum["stochastic"] == 0.0
    assert {name: study.variant(name)[2].sampling for name in ("mini_batch", "mini_batch_momentum_1")} == \
        {"mini_batch": "fresh_batches", "mini_batch_momentum_1": "fresh_batches"}


def test_adagrad_study_is_the_course_lesson(synthetic_sets):
    """The course's AdaGrad lesson, written as it is, against the study's `adagrad` variant through engine.fit."""
    torch.manual_seed(REPO_PARAMS.synth.adagrad_line.seed)  # unseeded in the course
    X = torch.randn(100, 1)  # noqa: N806  (the course's name)
    y = 2 * X + 3 + torch.randn(100, 1)
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)
    losses = []
    for _ in range(100):
        loss = torch.nn.functional.mse_loss(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    study = REPO_PARAMS.study("adagrad")
    train, test = load_set(synthetic_sets / f"{study.data}.csv")
    assert torch.equal(train.inputs, X) and torch.equal(train.targets, y) and test is None
    result = train_variant(*study.variant("adagrad"), train, test)
    assert [step["loss"] for step in result.steps] == losses
    summary = studies.get("adagrad").summarize_variant(result)
    assert (summary["w"], summary["b"]) == (model.weight.item(), model.bias.item())


def test_adagrad_line_is_the_course_data():
    torch.manual_seed(0)
    X = torch.randn(100, 1)  # noqa: N806
    y = 2 * X + 3 + torch.randn(100, 1)
    data = generate("adagrad_line", REPO_PARAMS.synth)
    assert np.array_equal(data.x, X.numpy().ravel()) and np.array_equal(data.y, y.numpy().ravel())
    assert set(data.split) == {"train"}


def test_a_study_is_a_registered_module_and_a_stage_per_name():
    """Adding a study is a module and a params section: dvc.yaml's study@ stages and params.yaml follow the registry."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["study"]["foreach"]
    assert sorted(stages) == STUDIES == sorted(s for s in yaml.safe_load((REPO / "params.yaml").read_text())
                                               if s in STUDIES)
    assert {"gd_variants", "capacity", "dropout", "optimizers", "lr_schedules", "adagrad"} <= set(STUDIES)


def test_the_study_registry_refuses_duplicates_and_incomplete_studies():
    with pytest.raises(ValueError, match="'capacity' is registered twice"):
        register_study(type("Again", (studies.get("capacity").__class__,), {}))
    with pytest.raises(TypeError, match="abstract"):
        register_study(type("NoFigure", (Study,), {"name": "no_figure", "curve": ("epochs", ["train_loss"]),
                                                   "summarize_variant": lambda self, result: {}}))
    with pytest.raises(ValueError, match="unknown study 'circles'; known: adagrad, capacity"):
        studies.get("circles")


def test_a_params_section_no_study_knows_is_an_unknown_key():
    with pytest.raises(ParamsError, match="params.yaml: capacty: unknown key; did you mean 'capacity'"):
        parse_params({"models": {}, "capacty": shrunk_study("capacity")})


def test_study_stage_fails_cleanly_on_a_study_params_does_not_hold(tmp_path, synthetic_sets):
    """(The stage running a study by name: the end-to-end test's `dvc repro`, tests/test_pipeline_e2e.py.)"""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"mlflow": {"experiment": "tests"}, "models": {},
                                           "dropout": shrunk_study("dropout")}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    stage = [sys.executable, str(REPO / "stages" / "study.py"), "--params", str(params_file), "--data",
             str(synthetic_sets / "dropout_points.csv")]
    failed = subprocess.run([*stage, "--study", "capacity", "--out", str(tmp_path / "capacity")],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert failed.returncode == 2 and "capacity: no such study in params.yaml" in failed.stderr
    assert "Traceback" not in failed.stderr and not (tmp_path / "capacity").exists()


def test_an_epoch_of_fresh_batches_averages_the_rows_it_saw(synthetic_sets):
    """8 fresh batches of 128 see 1024 rows of the 1000: the epoch's loss is their mean, not a sum over 1000."""
    arch, args, cfg = REPO_PARAMS.study("gd_variants").variant("mini_batch")
    train, _ = load_set(synthetic_sets / "parabola.csv")
    torch.manual_seed(0)
    model = create(arch, args, in_shape=(1,), num_outputs=1)
    steps: list[float] = []
    objective = engine.Objective(torch.nn.MSELoss(), lambda outputs, targets: {})
    history = engine.fit(model, objective, train, None, cfg.model_copy(update={"epochs": 1}), None,
                         on_step=lambda loss, lr: steps.append(loss))
    assert len(steps) == 8 and history[0]["train_loss"] == pytest.approx(sum(steps) / len(steps), rel=1e-12)


def test_fresh_batches_for_streamed_segmentation_images_is_a_schema_error():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["models"] = {"unet": {**raw["models"]["unet"], "train": {**raw["models"]["unet"]["train"],
                                                                 "sampling": "fresh_batches"}}}
    with pytest.raises(ParamsError, match="models.unet: train.sampling: fresh_batches draws from in-memory data"):
        parse_params(raw)


def test_studies_are_top_level_sections_not_a_studies_mapping():
    with pytest.raises(ParamsError, match="studies: not a section; write each study as a top-level section"):
        parse_params({"models": {}, "studies": {"dropout": shrunk_study("dropout")}})
