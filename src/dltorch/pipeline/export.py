"""export@<model>: ONNX export, the onnxruntime parity gate on the whole test set, INT8 with an accuracy gate,
and the MLflow Model Registry (alias `candidate` on every version, `champion` only on a better test metric)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dltorch import tracking
from dltorch.bundle import load_model
from dltorch.config import TrainConfig
from dltorch.data.streamed import StreamedData
from dltorch.errors import CheckpointError, ParamsError
from dltorch.export import (
    assert_parity,
    check_parity,
    export_onnx,
    onnx_latency_ms,
    onnx_session,
    quantize_onnx,
    run_onnx,
)
from dltorch.io import atomic_path, read_json, write_json
from dltorch.pipeline.train import MODEL_FILE, RUN_FILE
from dltorch.tasks import get_task

SIGNATURE_EXAMPLES = 4
INT8_SUFFIX = "-int8"  # the int8 model's name in the registry: `<model>-int8`
# Export-time latency: one intra-op thread so the figure does not depend on what else runs on the machine.
LATENCY_THREADS, LATENCY_BATCHES, LATENCY_RUNS, LATENCY_WARMUP = 1, (1, 64), 50, 10


def export(raw_root: Path, model_dir: Path, onnx_path: Path, report_path: Path, opset: int, atol: float,
           batch_size: int, *, eval_metrics: Path, int8_path: Path, deploy_path: Path, quantize: str,
           calibration_size: int, reduce_range: bool, int8_max_drop: float, metric: str, direction: str) -> dict:
    """The ONNX file appears at onnx_path only if parity passes (the parity report is written either way); then
    the int8 file, and the registry versions: fp32 always, int8 only if it passes the gate. Returns deploy's report.
    """
    bundle, model = load_model(model_dir / MODEL_FILE)
    task = get_task(bundle.task)
    candidate_score = _read_metric(eval_metrics, metric)
    settings = TrainConfig.model_validate(bundle.config["train"])
    test = task.load_test(raw_root, bundle.dataset, settings=settings)
    run = read_json(model_dir / RUN_FILE)
    with tracking.model_run(run["experiment"], bundle.name, f"export@{bundle.name}", run_id=run["run_id"]):
        with atomic_path(onnx_path) as candidate:
            export_onnx(model, tuple(bundle.inputs["in_shape"]), candidate, opset, task.INPUT_NAME, task.OUTPUT_NAME,
                        task.DYNAMIC_AXES)
            report = {"model": bundle.name, "opset": opset, **check_parity(
                candidate, model, test.inputs, test.targets, atol, batch_size, task.parity_checks,
                other_shape=task.other_shape(test))}
            write_json(report_path, report)
            tracking.log_artifacts([report_path], "export")
            tracking.log_metrics({"parity_passed": int(report["passed"]),
                                  "parity_max_abs_diff": report["checks"]["max_abs_diff"]["measured"]})
            assert_parity(report, onnx_path)  # raises before anything is logged as a model or registered
        example = test.inputs[:SIGNATURE_EXAMPLES].numpy()
        example_out = run_onnx(onnx_session(onnx_path), example, SIGNATURE_EXAMPLES)
        fp32_uri = tracking.log_onnx_model(onnx_path, example, example_out)

        calibration = None
        if quantize == "static":
            calibration = _calibration_set(task, raw_root, bundle, settings, calibration_size)
        quantize_onnx(onnx_path, int8_path, quantize, calibration, reduce_range)
        int8 = compare_int8(onnx_path, int8_path, test.inputs.numpy(), test.targets.numpy(), task.onnx_metrics,
                            metric, direction, int8_max_drop, batch_size)
        int8.update(mode=quantize, reduce_range=reduce_range,
                    calibration_size=calibration_size if quantize == "static" else None)

        registry = {"fp32": tracking.register_and_promote(fp32_uri, bundle.name, metric, candidate_score,
                                                          direction, {"precision": "fp32"})}
        if int8["passed"]:
            int8_uri = tracking.log_onnx_model(int8_path, example, example_out, name="model_int8")
            registry["int8"] = tracking.register_and_promote(int8_uri, bundle.name + INT8_SUFFIX, metric,
                                                             int8["int8"][metric], direction, {"precision": "int8"})
        else:
            registry["int8"] = {"registered_model": bundle.name + INT8_SUFFIX, "decision": "not registered",
                                "reason": int8["reason"]}
        for record in registry.values():
            if "version" in record:
                tracking.describe_registered_model(record["registered_model"], _description(bundle, record))
        deploy = {"model": bundle.name, "int8": int8, "registry": registry}
        write_json(deploy_path, deploy)
        tracking.log_artifacts([deploy_path], "export")
        tracking.log_metrics(_deploy_metrics(int8, registry))
        tracking.set_tags({f"registry.{precision}.{key}": record[key] for precision, record in registry.items()
                           for key in ("decision", "reason", "version") if key in record})
    return deploy


def compare_int8(fp32_path: Path, int8_path: Path, inputs: np.ndarray, targets: np.ndarray, score_fn: Any,
                 metric: str, direction: str, max_drop: float, batch_size: int) -> dict[str, Any]:
    """Test metric and latency of the fp32 and int8 files under onnxruntime; the gate: drop <= max_drop."""
    results: dict[str, Any] = {"threads": LATENCY_THREADS, "runs": LATENCY_RUNS}
    for precision, path in (("fp32", fp32_path), ("int8", int8_path)):
        session = onnx_session(path, threads=LATENCY_THREADS)
        scores = score_fn(run_onnx(session, inputs, batch_size), targets)
        latency = {f"batch_{b}": onnx_latency_ms(session, inputs, b, LATENCY_RUNS, LATENCY_WARMUP)
                   for b in LATENCY_BATCHES}
        results[precision] = {metric: scores[metric], "latency_ms": latency, "size_bytes": path.stat().st_size}
    fp32, int8 = results["fp32"][metric], results["int8"][metric]
    drop = fp32 - int8 if direction == "max" else int8 - fp32
    passed = drop <= max_drop
    results.update(drop=drop, max_drop=max_drop, passed=passed, reason=(
        f"{metric} {int8:.4f} int8 vs {fp32:.4f} fp32: drop {drop:.4f} "
        f"{'within' if passed else 'exceeds'} the limit {max_drop:.4f}"))
    return results


def _read_metric(path: Path, metric: str) -> float:
    if not path.is_file():
        raise CheckpointError(f"{path}: no test metrics; run the evaluate stage first")
    metrics = read_json(path)
    if metric not in metrics:
        raise ParamsError(f"registry metric '{metric}' is not in {path} (it has: {', '.join(sorted(metrics))})")
    return float(metrics[metric])


def _calibration_set(task: Any, raw_root: Path, bundle: Any, settings: TrainConfig, size: int) -> np.ndarray:
    """A seeded random sample of the training split (never validation or test) for static quantization; streamed
    training data gives one shuffled batch, as training draws them."""
    train, _ = task.load_train_val(raw_root, bundle.dataset, settings.val_size, settings.seed, settings=settings)
    generator = torch.Generator().manual_seed(settings.seed)
    if isinstance(train, StreamedData):
        return next(train.batches(size, generator)).inputs.numpy()
    order = torch.randperm(len(train), generator=generator)
    return train.inputs[order[:size]].numpy()


def _description(bundle: Any, record: dict[str, Any]) -> str:
    """What the registered model is, on what data, and its champion's headline metric."""
    promoted = record["decision"] == "promoted"
    version = record["version"] if promoted else record["champion_version"]
    value = record["candidate"] if promoted else record["champion"]
    score = f"{value:.4f}" if value is not None else "not recorded"
    return (f"{bundle.name}: {bundle.task} model ({bundle.arch}) trained on {bundle.dataset}. "
            f"Champion: version {version}, test {record['metric']} {score} ({record['direction']} is better).")


def _deploy_metrics(int8: dict, registry: dict) -> dict[str, float]:
    metrics = {"int8.drop": int8["drop"], "int8.passed": int(int8["passed"])}
    for precision in ("fp32", "int8"):
        metrics.update({f"int8.{precision}.{key}": value
                        for key, value in int8[precision].items() if isinstance(value, float | int)})
        metrics.update({f"int8.{precision}.latency_ms.{b}": ms for b, ms in int8[precision]["latency_ms"].items()})
    for precision, record in registry.items():
        for key in ("candidate", "champion", "version"):
            if record.get(key) is not None:
                metrics[f"registry.{precision}.{key}"] = record[key]
        metrics[f"registry.{precision}.promoted"] = int(record["decision"] == "promoted")
    return metrics
