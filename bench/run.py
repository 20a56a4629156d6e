"""Speed of the image classifiers, run by `make bench` (never by the tests). Needs `dvc repro fetch` first.

For each classification model of params.yaml, one training epoch with the project's engine (in-memory
tensor batches) against the course's loop (torchvision dataset + ToTensor + Normalize + a per-sample
DataLoader) with the same architecture, batch size and optimizer, in the same process. Achieved GFLOP/s is
the model's training FLOPs per epoch (counted by torch's FlopCounterMode on one forward+backward step) over
the epoch time, next to this machine's fp32 matmul GFLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dltorch import engine
from dltorch.bundle import build_model
from dltorch.config import ModelConfig, load_params
from dltorch.data.datasets import DATASETS
from dltorch.layout import ModelFiles
from dltorch.tasks import get_task


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def train_flops_per_sample(model: torch.nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(inputs), targets).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(inputs)


def engine_epoch(cfg: ModelConfig, model: torch.nn.Module, task, train) -> float:
    # the same steps at the recipe's peak rate: a warm-up as long as the one epoch would leave no schedule
    one_epoch = cfg.train.model_copy(update={"epochs": 1, "warmup_epochs": 0.0})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        engine.fit(model, engine.Objective(task.make_loss(one_epoch.loss), task.batch_scores), train, None,
                   one_epoch, engine.CheckpointSpec(Path(tmp) / "ckpt.pt", "bench"))
        return time.perf_counter() - started


def course_epoch(cfg: ModelConfig, net: torch.nn.Module, task, raw_root: Path, dataset: str, mean, std) -> tuple:
    """The course's loop: a per-sample torchvision pipeline feeding the bare network."""
    from torchvision import datasets, transforms

    cls = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST}[dataset]
    data = cls(str(raw_root), train=True, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(mean, std)]))
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.train.batch_size, shuffle=True)
    loss_fn = task.make_loss(cfg.train.loss, cfg.train.label_smoothing)
    optimizer = engine.make_optimizer(net.parameters(), cfg.train)
    net.train()
    started = time.perf_counter()
    for images, labels in loader:
        optimizer.zero_grad()
        loss_fn(net(images), labels).backward()
        optimizer.step()
    return time.perf_counter() - started, len(data)


def bench_model(params, name: str, raw_root: Path, peak: float) -> dict:
    cfg = params.model(name)
    task = get_task(cfg.task)
    dataset = params.fetch.dataset
    train, _ = task.load_train_val(raw_root, dataset, cfg.train.val_size, cfg.train.seed)
    inputs = task.model_inputs(train, dataset)
    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.args, cfg.task, inputs)
    flops = train_flops_per_sample(model, task.make_loss(cfg.train.loss), train.inputs[:64], train.targets[:64])
    ours = engine_epoch(cfg, model, task, train)
    theirs, their_samples = course_epoch(cfg, build_model(cfg.arch, cfg.args, cfg.task, inputs)[1], task, raw_root,
                                         dataset, inputs["mean"], inputs["std"])
    ours_rate, theirs_rate = len(train) / ours, their_samples / theirs
    achieved = flops * len(train) / ours / 1e9
    return {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "epoch_s": ours,
            "samples_per_s": ours_rate, "course_samples_per_s": theirs_rate,
            "speedup": ours_rate / theirs_rate, "gflop_per_sample": flops / 1e9, "achieved_gflops": achieved,
            "x_of_flop_bound": peak / achieved}


def time_to_accuracy(history_path: Path, target: float) -> str:
    """From a pipeline run's history: training seconds until the validation accuracy first reaches target."""
    if not history_path.is_file():
        return f"{history_path}: not trained yet (dvc repro)"
    elapsed = 0.0
    for row in json.loads(history_path.read_text()):
        elapsed += row["seconds"]
        if row.get("val_accuracy", 0.0) >= target:
            return f"{history_path}: val accuracy {row['val_accuracy']:.4f} >= {target} after epoch {row['epoch']}, " \
                   f"{elapsed:.0f} s of training"
    return f"{history_path}: never reached {target} validation accuracy ({elapsed:.0f} s of training)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/raw"))
    parser.add_argument("--models", nargs="*", help="default: every classification model in params")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    params = load_params(args.params)
    if not (args.data / DATASETS[params.fetch.dataset].folder / "raw").is_dir():
        raise SystemExit(f"{args.data}: no fetched data; run `dvc repro fetch` first")
    names = args.models or [n for n, m in params.models.items() if m.task == "classification"]
    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 matmul {peak:.1f} GFLOP/s\n")
    print("| model | parameters | s/epoch | samples/s | course loop samples/s | speed-up | MFLOP/sample (train) "
          "| achieved GFLOP/s | x of FLOP bound |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        row = bench_model(params, name, args.data, peak)
        rows.append(row)
        print(f"| {name} | {row['parameters']:,} | {row['epoch_s']:.2f} | {row['samples_per_s']:,.0f} "
              f"| {row['course_samples_per_s']:,.0f} | {row['speedup']:.2f}x | {row['gflop_per_sample'] * 1e3:.2f} "
              f"| {row['achieved_gflops']:.1f} | {row['x_of_flop_bound']:.1f}x |", flush=True)
    if "resnet" in params.models:
        print("\n" + time_to_accuracy(ModelFiles.of("resnet").history, 0.93))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
