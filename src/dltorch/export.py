"""ONNX export (dynamo exporter, pinned opset, dynamic batch), the onnxruntime parity gate, INT8 quantization."""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dltorch.engine import predict_outputs
from dltorch.errors import ExportError, ParityError
from dltorch.io import atomic_path

# What a task adds to the parity gate: (checks, summary) from torch outputs, ONNX outputs and targets.
TaskChecks = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[dict[str, dict], dict[str, Any]]]

EXAMPLE_BATCH = 4
# The ONNX metadata_props key of a classifier's class names (a JSON list, index i naming output i).
CLASSES_KEY = "dltorch.classes"
# A second batch size, unlike both the example's and the bulk run's, catches shapes baked into the graph.
ODD_BATCH = 7
# Which input axes stay dynamic, as {axis: (name, multiple)}; every task's graph has a dynamic batch. A multiple
# above 1 makes the axis `multiple * n` (a UNet takes sides that are multiples of 16).
BATCH_ONLY: dict[int, tuple[str, int]] = {0: ("batch", 1)}


def export_onnx(
    model: nn.Module, in_shape: tuple[int, ...], path: Path, opset: int, input_name: str,
    output_name: str | tuple[str, ...], dynamic_axes: dict[int, tuple[str, int]] = BATCH_ONLY,
) -> None:
    """Export with the given dynamic axes; onnx.checker must pass before the file appears at `path`. A model whose
    forward returns a tuple names each output (`output_name` a tuple)."""
    import onnx

    from dltorch.onnx_rnn import recurrent_export

    model = model.cpu().eval()
    example = torch.rand(EXAMPLE_BATCH, *in_shape)
    dims = {axis: torch.export.Dim(name, min=1) if multiple == 1 else multiple * torch.export.Dim(name, min=1)
            for axis, (name, multiple) in dynamic_axes.items()}
    # recurrent layers need private torch machinery to keep the time axis dynamic (onnx_rnn.py); others none
    with atomic_path(path) as tmp, recurrent_export(model, opset) as table, _torchlib_registry_built_once():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=[input_name],
            output_names=[output_name] if isinstance(output_name, str) else list(output_name),
            dynamic_shapes=(dims,), external_data=False, verbose=False,
            custom_translation_table=table,
        )
        program.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        if fold_input_normalization(proto):
            onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        _require_dynamic(onnx.load(str(tmp)), path, dynamic_axes)


@functools.cache
def _torchlib_registry(build: Callable[[int], Any], opset: int) -> Any:
    return build(opset_version=opset)


@contextmanager
def _torchlib_registry_built_once() -> Iterator[None]:
    """Around torch.onnx.export: it builds its registry of torchlib's translations of every ATen op anew on each
    call (0.85 s, up to half of a small model's export), though that depends only on the opset. Build it once per
    opset and process, and give each export a copy of its own (an export adds its custom translations to it)."""
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    build = ONNXRegistry.from_torchlib

    def copy_of_built(cls: type, opset_version: int) -> Any:
        built, registry = _torchlib_registry(build, opset_version), cls()
        registry._opset_version = built.opset_version
        registry.functions = {target: list(decomps) for target, decomps in built.functions.items()}
        return registry

    ONNXRegistry.from_torchlib = classmethod(copy_of_built)
    try:
        yield
    finally:
        ONNXRegistry.from_torchlib = build


