"""The files of a trained model's folder (models/<name>/ in dvc.yaml), named once: the train stage writes them,
evaluate and export read them."""

MODEL_FILE = "model.pt"  # the self-describing weights (bundle.py)
CHECKPOINT_FILE = "checkpoint.pt"  # the engine's per-epoch state, to resume from
HISTORY_FILE = "history.json"  # one row per epoch
RUN_FILE = "run.json"  # the model's MLflow run, which evaluate and export continue
