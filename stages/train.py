"""DVC stage `train@<model>`: train one model of params.yaml (resumes from its checkpoint)."""

import argparse
import sys
from pathlib import Path

from dltorch import distributed
from dltorch.config import load_params
from dltorch.entry import run_stage
from dltorch.pipeline.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="root folder of the raw data")
    parser.add_argument("--out", type=Path, required=True, help="the model's folder")
    args = parser.parse_args()
    params = load_params(args.params)
    nproc = params.model(args.model).train.distributed.nproc
    if nproc > 1 and not distributed.launched_by_torchrun():
        sys.exit(distributed.launch(sys.argv, nproc))
    train(params, args.model, args.data, args.out)


if __name__ == "__main__":
    run_stage(main)
