"""How stage scripts run: known errors print one clear message and exit non-zero, without a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from dltorch.errors import DltorchError

EXIT_USER_ERROR = 2


def run_stage(main: Callable[[], object]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        main()
    except DltorchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def model_stage_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every per-model stage takes (dvc.yaml spells them out); stages add their outputs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="the data the model reads (data/<its data:>)")
    return parser
