"""The task registry: every registered task has every part the pipeline asks for, before any pipeline runs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from dltorch import tasks
from dltorch.config import default_registry
from dltorch.tasks.registry import Task, task_modules

REQUIRED = [f.name for f in dataclasses.fields(Task) if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING]


def test_every_task_module_registers_its_task():
    assert tasks.names() == sorted(task_modules())


@pytest.mark.parametrize("name", sorted(task_modules()))
def test_task_has_every_required_part(name):
    task = tasks.get_task(name)
    assert isinstance(task, Task)
    assert task.name == name
    for part in REQUIRED:
        value = getattr(task, part)
        assert value is not None and value != "", f"{name}: {part} is missing"
    for part in ("load_train_val", "load_test", "model_inputs", "batch_scores", "parity_checks", "onnx_metrics",
                 "report", "dataset_name", "wrap"):
        assert callable(getattr(task, part)), f"{name}: {part} is not callable"
    assert task.monitor[0].startswith("val_") and task.monitor[1] in ("max", "min")
    assert task.ranking[1] in ("max", "min")
    assert task.dynamic_axes[0][0] == "batch"  # every export takes any batch
    assert task.losses, f"{name}: no loss"


@pytest.mark.parametrize("name", sorted(task_modules()))
def test_every_loss_is_a_loss_and_unknown_ones_are_rejected(name):
    task = tasks.get_task(name)
    for loss in task.losses:
        assert callable(task.make_loss(loss, 0.0))
    with pytest.raises(ValueError, match=f"known: {', '.join(task.losses)}"):
        task.make_loss("hinge")


def test_a_task_missing_a_part_fails_when_it_is_made():
    parts = {part: None for part in REQUIRED if part != "report"}
    with pytest.raises(TypeError, match="report"):
        Task(**parts)


def test_duplicate_and_unknown_names_raise():
    with pytest.raises(ValueError, match="registered twice"):
        tasks.register_task(tasks.get_task("regression"))
    with pytest.raises(ValueError, match="known: autoencoder, classification, regression, segmentation, sequence"):
        tasks.get_task("detection")


def test_default_registry_is_each_tasks_own_ranking():
    rules = default_registry()
    assert sorted(rules) == tasks.names()
    assert (rules["classification"].metric, rules["classification"].direction) == ("test_accuracy", "max")
    assert (rules["segmentation"].metric, rules["segmentation"].direction) == ("dice", "max")


def test_cross_entropy_honours_label_smoothing():
    logits, targets = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    plain = tasks.get_task("classification").make_loss("cross_entropy", 0.0)(logits, targets)
    smoothed = tasks.get_task("classification").make_loss("cross_entropy", 0.2)(logits, targets)
    # by hand: log-softmax is (-0.1269, -2.1269); smoothing 0.2 puts 0.9 on class 0 and 0.1 on class 1
    assert plain.item() == pytest.approx(0.126928, abs=1e-5)
    assert smoothed.item() == pytest.approx(0.9 * 0.126928 + 0.1 * 2.126928, abs=1e-5)


def test_listing_task_names_from_the_package_imports_no_torch():
    """`dltorch.tasks` and its registry module are light; only asking for a task loads the implementations."""
    code = "import sys, dltorch.tasks, dltorch.tasks.registry; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
