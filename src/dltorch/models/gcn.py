"""Node classifiers on one graph: the GCN (Kipf and Welling) with PyTorch Geometric's layers, and its baseline, the
same MLP on the node features alone.

Both read a packed graph (B, N, F + N): the node features, then the dense 0/1 adjacency (tasks/node_classification
.py). Why PyG's DenseGCNConv rather than GCNConv: the engine hands a model one tensor, and a dense adjacency
fits in it beside the features at any node count, where an edge_index (2, E) would need its own input or padding.
DenseGCNConv is the same layer as GCNConv (self loops, symmetric D^-1/2 (A + I) D^-1/2, a weight, a bias) written
as matrix products, so it trains as is and exports to ONNX as MatMuls with the node count dynamic: one file takes
graphs of any size (tests/test_node_classification.py checks parity on a graph of another size). The dense
adjacency costs N^2 memory, fine for the graphs here (1000 nodes: 4 MB). PyG also makes the data
(data/node_classification.py).
"""

from __future__ import annotations

import torch
from torch import nn

from dltorch.models.registry import register_model


def _feature_count(in_shape: tuple[int, ...]) -> int:
    """in_shape is (N, F + N): the features are what the adjacency leaves."""
    nodes, width = in_shape
    if width <= nodes:
        raise ValueError(f"in_shape {tuple(in_shape)} is not (nodes, features + nodes)")
    return width - nodes


class GCN(nn.Module):
    def __init__(self, features: int, hidden: list[int], num_outputs: int, dropout: float) -> None:
        super().__init__()
        from torch_geometric.nn import DenseGCNConv

        self.features = features
        widths = [features, *hidden, num_outputs]
        self.convs = nn.ModuleList(DenseGCNConv(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.dropout = nn.Dropout(dropout)

    def forward(self, graph: torch.Tensor) -> torch.Tensor:
        x, adj = graph[..., : self.features], graph[..., self.features :]
        for index, conv in enumerate(self.convs):
            x = conv(self.dropout(x), adj)
            if index < len(self.convs) - 1:
                x = x.relu()
        return x  # (B, N, classes)


class NodeMLP(nn.Module):
    """The GCN with the graph taken away: each node's features alone, through the same widths."""

    def __init__(self, features: int, hidden: list[int], num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.features = features
        widths = [features, *hidden, num_outputs]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Dropout(dropout), nn.Linear(a, b), nn.ReLU()]
        self.layers = nn.Sequential(*layers[:-1])

    def forward(self, graph: torch.Tensor) -> torch.Tensor:
        return self.layers(graph[..., : self.features])  # the adjacency is read by nobody


@register_model(tasks=("node_classification",))
def gcn(in_shape: tuple[int, ...], num_outputs: int, hidden: list[int] = [16], dropout: float = 0.5  # noqa: B006
        ) -> nn.Module:
    """GCNConv layers of widths `hidden`, ReLU between them, dropout before each (as in Kipf and Welling)."""
    return GCN(_feature_count(in_shape), hidden, num_outputs, dropout)


@register_model(tasks=("node_classification",))
def node_mlp(in_shape: tuple[int, ...], num_outputs: int, hidden: list[int] = [16],  # noqa: B006
             dropout: float = 0.5) -> nn.Module:
    """Linear layers of widths `hidden` on each node's features, ignoring the edges: the GCN's baseline."""
    return NodeMLP(_feature_count(in_shape), hidden, num_outputs, dropout)
