"""Node classification: the SBM and karate graphs, the graph file and its errors, the GCN against PyG's GCNConv,
loss and accuracy on hand-made graphs, and gcn/node_mlp through train, evaluate and export with parity on a graph
of another size."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch
from sklearn.metrics import accuracy_score

from dltorch import engine
from dltorch.bundle import build_model, load_model
from dltorch.config import SBMConfig, parse_params
from dltorch.data import node_classification as graphs
from dltorch.errors import DataError, ParamsError
from dltorch.export import onnx_session, run_onnx
from dltorch.models import create
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.train import train
from dltorch.tasks import node_classification as task
from tests.conftest import TINY_SBM
from tests.helpers import assert_same_weights, export_trained, interrupt_and_resume

TINY = SBMConfig(**TINY_SBM)
# Big enough to measure edge densities: 3 x 150 nodes, so 33,525 within-block and 67,500 cross-block node pairs.
MEASURED = SBMConfig(seed=3, classes=3, nodes_per_class=150, p_in=0.1, p_out=0.01, features=4, signal=1.0,
                     noise=1.0, train_per_class=5, val_size=300)


def _pairs(graph: graphs.Graph) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in graph.edge_index.T}


def test_sbm_has_its_class_sizes_edge_densities_and_a_disjoint_split():
    graph = graphs.generate_sbm(MEASURED)
    assert np.bincount(graph.labels).tolist() == [150, 150, 150]
    edges = _pairs(graph)
    assert all((b, a) in edges for a, b in edges) and all(a != b for a, b in edges)  # undirected, no self loops
    undirected = {(a, b) for a, b in edges if a < b}
    same = sum(graph.labels[a] == graph.labels[b] for a, b in undirected)
    within_pairs, across_pairs = 3 * 150 * 149 // 2, 3 * 150 * 150
    # binomial counts: 4 standard deviations of each density (0.0016 within, 0.0004 across) as the tolerance
    assert same / within_pairs == pytest.approx(0.1, abs=4 * np.sqrt(0.1 * 0.9 / within_pairs))
    assert (len(undirected) - same) / across_pairs == pytest.approx(0.01, abs=4 * np.sqrt(0.01 * 0.99 / across_pairs))
    counts = {name: int((graph.split == code).sum()) for name, code in graphs.SPLITS.items()}
    assert counts == {"train": 15, "val": 300, "test": 135}  # val drawn from the nodes train left
    for label in range(3):
        assert ((graph.split == graphs.SPLITS["train"]) & (graph.labels == label)).sum() == 5


def test_sbm_features_carry_a_weak_class_signal():
    graph = graphs.generate_sbm(MEASURED.model_copy(update={"features": 8, "signal": 2.0, "noise": 0.5}))
    means = np.stack([graph.features[graph.labels == c].mean(0) for c in range(3)])
    assert np.linalg.norm(means, axis=1) == pytest.approx(2.0, abs=0.15)  # each class's mean: the signal
    spread = graph.features - means[graph.labels]
    assert spread.std() == pytest.approx(0.5, abs=0.02)  # around it: the noise


def test_a_seed_gives_the_same_file_another_seed_another(tmp_path: Path):
    first = graphs.write(graphs.generate_sbm(TINY), tmp_path / "a.npz")
    assert graphs.write(graphs.generate_sbm(TINY), tmp_path / "b.npz") == first
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert graphs.write(graphs.generate_sbm(TINY.model_copy(update={"seed": 1})), tmp_path / "c.npz") != first
    back = graphs.read(tmp_path / "a.npz")
    again = graphs.generate_sbm(TINY)
    for name in graphs.ARRAYS:
        assert np.array_equal(getattr(back, name), getattr(again, name))


def test_karate_club_comes_from_inside_pyg_with_its_split(tmp_path: Path):
    from dltorch.config import NodeSplitConfig

    graph = graphs.karate(NodeSplitConfig(seed=0, train_per_class=2, val_size=6))
    assert graph.nodes == 34 and len(_pairs(graph)) == 156 and graph.features.shape == (34, 34)  # Zachary: 78 ties
    assert np.bincount(graph.labels).tolist() == [13, 12, 4, 5]
    assert np.bincount(graph.split).tolist() == [8, 6, 20]


@pytest.mark.parametrize(("change", "expected"), [
    ({"edge_index": np.array([[0, 1], [1, 60]])}, "edge_index: a node outside 0..59"),
    ({"split": np.full(60, 3, dtype=np.int8)}, "split: values other than"),
    ({"features": np.zeros((59, 8), dtype=np.float32)}, r"features: shape \(59, 8\), not \(60, F\)"),
    ({"features": np.full((60, 8), np.nan, dtype=np.float32)}, "features: not all finite"),
])
def test_a_malformed_graph_file_is_a_data_error_naming_it(tmp_path: Path, change: dict, expected: str):
    graph = graphs.generate_sbm(TINY)
    arrays = {name: getattr(graph, name) for name in graphs.ARRAYS} | change
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=f"{path}: {expected}"):
        graphs.read(path)
    np.savez(path, **{k: v for k, v in arrays.items() if k != "labels"})
    with pytest.raises(DataError, match="no labels"):
        graphs.read(path)
    with pytest.raises(DataError, match="run the synth stage first"):
        graphs.read(tmp_path / "absent.npz")


def test_sbm_params_that_leave_no_test_nodes_are_errors_naming_the_key():
    raw = {"models": {}, "synth": {"sbm": {**TINY_SBM, "val_size": 51}}}
    with pytest.raises(ParamsError, match="synth.sbm: val_size: 51 leaves no test nodes"):
        parse_params(raw)
    with pytest.raises(ParamsError, match="synth.sbm.p_in: Input should be less than or equal to 1"):
        parse_params({"models": {}, "synth": {"sbm": {**TINY_SBM, "p_in": 1.5}}})


def test_the_gcn_computes_what_pygs_gcnconv_does_on_the_edge_list():
    """Oracle: PyG's sparse GCNConv, given the dense model's weights, on the same graph's edge_index."""
    from torch_geometric.nn import GCNConv

    graph = graphs.generate_sbm(TINY)
    packed = graphs.sample(graph, "test").inputs
    torch.manual_seed(0)
    model = create("gcn", {"hidden": [5], "dropout": 0.5}, in_shape=tuple(packed.shape[1:]), num_outputs=3).eval()
    convs = [GCNConv(8, 5), GCNConv(5, 3)]
    for sparse, dense in zip(convs, model.convs, strict=True):
        sparse.lin.weight.data.copy_(dense.lin.weight)
        sparse.bias.data.copy_(dense.bias)
    x, edges = torch.from_numpy(graph.features), torch.from_numpy(graph.edge_index)
    with torch.no_grad():
        expected = convs[1](convs[0](x, edges).relu(), edges)
        torch.testing.assert_close(model(packed)[0], expected, atol=1e-5, rtol=1e-5)


