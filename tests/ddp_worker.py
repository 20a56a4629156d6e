"""Trains the tiny MLP with the engine, once per --batch-size (a fresh model from the same seed each time, in one
process group: one launch serves every size); run by tests/test_distributed.py, under torchrun or alone. Writes
<folder>/checkpoint-<batch size>.pt and <folder>/weights-<batch size>.pt."""

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
parser.add_argument("--folder", type=Path, required=True)
parser.add_argument("--resume", action="store_true")
parser.add_argument("--batch-size", type=int, nargs="+", default=[40])
args = parser.parse_args()

train, _ = classification.load_train_val(args.raw, "fashion_mnist", 0, 0)
objective = engine.Objective(classification.TASK.make_loss("cross_entropy"), classification.batch_scores)
base = TrainConfig(epochs=args.epochs, optimizer="sgd", lr=0.05, momentum=0.9, val_size=0)
with distributed.process_group(engine.select_device(base.device)) as writes:
    for batch_size in args.batch_size:
        cfg = base.model_copy(update={"batch_size": batch_size})
        torch.manual_seed(0)
        model = build_model("mlp", {"hidden": [16]}, "classification",
                            classification.model_inputs(train, "fashion_mnist"))
        checkpoint = args.folder / f"checkpoint-{batch_size}.pt"
        resume = engine.load_checkpoint(checkpoint, "fp") if args.resume else None
        engine.fit(model, objective, train, None, cfg, engine.CheckpointSpec(checkpoint, "fp", resume, writes=writes))
        if writes:
            torch.save(model.state_dict(), args.folder / f"weights-{batch_size}.pt")
