"""Node classification on one graph (the synth stage's SBM graph, the karate club): a graph is one sample, its
inputs (1, N, F + N) the node features beside the dense adjacency, its targets (1, N) one split's labels and -1
elsewhere (data/node_classification.py). Cross-entropy and accuracy count only the labelled nodes.

Evaluate also trains the baseline (Task.baseline), the features-only twin (node_mlp: the same widths, dropout and
training settings, on the same train and validation nodes, without edges), and reports the model's margin over it:
the graph is used when the margin is large. It is trained there rather than read from the `mlp_*` model's
metrics.json because dvc.yaml's evaluate stage is one template for every model and cannot depend on another
model's outputs; with the same settings it is the same model as `mlp_sbm` (seeded), hence the same number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dltorch import plots
from dltorch.config import TrainConfig
from dltorch.data import node_classification as graphs
from dltorch.data.tensors import TensorData
from dltorch.errors import DataError
from dltorch.io import write_csv
from dltorch.tasks.registry import Evaluation, Task, register_task

GOAL_MARGIN = 0.10  # test accuracy points over the features-only baseline
BASELINE_ARCH = "node_mlp"  # evaluate trains it beside every model (Task.baseline), with the model's args


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   settings: TrainConfig | None = None) -> tuple[TensorData, TensorData | None]:
    """The graph's train nodes; val_size of its validation nodes (a seeded sample) pick the best epoch."""
    graph = graphs.read(data)
    val_nodes = np.flatnonzero(graph.split == graphs.SPLITS["val"])
    if val_size > len(val_nodes):
        raise DataError(f"val_size {val_size}: {data} has only {len(val_nodes)} validation nodes")
    if val_size == 0:
        return graphs.sample(graph, "train"), None
    chosen = torch.randperm(len(val_nodes), generator=torch.Generator().manual_seed(seed))[:val_size]
    return graphs.sample(graph, "train"), graphs.sample(graph, "val", torch.from_numpy(val_nodes)[chosen])


def load_test(data: Path, dataset: str, settings: TrainConfig | None = None) -> TensorData:
    return graphs.sample(graphs.read(data), "test")


def model_inputs(train: TensorData, dataset: str) -> dict:
    """in_shape (N, F + N): the model finds F as what the adjacency leaves. Every class has train nodes."""
    return {"in_shape": tuple(train.inputs.shape[1:]), "num_outputs": int(train.targets.max()) + 1}


def node_cross_entropy(smoothing: float) -> Any:
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the labelled nodes of every graph; logits (B, N, C), targets (B, N)."""
        return F.cross_entropy(logits.transpose(1, 2).float(), targets, ignore_index=graphs.IGNORED,
                               label_smoothing=smoothing)
    return loss


def node_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per graph: the share of its labelled nodes whose largest logit is their label."""
    labelled = targets != graphs.IGNORED
    right = (logits.argmax(-1) == targets) & labelled
    return right.sum(1).double() / labelled.sum(1).clamp(min=1).double()


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Sums over the batch of each graph's accuracy; the engine divides by the graph count."""
    return {"accuracy": node_accuracy(outputs, targets).sum().item()}


def _accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    return node_accuracy(torch.from_numpy(np.ascontiguousarray(logits)), torch.from_numpy(targets)).mean().item()


