"""ONNX export (dynamo exporter, pinned opset, dynamic batch) and the onnxruntime parity gate."""

from __future__ import annotations

from collections.abc import Callable
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


def onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
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
