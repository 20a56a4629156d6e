"""Speed measurements, run by `make bench` (never by the tests): seconds per training epoch per model.

Trains each model of params.yaml for one epoch on the fetched data with the project's engine and prints a
markdown table. Needs `dvc repro fetch` first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dltorch import engine
from dltorch.bundle import build_model
from dltorch.config import load_params
from dltorch.tasks import get_task


def epoch_seconds(params_path: Path, name: str, raw_root: Path) -> tuple[float, int]:
    params = load_params(params_path)
    cfg = params.model(name)
    task = get_task(cfg.task)
    train, _ = task.load_train_val(raw_root, params.fetch.dataset, cfg.train.val_size, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.arch, cfg.args, cfg.task, task.model_inputs(train, params.fetch.dataset))
    one_epoch = cfg.train.model_copy(update={"epochs": 1})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        engine.fit(model, task.make_loss(one_epoch.loss), task.batch_scores, train, None, one_epoch,
                   Path(tmp) / "ckpt.pt", "bench")
        return time.perf_counter() - started, len(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/raw"))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | seconds / epoch | samples / s |\n|---|---|---|")
    for name in load_params(args.params).models:
        seconds, samples = epoch_seconds(args.params, name, args.data)
        print(f"| {name} | {seconds:.2f} | {samples / seconds:,.0f} |")


if __name__ == "__main__":
    main()