def fold_input_normalization(proto: Any) -> bool:
    """Fold a scalar input normalization into the first fully connected layer, in place: Sub(mean) -> Div(std) ->
    Reshape or Flatten -> Gemm(x, W^T, b) becomes Reshape -> Gemm(x, (W / std)^T, b - mean * rowsum(W / std)).

    onnxruntime fuses neither op into the Gemm, and at batch 1 each is a kernel and a pass over the image: 1.7 of
    the MLP's 28 us. A convolution keeps its normalization (its zero padding of the normalized image is not a
    padding of the raw one), and so does a per-channel one. Returns whether it folded."""
    import onnx
    from onnx import numpy_helper

    graph, pixels = proto.graph, proto.graph.input[0].name
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tensors = {t.name: t for t in graph.initializer}

    def sole_reader(name: str, op_types: tuple[str, ...]) -> Any:
        """The one node reading `name` as its first input, if it is one of op_types."""
        readers = consumers.get(name, [])
        found = len(readers) == 1 and readers[0].op_type in op_types and readers[0].input[0] == name
        return readers[0] if found else None

    sub = sole_reader(pixels, ("Sub",))
    div = sub and sole_reader(sub.output[0], ("Div",))
    flat = div and sole_reader(div.output[0], ("Reshape", "Flatten"))
    gemm = flat and sole_reader(flat.output[0], ("Gemm",))
    if not gemm or len(gemm.input) < 3:
        return False
    constants = (sub.input[1], div.input[1], gemm.input[1], gemm.input[2])  # mean, std, W, b
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute}
    if (any(name not in tensors or len(consumers[name]) != 1 or tensors[name].data_type != onnx.TensorProto.FLOAT
            for name in constants)
            or (attributes.get("transA", 0), attributes.get("transB", 0)) != (0, 1)
            or (attributes.get("alpha", 1.0), attributes.get("beta", 1.0)) != (1.0, 1.0)):
        return False
    mean, std, weight, bias = (numpy_helper.to_array(tensors[name]).astype(np.float64) for name in constants)
    if mean.size != 1 or std.size != 1:
        return False
    weight = weight / std.item()  # in float64, then rounded once
    bias = bias - mean.item() * weight.sum(axis=1)
    for name, value in zip(constants[2:], (weight, bias), strict=True):
        tensors[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    flat.input[0] = pixels
    for node in (sub, div):
        graph.node.remove(node)
    for name in constants[:2]:
        graph.initializer.remove(tensors[name])
    dropped = {sub.output[0], div.output[0]}
    for info in [v for v in graph.value_info if v.name in dropped]:
        graph.value_info.remove(info)
    return True


def write_metadata(path: Path, props: dict[str, str]) -> None:
    """Set the ONNX file's metadata_props (what a runtime reads from the file alone, e.g. its class names)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def read_metadata(session: Any) -> dict[str, str]:
    """An onnxruntime session's metadata_props."""
    return dict(session.get_modelmeta().custom_metadata_map)


def _require_dynamic(proto: Any, path: Path, dynamic_axes: dict[int, tuple[str, int]]) -> None:
    """The exporter may quietly fall back to a trace that bakes the example's sizes into the graph."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for axis, (name, _) in dynamic_axes.items():
        if dims[axis].dim_param:
            continue
        if axis == 0:
            raise ExportError(f"{path}: the exported graph has a fixed batch size {dims[0].dim_value}: the model's "
                              "forward turns the batch dimension into a Python int (e.g. len(x)); use x.shape[0]")
        raise ExportError(f"{path}: the exported graph has a fixed {name} {dims[axis].dim_value} (axis {axis}): "
                          "the model's forward specializes it to the example's size")


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """A CPU session; `threads` fixes intra-op threads (for timings), None lets onnxruntime choose."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """The graph's first output (its only one, but for an autoencoder's reconstruction beside its code)."""
    return run_onnx_outputs(session, inputs, batch_size)[0]


def run_onnx_outputs(session: Any, inputs: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Every output of the graph, in its order, over all inputs in batches."""
    name = session.get_inputs()[0].name
    runs = [session.run(None, {name: inputs[i : i + batch_size]}) for i in range(0, len(inputs), batch_size)]
    return [np.concatenate(parts) for parts in zip(*runs, strict=True)]


