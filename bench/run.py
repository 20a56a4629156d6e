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

from dltorch import engine, plots, precision, results
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
    batch = train.inputs[: cfg.train.batch_size]  # what `precision: auto` times to decide: one step in each
    probe = engine.training_step_probe(
        engine.Objective(task.make_loss(cfg.train.loss), task.batch_scores),
        engine.Batch(batch.contiguous(memory_format=engine.memory_format(batch)), train.targets[: len(batch)], 1.0),
        cfg.train)
    step_ms = precision.measure(probe, model)
    achieved = flops * len(train) / ours / 1e9
    return {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "epoch_s": ours,
            "fp32_ms_per_step": step_ms["fp32"], "bf16_ms_per_step": step_ms["bf16"],
            "auto_picks": precision.decide(step_ms["fp32"], step_ms["bf16"]), "samples_per_s": ours_rate,
            "course_samples_per_s": theirs_rate,
            "speedup": ours_rate / theirs_rate, "gflop_per_sample": flops / 1e9, "achieved_gflops": achieved,
            "x_of_flop_bound": peak / achieved}


TARGETS = (0.93, 0.94)


def time_to_accuracy_table(names: list[str], curve_png: Path) -> str:
    """From the pipeline's histories: seconds of training until each classifier's validation accuracy first reached
    each target (the test set is only read by evaluate), and every curve in one figure."""
    lines = ["| model | epochs | training s | best val accuracy | "
             + " | ".join(f"s to {target:.0%}" for target in TARGETS) + " |", "|---" * (4 + len(TARGETS)) + "|"]
    curves = {}
    for name in names:
        path = ModelFiles.of(name).history
        if not path.is_file():
            lines.append(f"| {name} | not trained yet (dvc repro train@{name}) |")
            continue
        curve = results.accuracy_over_time(json.loads(path.read_text()))
        if not curve:
            continue
        curves[name] = curve
        reached = [results.time_to_accuracy(curve, target) for target in TARGETS]
        lines.append(f"| {name} | {len(curve)} | {curve[-1][0]:.0f} | {max(a for _, a in curve):.4f} | "
                     + " | ".join("never" if s is None else f"{s:.0f}" for s in reached) + " |")
    if curves:
        plots.accuracy_over_time(curves, list(TARGETS), curve_png)
        lines.append(f"\nvalidation accuracy against seconds of training: {curve_png}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/raw"))
    parser.add_argument("--models", nargs="*", help="default: every classification model in params")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--curve", type=Path, default=Path("bench/time_to_accuracy.png"),
                        help="where the accuracy-against-seconds figure goes")
    args = parser.parse_args()
    params = load_params(args.params)
    if not (args.data / DATASETS[params.fetch.dataset].folder / "raw").is_dir():
        raise SystemExit(f"{args.data}: no fetched data; run `dvc repro fetch` first")
    names = args.models or [n for n, m in params.models.items() if m.task == "classification"]
    peak = matmul_gflops()
    print(f"{precision.machine(torch.device('cpu'))}: fp32 matmul {peak:.1f} GFLOP/s\n")
    print("| model | parameters | s/epoch | samples/s | course loop samples/s | speed-up | MFLOP/sample (train) "
          "| achieved GFLOP/s | x of FLOP bound | fp32 ms/step | bf16 ms/step | auto picks |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        row = bench_model(params, name, args.data, peak)
        rows.append(row)
        print(f"| {name} | {row['parameters']:,} | {row['epoch_s']:.2f} | {row['samples_per_s']:,.0f} "
              f"| {row['course_samples_per_s']:,.0f} "
              f"| {row['speedup']:.2f}x | {row['gflop_per_sample'] * 1e3:.2f} | {row['achieved_gflops']:.1f} "
              f"| {row['x_of_flop_bound']:.1f}x | {row['fp32_ms_per_step']:.1f} | {row['bf16_ms_per_step']:.1f} "
              f"| {row['auto_picks']} |", flush=True)
    print("\n" + time_to_accuracy_table(names, args.curve))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
