"""The transfer-learning study: its pieces (class subsets, nested label budgets, the head swap, the frozen
backbone) and a whole run on tiny images with its table, figure, curves and MLflow runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from dltorch import engine
from dltorch.config import TrainConfig, load_params, parse_params
from dltorch.data.classification import LabelledImages, load_split
from dltorch.data.tensors import TensorData
from dltorch.errors import DataError, ParamsError
from dltorch.studies import transfer
from dltorch.studies.common import run_study
from tests.conftest import REPO
from tests.test_studies import plot_axes, shrunk_study

REPO_PARAMS = load_params(REPO / "params.yaml")
INPUTS = {"in_shape": (1, 28, 28), "mean": [0.3], "std": [0.3]}


def _labelled(targets: list[int]) -> TensorData:
    return TensorData(torch.arange(len(targets), dtype=torch.float32), torch.tensor(targets))


def test_a_class_subset_keeps_its_classes_relabelled_in_the_order_listed():
    data = _labelled([5, 0, 9, 6, 5, 3])
    names = tuple(f"class {n}" for n in range(10))
    subset = transfer.class_subset(LabelledImages(data.inputs, data.targets, names), [9, 5, 6])
    assert subset.inputs.tolist() == [0, 2, 3, 4] and subset.targets.tolist() == [1, 0, 2, 1]
    assert subset.classes == ("class 9", "class 5", "class 6")  # the names follow the relabelling


def test_label_budgets_are_per_class_seeded_and_nested():
    data = _labelled([label for label in range(3) for _ in range(20)])
    small, large = transfer.labelled_sample(data, 2, seed=0), transfer.labelled_sample(data, 5, seed=0)
    assert torch.bincount(small.targets).tolist() == [2, 2, 2] and torch.bincount(large.targets).tolist() == [5] * 3
    assert set(small.inputs.tolist()) < set(large.inputs.tolist())  # a larger budget only adds labels
    assert transfer.labelled_sample(data, 2, seed=0).inputs.tolist() == small.inputs.tolist()
    assert transfer.labelled_sample(data, 2, seed=1).inputs.tolist() != small.inputs.tolist()
    with pytest.raises(DataError, match="class 0 has 20 training images, fewer than 21"):
        transfer.labelled_sample(data, 21, seed=0)


def _built(classes: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transfer._build(REPO_PARAMS.transfer, INPUTS, classes)


def _train_a_little(model: torch.nn.Module, raw_root: Path) -> None:
    images = load_split(raw_root, "fashion_mnist", train=True)
    data = TensorData(images.inputs[:64], images.targets[:64] % 5)
    settings = TrainConfig(epochs=1, batch_size=16, lr=0.01, val_size=0)
    objective = engine.Objective(torch.nn.CrossEntropyLoss(), lambda outputs, targets: {})
    engine.fit(model, objective, data, None, settings, None)


@pytest.mark.parametrize("variant", ["finetune", "frozen"])
def test_pretrained_variants_start_from_the_backbone_under_the_scratch_head_and_frozen_keeps_it(variant, raw_root):
    pretrained = _built(5, seed=1)
    state = {k: v.clone() for k, v in pretrained.state_dict().items()}
    scratch = _built(5)
    model = transfer._target_model(REPO_PARAMS.transfer.variants[variant], _built(5), state)
    head = transfer.head_keys(model)
    assert head == {"1.11.weight", "1.11.bias"}  # lenet5's last Linear, after the normalization layer
    for key, value in model.state_dict().items():
        assert torch.equal(value, scratch.state_dict()[key] if key in head else state[key]), key

    _train_a_little(model, raw_root)
    changed = {key for key, value in model.state_dict().items()
               if not torch.equal(value, (scratch.state_dict() if key in head else state)[key])}
    learnable = {name for name, _ in model.named_parameters()}
    assert changed == (learnable if variant == "finetune" else head)  # frozen: the head alone learns


def test_pretrained_weights_of_another_architecture_are_refused():
    with pytest.raises(ParamsError, match="the pretrained weights do not fit the model"):
        transfer.load_except_head(_built(5), {"1.0.weight": torch.zeros(3)})


def test_the_study_writes_its_table_figure_curves_and_runs(tmp_path, raw_root, mlflow_store):
    params = parse_params({"mlflow": {"experiment": "tests"}, "models": {}, "fetch": {"source_dir": None},
                           "transfer": shrunk_study("transfer")})
    out = tmp_path / "transfer"
    metrics = run_study("transfer", params, raw_root, out)

    budgets, variants = params.transfer.budgets, params.transfer.variants
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert set(metrics["variants"]) == set(variants)
    for row in metrics["variants"].values():
        assert list(row) == [str(b) for b in budgets] and all(0 <= accuracy <= 1 for accuracy in row.values())
    smallest = str(budgets[0])
    assert metrics[f"finetune_minus_scratch_at_{smallest}"] == pytest.approx(
        metrics["variants"]["finetune"][smallest] - metrics["variants"]["scratch"][smallest])
    assert 0 <= metrics["pretrain_source_test_accuracy"] <= 1
    with open(out / "curves.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["variant"], int(r["budget"])) for r in rows} == {(v, b) for v in variants for b in budgets}
    assert plot_axes("transfer") <= set(rows[0])  # what `dvc plots show` draws is there
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    client = MlflowClient()
    (parent,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id], "tags.study = 'transfer'"
                                   " and tags.dvc_stage = 'study@transfer'")
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.data.tags["variant"] for c in children} == set(variants)
    for child in children:
        history = client.get_metric_history(child.info.run_id, "test_accuracy")
        assert sorted(m.step for m in history) == budgets  # accuracy per label budget
    assert parent.data.metrics["pretrain_source_test_accuracy"] == pytest.approx(
        metrics["pretrain_source_test_accuracy"])


@pytest.mark.parametrize(("change", "message"), [
    ({"target": [4, 5, 6]}, "transfer: target: classes \\[4\\] are also pretrained on"),
    ({"budgets": [50, 10]}, "transfer: budgets: distinct positive counts, smallest first"),
    ({"variants": {"scratch": {"init": "scratch", "freeze_backbone": True}}},
     "transfer.variants.scratch: freeze_backbone: a backbone frozen at its random start would learn nothing"),
    ({"variants": {"frozen": {"init": "pretrained", "train": {"lr": -1}}}},
     "transfer: variants.frozen.train.lr: Input should be greater than 0"),
])
def test_a_bad_transfer_section_names_its_key(change, message):
    section = {**shrunk_study("transfer"), **change}
    with pytest.raises(ParamsError, match=message):
        parse_params({"models": {}, "transfer": section})


def test_variant_overrides_reach_their_runs_only():
    study = REPO_PARAMS.transfer
    assert study.variant_train("frozen").lr == 0.01 and study.variant_train("finetune").lr == study.train.lr