def parity_checks(expected: np.ndarray, actual: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
    """Beyond close logits: the same predicted class for every node, hence the same accuracy."""
    agreement = float((actual.argmax(-1) == expected.argmax(-1)).mean())
    torch_acc, onnx_acc = _accuracy(expected, targets), _accuracy(actual, targets)
    checks = {
        "argmax_agreement": {"measured": agreement, "limit": 1.0, "passed": agreement == 1.0},
        "accuracy_equal": {"measured": onnx_acc - torch_acc, "limit": 0.0, "passed": onnx_acc == torch_acc},
    }
    return checks, {"torch_accuracy": torch_acc, "onnx_accuracy": onnx_acc}


def onnx_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    return {"test_accuracy": _accuracy(outputs, targets)}


def other_shape(test: TensorData) -> tuple[torch.Tensor, torch.Tensor]:
    """Another graph, of another size, through the same ONNX file: the subgraph induced by every other node of
    the test graph (its own edges only), with its test labels."""
    nodes = test.inputs.shape[1]
    features = test.inputs.shape[2] - nodes
    keep = torch.arange(0, nodes, 2)
    adj = test.inputs[0, :, features:][keep][:, keep]
    return graphs.pack(test.inputs[0, keep, :features], adj), test.targets[:, keep]


def report(run: Evaluation) -> tuple[dict, list[Path]]:
    """Test-node accuracy and loss, the baseline's accuracy and the margin over it, the goal; the figures."""
    test, name, out_dir = run.test, run.name, run.out_dir
    baseline = run.baseline
    accuracy, baseline_accuracy = node_accuracy(run.outputs, test.targets).item(), \
        node_accuracy(baseline, test.targets).item()
    labelled = test.targets[0] != graphs.IGNORED
    truth, predicted = test.targets[0][labelled], run.outputs[0].argmax(-1)[labelled]
    classes = [f"class {i}" for i in range(run.outputs.shape[-1])]
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    confusion.index_put_((truth, predicted), torch.ones_like(truth), accumulate=True)
    margin = accuracy - baseline_accuracy
    metrics: dict[str, Any] = {
        "test_accuracy": accuracy, "test_loss": run.loss, "baseline_accuracy": baseline_accuracy, "margin": margin,
        "goal_margin": GOAL_MARGIN, "goal_met": margin >= GOAL_MARGIN, "test_nodes": int(labelled.sum()),
        "nodes": int(test.inputs.shape[1]), "confusion": confusion.tolist(),
    }
    figures = [
        plots.training_curves(run.history, name, out_dir / "curves.png"),
        plots.confusion_matrix(confusion.tolist(), classes, f"{name}: test nodes", out_dir / "confusion.png"),
        _per_class_figure(confusion, baseline[0].argmax(-1)[labelled], truth, name, out_dir / "predictions.png"),
    ]
    write_csv(out_dir / "predictions.csv", ["node", "actual", "predicted"],
              ((int(node), classes[t], classes[p]) for node, t, p in
               zip(labelled.nonzero().flatten().tolist(), truth.tolist(), predicted.tolist(), strict=True)))
    return metrics, figures


def _per_class_figure(confusion: torch.Tensor, baseline: torch.Tensor, truth: torch.Tensor, name: str,
                      path: Path) -> Path:
    """Test accuracy of each class: the model against its features-only baseline."""
    classes = list(range(len(confusion)))
    ours = (confusion.diag().double() / confusion.sum(1).clamp(min=1).double()).tolist()
    theirs = [((baseline == truth) & (truth == c)).sum().item() / max(1, (truth == c).sum().item()) for c in classes]
    panel = plots.Panel("test accuracy per class", "class", "accuracy",
                        {name: (classes, ours), f"{BASELINE_ARCH} baseline": (classes, theirs)}, log_y=False)
    return plots.panels([panel], f"{name}: the graph's worth", path)


TASK = register_task(Task(
    name="node_classification",
    input_name="graph",  # (B, N, F + N): node features, then the 0/1 adjacency (symmetric, no self loops)
    output_name="logits",  # (B, N, classes)
    monitor=("val_accuracy", "max"), ranking=("test_accuracy", "max"),
    metrics={"test_accuracy": "max", "test_loss": "min", "baseline_accuracy": "max", "margin": "max"},
    rankable=("test_accuracy",),
    # the node count is dynamic, and so the packed width F + N with it (the exporter keeps them as two symbols)
    dynamic_axes={0: ("batch", 1), 1: ("nodes", 1), 2: ("width", 1)},
    losses={"cross_entropy": node_cross_entropy},
    load_train_val=load_train_val, load_test=load_test, model_inputs=model_inputs, batch_scores=batch_scores,
    parity_checks=parity_checks, onnx_metrics=onnx_metrics, report=report, other_shape=other_shape,
    baseline=BASELINE_ARCH,
))
