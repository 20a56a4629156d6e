"""export@<model>: ONNX export, the onnxruntime parity gate on the whole test set, INT8 with an accuracy and a speed
gate, and the MLflow Model Registry (alias `candidate` on every version, `champion` only on a better test metric).

Named steps, each taking the typed spec it uses; `export` runs them in order inside the model's MLflow run:
load_subject -> export_checked -> log_servable -> quantize -> score_int8 -> register -> write_deploy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dltorch.bundle import ModelBundle, load_model
from dltorch.config import ExportConfig, RegistryRule, TrainConfig
from dltorch.data.streamed import StreamedData
from dltorch.data.tensors import TensorData
from dltorch.errors import CheckpointError, ParamsError
from dltorch.export import (
    CLASSES_KEY,
    assert_parity,
    check_parity,
    export_onnx,
    onnx_latencies_ms,
    onnx_session,
    quantize_onnx,
    run_onnx,
    run_onnx_outputs,
    write_metadata,
)
from dltorch.io import atomic_path, read_json, write_json
from dltorch.layout import DEPLOY_FILE, INT8_FILE, MODEL_FILE, ONNX_FILE, PARITY_FILE, RUN_FILE
from dltorch.pipeline.evaluate import train_judge
from dltorch.tasks import get_task
from dltorch.tracking import Run, Tracker

SIGNATURE_EXAMPLES = 4
INT8_SUFFIX = "-int8"  # the int8 model's name in the registry: `<model>-int8`
# Export-time latency: one intra-op thread so the figure does not depend on what else runs on the machine.
LATENCY_THREADS, LATENCY_BATCHES = 1, (1, 64)
# A latency median spans this much of calls at least: 50 calls of a linear regression's graph take 0.3 ms in all.
LATENCY_MIN_SECONDS = 0.2


@dataclass(frozen=True)
class ExportPaths:
    """The export stage's inputs and outputs (dvc.yaml spells them out)."""

    data: Path  # what the model reads: data/<its data:>
    model_dir: Path  # the trained model's folder (model.pt, run.json)
    metrics: Path  # evaluate's metrics.json: the score that ranks the version
    onnx: Path
    parity: Path  # the parity report
    int8: Path
    deploy: Path  # the INT8 and registry report

    @classmethod
    def beside(cls, data: Path, model_dir: Path, metrics: Path, out: Path) -> ExportPaths:
        """Every output in folder `out` under the names dvc.yaml gives them."""
        return cls(data, model_dir, metrics, out / ONNX_FILE, out / PARITY_FILE, out / INT8_FILE, out / DEPLOY_FILE)


@dataclass(frozen=True)
class Subject:
    """What the steps work on: the trained model, its task, its training settings, its test set and score."""

    bundle: ModelBundle
    model: torch.nn.Module  # what the ONNX file holds: the task's export view of the trained model
    task: Any
    settings: TrainConfig
    test: TensorData
    score: float  # the registry rule's metric as evaluate measured it


def export(paths: ExportPaths, spec: ExportConfig, rule: RegistryRule, tracker: Tracker | None = None) -> dict:
    """The whole stage, in the model's run of `tracker`'s store (by default the project's). The ONNX file appears
    only if parity passes (the parity report is written either way); then the int8 file, and the registry versions:
    fp32 always, int8 only if it passes its gate. Returns deploy's report."""
    subject = load_subject(paths, rule)
    record = read_json(paths.model_dir / RUN_FILE)
    tracker = tracker or Tracker.for_project(record["experiment"])
    name = subject.bundle.name
    with tracker.model_run(name, f"export@{name}", run_id=record["run_id"]) as run:
        fp32_outputs = export_checked(subject, paths, spec, run)
        fp32_uri = log_servable(subject, paths.onnx, run)
        quantize(subject, paths, spec)
        int8 = score_int8(subject, paths, spec, rule, fp32_outputs)
        registry = register(subject, paths, rule, fp32_uri, int8, run)
        return write_deploy(subject, paths, int8, registry, run)


