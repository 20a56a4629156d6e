"""DVC stage `train@<model>`: train one model of params.yaml (resumes from its checkpoint)."""

import sys
from pathlib import Path

from dltorch import distributed
from dltorch.config import load_params
from dltorch.entry import model_stage_parser, run_stage
from dltorch.pipeline.train import train


def main() -> None:
    parser = model_stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the model's folder")
    args = parser.parse_args()
    params = load_params(args.params)
    nproc = params.model(args.model).train.distributed.nproc
    if nproc > 1 and not distributed.launched_by_torchrun():
        sys.exit(distributed.launch(sys.argv, nproc))
    train(params, args.model, args.data, args.out)


if __name__ == "__main__":
    run_stage(main)
