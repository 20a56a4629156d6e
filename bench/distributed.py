"""Training throughput with 1 and 2 DDP processes (gloo on CPU), same global batch, same model.

    python bench/distributed.py [--model mlp] [--epochs 1]

Runs the real train stage (which launches torchrun itself when train.distributed.nproc > 1) on a temporary
copy of the model's params entry and reports samples per second from its history. On a 2-core machine two
processes share the same two cores that one process already uses (torch runs 2 threads), so expect no speed-up:
DDP pays for gradient all-reduce and a second Python process without gaining compute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def throughput(params: dict, model: str, nproc: int, data: Path, workdir: Path) -> float:
    params["models"][model]["train"]["distributed"] = {"nproc": nproc}
    path = workdir / f"params{nproc}.yaml"
    path.write_text(yaml.safe_dump(params))
    out = workdir / f"{model}{nproc}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--params", str(path), "--model", model,
                    "--data", str(data), "--out", str(out)], check=True, env=env, capture_output=True)
    history = json.loads((out / "history.json").read_text())
    return sum(row["samples_per_second"] for row in history) / len(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "raw")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    params = yaml.safe_load(args.params.read_text())
    params["models"] = {args.model: params["models"][args.model]}
    params["models"][args.model]["train"]["epochs"] = args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        rates = {n: throughput(params, args.model, n, args.data, Path(tmp)) for n in (1, 2)}
    batch = params["models"][args.model]["train"]["batch_size"]
    print(f"| processes | {args.model} samples/s (global batch {batch}) |")
    print("|---|---|")
    for nproc, rate in rates.items():
        print(f"| {nproc} | {rate:,.0f} |")
    print(f"\nspeed-up with 2 processes: {rates[2] / rates[1]:.2f}x on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
