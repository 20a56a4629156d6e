"""DVC stage `export@<model>`: ONNX export gated by onnxruntime parity, INT8, and the MLflow Model Registry."""

from pathlib import Path

from dltorch.config import load_params
from dltorch.entry import model_stage_parser, run_stage
from dltorch.pipeline.export import ExportPaths, export
from dltorch.tracking import Tracker


def main() -> None:
    parser = model_stage_parser(__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="the trained model's folder")
    parser.add_argument("--onnx", type=Path, required=True, help="where the ONNX file goes")
    parser.add_argument("--report", type=Path, required=True, help="where the parity report goes")
    parser.add_argument("--metrics", type=Path, required=True, help="evaluate's metrics.json (ranks the version)")
    parser.add_argument("--int8", type=Path, required=True, help="where the int8 ONNX file goes")
    parser.add_argument("--deploy", type=Path, required=True, help="where the int8 and registry report goes")
    args = parser.parse_args()
    params = load_params(args.params)
    paths = ExportPaths(data=args.data, model_dir=args.model_dir, metrics=args.metrics, onnx=args.onnx,
                        parity=args.report, int8=args.int8, deploy=args.deploy)
    deploy = export(paths, params.model(args.model).export, params.registry_rule(args.model),
                    Tracker.for_project(params.mlflow.experiment))
    for precision, record in deploy["registry"].items():
        print(f"{args.model} {precision}: {record['decision']} ({record['reason']})")


if __name__ == "__main__":
    run_stage(main)
