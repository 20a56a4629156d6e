"""Graphs for node classification: a stochastic block model drawn from params, and Zachary's karate club as
PyTorch Geometric ships it; each one .npz file with its node split.

A graph file holds `features` (N, F) float32, `edge_index` (2, E) int64 (both directions of every undirected
edge, no self loops), `labels` (N,) int64 and `split` (N,) int8: 0 train, 1 validation, 2 test. `read` checks all
of it, so any file in that layout can be read.

One graph is one sample for the engine: its inputs (1, N, F + N) are the node features with the dense 0/1
adjacency beside them (the model adds self loops and normalizes: serving needs no preprocessing), its targets
(1, N) the labels of one split's nodes and -1 elsewhere (ignored by the loss and the scores).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dltorch.config import NodeSplitConfig, SBMConfig
from dltorch.data.tensors import TensorData
from dltorch.errors import DataError

SPLITS = {"train": 0, "val": 1, "test": 2}
IGNORED = -1  # the target of a node outside the split
ARRAYS = {"features": np.float32, "edge_index": np.int64, "labels": np.int64, "split": np.int8}


@dataclass(frozen=True)
class Graph:
    features: np.ndarray  # (N, F) float32
    edge_index: np.ndarray  # (2, E) int64
    labels: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) int8, values of SPLITS

    @property
    def nodes(self) -> int:
        return len(self.labels)


def draw_split(labels: np.ndarray, cfg: NodeSplitConfig) -> np.ndarray:
    """train_per_class nodes of every class train, val_size of the rest validate, the others test (seeded)."""
    rng = np.random.default_rng(cfg.seed)
    split = np.full(len(labels), SPLITS["test"], dtype=np.int8)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= cfg.train_per_class:
            raise DataError(f"class {label} has {len(members)} nodes: none left after train_per_class "
                            f"{cfg.train_per_class}")
        split[rng.choice(members, cfg.train_per_class, replace=False)] = SPLITS["train"]
    rest = np.flatnonzero(split == SPLITS["test"])
    if cfg.val_size >= len(rest):
        raise DataError(f"val_size {cfg.val_size} leaves no test nodes out of {len(rest)}")
    split[rng.choice(rest, cfg.val_size, replace=False)] = SPLITS["val"]
    return split


def generate_sbm(cfg: SBMConfig) -> Graph:
    """PyG's stochastic_blockmodel_graph for the edges (blocks in label order); features = the class's mean, a
    random unit vector times cfg.signal, plus N(0, cfg.noise^2) noise on every component."""
    from torch_geometric.utils import stochastic_blockmodel_graph

    probs = np.full((cfg.classes, cfg.classes), cfg.p_out)
    np.fill_diagonal(probs, cfg.p_in)
    with torch.random.fork_rng():  # PyG draws edges from torch's global generator: seed it, leave it as it was
        torch.manual_seed(cfg.seed)
        edge_index = stochastic_blockmodel_graph([cfg.nodes_per_class] * cfg.classes, probs.tolist()).numpy()
    rng = np.random.default_rng(cfg.seed)
    means = rng.standard_normal((cfg.classes, cfg.features))
    means *= cfg.signal / np.linalg.norm(means, axis=1, keepdims=True)
    labels = np.repeat(np.arange(cfg.classes), cfg.nodes_per_class)
    features = means[labels] + cfg.noise * rng.standard_normal((len(labels), cfg.features))
    return Graph(features.astype(np.float32), edge_index.astype(np.int64), labels, draw_split(labels, cfg))


def karate(cfg: NodeSplitConfig) -> Graph:
    """Zachary's karate club from inside PyG (no download): 34 members, 4 communities, one-hot features."""
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    labels = data.y.numpy().astype(np.int64)
    return Graph(data.x.numpy().astype(np.float32), data.edge_index.numpy().astype(np.int64), labels,
                 draw_split(labels, cfg))


def write(graph: Graph, path: Path) -> str:
    """The graph as an .npz with fixed timestamps, so the same params give the same bytes; returns its SHA-256."""
    from dltorch.io import atomic_path

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name in ARRAYS:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, getattr(graph, name), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> Graph:
    """A graph file written by `write` (or any .npz in its layout); a problem is a DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: missing; run the synth stage first (dvc repro synth)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = sorted(set(ARRAYS) - set(archive.files))
            if missing:
                raise DataError(f"{path}: not a graph file: no {', '.join(missing)} (needs {', '.join(ARRAYS)})")
            arrays = {name: archive[name] for name in ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    _check(path, arrays)
    return Graph(**{name: arrays[name].astype(dtype) for name, dtype in ARRAYS.items()})


def _check(path: Path, arrays: dict[str, np.ndarray]) -> None:
    features, edges, labels, split = (arrays[name] for name in ARRAYS)
    nodes = len(labels)
    problems = [
        (features.ndim != 2 or len(features) != nodes, f"features: shape {features.shape}, not ({nodes}, F)"),
        (labels.ndim != 1 or split.shape != labels.shape, f"labels {labels.shape} and split {split.shape} differ"),
        (edges.ndim != 2 or edges.shape[0] != 2, f"edge_index: shape {edges.shape}, not (2, E)"),
    ]
    for failed, problem in problems:
        if failed:
            raise DataError(f"{path}: {problem}")
    problems = [
        (not np.isfinite(features).all(), "features: not all finite"),
        (edges.size and (edges.min() < 0 or edges.max() >= nodes), f"edge_index: a node outside 0..{nodes - 1}"),
        (labels.min(initial=0) < 0, "labels: negative"),
        (not np.isin(split, list(SPLITS.values())).all(), f"split: values other than {SPLITS}"),
    ]
    for failed, problem in problems:
        if failed:
            raise DataError(f"{path}: {problem}")


def adjacency(graph: Graph) -> torch.Tensor:
    """The dense symmetric 0/1 adjacency (N, N), self loops dropped (the GCN adds its own)."""
    adj = torch.zeros(graph.nodes, graph.nodes)
    src, dst = torch.from_numpy(graph.edge_index)
    adj[src, dst] = 1.0
    adj[dst, src] = 1.0
    adj.fill_diagonal_(0.0)
    return adj


def pack(features: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
    """One sample's inputs: (1, N, F + N), the features and the adjacency side by side."""
    return torch.cat([features, adj], dim=1).unsqueeze(0)


def sample(graph: Graph, part: str, nodes: torch.Tensor | None = None) -> TensorData:
    """The graph as one sample whose targets are the labels of `part`'s nodes (-1 elsewhere); `nodes` narrows the
    targets further to a subset of them."""
    targets = torch.from_numpy(graph.labels).clone()
    keep = torch.from_numpy(graph.split == SPLITS[part])
    if nodes is not None:
        chosen = torch.zeros_like(keep)
        chosen[nodes] = True
        keep &= chosen
    targets[~keep] = IGNORED
    return TensorData(pack(torch.from_numpy(graph.features), adjacency(graph)), targets.unsqueeze(0))