def test_the_gcn_reads_the_edges_and_the_baseline_does_not():
    graph = graphs.generate_sbm(TINY)
    packed = graphs.sample(graph, "test").inputs
    rewired = packed.clone()
    rewired[..., TINY.features:] = rewired[..., TINY.features:].flip(1).flip(2)  # another graph, same features
    torch.manual_seed(0)
    gcn = create("gcn", {}, in_shape=tuple(packed.shape[1:]), num_outputs=3).eval()
    mlp = create("node_mlp", {}, in_shape=tuple(packed.shape[1:]), num_outputs=3).eval()
    with torch.no_grad():
        assert not torch.allclose(gcn(packed), gcn(rewired), atol=1e-3)
        assert torch.equal(mlp(packed), mlp(rewired))


def test_loss_and_accuracy_count_only_the_split_nodes():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [5.0, 0.0], [0.0, 1.0]]])  # predicts 0, 1, 0, 1
    targets = torch.tensor([[0, 0, -1, -1]])  # two labelled nodes: right, wrong
    assert task.batch_scores(logits, targets) == {"accuracy": 0.5}
    loss = task.node_cross_entropy(0.0)(logits, targets).item()
    by_hand = (np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(3.0))) / 2  # -log softmax of the true class
    assert loss == pytest.approx(by_hand, rel=1e-6)
    two_graphs = torch.cat([logits, logits]), torch.tensor([[0, 0, -1, -1], [0, -1, -1, -1]])
    assert task.batch_scores(*two_graphs) == {"accuracy": 0.5 + 1.0}  # summed per graph


def test_val_size_takes_that_many_of_the_graphs_validation_nodes(tmp_path: Path):
    path = tmp_path / "sbm.npz"
    graphs.write(graphs.generate_sbm(TINY), path)
    train_data, val = task.load_train_val(path, "sbm", 4, seed=0)
    assert (train_data.targets != -1).sum() == 9 and (val.targets != -1).sum() == 4
    assert torch.equal(train_data.inputs, val.inputs)  # the same graph; only the labelled nodes differ
    with pytest.raises(DataError, match="val_size 11: .* has only 10 validation nodes"):
        task.load_train_val(path, "sbm", 11, seed=0)


