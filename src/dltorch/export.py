"""ONNX export (dynamo exporter, pinned opset, dynamic batch), the onnxruntime parity gate, INT8 quantization."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dltorch.errors import ExportError, ParityError
from dltorch.io import atomic_path

# What a task adds to the parity gate: (checks, summary) from torch outputs, ONNX outputs and targets.
TaskChecks = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[dict[str, dict], dict[str, Any]]]

EXAMPLE_BATCH = 4
# A second batch size, unlike both the example's and the bulk run's, catches shapes baked into the graph.
ODD_BATCH = 7


def export_onnx(
    model: nn.Module, in_shape: tuple[int, ...], path: Path, opset: int, input_name: str, output_name: str
) -> None:
    """Export with a dynamic batch axis; onnx.checker must pass before the file appears at `path`."""
    import onnx

    model = model.cpu().eval()
    example = torch.rand(EXAMPLE_BATCH, *in_shape)
    batch = torch.export.Dim("batch", min=1)
    with atomic_path(path) as tmp:
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=[input_name],
            output_names=[output_name], dynamic_shapes=({0: batch},), external_data=False, verbose=False,
        )
        program.save(str(tmp), external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)
        _require_dynamic_batch(onnx.load(str(tmp)), path)


def _require_dynamic_batch(proto: Any, path: Path) -> None:
    """The exporter may quietly fall back to a trace that bakes the example's batch size into the graph."""
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch_dim.dim_param:
        raise ExportError(f"{path}: the exported graph has a fixed batch size {batch_dim.dim_value}: the model's "
                          "forward turns the batch dimension into a Python int (e.g. len(x)); use x.shape[0]")


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
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + batch_size]})[0]
                           for i in range(0, len(inputs), batch_size)])


@torch.no_grad()
def check_parity(
    onnx_path: Path, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, atol: float, batch_size: int,
    task_checks: TaskChecks | None = None,
) -> dict[str, Any]:
    """Compare onnxruntime with torch, the oracle, on every input: outputs within atol, plus the task's checks.

    Run at `batch_size` over all inputs and again at ODD_BATCH on the first 100, so a graph that only
    works at the example's batch size fails too.
    """
    model = model.cpu().eval()
    expected = torch.cat([model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]).numpy()
    session = onnx_session(onnx_path)
    actual = run_onnx(session, inputs.numpy(), batch_size)
    head = min(100, len(inputs))
    actual_odd = run_onnx(session, inputs[:head].numpy(), ODD_BATCH)
    diff = float(np.abs(actual - expected).max())
    diff_odd = float(np.abs(actual_odd - expected[:head]).max())
    checks = {
        "max_abs_diff": {"measured": diff, "limit": atol, "passed": diff <= atol},
        f"max_abs_diff_batch_{ODD_BATCH}": {"measured": diff_odd, "limit": atol, "passed": diff_odd <= atol},
    }
    summary: dict[str, Any] = {}
    if task_checks is not None:
        extra, summary = task_checks(expected, actual, targets.numpy())
        checks.update(extra)
    return {"passed": all(check["passed"] for check in checks.values()), "samples": len(inputs),
            "batch_sizes": [batch_size, ODD_BATCH], **summary, "checks": checks}


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
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as work, atomic_path(dst) as tmp:
        prepared = Path(work) / "prepared.onnx"
        try:  # shape inference and graph fusions, as onnxruntime advises
            quant_pre_process(str(src), str(prepared))
        except Exception:  # noqa: BLE001  symbolic inference gives up on derived sizes (a UNet's 16*h): let it merge
            quant_pre_process(str(src), str(prepared), auto_merge=True)
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


def median_ms(call: Callable[[], object], runs: int, warmup: int) -> float:
    """The median wall time of `runs` calls after `warmup` untimed ones, in milliseconds."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def onnx_latency_ms(session: Any, inputs: np.ndarray, batch: int, runs: int, warmup: int) -> float:
    """Median onnxruntime latency of one call on the first `batch` inputs."""
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(inputs[:batch])}
    return median_ms(lambda: session.run(None, feed), runs, warmup)
