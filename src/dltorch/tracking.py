"""Everything MLflow: where the store is, one run per model across stages, tags, artifacts, and the registry."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
CANDIDATE, CHAMPION = "candidate", "champion"
# MLflow 3's UI opens an experiment on its GenAI overview. The experiment declares itself a model-training one
# with this tag (the UI reads it where its workflow-type switch is off); MLflow 3.17's UI instead follows its
# global "GenAI | Model training" switch, which a link sets with UI_TRAINING_VIEW (and the browser then keeps).
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
UI_TRAINING_VIEW = "workflowType=machine_learning"
SERVER_CHECK_TIMEOUT_S = 5


def project_root() -> Path:
    """DVC's root when a stage runs under DVC; else the nearest folder above cwd holding .dvc/."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI wins; else a SQLite store at the project root, by absolute path."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / STORE_FILE}"


def ui_link(server: str, experiment: str | None = None) -> str:
    """The UI's page of an experiment's training runs (or of all experiments), not its GenAI overview."""
    page = f"experiments/{experiment}" if experiment else "experiments"
    return f"{server.rstrip('/')}/#/{page}?{UI_TRAINING_VIEW}"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=project_root())
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def require_server(uri: str) -> None:
    """A remote store that does not answer fails the stage now, with its address, before any work: MLflow's client
    would retry each call for minutes and then lose the run's records anyway."""
    import urllib.request

    from dltorch.errors import TrackingError

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_CHECK_TIMEOUT_S) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except OSError as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingError(f"the MLflow tracking server at {uri} (MLFLOW_TRACKING_URI) does not answer ({reason}); "
                        "start it (make stack) or unset MLFLOW_TRACKING_URI to track to the local SQLite store")


def experiment_id(name: str) -> str:
    import mlflow

    require_server(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made before the tag existed
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return found.experiment_id
    uri = tracking_uri()
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # Beside the database, by absolute path: MLflow's default (./mlruns) would follow the cwd, and runs
        # started from a temp dir (dvc exp run --temp) would lose their artifacts.
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / ARTIFACTS_DIR).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except Exception:  # another process created it first
        return mlflow.get_experiment_by_name(name).experiment_id


@contextmanager
def model_run(experiment: str, run_name: str, stage: str, run_id: str | None = None) -> Iterator[Any]:
    """Start (or resume, given run_id) the model's run; an exception inside marks it FAILED."""
    import mlflow

    exp_id = experiment_id(experiment)
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id, run_name=run_name) as run:
        mlflow.set_tags({"git_commit": _git_commit(), "dvc_stage": stage, "model": run_name})
        exp_name = os.environ.get("DVC_EXP_NAME")
        if exp_name:
            mlflow.set_tag("dvc_exp", exp_name)
        yield run


@contextmanager
def study_run(experiment: str, study: str) -> Iterator[Any]:
    """A study's parent run; its variants run inside as nested child runs (variant_run)."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id(experiment), run_name=study) as run:
        mlflow.set_tags({"git_commit": _git_commit(), "dvc_stage": study, "study": study})
        yield run


@contextmanager
def variant_run(study: str, variant: str) -> Iterator[Any]:
    """One variant of the running study, as a child run tagged with the study and variant names."""
    import mlflow

    parent = mlflow.active_run()  # the child must name the parent's experiment, or it lands in the default one
    with mlflow.start_run(run_name=variant, nested=True, experiment_id=parent.info.experiment_id) as run:
        mlflow.set_tags({"study": study, "variant": variant})
        yield run


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params(_flatten(params))


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    import mlflow

    numeric = {name: float(value) for name, value in _flatten(metrics).items()
               if isinstance(value, int | float) and not isinstance(value, bool)}
    mlflow.log_metrics(numeric, step=step)


def log_epoch(record: dict[str, Any]) -> None:
    """One engine history record as metrics at step = epoch."""
    log_metrics({name: value for name, value in record.items() if name != "epoch"}, step=record["epoch"])


@contextmanager
def epoch_logger(interval_s: float = 1.0) -> Iterator[Callable[[dict[str, Any]], None]]:
    """An on_epoch callback that writes epochs in batches at most once per interval_s, and the rest on exit.

    Each write is a database transaction: 1000 sub-millisecond epochs logged one by one would take far longer
    than training them, while an epoch that takes longer than interval_s is still written as soon as it ends.
    """
    pending: list[dict[str, Any]] = []
    last = time.monotonic()

    def flush() -> None:
        nonlocal last
        if pending:
            log_history(pending)
            pending.clear()
        last = time.monotonic()

    def on_epoch(record: dict[str, Any]) -> None:
        pending.append(record)
        if time.monotonic() - last >= interval_s:
            flush()

    try:
        yield on_epoch
    finally:
        flush()  # also after a crash: a resumed run keeps the epochs it had


def log_history(history: list[dict[str, Any]], step_key: str = "epoch") -> None:
    """A whole history at once (one batched write, not one per row): each numeric field at step = row[step_key]."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, int(row[step_key])) for row in history for name, value in row.items()
               if name != step_key and isinstance(value, int | float) and not isinstance(value, bool)]
    mlflow.tracking.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


