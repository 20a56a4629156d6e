"""train@<model>: fit one params.yaml model on its task's data, tracked in its MLflow run."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from dltorch import distributed, engine, tracking
from dltorch.bundle import ModelBundle, build_model, save_model
from dltorch.config import Params
from dltorch.data.images import TensorData
from dltorch.io import save_torch, write_json
from dltorch.tasks import get_task

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
RUN_FILE = "run.json"
TRAIN_TIME_METRIC = "train_time_s"  # wall-clock seconds of this stage's fit (after a resume: the resumed part)


TRAINING_KEYS = ("arch", "task", "data", "args", "train")  # not `export`: exporting differently needs no retraining


def _fingerprint(config: dict, dataset: str, train_data: engine.TrainData) -> str:
    """Identifies what a checkpoint was trained on: other params or data start training afresh. In-memory data
    is summed; streamed data carries its own signature (e.g. a digest of its files)."""
    trained_on = {key: config[key] for key in TRAINING_KEYS}
    signature = (round(float(train_data.inputs.sum()), 3) if isinstance(train_data, TensorData)
                 else train_data.signature)
    payload = json.dumps({"config": trained_on, "dataset": dataset, "sum": signature, "n": len(train_data)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def train(params: Params, name: str, raw_root: Path, out_dir: Path) -> list[dict]:
    cfg = params.model(name)
    task = get_task(cfg.task)
    dataset = task.dataset_name(raw_root, params.fetch.dataset)
    train_data, val_data = task.load_train_val(raw_root, dataset, cfg.train.val_size, cfg.train.seed,
                                               settings=cfg.train)
    inputs = task.model_inputs(train_data, dataset)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.arch, cfg.args, cfg.task, inputs)
    config = cfg.model_dump(mode="json")
    fingerprint = _fingerprint(config, dataset, train_data)
    checkpoint = out_dir / CHECKPOINT_FILE
    resume = engine.load_checkpoint(checkpoint, fingerprint)
    run_id = resume["extra"].get("run_id") if resume else None
    main = distributed.is_main()  # under torchrun, rank 0 alone tracks and writes
    tracked = tracking.model_run(params.mlflow.experiment, name, f"train@{name}", run_id=run_id) if main \
        else nullcontext()
    with tracked as run:
        if main and resume is None:
            tracking.log_params({"dataset": dataset, **config})
            tracking.log_dataset(raw_root, dataset)
        started = time.perf_counter()  # the run stays open until export: its Duration is not the training time
        if cfg.train.trainer == "engine":
            with tracking.epoch_logger() if main else nullcontext(None) as log_epoch:
                history = engine.fit(
                    model, task.make_loss(cfg.train.loss, cfg.train.label_smoothing), task.batch_scores,
                    train_data, val_data, cfg.train, checkpoint, fingerprint, monitor=task.MONITOR, resume=resume,
                    extra={"run_id": run.info.run_id} if main else None, on_epoch=log_epoch,
                )
        else:  # the course's hand-written loops: sub-second, so they rerun instead of resuming
            history = task.train_by_hand(cfg.train.trainer, model, raw_root, cfg.train)
            tracking.log_history(history)
            save_torch(checkpoint, {"model": model.state_dict(), "epoch": cfg.train.epochs, "history": history,
                                    "fingerprint": fingerprint, "extra": {"run_id": run.info.run_id}})
        if main:
            tracking.log_metrics({TRAIN_TIME_METRIC: time.perf_counter() - started})
            bundle = ModelBundle(name, cfg.arch, cfg.args, cfg.task, dataset, inputs, config)
            save_model(out_dir / MODEL_FILE, bundle, model.cpu())
            write_json(out_dir / HISTORY_FILE, history)
            write_json(out_dir / RUN_FILE, {"run_id": run.info.run_id, "experiment": params.mlflow.experiment})
    return history
