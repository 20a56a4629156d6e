"""How stage scripts run: known errors print one clear message and exit non-zero, without a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

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
