"""Everything MLflow: where the store is, one run per model across stages, tags, artifacts, and the registry.

One object, built at the door and passed down (as a store is a resource, not a global):

    tracker = Tracker.for_project(params.mlflow.experiment)      # the door: MLFLOW_TRACKING_URI or ./mlflow.db
    with tracker.model_run("mlp", "train@mlp") as run:           # the library: records go to `run`, by its id
        run.log_params({...})
        run.log_history(history)

A `Run` writes through an MlflowClient bound to the tracker's URI, naming its run id on every call: nothing
depends on MLflow's process-wide URI or on which run happens to be active. Only MLflow's fluent-only calls
(logging a model, registering it) need the process-wide URI; `Tracker._fluent` sets it, right before them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
CANDIDATE, CHAMPION = "candidate", "champion"
PARENT_TAG = "mlflow.parentRunId"  # what MLflow's UI reads to nest a child run under its parent
# MLflow 3's UI opens an experiment on its GenAI overview. The experiment declares itself a model-training one
# with this tag (the UI reads it where its workflow-type switch is off); MLflow 3.17's UI instead follows its
# global "GenAI | Model training" switch, which a link sets with UI_TRAINING_VIEW (and the browser then keeps).
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
UI_TRAINING_VIEW = "workflowType=machine_learning"
SERVER_CHECK_TIMEOUT_S = 5
TRAIN_TIME_METRIC = "train_time_s"  # wall-clock seconds of a train stage's fit: the run's Duration spans export too


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


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=project_root())
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class Tracker:
    """An MLflow store (its URI) and the experiment new runs go into."""

    uri: str
    experiment: str

    @classmethod
    def for_project(cls, experiment: str) -> Tracker:
        """The store a stage uses: MLFLOW_TRACKING_URI, else the project's mlflow.db."""
        return cls(tracking_uri(), experiment)

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self) -> str:
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made before the tag existed
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
            return found.experiment_id
        artifact_location = None
        if self.uri.startswith("sqlite:///"):
            # Beside the database, by absolute path: MLflow's default (./mlruns) would follow the cwd, and runs
            # started from a temp dir (dvc exp run --temp) would lose their artifacts.
            artifact_location = (Path(self.uri.removeprefix("sqlite:///")).parent / ARTIFACTS_DIR).as_uri()
        try:
            return client.create_experiment(self.experiment, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except Exception:  # another process created it first
            return client.get_experiment_by_name(self.experiment).experiment_id

    @contextmanager
    def model_run(self, model: str, stage: str, run_id: str | None = None) -> Iterator[Run]:
        """Start (or resume, given run_id) the model's run; an exception inside marks it FAILED."""
        tags = {"git_commit": _git_commit(), "dvc_stage": stage, "model": model}
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
        with self._run(model, tags, run_id) as run:
            yield run

    @contextmanager
    def study_run(self, study: str) -> Iterator[Run]:
        """A study's parent run; its variants run inside as child runs (Run.variant_run)."""
        with self._run(study, {"git_commit": _git_commit(), "dvc_stage": f"study@{study}", "study": study}) as run:
            yield run

    @contextmanager
    def _run(self, name: str, tags: dict[str, str], run_id: str | None = None,
             experiment_id: str | None = None) -> Iterator[Run]:
        from mlflow.tracking.context.registry import resolve_tags  # the source, user and git tags MLflow adds

        require_server(self.uri)
        client = self.client()
        if run_id is None:
            info = client.create_run(experiment_id or self.experiment_id(), run_name=name,
                                     tags=resolve_tags(tags)).info
        else:
            info = client.get_run(run_id).info
            client.update_run(run_id, status="RUNNING")
            client.log_batch(run_id, tags=_tags(tags))
        run = Run(self, info.run_id, info.experiment_id)
        try:
            yield run
        except BaseException:
            client.set_terminated(run.id, "FAILED")
            raise
        client.set_terminated(run.id, "FINISHED")

    def _fluent(self) -> None:
        """Point MLflow's process-wide URI at this store, for the calls that only exist in the fluent API."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)  # the registry follows it: no registry URI is set anywhere

    def register_and_promote(self, model_uri: str, name: str, metric: str, value: float, direction: str,
                             tags: dict[str, str] | None = None) -> dict[str, Any]:
        """Register a new version of `name` with alias `candidate`; move `champion` to it only if its metric beats
        the champion's (read from the champion version's tag of the same name). Returns the decision and numbers."""
        import mlflow

        self._fluent()
        client = self.client()
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

    def describe_registered_model(self, name: str, description: str) -> None:
        """The registered model's description, shown on the UI's Models page."""
        self.client().update_registered_model(name, description=description)


@dataclass(frozen=True)
class Run:
    """One MLflow run of a tracker's store; every record names this run."""

    tracker: Tracker
    id: str
    experiment_id: str

    @contextmanager
    def variant_run(self, study: str, variant: str) -> Iterator[Run]:
        """One variant of this study run, as a child run tagged with the study and variant names."""
        tags = {PARENT_TAG: self.id, "study": study, "variant": variant}
        with self.tracker._run(variant, tags, experiment_id=self.experiment_id) as run:
            yield run

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.tracker.client().log_batch(self.id, params=[Param(k, str(v)) for k, v in _flatten(params).items()])

    def log_metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        self.log_history([{"step": step, **_flatten(metrics)}], step_key="step")

    def log_history(self, history: list[dict[str, Any]], step_key: str = "epoch") -> None:
        """A whole history at once (one batched write, not one per row): each numeric field at step = row[step_key]."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, int(row[step_key])) for row in history
                   for name, value in row.items()
                   if name != step_key and isinstance(value, int | float) and not isinstance(value, bool)]
        self.tracker.client().log_batch(self.id, metrics=metrics)

    @contextmanager
    def epoch_logger(self, interval_s: float = 1.0) -> Iterator[Callable[[dict[str, Any]], None]]:
        """An on_epoch callback that writes epochs in batches at most once per interval_s, and the rest on exit.

        Each write is a database transaction: 1000 sub-millisecond epochs logged one by one would take far longer
        than training them, while an epoch that takes longer than interval_s is still written as soon as it ends.
        """
        pending: list[dict[str, Any]] = []
        last = time.monotonic()

        def flush() -> None:
            nonlocal last
            if pending:
                self.log_history(pending)
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

    def log_artifacts(self, paths: list[Path], folder: str) -> None:
        client = self.tracker.client()
        for path in paths:
            client.log_artifact(self.id, str(path), artifact_path=folder)

    def log_text(self, text: str, path: str) -> None:
        self.tracker.client().log_text(self.id, text, path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tracker.client().log_batch(self.id, tags=_tags(tags))

    def log_dataset(self, folder: Path, name: str, context: str = "training") -> str:
        """The run's data as an MLflow dataset input (the UI's Dataset column) whose digest is its DVC hash."""
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        digest = dvc_digest(folder)
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": two registrations of one local class
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(Path(folder).resolve().as_uri())
        dataset = MetaDataset(source, name=name, digest=digest)._to_mlflow_entity()
        self.tracker.client().log_inputs(self.id, [DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])
        return digest

    def log_onnx_model(self, onnx_path: Path, example: Any, output: Any, name: str = "model") -> str:
        """The ONNX model with a signature (dynamic batch) and an input example, servable by `mlflow models serve`.

        The signature is what makes the server answer 400 to a wrong shape or an unconvertible dtype.
        Returns the logged model's URI (models:/<model_id>).
        """
        import mlflow
        import mlflow.onnx
        import numpy as np
        import onnx

        proto = onnx.load(str(onnx_path))
        # What MLflow's inference finds for an ONNX pyfunc, pinned to this environment. Given, not inferred: the
        # inference loads the model in a subprocess to watch its imports, 2.4 s of every log_model call.
        requirements = [*mlflow.onnx.get_default_pip_requirements(), f"numpy=={np.__version__}"]
        self.tracker._fluent()
        # log_model attaches the model to the active run: this one, for this call only. Leaving start_run marks
        # the run FINISHED; it is running again until the stage's own run ends and sets its final status.
        with mlflow.start_run(run_id=self.id):
            info = mlflow.onnx.log_model(
                proto, name=name, signature=_signature(proto, example, output), input_example=example,
                save_as_external_data=False, onnx_execution_providers=["CPUExecutionProvider"],
                pip_requirements=requirements,
            )
        self.tracker.client().update_run(self.id, status="RUNNING")
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


def beats(candidate: float, champion: float, direction: str) -> bool:
    """Strictly better: a tie keeps the current champion."""
    if direction == "max":
        return candidate > champion
    if direction == "min":
        return candidate < champion
    raise ValueError(f"unknown direction '{direction}'; known: max, min")


def _tags(tags: dict[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(name, str(value)) for name, value in tags.items()]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
