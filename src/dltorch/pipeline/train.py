"""train@<model>: fit one params.yaml model on its task's data, tracked in its MLflow run."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from dltorch import engine
from dltorch.bundle import InitialWeights, ModelBundle, build_model, save_model
from dltorch.config import ModelConfig, Params
from dltorch.data.streamed import StreamedData
from dltorch.data.tensors import TensorData
from dltorch.io import save_torch, write_json
from dltorch.layout import CHECKPOINT_FILE, HISTORY_FILE, MODEL_FILE, RUN_FILE
from dltorch.models.registry import validate_args
from dltorch.tasks import Task, get_task
from dltorch.tracking import TRAIN_TIME_METRIC, Run, Tracker

TRAINING_KEYS = ("arch", "task", "data", "train")  # not `export`: exporting differently needs no retraining


def _fingerprint(cfg: ModelConfig, dataset: str, train_data: engine.TrainData, val_data: TensorData | None) -> str:
    """Identifies what a checkpoint was trained on, so other params or data start training afresh: the resolved
    config (the architecture's default arguments written out, so a changed default counts too) and a digest of
    every byte training read, inputs and targets of both splits (the validation split picks the best epoch), and
    of the init_from weights file (its path alone would miss a file rewritten in place)."""
    config = cfg.model_dump(mode="json")
    trained_on = {key: config[key] for key in TRAINING_KEYS} | {"args": validate_args(cfg.arch, cfg.args)}
    init_from = cfg.train.init_from
    payload = json.dumps({"config": trained_on, "dataset": dataset, "train": _digest(train_data),
                          "val": _digest(val_data), "init_from": _file_digest(init_from) if init_from else None},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _file_digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _digest(data: engine.TrainData | None) -> str | None:
    """In-memory tensors are hashed byte for byte; streamed data carries its own signature (a digest of its files)."""
    if data is None or isinstance(data, StreamedData):
        return None if data is None else data.signature
    digest = hashlib.sha256()
    for tensor in (data.inputs, data.targets):
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def with_epoch_figures(log_epoch: engine.EpochCallback, task: Task, model: torch.nn.Module,
                       run: Run) -> engine.EpochCallback:
    """The run's epoch logger, plus the task's per-epoch figures (if it draws any) logged to the run as they come,
    under train/epochs/."""
    if task.epoch_figures is None:
        return log_epoch
    draw = task.epoch_figures

    def on_epoch(record: dict) -> None:
        log_epoch(record)
        with tempfile.TemporaryDirectory() as folder:
            run.log_artifacts(draw(model, record["epoch"], Path(folder)), "train/epochs")

    return on_epoch


def train(params: Params, name: str, data: Path, out_dir: Path, writes: bool = True,
          tracker: Tracker | None = None) -> list[dict]:
    """Train model `name`, tracked by `tracker` (the door's; by default the project's store). `writes` says whether
    this process tracks and writes: under torchrun rank 0 alone (the door joins the group: process_group)."""
    cfg = params.model(name)
    task = get_task(cfg.task)
    dataset = task.dataset_name(data, params.fetch.dataset)
    train_data, val_data = task.load_train_val(data, dataset, cfg.train.val_size, cfg.train.seed,
                                               settings=cfg.train)
    # the bundle keeps the inputs, so evaluate, export and serving rebuild the same inference
    inputs = {**task.model_inputs(train_data, dataset), "test_time_hflip": cfg.train.augment.test_time_hflip}
    torch.manual_seed(cfg.train.seed)
    init = InitialWeights(cfg.train.init_from, cfg.train.init_from_strict) if cfg.train.init_from else None
    model = build_model(cfg.arch, cfg.args, cfg.task, inputs, init)
    config = cfg.model_dump(mode="json")
    fingerprint = _fingerprint(cfg, dataset, train_data, val_data)
    checkpoint = out_dir / CHECKPOINT_FILE
    resume = engine.load_checkpoint(checkpoint, fingerprint)
    run_id = resume["extra"].get("run_id") if resume else None
    tracker = tracker or Tracker.for_project(params.mlflow.experiment)
    with tracker.model_run(name, f"train@{name}", run_id=run_id) if writes else nullcontext() as run:
        if run and resume is None:
            run.log_params({"dataset": dataset, **config})
            run.log_dataset(data, dataset)
        started = time.perf_counter()  # the run stays open until export: its Duration is not the training time
        if cfg.train.trainer == "engine":
            with run.epoch_logger() if run else nullcontext() as log_epoch:
                objective = engine.Objective.for_task(task, cfg.train)
                spec = engine.CheckpointSpec(checkpoint, fingerprint, resume, {"run_id": run.id} if run else None,
                                             writes)
                on_epoch = with_epoch_figures(log_epoch, task, model, run) if run else None
                history = engine.fit(model, objective, train_data, val_data, cfg.train, spec, on_epoch)
        else:  # the course's hand-written loops: sub-second, so they rerun instead of resuming
            history = task.trainers[cfg.train.trainer](model, data, cfg.train)
            if run:
                run.log_history(history)
                save_torch(checkpoint, {"model": model.state_dict(), "epoch": cfg.train.epochs, "history": history,
                                        "fingerprint": fingerprint, "extra": {"run_id": run.id}})
        if run:
            run.log_metrics({TRAIN_TIME_METRIC: time.perf_counter() - started})
            if history and "precision" in history[-1]:  # what `auto` resolved to on this machine
                run.set_tags({"train.precision": history[-1]["precision"]})
            bundle = ModelBundle(name, cfg.arch, cfg.args, cfg.task, dataset, inputs, config)
            save_model(out_dir / MODEL_FILE, bundle, model.cpu())
            write_json(out_dir / HISTORY_FILE, history)
            write_json(out_dir / RUN_FILE, {"run_id": run.id, "experiment": tracker.experiment})
    return history
