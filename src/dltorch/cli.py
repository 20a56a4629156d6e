"""The `dltorch` command: `predict` runs an exported ONNX model on image files; `serve` serves a registered model;
`results` prints every model's results at a glance;
`stack` starts or stops a team's tracking server, database and object store on this machine.

Exit codes: 0 all good, 1 some image could not be read (the others are still predicted), 2 a usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dltorch.errors import DltorchError
from dltorch.layout import ModelFiles

EXIT_PARTIAL, EXIT_USER_ERROR = 1, 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except DltorchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dltorch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="classify image files with a model's exported ONNX file")
    predict.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    predict.add_argument("--params", type=Path, default=Path("params.yaml"))
    predict.add_argument("--onnx", type=Path, help="the ONNX file (default: models/<model>/model.onnx)")
    predict.add_argument("--top-k", type=int, default=3, help="how many classes to print per image")
    predict.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                         help="Fashion-MNIST has light objects on a dark background: `auto` inverts images whose "
                              "border is light (a photo on a white background), `yes`/`no` force it")
    predict.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG or JPEG files, any size")
    predict.set_defaults(run=_predict)

    serve = commands.add_parser("serve", help="serve models:/<model>@<alias> over HTTP (MLflow's scoring "
                                              "server, or --backend onnx, behind a body-size limit and a "
                                              "finite-values check)")
    serve.add_argument("--model", required=True, help="the registered model's name")
    serve.add_argument("--alias", default="champion")
    serve.add_argument("--host", default="127.0.0.1",
                       help="default loopback only; another address exposes an unauthenticated server")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--max-body-mb", type=float, default=10.0, help="larger request bodies get a 413")
    serve.add_argument("--backend", choices=["mlflow", "onnx"], default="mlflow",
                       help="mlflow: MLflow's scoring server (any flavor); onnx: the registered ONNX file in "
                            "onnxruntime behind a minimal app, one worker process per core (faster)")
    serve.add_argument("--workers", type=int, help="onnx backend: worker processes (default: one per core)")
    serve.set_defaults(run=_serve)

    results = commands.add_parser("results", help="one row per model: headline metric and goal, ONNX parity, INT8, "
                                                  "training time (from the files the pipeline left)")
    results.add_argument("--params", type=Path, default=Path("params.yaml"))
    results.add_argument("--root", type=Path, default=Path("."), help="the project folder holding models/")
    results.set_defaults(run=_results)

    stack = commands.add_parser("stack", help="start or stop a team's services on loopback: PostgreSQL, an S3 "
                                              "server and an MLflow tracking server (`up` prints what to export)")
    stack.add_argument("action", choices=["up", "down", "env"])
    stack.add_argument("--data-dir", type=Path, default=Path("/var/tmp/dltorch-stack"),
                       help="the database, logs and pid files (PostgreSQL's user must be able to reach it)")
    stack.add_argument("--postgres-port", type=int, default=5433)
    stack.add_argument("--s3-port", type=int, default=5002)
    stack.add_argument("--mlflow-port", type=int, default=5000)
    stack.set_defaults(run=_stack)

    page = commands.add_parser("plots-template", help="write an HTML template for `dvc plots show --html-template` "
                                                      "that draws the plots offline (vega inlined)")
    page.add_argument("--out", type=Path, required=True)
    page.set_defaults(run=_plots_template)
    return parser


def _predict(args: argparse.Namespace) -> int:
    from dltorch.config import load_params
    from dltorch.predict import Predictor

    params = load_params(args.params)
    task = params.model(args.model).task  # a clear error for an unknown name
    if task != "classification":
        raise DltorchError(f"{args.model}: a {task} model; `dltorch predict` classifies images, so it needs a "
                           "classification model (serve others with `dltorch serve`)")
    if args.top_k < 1:
        raise DltorchError(f"--top-k: must be at least 1, got {args.top_k}")
    onnx_path = args.onnx or ModelFiles.of(args.model).onnx
    predictor = Predictor(onnx_path, args.invert)
    results, failed = [], 0
    for path in args.images:
        try:
            results.append({"file": str(path), "top": predictor.top_k(path, args.top_k)})
        except DltorchError as exc:
            failed += 1
            results.append({"file": str(path), "error": str(exc)})
            print(f"error: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps({"model": args.model, "onnx": str(onnx_path), "predictions": results}, indent=2))
    else:
        for result in results:
            if "top" in result:
                ranked = ", ".join(f"{row['class']} {row['probability']:.3f}" for row in result["top"])
                print(f"{result['file']}: {ranked}")
    return EXIT_PARTIAL if failed else 0


def _results(args: argparse.Namespace) -> int:
    from dltorch.config import load_params
    from dltorch.results import collect, format_table

    print(format_table(collect(load_params(args.params), args.root)))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import mlflow

    from dltorch import serve, tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    uri, limit = f"models:/{args.model}@{args.alias}", int(args.max_body_mb * 2**20)
    if args.backend == "onnx":
        from dltorch import onnx_server

        if args.workers is not None and args.workers < 1:
            raise DltorchError(f"--workers: at least 1, got {args.workers}")
        onnx_server.serve(uri, args.host, args.port, limit, args.workers)
    else:
        serve.serve(uri, args.host, args.port, limit)
    return 0


def _stack(args: argparse.Namespace) -> int:
    from dltorch import stack, tracking

    spec = stack.StackSpec(args.data_dir.resolve(), postgres_port=args.postgres_port, s3_port=args.s3_port,
                           mlflow_port=args.mlflow_port)
    if args.action == "down":
        stopped = stack.down(spec)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
        return 0
    env = stack.up(spec) if args.action == "up" else stack.client_env(spec)
    print(stack.export_lines(env))
    print(f"# MLflow UI, training runs: {tracking.ui_link(spec.tracking_uri)}")
    print(f"# DVC remote: dvc remote add -d team s3://{spec.dvc_bucket}/dvc && "
          f"dvc remote modify team endpointurl {spec.s3_endpoint}")
    return 0


def _plots_template(args: argparse.Namespace) -> int:
    from dltorch.plots_page import write_offline_template

    print(write_offline_template(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