@torch.no_grad()
def check_parity(
    onnx_path: Path, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, atol: float, batch_size: int,
    task_checks: TaskChecks | None = None, other_shape: tuple[torch.Tensor, torch.Tensor] | None = None,
    onnx_outputs: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Compare onnxruntime with torch, the oracle, on every input: outputs within atol, plus the task's checks.

    Run at `batch_size` over all inputs and again at ODD_BATCH on the first 100, so a graph that only
    works at the example's batch size fails too. `other_shape` (inputs, targets) are samples at another size of a
    dynamic axis than the example's (a shorter window, a larger image): the same checks run on them at ODD_BATCH.
    `onnx_outputs`: the graph's outputs on all inputs at `batch_size` (run_onnx_outputs), when the caller has them.
    """
    model = model.cpu().eval()
    expected, *expected_rest = _run_torch_outputs(model, inputs)
    session = onnx_session(onnx_path)
    if onnx_outputs is None:
        onnx_outputs = run_onnx_outputs(session, inputs.numpy(), batch_size)
    actual, *actual_rest = onnx_outputs
    head = min(100, len(inputs))
    actual_odd = run_onnx(session, inputs[:head].numpy(), ODD_BATCH)
    diff = float(np.abs(actual - expected).max())
    diff_odd = float(np.abs(actual_odd - expected[:head]).max())
    checks = {
        "max_abs_diff": {"measured": diff, "limit": atol, "passed": diff <= atol},
        f"max_abs_diff_batch_{ODD_BATCH}": {"measured": diff_odd, "limit": atol, "passed": diff_odd <= atol},
    }
    # every further output (an autoencoder's code) within atol of torch's too
    for output, torch_out, onnx_out in zip(session.get_outputs()[1:], expected_rest, actual_rest, strict=True):
        extra_diff = float(np.abs(onnx_out - torch_out).max())
        checks[f"max_abs_diff_{output.name}"] = {"measured": extra_diff, "limit": atol, "passed": extra_diff <= atol}
    summary: dict[str, Any] = {}
    if task_checks is not None:
        extra, summary = task_checks(expected, actual, targets.numpy())
        checks.update(extra)
    shapes = {"example": [EXAMPLE_BATCH, *inputs.shape[1:]]}
    if other_shape is not None:
        other_inputs, other_targets = other_shape
        suffix = "shape_" + "x".join(map(str, other_inputs.shape[1:]))
        other_expected = _run_torch_outputs(model, other_inputs)[0]
        other_actual = run_onnx(session, other_inputs.numpy(), ODD_BATCH)
        other_diff = float(np.abs(other_actual - other_expected).max())
        checks[f"max_abs_diff_{suffix}"] = {"measured": other_diff, "limit": atol, "passed": other_diff <= atol}
        if task_checks is not None:
            extra, _ = task_checks(other_expected, other_actual, other_targets.numpy())
            checks.update({f"{name}_{suffix}": check for name, check in extra.items()})
        shapes["other"] = [ODD_BATCH, *other_inputs.shape[1:]]
    return {"passed": all(check["passed"] for check in checks.values()), "samples": len(inputs),
            "batch_sizes": [batch_size, ODD_BATCH], "shapes": shapes, **summary, "checks": checks}


def _run_torch_outputs(model: nn.Module, inputs: torch.Tensor) -> list[np.ndarray]:
    """Every output of the model (a tuple, or one tensor), over all inputs: the engine's own inference."""
    return [output.numpy() for output in predict_outputs(model, inputs, torch.device("cpu"))]


def assert_parity(report: dict[str, Any], onnx_path: Path) -> None:
    failed = [f"{name}: measured {c['measured']:.3g}, limit {c['limit']:.3g}"
              for name, c in report["checks"].items() if not c["passed"]]
    if failed:
        raise ParityError(f"{onnx_path}: ONNX does not match torch on {report['samples']} samples:\n  "
                          + "\n  ".join(failed))


def quantize_onnx(src: Path, dst: Path, mode: str, calibration: np.ndarray | None = None,
                  reduce_range: bool = False) -> None:
    """INT8 by onnxruntime: `dynamic` (int8 weights, activations scaled at run time) or `static` QDQ, whose
    activation ranges come from `calibration` inputs. The file appears at `dst` only if onnxruntime loads it."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as work, atomic_path(dst) as tmp:
        prepared = Path(work) / "prepared.onnx"
        _prepare_for_quantization(src, prepared)
        if mode == "dynamic":
            quantize_dynamic(prepared, tmp, weight_type=QuantType.QInt8, reduce_range=reduce_range)
        elif mode == "static":
            if calibration is None or len(calibration) == 0:
                raise ValueError("static quantization needs calibration inputs")
            quantize_static(prepared, tmp, _CalibrationReader(onnx_session(src), calibration),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, reduce_range=reduce_range)
        else:
            raise ValueError(f"unknown quantization mode '{mode}'; known: dynamic, static")
        onnx_session(tmp)  # fails here, not at serving time, if onnxruntime cannot run the result


def _prepare_for_quantization(src: Path, prepared: Path) -> None:
    """Shape inference and graph fusions, as onnxruntime advises. auto_merge: symbolic inference would give up on
    derived sizes (a UNet's 16*h next to its skips' 8*h*2), leaving its debug dump in the working folder; merging
    only acts where dimensions conflict, so other graphs infer as before. Where onnxruntime's symbolic inference
    cannot follow a graph at all (a convolution fed a mirrored batch: the Slice of step -1 that a flip exports as
    leaves it without a shape), ONNX's own shape inference stands in for it."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(src), str(prepared), auto_merge=True)
    except TypeError:  # symbolic_shape_infer reads the missing shape as None
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol: feeds one batch at a time, then None."""

    BATCH = 50

    def __init__(self, session: Any, inputs: np.ndarray) -> None:
        self.name = session.get_inputs()[0].name
        self.inputs = inputs
        self.batches: Iterator[np.ndarray] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}

    def rewind(self) -> None:
        self.batches = iter([self.inputs[i : i + self.BATCH] for i in range(0, len(self.inputs), self.BATCH)])


def median_ms(call: Callable[[], object], runs: int, warmup: int, min_seconds: float = 0.0) -> float:
    """The median wall time of one call, in milliseconds, over at least `runs` calls lasting `min_seconds` in all,
    after at least `warmup` untimed ones lasting a fifth of that. The floor is for calls of microseconds: 100 of
    them are a few ms, and a median over so short a window swung by half between runs on a shared machine."""
    return interleaved_median_ms({"call": call}, runs, warmup, min_seconds)["call"]


def interleaved_median_ms(calls: dict[str, Callable[[], object]], runs: int, warmup: int,
                          min_seconds: float = 0.0) -> dict[str, float]:
    """Each call's median wall time (median_ms), the calls taken in turns: round after round, each call once. Timed
    one after the other, whatever slows the machine down meanwhile (another process, the clock) weighs on one of
    them only, and decides which is faster; in turns, it weighs on all alike."""
    _timed_rounds(calls, warmup, min_seconds / 5)
    return {name: 1000 * statistics.median(times)
            for name, times in _timed_rounds(calls, runs, min_seconds).items()}


def _timed_rounds(calls: dict[str, Callable[[], object]], count: int, seconds: float) -> dict[str, list[float]]:
    """Each call's wall times, over at least `count` rounds (each call once, in turn) lasting at least `seconds`."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    end = time.perf_counter() + seconds
    rounds = 0
    while rounds < count or time.perf_counter() < end:
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
        rounds += 1
    return times


def onnx_latency_ms(session: Any, inputs: np.ndarray, batch: int, runs: int, warmup: int,
                    min_seconds: float = 0.0) -> float:
    """Median onnxruntime latency of one call on the first `batch` inputs (median_ms)."""
    return onnx_latencies_ms({"session": session}, inputs, batch, runs, warmup, min_seconds)["session"]


def onnx_latencies_ms(sessions: dict[str, Any], inputs: np.ndarray, batch: int, runs: int, warmup: int,
                      min_seconds: float = 0.0) -> dict[str, float]:
    """Median latency of each session's call on the first `batch` inputs, the sessions timed in turns
    (interleaved_median_ms): what decides which graph is faster."""
    feed = np.ascontiguousarray(inputs[:batch])
    calls = {name: functools.partial(session.run, None, {session.get_inputs()[0].name: feed})
             for name, session in sessions.items()}
    return interleaved_median_ms(calls, runs, warmup, min_seconds)
