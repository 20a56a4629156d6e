"""DVC stage `evaluate@<model>`: test-set metrics, figures and plots data for one trained model."""

import argparse
from pathlib import Path

from dltorch.config import load_params
from dltorch.entry import run_stage
from dltorch.pipeline.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="the data the model reads (data/<models.NAME.data>)")
    parser.add_argument("--model-dir", type=Path, required=True, help="the trained model's folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics and figures")
    args = parser.parse_args()
    load_params(args.params).model(args.model)  # fail early on an invalid params.yaml or model name
    metrics = evaluate(args.data, args.model_dir, args.out)
    print(f"{args.model}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))


if __name__ == "__main__":
    run_stage(main)
