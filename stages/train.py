"""DVC stage `train@<model>`: train one model of params.yaml (resumes from its checkpoint)."""

import sys
from pathlib import Path

from dltorch import distributed
from dltorch.config import load_params
from dltorch.engine import select_device
from dltorch.entry import model_stage_parser, run_stage
from dltorch.pipeline.train import train
from dltorch.tracking import Tracker


def main() -> None:
    parser = model_stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the model's folder")
    args = parser.parse_args()
    params = load_params(args.params)
    cfg = params.model(args.model).train
    if cfg.distributed.nproc > 1 and not distributed.launched_by_torchrun():
        sys.exit(distributed.launch(sys.argv, cfg.distributed.nproc))
    with distributed.process_group(select_device(cfg.device)) as writes:
        train(params, args.model, args.data, args.out, writes, Tracker.for_project(params.mlflow.experiment))


if __name__ == "__main__":
    run_stage(main)
