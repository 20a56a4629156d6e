"""One ResNet training epoch on CUDA: epoch time and throughput (for a machine with an accelerator).

    python bench/gpu_epoch.py [--model resnet] [--epochs 2]

Uses the project's engine exactly as the train stage does (device auto -> CUDA, bf16 autocast, the data
moved once through pinned memory). The first epoch includes CUDA/cuDNN warm-up, so the last is reported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from dltorch import engine
from dltorch.bundle import build_model
from dltorch.config import load_params
from dltorch.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/raw"))
    parser.add_argument("--model", default="resnet")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a machine with an accelerator")
    params = load_params(args.params)
    cfg = params.model(args.model)
    task = get_task(cfg.task)
    train, _ = task.load_train_val(args.data, params.fetch.dataset, cfg.train.val_size, cfg.train.seed)
    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.args, cfg.task, task.model_inputs(train, params.fetch.dataset))
    run = cfg.train.model_copy(update={"epochs": args.epochs, "device": "cuda"})
    with tempfile.TemporaryDirectory() as tmp:
        objective = engine.Objective(task.make_loss(run.loss, run.label_smoothing), task.batch_scores)
        spec = engine.CheckpointSpec(Path(tmp) / "ckpt.pt", "gpu-bench")
        history = engine.fit(model, objective, train, None, run, spec)
    last = history[-1]
    print(f"{torch.cuda.get_device_name()}: {args.model} epoch {last['seconds']:.2f} s, "
          f"{last['samples_per_second']:,.0f} samples/s (batch {run.batch_size}, bf16 autocast)")


if __name__ == "__main__":
    main()
