"""DVC stage `evaluate@<model>`: test-set metrics, figures and plots data for one trained model; fails (exit 2)
when the model misses its `gate` in params.yaml."""

from pathlib import Path

from dltorch.config import load_params
from dltorch.entry import model_stage_parser, run_stage
from dltorch.pipeline.evaluate import evaluate
from dltorch.tracking import Tracker


def main() -> None:
    parser = model_stage_parser(__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="the trained model's folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics and figures")
    args = parser.parse_args()
    params = load_params(args.params)
    gate = params.model(args.model).gate  # fails early on an invalid params.yaml or model name
    metrics = evaluate(args.data, args.model_dir, args.out, gate, Tracker.for_project(params.mlflow.experiment))
    print(f"{args.model}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))


if __name__ == "__main__":
    run_stage(main)