def load_subject(paths: ExportPaths, rule: RegistryRule) -> Subject:
    """Fails before any work if evaluate has not measured the registry's metric."""
    score = _read_metric(paths.metrics, rule.metric)
    bundle, task, graph_model, test = load_graph(paths.model_dir / MODEL_FILE, paths.data)
    return Subject(bundle, graph_model, task, bundle.train_config(), test, score)


def load_graph(model_file: Path, data: Path) -> tuple[ModelBundle, Any, torch.nn.Module, TensorData]:
    """A trained model as its ONNX graph holds and reads it (what export checks and `make bench` times): the task's
    export view of the model (a GAN's generator) and the test set under `data` as the graph takes it (a GAN's
    noise, the images as its targets), read with the settings the model was trained with."""
    bundle, model = load_model(model_file)
    task = get_task(bundle.task)
    test = task.load_test(data, bundle.dataset, settings=bundle.train_config())
    return bundle, task, task.export_view(model).eval(), task.test_inputs(test, model)


def export_checked(subject: Subject, paths: ExportPaths, spec: ExportConfig, run: Run) -> np.ndarray:
    """ONNX at paths.onnx only if onnxruntime matches torch on the whole test set; the report either way. Returns
    the graph's first output on the test set at spec.batch_size, which the int8 gate scores fp32 by: the test set
    goes through the fp32 graph once."""
    task, test = subject.task, subject.test
    with atomic_path(paths.onnx) as candidate:
        names = (task.output_name, *task.extra_outputs) if task.extra_outputs else task.output_name
        export_onnx(subject.model, task.export_shape(subject.bundle, subject.model), candidate, spec.opset,
                    task.input_name, names, task.dynamic_axes)
        write_metadata(candidate, model_metadata(subject.bundle))
        outputs = run_onnx_outputs(onnx_session(candidate), test.inputs.numpy(), spec.batch_size)
        report = {"model": subject.bundle.name, "opset": spec.opset, **check_parity(
            candidate, subject.model, test.inputs, test.targets, spec.atol, spec.batch_size, task.parity_checks,
            other_shape=task.other_shape(test) if task.other_shape else None, onnx_outputs=outputs)}
        write_json(paths.parity, report)
        run.log_artifacts([paths.parity], "export")
        run.log_metrics({"parity_passed": int(report["passed"]),
                         "parity_max_abs_diff": report["checks"]["max_abs_diff"]["measured"]})
        assert_parity(report, paths.onnx)  # raises before anything is logged as a model or registered
    return outputs[0]


def log_servable(subject: Subject, onnx_path: Path, run: Run, name: str = "model") -> str:
    """Log an ONNX file as an MLflow model, with a signature and input example from the test set; its URI."""
    example = subject.test.inputs[:SIGNATURE_EXAMPLES].numpy()
    session = onnx_session(onnx_path)
    outputs = run_onnx_outputs(session, example, SIGNATURE_EXAMPLES)
    # several outputs (an autoencoder's reconstruction and code) are named in the signature, in the graph's order
    example_out = outputs[0] if len(outputs) == 1 else {
        output.name: values for output, values in zip(session.get_outputs(), outputs, strict=True)}
    return run.log_onnx_model(onnx_path, example, example_out, name=name)


def quantize(subject: Subject, paths: ExportPaths, spec: ExportConfig) -> None:
    """INT8 at paths.int8: dynamic, or static QDQ calibrated on a sample of the training split."""
    calibration = _calibration_set(subject, paths.data, spec.calibration_size) if spec.quantize == "static" else None
    quantize_onnx(paths.onnx, paths.int8, spec.quantize, calibration, spec.reduce_range)


def model_metadata(bundle: ModelBundle) -> dict[str, str]:
    """What the ONNX file says about itself: the model, its task and data, and a classifier's class names."""
    props = {"dltorch.model": bundle.name, "dltorch.task": bundle.task, "dltorch.dataset": bundle.dataset}
    if "classes" in bundle.inputs:
        props[CLASSES_KEY] = json.dumps(bundle.inputs["classes"])
    return props