def test_an_interrupted_gcn_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path):
    """Dropout draws from torch's generator every epoch: the checkpoint's RNG state makes the resumed run exact."""
    path = tmp_path / "sbm.npz"
    graphs.write(graphs.generate_sbm(TINY), path)
    cfg = parse_params(_graph_params(epochs=3)).model("gcn_sbm").train

    def fit(checkpoint: Path, on_epoch=None, resume=None):
        train_data, val = task.load_train_val(path, "sbm", cfg.val_size, cfg.seed)
        torch.manual_seed(0)
        model = build_model("gcn", {"hidden": [8], "dropout": 0.5}, "node_classification",
                            task.model_inputs(train_data, "sbm"))
        objective = engine.Objective(task.TASK.make_loss(cfg.loss), task.batch_scores, task.TASK.monitor)
        history = engine.fit(model, objective, train_data, val, cfg, engine.CheckpointSpec(checkpoint, "fp", resume),
                             on_epoch)
        return model, history

    run = interrupt_and_resume(fit, tmp_path)
    assert [row["epoch"] for row in run.history] == [1, 2, 3]
    assert run.history[-1]["train_loss"] == run.full_history[-1]["train_loss"]
    assert_same_weights(run.uninterrupted, run.resumed)


def _graph_params(epochs: int = 60) -> dict:
    train_cfg = {"epochs": epochs, "batch_size": 1, "optimizer": "adam", "lr": 0.02, "weight_decay": 5e-4,
                 "val_size": 10, "seed": 0}
    entry = {"task": "node_classification", "data": "synthetic/sbm.npz", "args": {"hidden": [8], "dropout": 0.5},
             "train": train_cfg, "export": {"batch_size": 1}}
    return {"fetch": {"source_dir": None, "download": False}, "mlflow": {"experiment": "tests"},
            "models": {"gcn_sbm": {**entry, "arch": "gcn"}, "mlp_sbm": {**entry, "arch": "node_mlp"}}}


def test_gcn_trains_evaluates_against_its_baseline_and_exports_for_any_graph_size(tmp_path: Path, synthetic_root,
                                                                                 mlflow_store, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # nothing may land in the working folder
    params = parse_params(_graph_params())
    data = synthetic_root / "synthetic" / "sbm.npz"
    for name in ("gcn_sbm", "mlp_sbm"):
        history = train(params, name, data, tmp_path / name)
        assert len(history) == 60 and {"train_accuracy", "val_accuracy"} <= set(history[0])
    metrics = evaluate(data, tmp_path / "gcn_sbm", tmp_path / "gcn_sbm" / "eval")
    baseline = evaluate(data, tmp_path / "mlp_sbm", tmp_path / "mlp_sbm" / "eval")

    # scikit-learn as the oracle, on the test nodes the graph file marks
    graph = graphs.read(data)
    test_nodes = graph.split == graphs.SPLITS["test"]
    _, model = load_model(tmp_path / "gcn_sbm" / "model.pt")
    with torch.no_grad():
        predicted = model(graphs.sample(graph, "test").inputs)[0].argmax(-1).numpy()
    assert metrics["test_accuracy"] == pytest.approx(accuracy_score(graph.labels[test_nodes], predicted[test_nodes]))
    # the baseline evaluate trains is the node_mlp model trained by the pipeline with the same settings
    assert metrics["baseline_accuracy"] == pytest.approx(baseline["test_accuracy"])
    assert metrics["margin"] == pytest.approx(metrics["test_accuracy"] - baseline["test_accuracy"])
    assert metrics["margin"] > 0.1  # the tiny graph's edges (p_in 0.3, p_out 0.02) outweigh its noisy features
    for figure in ("curves.png", "predictions.png", "confusion.png"):
        assert (tmp_path / "gcn_sbm" / "eval" / figure).read_bytes()[:4] == b"\x89PNG"

    deploy, report = export_trained(params, "gcn_sbm", data, tmp_path / "gcn_sbm", tmp_path, batch_size=1)
    nodes = graph.nodes
    assert report["passed"] and report["shapes"]["example"] == [4, nodes, 8 + nodes]
    other = f"shape_{nodes // 2}x{8 + nodes // 2}"  # every other node: the induced subgraph
    assert report["checks"][f"max_abs_diff_{other}"]["passed"] and report["checks"][f"argmax_agreement_{other}"][
        "passed"]
    dims = onnx.load(str(tmp_path / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert all(dim.dim_param for dim in dims)  # batch, nodes and width all open
    # a third graph, drawn anew and of yet another size, through the same file
    third = graphs.sample(graphs.generate_sbm(TINY.model_copy(update={"seed": 7, "nodes_per_class": 33})), "test")
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(onnx_session(tmp_path / "model.onnx"), third.inputs.numpy(), 1),
                                   model(third.inputs).numpy(), atol=1e-4)
    assert deploy["registry"]["fp32"]["decision"] == "promoted"
    # the registered model's signature leaves the node count open, so a server takes any graph
    served = mlflow.pyfunc.load_model("models:/gcn_sbm@champion")
    assert served.predict(third.inputs.numpy())["logits"].shape == (1, 99, 3)
    assert [p.name for p in workdir.iterdir()] == []
