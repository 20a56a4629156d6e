"""DVC stage `export@<model>`: ONNX export, gated by onnxruntime parity on the whole test set."""

from pathlib import Path

from dltorch.config import load_params
from dltorch.entry import model_stage_parser, run_stage
from dltorch.pipeline.export import export


def main() -> None:
    parser = model_stage_parser(__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="the trained model's folder")
    parser.add_argument("--onnx", type=Path, required=True, help="where the ONNX file goes")
    parser.add_argument("--report", type=Path, required=True, help="where the parity report goes")
    args = parser.parse_args()
    spec = load_params(args.params).model(args.model).export
    report = export(args.data, args.model_dir, args.onnx, args.report, spec.opset, spec.atol, spec.batch_size)
    print(f"{args.model}: parity passed on {report['samples']} samples -> {args.onnx}")


if __name__ == "__main__":
    run_stage(main)