def score_int8(subject: Subject, paths: ExportPaths, spec: ExportConfig, rule: RegistryRule,
               fp32_outputs: np.ndarray) -> dict[str, Any]:
    """Score and time both files under onnxruntime, then the gate (int8_verdict). `fp32_outputs`: the fp32 graph's
    on the test set at spec.batch_size (export_checked's)."""
    inputs, targets = subject.test.inputs.numpy(), subject.test.targets.numpy()
    measured: dict[str, Any] = {"threads": LATENCY_THREADS, "runs": spec.latency_runs}
    scorer = subject.task.scorer(train_judge(subject.task, paths.data, subject.bundle.dataset))
    outputs = {"fp32": fp32_outputs, "int8": run_onnx(onnx_session(paths.int8), inputs, spec.batch_size)}
    files = {"fp32": paths.onnx, "int8": paths.int8}
    latencies = time_onnx(files, inputs, spec.latency_runs)
    for precision, path in files.items():
        scores = scorer(outputs[precision], targets)
        measured[precision] = {rule.metric: scores[rule.metric], "latency_ms": latencies[precision],
                               "size_bytes": path.stat().st_size}
    return {**measured, **int8_verdict(measured, rule, spec), "mode": spec.quantize,
            "reduce_range": spec.reduce_range,
            "calibration_size": spec.calibration_size if spec.quantize == "static" else None}


