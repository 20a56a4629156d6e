"""The files of a model's folder (models/<name>/), named once: the stages write them where dvc.yaml's arguments
say, and the code that reads them back (evaluate, export, predict, the results table, bench/) finds them here.
tests/test_layout.py keeps dvc.yaml's paths and these names in step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = "models"
MODEL_FILE = "model.pt"  # the self-describing weights (bundle.py)
CHECKPOINT_FILE = "checkpoint.pt"  # the engine's per-epoch state, to resume from
HISTORY_FILE = "history.json"  # one row per epoch
RUN_FILE = "run.json"  # the model's MLflow run, which evaluate and export continue
EVAL_DIR = "eval"  # evaluate's folder: metrics, details, figures, plots data
METRICS_FILE = "metrics.json"  # the headline test metrics and training time (`dvc metrics show`)
DETAILS_FILE = "details.json"  # the rest of evaluate's report: per-class accuracy, fitted lines, the gate's verdict
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
PARITY_FILE = "parity.json"  # onnxruntime against torch on the whole test set
DEPLOY_FILE = "deploy.json"  # INT8 scores, latencies and gate; what the registry did


@dataclass(frozen=True)
class ModelFiles:
    """Where each file of one model's folder lives."""

    folder: Path

    @classmethod
    def of(cls, name: str, root: Path = Path(".")) -> ModelFiles:
        return cls(root / MODELS_DIR / name)

    @property
    def model(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def history(self) -> Path:
        return self.folder / HISTORY_FILE

    @property
    def metrics(self) -> Path:
        return self.folder / EVAL_DIR / METRICS_FILE

    @property
    def onnx(self) -> Path:
        return self.folder / ONNX_FILE

    @property
    def int8(self) -> Path:
        return self.folder / INT8_FILE

    @property
    def parity(self) -> Path:
        return self.folder / PARITY_FILE

    @property
    def deploy(self) -> Path:
        return self.folder / DEPLOY_FILE
