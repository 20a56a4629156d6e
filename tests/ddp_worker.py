"""Trains the tiny MLP with the engine; run by tests/test_distributed.py, under torchrun or alone."""

import argparse
from pathlib import Path

import torch

from dltorch import distributed, engine
from dltorch.bundle import build_model
from dltorch.config import TrainConfig
from dltorch.tasks import classification

parser = argparse.ArgumentParser()
parser.add_argument("--raw", type=Path, required=True)
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--checkpoint", type=Path, required=True)
parser.add_argument("--resume", action="store_true")
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--batch-size", type=int, default=40)
args = parser.parse_args()

cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=0.05, momentum=0.9, val_size=0)
train, _ = classification.load_train_val(args.raw, "fashion_mnist", 0, 0)
torch.manual_seed(0)
model = build_model("mlp", {"hidden": [16]}, "classification", classification.model_inputs(train, "fashion_mnist"))
resume = engine.load_checkpoint(args.checkpoint, "fp") if args.resume else None
with distributed.process_group(engine.select_device(cfg.device)) as writes:
    objective = engine.Objective(classification.TASK.make_loss("cross_entropy"), classification.batch_scores)
    engine.fit(model, objective, train, None, cfg, engine.CheckpointSpec(args.checkpoint, "fp", resume, writes=writes))
    if writes:
        torch.save(model.state_dict(), args.out)
