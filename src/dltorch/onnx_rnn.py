"""Export of recurrent layers (nn.LSTM, nn.GRU, nn.RNN) with a dynamic sequence length: the one place that uses
torch's private APIs, written for and tested on one torch release only (models/lstm.py: EXPORT_TORCH);
`recurrent_export` is its one door.

torch.onnx maps nn.LSTM and nn.GRU to ONNX's LSTM and GRU operators, keeping the time axis dynamic. It has no
translation for aten::rnn_tanh: torch.export decomposes it into one step per time step of the example, which
bakes the example's length into the graph. Here a while_loop implementation lets torch.export keep the op whole
(as torch does for LSTM and GRU, torch/export/_patches.py), and a translation emits ONNX's RNN operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from dltorch.errors import ExportError
from dltorch.models.lstm import unsupported_torch

# torch keeps the kernel an op dispatched to in a per-op cache. torch.onnx swaps in a while_loop kernel for
# aten::lstm and aten::gru during export (and we do for aten::rnn_tanh), but after the first export in a process
# the cache still holds the eager kernel, so a second export unrolls the example's steps (a fixed length).
RECURRENT_OPS = ("lstm", "gru", "rnn_tanh")


@contextmanager
def recurrent_export(model: nn.Module, opset: int) -> Iterator[dict[Any, Any] | None]:
    """Around torch.onnx.export of `model`: yields the custom translation table to pass it (None if the model
    needs none). Raises ExportError on a torch release this file was not written for."""
    if not any(isinstance(module, nn.RNNBase) for module in model.modules()):
        yield None
        return
    problem = unsupported_torch()
    if problem:
        raise ExportError(problem)
    for name in RECURRENT_OPS:
        getattr(torch.ops.aten, name).input._dispatch_cache.clear()
    if not any(isinstance(module, nn.RNN) for module in model.modules()):
        yield None
        return
    with _rnn_translations(opset) as table:
        yield table


def _one_layer(inp, hidden, params, has_biases, reverse=False):
    """One layer as a while_loop over time: torch/export/_patches.py's GRU layer with the tanh cell."""
    from torch._higher_order_ops.while_loop import while_loop
    from torch.export._patches import _clone_tensors_that_alias

    ih_weight, hh_weight = params[0], params[1]
    ih_bias, hh_bias = (params[2], params[3]) if has_biases else (None, None)
    projected = torch.nn.functional.linear(inp, ih_weight, ih_bias)
    projected = projected.flip(0) if reverse else projected
    hh_weight, hh_bias = _clone_tensors_that_alias((hh_weight, hh_bias))
    state = hidden.unsqueeze(0)
    steps = torch.empty(projected.size(0), *state.shape[1:], dtype=state.dtype, device=state.device)

    def cond_fn(index, out, state):
        return index < projected.size(0)

    def body_fn(index, out, state):
        i = index.item()
        torch._check(i >= 0)
        torch._check(i < projected.size(0))
        state = torch.tanh(projected[i] + torch.nn.functional.linear(state, hh_weight, hh_bias))
        out = out.clone()
        out[i] = state.squeeze(0)
        return index + 1, out, state

    _, out, state = while_loop(cond_fn, body_fn, [torch.tensor(0, dtype=torch.int64), steps, state])
    return (out.flip(0) if reverse else out), state.squeeze(0)


def _rnn_tanh(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    from torch._decomp.decompositions import _rnn_helper, gather_params

    out, finals = _rnn_helper(input, list(hx.unbind(0)), gather_params(params, has_biases, False), has_biases,
                              num_layers, dropout, train, bidirectional, batch_first, _one_layer)
    return out, torch.stack(finals, 0)


def _onnx_rnn_tanh(op: Any) -> Any:
    """The translation of aten::rnn_tanh.input in the operator set `op` (onnxscript's opset<N> module)."""

    def onnx_rnn_tanh(input, hx, params, has_biases: bool, num_layers: int, dropout: float, train: bool,
                      bidirectional: bool, batch_first: bool):
        return _rnn_layers(op, input, hx, params, has_biases, num_layers, bidirectional, batch_first)

    return onnx_rnn_tanh


def _rnn_layers(op, input, hx, params, has_biases, num_layers, bidirectional, batch_first):
    """aten::rnn_tanh.input as ONNX RNN operators, one per layer (inference: no dropout between layers)."""
    if bidirectional:
        raise NotImplementedError("a bidirectional nn.RNN has no ONNX translation here")
    if batch_first:
        input = op.Transpose(input, perm=[1, 0, 2])
    per_layer = 4 if has_biases else 2
    layer_input, finals = input, []
    for layer in range(num_layers):
        first = layer * per_layer
        weights = (op.Unsqueeze(params[first], [0]), op.Unsqueeze(params[first + 1], [0]))
        if has_biases:  # ONNX wants both biases in one tensor: [Wb, Rb]
            weights += (op.Unsqueeze(op.Concat(params[first + 2], params[first + 3], axis=0), [0]),)
        initial = op.Slice(hx, [layer], [layer + 1], axes=[0])
        out, final = op.RNN(layer_input, *weights, initial_h=initial, hidden_size=hx.shape[2])
        layer_input = op.Squeeze(out, [1])  # (steps, directions=1, batch, hidden) -> (steps, batch, hidden)
        finals.append(final)
    if batch_first:
        layer_input = op.Transpose(layer_input, perm=[1, 0, 2])
    return layer_input, finals[0] if len(finals) == 1 else op.Concat(*finals, axis=0)


@contextmanager
def _rnn_translations(opset: int) -> Iterator[dict[Any, Any]]:
    """Inside: torch.export keeps aten::rnn_tanh whole; yields the translation table for torch.onnx.export, whose
    operators are those of `opset` (torch.onnx builds the graph in the requested opset)."""
    import onnxscript
    from torch.export._patches import _register_rnn_while_loop_decomposition

    translation = onnxscript.values.TracedOnnxFunction(onnxscript.values.Opset("pkg.dltorch", 1),
                                                       _onnx_rnn_tanh(getattr(onnxscript, f"opset{opset}")))
    with _register_rnn_while_loop_decomposition(torch.ops.aten.rnn_tanh.input, _rnn_tanh):
        yield {torch.ops.aten.rnn_tanh.input: translation}
