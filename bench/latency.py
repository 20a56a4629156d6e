"""Inference latency per model, run by `make bench` (never by the tests). Needs `dvc repro` (the export stage) first.

For each model of params.yaml: torch eager (the trained model.pt) vs onnxruntime fp32 (model.onnx) vs onnxruntime
int8 (model.int8.onnx), at batch 1 and batch 64 of real test images; the median of --runs timed calls after
--warmup untimed ones, torch's in one child process and onnxruntime's in another (time_apart says why), at each
intra-op thread count of --threads (default: 1 and every core), set for torch and onnxruntime alike. The fp32 graph
is timed twice: through `run` (a feed dict in, new output arrays out: each call converts and allocates) and through
IOBinding (the input bound per call, the outputs written into arrays allocated once), onnxruntime's API for
latency-bound callers. Prints a markdown table and logs it, and every number, to MLflow (run `bench-latency`). Goal
reported against: onnxruntime batch-1 latency <= 0.3x torch eager (issue #14), for the MLPs and the CNNs, each side
at its fastest thread count.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dltorch import precision, tracking
from dltorch.config import load_params
from dltorch.export import median_ms, onnx_latency_ms, onnx_session
from dltorch.layout import ModelFiles
from dltorch.pipeline.export import load_graph

BATCHES = (1, 64)
GOAL_RATIO = 0.3
# The goal is set for MLP-like and convolutional architectures (transformers are reported, not judged).
GOAL_ARCHS = {"mlp", "lenet5", "resnet"}
SIDES = ("torch", "ort")  # the runtimes timed: torch eager, and onnxruntime on the fp32 and int8 graphs


@dataclass(frozen=True)
class Timing:
    runs: int  # timed calls, of which the median is reported: at least this many
    warmup: int  # untimed calls before them: at least this many
    threads: int  # intra-op threads, torch's and onnxruntime's alike
    min_seconds: float = 0.0  # ... and the timed calls last at least this long (dltorch.export.median_ms)

    @property
    def counts(self) -> tuple[int, int, float]:
        """median_ms's runs, warmup and min_seconds."""
        return self.runs, self.warmup, self.min_seconds


def bench_model(name: str, model: nn.Module, files: ModelFiles, inputs: np.ndarray, timing: Timing,
                sides: tuple[str, ...] = SIDES) -> list[dict]:
    """`model` is what the ONNX graph holds (the export stage's view: a GAN's generator), `inputs` what it reads; a
    batch size larger than the test set (a graph task's one graph) is left out. `sides`: which runtimes to time
    (torch eager, onnxruntime), each row holding their timings."""
    sessions = {precision: onnx_session(path, threads=timing.threads)
                for precision, path in (("fp32", files.onnx), ("int8", files.int8))} if "ort" in sides else {}
    rows = []
    for batch in (size for size in BATCHES if size <= len(inputs)):
        row: dict[str, Any] = {"model": name, "batch": batch, "threads": timing.threads}
        if "torch" in sides:
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[:batch]))
            with torch.inference_mode(), torch_threads(timing.threads):
                row["torch_ms"] = median_ms(lambda tensor=tensor: model(tensor), *timing.counts)
        if "ort" in sides:
            row["ort_fp32_ms"] = onnx_latency_ms(sessions["fp32"], inputs, batch, *timing.counts)
            row["ort_fp32_bound_ms"] = bound_latency_ms(sessions["fp32"], inputs, batch, timing)
            row["ort_int8_ms"] = onnx_latency_ms(sessions["int8"], inputs, batch, *timing.counts)
        rows.append(row)
    return rows


