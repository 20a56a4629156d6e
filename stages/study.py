"""DVC stage `study@<name>`: one of the course's studies (params.yaml section <name>, src/dltorch/studies/)."""

import argparse
from pathlib import Path

from dltorch.config import load_params
from dltorch.entry import run_stage
from dltorch.studies.common import run_study
from dltorch.tracking import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--study", required=True, help="a registered study, and its section of params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="what it reads: a synthetic set (a CSV) or data/raw")
    parser.add_argument("--out", type=Path, required=True, help="folder for the figure, metrics and curves")
    args = parser.parse_args()
    params = load_params(args.params)
    metrics = run_study(args.study, params, args.data, args.out, Tracker.for_project(params.mlflow.experiment))
    print({k: v for k, v in metrics.items() if k != "variants"})


if __name__ == "__main__":
    run_stage(main)