def log_artifacts(paths: list[Path], folder: str) -> None:
    import mlflow

    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=folder)


def set_tags(tags: dict[str, Any]) -> None:
    import mlflow

    mlflow.set_tags({name: str(value) for name, value in tags.items()})


def log_onnx_model(onnx_path: Path, example: Any, output: Any, name: str = "model") -> str:
    """The ONNX model with a signature (dynamic batch) and an input example, servable by `mlflow models serve`.

    The signature is what makes the server answer 400 to a wrong shape or an unconvertible dtype.
    Returns the logged model's URI (models:/<model_id>).
    """
    import mlflow.onnx
    import onnx

    proto = onnx.load(str(onnx_path))
    info = mlflow.onnx.log_model(
        proto, name=name, signature=_signature(proto, example, output), input_example=example,
        save_as_external_data=False, onnx_execution_providers=["CPUExecutionProvider"],
    )
    return info.model_uri


def _signature(proto: Any, example: Any, output: Any) -> Any:
    """The examples' dtypes with the graph's shapes: every dynamic axis (batch, a window's length, an image's height
    and width) is -1, so the server takes what the graph takes."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import Schema, TensorSpec

    inferred = infer_signature(example, output)

    def shapes(values: Any, schema: Any) -> Any:
        specs = []
        for value, spec in zip(values, schema.inputs, strict=True):
            dims = value.type.tensor_type.shape.dim
            specs.append(TensorSpec(spec.type, tuple(-1 if d.dim_param or not d.dim_value else d.dim_value
                                                     for d in dims), spec.name))
        return Schema(specs)

    return ModelSignature(shapes(proto.graph.input, inferred.inputs), shapes(proto.graph.output, inferred.outputs))


def dvc_digest(folder: Path) -> str:
    """The folder's hash as DVC writes it in dvc.lock (`<md5>.dir`), computed by DVC's own library."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        _, _, tree = build(HashFileDB(fs, scratch), str(folder), fs, "md5", dry_run=True)
    return tree.hash_info.value


def log_dataset(folder: Path, name: str, context: str = "training") -> str:
    """The run's data as an MLflow dataset input (the UI's Dataset column) whose digest is its DVC hash."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    digest = dvc_digest(folder)
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": two registrations of one local class
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(Path(folder).resolve().as_uri())
    mlflow.log_input(MetaDataset(source, name=name, digest=digest), context=context)
    return digest


def describe_registered_model(name: str, description: str) -> None:
    """The registered model's description, shown on the UI's Models page."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri()).update_registered_model(name, description=description)


def beats(candidate: float, champion: float, direction: str) -> bool:
    """Strictly better: a tie keeps the current champion."""
    if direction == "max":
        return candidate > champion
    if direction == "min":
        return candidate < champion
    raise ValueError(f"unknown direction '{direction}'; known: max, min")


def register_and_promote(model_uri: str, name: str, metric: str, value: float, direction: str,
                         tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Register a new version of `name` with alias `candidate`; move `champion` to it only if its metric beats
    the champion's (read from the champion version's tag of the same name). Returns the decision and numbers."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    version = mlflow.register_model(model_uri, name, tags={**(tags or {}), metric: repr(float(value))}).version
    client.set_registered_model_alias(name, CANDIDATE, version)
    aliases = client.get_registered_model(name).aliases
    record: dict[str, Any] = {"registered_model": name, "version": int(version), "metric": metric,
                              "direction": direction, "candidate": float(value)}
    if CHAMPION not in aliases:
        record.update(champion_version=None, champion=None, decision="promoted", reason="no champion yet")
    else:
        old = client.get_model_version(name, aliases[CHAMPION])
        record["champion_version"] = int(old.version)
        if metric not in old.tags:
            record.update(champion=None, decision="promoted",
                          reason=f"champion v{old.version} has no '{metric}' tag to compare")
        else:
            record["champion"] = float(old.tags[metric])
            better = beats(record["candidate"], record["champion"], direction)
            record.update(decision="promoted" if better else "kept",
                          reason=f"{metric} {record['candidate']:.6g} vs champion {record['champion']:.6g} "
                                 f"({direction}): {'better' if better else 'not better'}")
    if record["decision"] == "promoted":
        client.set_registered_model_alias(name, CHAMPION, version)
    return record


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