def with_ratios(rows: list[dict]) -> list[dict]:
    """The sides' rows of each (model, batch, threads) merged into one, with each ORT timing's ratio to torch's."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        merged.setdefault((row["model"], row["batch"], row["threads"]), {}).update(row)
    return [{**row, "fp32_ratio": row["ort_fp32_ms"] / row["torch_ms"],
             "fp32_bound_ratio": row["ort_fp32_bound_ms"] / row["torch_ms"],
             "int8_ratio": row["ort_int8_ms"] / row["torch_ms"]} for row in merged.values()]


def bound_latency_ms(session: Any, inputs: np.ndarray, batch: int, timing: Timing) -> float:
    """onnx_latency_ms through IOBinding: the first `batch` inputs bound as the input on every call, each output
    written into an array allocated once. Fails if those arrays do not end up holding what `run` returns."""
    name = session.get_inputs()[0].name
    feed = np.ascontiguousarray(inputs[:batch])
    expected = session.run(None, {name: feed})
    buffers = [np.empty_like(output) for output in expected]
    binding = session.io_binding()
    for meta, buffer in zip(session.get_outputs(), buffers, strict=True):
        binding.bind_output(meta.name, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)

    def call() -> None:
        binding.bind_cpu_input(name, feed)
        session.run_with_iobinding(binding)

    latency = median_ms(call, *timing.counts)
    for meta, buffer, output in zip(session.get_outputs(), buffers, expected, strict=True):
        if not np.allclose(buffer, output, rtol=1e-5, atol=1e-6):
            raise RuntimeError(f"IOBinding's {meta.name} differs from run()'s: the bound timing is not of that work")
    return latency


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads for the block; the caller's afterwards (a test process keeps its own)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_model(name: str, files: ModelFiles, data: Path, timings: list[Timing],
               sides: tuple[str, ...] = SIDES) -> list[dict]:
    """bench_model on an exported model's files at each of `timings`, reading its test set once from `data`
    (data/<its data: entry>)."""
    _, _, graph_model, test = load_graph(files.model, data)
    inputs = test.inputs[: max(BATCHES)].numpy()
    return [row for timing in timings for row in bench_model(name, graph_model, files, inputs, timing, sides)]


def time_side(side: str, jobs: list[tuple[str, ModelFiles, Path, list[Timing]]]) -> list[dict]:
    """One runtime's timings of every model (time_model's arguments in `jobs`): what a child process runs."""
    return [row for name, files, data, timings in jobs for row in time_model(name, files, data, timings, (side,))]


def time_apart(jobs: list[tuple[str, ModelFiles, Path, list[Timing]]]) -> list[dict]:
    """Each runtime timed in a process of its own, one after the other. In one process, torch's OpenMP workers
    keep spinning on the other core after its multi-threaded calls, while onnxruntime's threads want it: the MLP's
    two-thread onnxruntime median was 42 us in 2 of 8 rounds after torch's, 26 us in every round after
    single-threaded torch. A server runs one runtime, so the goal compares each alone."""
    rows = []
    for side in SIDES:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
            rows += child.submit(time_side, side, jobs).result()
    return with_ratios(rows)


def table(rows: list[dict]) -> str:
    lines = ["| model | batch | threads | torch eager ms | ORT fp32 ms | ORT fp32 bound ms | ORT int8 ms "
             "| fp32 / torch | fp32 bound / torch | int8 / torch |", "|---" * 10 + "|"]
    lines += [f"| {row['model']} | {row['batch']} | {row['threads']} | {row['torch_ms']:.4f} "
              f"| {row['ort_fp32_ms']:.4f} | {row['ort_fp32_bound_ms']:.4f} | {row['ort_int8_ms']:.4f} "
              f"| {row['fp32_ratio']:.2f}x | {row['fp32_bound_ratio']:.2f}x | {row['int8_ratio']:.2f}x |"
              for row in rows]
    return "\n".join(lines)


# the goal table's columns: each timing and its label ("fp32_bound": the fp32 graph through IOBinding)
GOAL_TIMINGS = {"torch_ms": "torch", "ort_fp32_ms": "ORT fp32", "ort_fp32_bound_ms": "ORT fp32 bound",
                "ort_int8_ms": "ORT int8"}


def goal_table(rows: list[dict], archs: dict[str, str]) -> str:
    """Batch 1, each side at its fastest thread count: the goal's comparison (a server picks its threads)."""
    lines = [f"| model | {' | '.join(f'fastest {label} ms' for label in GOAL_TIMINGS.values())} "
             f"| goal: ORT <= {GOAL_RATIO}x torch at batch 1 |", "|---" * (len(GOAL_TIMINGS) + 2) + "|"]
    for model in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == model and row["batch"] == 1]
        best = {key: min(mine, key=lambda row, key=key: row[key]) for key in GOAL_TIMINGS}
        cells = [f"{best[key][key]:.4f} ({best[key]['threads']} thr)" for key in best]
        goal = "n/a"
        if archs[model] in GOAL_ARCHS:
            ratios = {label: best[key][key] / best["torch_ms"]["torch_ms"]
                      for key, label in GOAL_TIMINGS.items() if key != "torch_ms"}
            goal = ", ".join(f"{label} {ratio:.2f}x {'met' if ratio <= GOAL_RATIO else 'missed'}"
                             for label, ratio in ratios.items())
        lines.append(f"| {model} | {' | '.join(cells)} | {goal} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data"), help="each model reads <data>/<its data: entry>")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--models", nargs="*", help="default: every model of params.yaml that has been exported")
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                        help="intra-op thread counts, each timed (default: 1 and every core)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=0.5,
                        help="the timed calls of each figure last at least this long (more calls than --runs for a "
                             "fast model), the warm-up a fifth of it")
    args = parser.parse_args()
    if args.runs < 50:
        raise SystemExit("--runs: at least 50 timed runs")
    if args.min_seconds < 0:
        raise SystemExit("--min-seconds: not negative")
    if min(args.threads) < 1:
        raise SystemExit("--threads: each count at least 1")
    params = load_params(args.params)
    names = args.models or list(params.models)
    jobs = []
    for name in names:
        files = ModelFiles(args.models_dir / name)
        missing = [path.name for path in (files.model, files.onnx, files.int8) if not path.is_file()]
        if missing:
            print(f"skip {name}: no {', '.join(missing)} in {files.folder}; run `dvc repro export@{name}`")
            continue
        jobs.append((name, files, args.data / params.model(name).data,
                     [Timing(args.runs, args.warmup, threads, args.min_seconds) for threads in args.threads]))
    rows = time_apart(jobs) if jobs else []
    if not rows:
        raise SystemExit("no exported model to time; run `dvc repro` first")
    header = (f"torch {torch.__version__}, onnxruntime {_ort_version()}, intra-op threads {args.threads}, "
              f"median of {args.runs} runs (and {args.min_seconds} s) after {args.warmup} warm-up, torch and "
              f"onnxruntime each in a process of its own, {precision.machine(torch.device('cpu'))}")
    report = (f"{header}\n\n{table(rows)}\n\n{goal_table(rows, {n: params.model(n).arch for n in names})}")
    print(report)
    _log(params.mlflow.experiment, rows, report, args)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _log(experiment: str, rows: list[dict], report: str, args: argparse.Namespace) -> None:
    with tracking.Tracker.for_project(experiment).model_run("bench-latency", "bench/latency.py") as run:
        run.log_params({"threads": args.threads, "runs": args.runs, "warmup": args.warmup})
        run.log_metrics({f"{row['model']}.b{row['batch']}.t{row['threads']}.{key}": row[key] for row in rows
                         for key in GOAL_TIMINGS})
        run.log_text(report, "latency.md")


if __name__ == "__main__":
    main()
