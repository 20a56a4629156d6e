"""export@<model>: ONNX export, the onnxruntime parity gate on the whole test set, and the MLflow model."""

from __future__ import annotations

from pathlib import Path

from dltorch import tracking
from dltorch.bundle import load_model
from dltorch.export import assert_parity, check_parity, export_onnx, onnx_session, run_onnx
from dltorch.io import atomic_path, read_json, write_json
from dltorch.pipeline.train import MODEL_FILE, RUN_FILE
from dltorch.tasks import get_task

SIGNATURE_EXAMPLES = 4


def export(raw_root: Path, model_dir: Path, onnx_path: Path, report_path: Path, opset: int, atol: float,
           batch_size: int) -> dict:
    """The ONNX file appears at onnx_path only if parity passes; the report is written either way."""
    bundle, model = load_model(model_dir / MODEL_FILE)
    task = get_task(bundle.task)
    test = task.load_test(raw_root, bundle.dataset)
    run = read_json(model_dir / RUN_FILE)
    with tracking.model_run(run["experiment"], bundle.name, f"export@{bundle.name}", run_id=run["run_id"]):
        with atomic_path(onnx_path) as candidate:
            export_onnx(model, tuple(bundle.inputs["in_shape"]), candidate, opset, task.INPUT_NAME, task.OUTPUT_NAME)
            report = {"model": bundle.name, "opset": opset, **check_parity(
                candidate, model, test.inputs, test.targets, atol, batch_size, task.parity_checks)}
            write_json(report_path, report)
            tracking.log_artifacts([report_path], "export")
            tracking.log_metrics({"parity_passed": int(report["passed"]),
                                  "parity_max_abs_diff": report["checks"]["max_abs_diff"]["measured"]})
            assert_parity(report, onnx_path)
        example = test.inputs[:SIGNATURE_EXAMPLES].numpy()
        tracking.log_onnx_model(onnx_path, example, run_onnx(onnx_session(onnx_path), example, SIGNATURE_EXAMPLES))
    return report