def time_onnx(paths: dict[str, Path], inputs: np.ndarray, runs: int) -> dict[str, dict[str, float]]:
    """Each graph's median latency of one call at each of LATENCY_BATCHES, on one thread: over `runs` calls lasting
    LATENCY_MIN_SECONDS at least, the graphs timed in turns (onnx_latencies_ms)."""
    sessions = {name: onnx_session(path, threads=LATENCY_THREADS) for name, path in paths.items()}
    warmup = max(1, runs // 5)
    by_batch = {f"batch_{b}": onnx_latencies_ms(sessions, inputs, b, runs, warmup, LATENCY_MIN_SECONDS)
                for b in LATENCY_BATCHES}
    return {name: {batch: latencies[name] for batch, latencies in by_batch.items()} for name in paths}


def int8_verdict(measured: dict[str, Any], rule: RegistryRule, spec: ExportConfig) -> dict[str, Any]:
    """The int8 file is worth registering only if it scores within spec.int8_max_drop of fp32 and takes at most
    spec.int8_max_latency_ratio of fp32's time at every batch size timed: an int8 model no faster than fp32 has
    nothing to offer over it, and a tie would pass or fail by the timing's noise."""
    fp32, int8 = measured["fp32"][rule.metric], measured["int8"][rule.metric]
    drop = fp32 - int8 if rule.direction == "max" else int8 - fp32
    accurate = drop <= spec.int8_max_drop
    timings = [(batch, measured["fp32"]["latency_ms"][batch], ms) for batch, ms in
               measured["int8"]["latency_ms"].items()]
    ratio = spec.int8_max_latency_ratio
    slower = [batch for batch, fp32_ms, int8_ms in timings if int8_ms > ratio * fp32_ms]
    speed = "; ".join(f"{batch} {int8_ms:.3g} vs {fp32_ms:.3g} ms" for batch, fp32_ms, int8_ms in timings)
    reason = (f"{rule.metric} {int8:.4f} int8 vs {fp32:.4f} fp32: drop {drop:.4f} "
              f"{'within' if accurate else 'exceeds'} the limit {spec.int8_max_drop:.4f}; latency int8 vs fp32: "
              f"{speed}: " + (f"above {ratio:g}x fp32's at {', '.join(slower)}" if slower
                              else f"at most {ratio:g}x fp32's at every batch size"))
    return {"drop": drop, "max_drop": spec.int8_max_drop, "max_latency_ratio": ratio, "accurate": accurate,
            "faster": not slower, "passed": accurate and not slower, "reason": reason}


def register(subject: Subject, paths: ExportPaths, rule: RegistryRule, fp32_uri: str, int8: dict[str, Any],
             run: Run) -> dict[str, dict]:
    """fp32 always (a candidate; champion on a better score); int8 as `<model>-int8` only if it passed its gate."""
    name = subject.bundle.name
    registry = {"fp32": run.tracker.register_and_promote(fp32_uri, name, rule.metric, subject.score, rule.direction,
                                                         {"precision": "fp32"})}
    if int8["passed"]:
        int8_uri = log_servable(subject, paths.int8, run, name="model_int8")
        registry["int8"] = run.tracker.register_and_promote(int8_uri, name + INT8_SUFFIX, rule.metric,
                                                            int8["int8"][rule.metric], rule.direction,
                                                            {"precision": "int8"})
    else:
        registry["int8"] = {"registered_model": name + INT8_SUFFIX, "decision": "not registered",
                            "reason": int8["reason"]}
    for record in registry.values():
        if "version" in record:
            run.tracker.describe_registered_model(record["registered_model"], _description(subject.bundle, record))
    return registry


def _description(bundle: ModelBundle, record: dict[str, Any]) -> str:
    """What the registered model is, on what data, and its champion's headline metric."""
    promoted = record["decision"] == "promoted"
    version = record["version"] if promoted else record["champion_version"]
    value = record["candidate"] if promoted else record["champion"]
    score = f"{value:.4f}" if value is not None else "not recorded"
    return (f"{bundle.name}: {bundle.task} model ({bundle.arch}) trained on {bundle.dataset}. "
            f"Champion: version {version}, test {record['metric']} {score} ({record['direction']} is better).")


def write_deploy(subject: Subject, paths: ExportPaths, int8: dict[str, Any], registry: dict[str, dict],
                 run: Run) -> dict:
    """deploy.json, and the same decisions in the run: metrics, and tags with the reasons."""
    deploy = {"model": subject.bundle.name, "int8": int8, "registry": registry}
    write_json(paths.deploy, deploy)
    run.log_artifacts([paths.deploy], "export")
    run.log_metrics(_deploy_metrics(int8, registry))
    run.set_tags({"int8.reason": int8["reason"],
                       **{f"registry.{precision}.{key}": record[key] for precision, record in registry.items()
                          for key in ("decision", "reason", "version") if key in record}})
    return deploy


def _read_metric(path: Path, metric: str) -> float:
    if not path.is_file():
        raise CheckpointError(f"{path}: no test metrics; run the evaluate stage first")
    metrics = read_json(path)
    if metric not in metrics:
        raise ParamsError(f"registry metric '{metric}' is not in {path} (it has: {', '.join(sorted(metrics))})")
    return float(metrics[metric])


def _calibration_set(subject: Subject, data: Path, size: int) -> np.ndarray:
    """A seeded random sample of the training split (never validation or test) for static quantization; streamed
    training data gives one shuffled batch, as training draws them."""
    settings = subject.settings
    train, _ = subject.task.load_train_val(data, subject.bundle.dataset, settings.val_size, settings.seed,
                                           settings=settings)
    generator = torch.Generator().manual_seed(settings.seed)
    if isinstance(train, StreamedData):
        return next(train.batches(size, generator)).inputs.numpy()
    sample = train.subset(torch.randperm(len(train), generator=generator)[:size])
    return subject.task.test_inputs(sample, subject.model).inputs.numpy()  # what the graph reads: a GAN's noise


def _deploy_metrics(int8: dict, registry: dict) -> dict[str, float]:
    metrics = {"int8.drop": int8["drop"], "int8.passed": int(int8["passed"]), "int8.accurate": int(int8["accurate"]),
               "int8.faster": int(int8["faster"])}
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
