"""End to end: `dvc repro` in a fresh copy of the repo with a shrunken params profile and the real data; then, on
the same reproduced copy, a DVC remote round trip and DVC experiments queued two at a time (a shared tracking
server and an S3 remote: tests/test_team.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime
import pytest
import torchvision
import yaml
from mlflow.tracking import MlflowClient

from dltorch.config import load_params
from dltorch.export import CLASSES_KEY
from dltorch.studies import names as study_names
from tests.conftest import TINY_SEQUENCES, TINY_SHAPES
from tests.helpers import FASHION_MNIST, MLP_STAGES, copy_repo, digests, dvc
from tests.test_studies import shrunk_study

# one worker runs this file: its repo is reproduced once
pytestmark = pytest.mark.xdist_group("e2e")
# The study DVC runs here: the study template is one `foreach` in dvc.yaml, and every study runs through the same
# stage function (run_study), which tests/test_studies.py and tests/test_transfer.py run for each study in-process
# with the same assertions (figure, metrics, curves, MLflow parent and child runs).
DVC_STUDY = "adagrad"


def _shrink_params(repo: Path) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["fetch"]["source_dir"] = str(FASHION_MNIST)
    raw["fetch"]["download"] = False
    # One model per path through dvc.yaml: mlp (a classifier on the fetched data), folder_cnn (on the folders stage's
    # PNGs); a file of the synth stage's output is the study's data. Every other params model goes through the same
    # train/evaluate/export templates and is trained, evaluated and exported on tiny data by tests/test_models.py
    # (logistic, linreg_numpy and linreg_module at their full recipes by tests/test_binary.py and
    # tests/test_regression.py); each template's deps by tests/test_stage_deps.py.
    raw["models"] = {name: model for name, model in raw["models"].items() if name in ("mlp", "folder_cnn")}
    raw["synth"].update(sequences=TINY_SEQUENCES, shapes=TINY_SHAPES)
    raw["folders"] = {"train_per_class": 10, "test_per_class": 3}
    folder_cnn = raw["models"]["folder_cnn"]
    folder_cnn["train"].update(epochs=1, val_size=20)
    folder_cnn["export"]["calibration_size"] = 20
    raw["models"]["mlp"]["args"] = {"hidden": [32]}
    raw["models"]["mlp"]["train"].update(epochs=2, batch_size=500, val_size=1000)
    # the README's gates are for the full recipes: the shrunk mlp is held to what this test expects of it, folder_cnn
    # (one epoch on 100 images) to nothing
    raw["models"]["mlp"]["gate"] = {"metric": "test_accuracy", "min": 0.75}
    folder_cnn["gate"] = None
    for study in study_names():
        raw[study] = shrunk_study(study)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(repo / "params.yaml")  # the shrunken profile is still valid
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    studies = pipeline["stages"]["study"]["foreach"]
    pipeline["stages"]["study"]["foreach"] = {DVC_STUDY: studies[DVC_STUDY]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


def raw_study_variants(repo: Path, study: str) -> list[str]:
    return list(yaml.safe_load((repo / "params.yaml").read_text())[study]["variants"])


def _onnx_accuracy(path: Path, raw_root: Path, batch_size: int) -> float:
    """Test accuracy of an ONNX classifier, read by torchvision's own Fashion-MNIST reader and onnxruntime, in
    batches of the export's batch_size (dynamic int8 scales activations per batch)."""
    test = torchvision.datasets.FashionMNIST(str(raw_root), train=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = test.data.unsqueeze(1).float().div(255).numpy()  # float32 division, as the model was fed
    logits = np.concatenate([session.run(None, {session.get_inputs()[0].name: pixels[i : i + batch_size]})[0]
                             for i in range(0, len(pixels), batch_size)])
    return float((logits.argmax(1) == test.targets.numpy()).mean())


@pytest.fixture(scope="session")  # not module: a pytest-xdist worker may run another file's tests in between
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the repo, shrunk (_shrink_params), after one `dvc repro`."""
    assert (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(), (
        "the end-to-end test uses the real Fashion-MNIST: run `make setup` (installs dataset-fashion-mnist)")
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    copy_repo(repo)
    _shrink_params(repo)
    dvc(repo, "repro")
    return repo


@pytest.mark.slow
def test_dvc_repro_runs_the_whole_pipeline(reproduced: Path, monkeypatch: pytest.MonkeyPatch):
    repo = reproduced
    metrics = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    shown = next(iter(metrics.values()))["data"]
    eval_metrics = shown["models/mlp/eval/metrics.json"]["data"]
    assert set(shown[f"studies/{DVC_STUDY}/metrics.json"]["data"]["variants"]) == \
        set(raw_study_variants(repo, DVC_STUDY))
    assert eval_metrics["test_accuracy"] > 0.75  # 2 epochs of a 32-unit MLP on the real data
    parity = json.loads((repo / "models/mlp/parity.json").read_text())
    assert parity["passed"] and parity["samples"] == 10_000
    assert (repo / "models/mlp/model.onnx").stat().st_size > 0
    plots = dvc(repo, "plots", "show", "--json").stdout
    assert "models/mlp/history.json" in plots and "models/mlp/eval/predictions.csv" in plots
    assert f"studies/{DVC_STUDY}/curves.csv" in plots
    synth_lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["synth"]
    assert synth_lock["outs"][0]["nfiles"] == 7 + 2 + 2 + 2 * TINY_SHAPES["count"]  # CSVs; graphs; series + spec;
    # images, masks
    # folder_cnn read the folders stage's PNGs: its class names, from the folder names, reach the ONNX metadata
    folder = repo / "data" / "folders" / "fashion_mnist"
    names = sorted(p.name for p in (folder / "train").iterdir())
    assert len(names) == 10 and len(list((folder / "test" / "Bag").glob("*.png"))) == 3
    props = {p.key: p.value for p in onnx.load(str(repo / "models/folder_cnn/model.onnx")).metadata_props}
    assert json.loads(props[CLASSES_KEY]) == names and props["dltorch.dataset"] == "fashion_mnist"
    assert json.loads((repo / "models/folder_cnn/parity.json").read_text())["passed"]

    # set, not only in the environment: an earlier test in this process may have set MLflow's URI globally
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    run_id = json.loads((repo / "models/mlp/run.json").read_text())["run_id"]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(eval_metrics["test_accuracy"])
    assert run.data.tags["dvc_stage"] == "export@mlp"
    assert (repo / "mlartifacts").is_dir()
    # The registry: version 1 of `mlp` is both candidate and champion, ranked by the test accuracy evaluate measured
    client = MlflowClient()
    champion = client.get_model_version_by_alias("mlp", "champion")
    assert champion.run_id == run_id and int(champion.version) == 1
    assert float(champion.tags["test_accuracy"]) == pytest.approx(eval_metrics["test_accuracy"])
    assert {alias: int(v) for alias, v in client.get_registered_model("mlp").aliases.items()} == \
        {"candidate": 1, "champion": 1}
    assert run.data.tags["registry.fp32.decision"] == "promoted"
    deploy = json.loads((repo / "models/mlp/deploy.json").read_text())
    assert (repo / "models/mlp/model.int8.onnx").stat().st_size > 0
    # the gate against accuracies measured here: torch's (evaluate) and the int8 file's through onnxruntime itself
    batch_size = load_params(repo / "params.yaml").model("mlp").export.batch_size
    int8_accuracy = _onnx_accuracy(repo / "models/mlp/model.int8.onnx", repo / "data/raw", batch_size)
    drop = eval_metrics["test_accuracy"] - int8_accuracy  # evaluate's accuracy is a float32 mean: 1e-6 apart
    assert deploy["int8"]["drop"] == pytest.approx(drop, abs=1e-6) and deploy["int8"]["accurate"] == (drop <= 0.005)
    # registered only if accurate and faster too (which holds on this machine is not the test's business)
    assert deploy["int8"]["passed"] == (deploy["int8"]["accurate"] and deploy["int8"]["faster"])
    int8_registered = "mlp-int8" in {m.name for m in client.search_registered_models()}
    assert int8_registered == deploy["int8"]["passed"], deploy["int8"]["reason"]
    artifacts = {a.path for a in MlflowClient().list_artifacts(run_id, "evaluate")}
    assert "evaluate/confusion.png" in artifacts
    client = MlflowClient()
    experiment = client.get_experiment_by_name("dltorch").experiment_id
    (parent,) = client.search_runs([experiment], f"tags.study = '{DVC_STUDY}' and "
                                                 f"tags.dvc_stage = 'study@{DVC_STUDY}'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.data.tags["variant"] for c in children} == set(raw_study_variants(repo, DVC_STUDY))

    # Python's byte code beside a dep (any import from this checkout writes it; a fresh clone has none) is not a dep:
    # the stages stay up to date
    cache = repo / "src" / "dltorch" / "models" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "mlp.cpython-311.pyc").write_bytes(b"\x00" * 16)
    again = dvc(repo, "repro")
    assert "Data and pipelines are up to date" in again.stdout


@pytest.mark.slow
def test_dvc_remote_round_trip_is_byte_identical(reproduced: Path, tmp_path: Path):
    before = digests(reproduced, ("data/raw", "models/mlp"))
    assert "models/mlp/model.onnx" in before and "data/raw/FashionMNIST/raw/train-images-idx3-ubyte" in before
    dvc(reproduced, "remote", "add", "--local", "-f", "-d", "scratch", str(tmp_path / "remote"))
    dvc(reproduced, "push", *MLP_STAGES)
    shutil.rmtree(reproduced / ".dvc" / "cache")
    shutil.rmtree(reproduced / "data" / "raw")
    shutil.rmtree(reproduced / "models" / "mlp")
    dvc(reproduced, "pull", *MLP_STAGES)
    assert digests(reproduced, ("data/raw", "models/mlp")) == before
    assert "up to date" in dvc(reproduced, "status", *MLP_STAGES).stdout


@pytest.mark.slow
def test_experiments_queued_two_at_a_time_land_in_the_same_store(reproduced: Path):
    # the mlp's training only (an experiment of one stage; without a target it reproduces every stage): a learning
    # rate is chosen on the validation split, whose accuracy the train stage logs per epoch (the test set judges the
    # chosen model once). Training only, not evaluate@mlp too: two stage processes fewer, 20 CPU-seconds
    experiments = {"lr-1e-2": "0.01", "lr-5e-4": "0.0005"}
    for name, lr in experiments.items():
        dvc(reproduced, "exp", "run", "train@mlp", "--queue", "-n", name, "-S", f"models.mlp.train.lr={lr}")
    # both at once (they must not collide on the store); --run-all returns when the queue is done
    dvc(reproduced, "exp", "run", "--run-all", "-j", "2", timeout=300)
    status = dvc(reproduced, "queue", "status").stdout
    assert status.count("Success") == len(experiments) and "Failed" not in status, status
    shown = json.loads(dvc(reproduced, "exp", "show", "--json").stdout)
    assert set(experiments) <= set(json.dumps(shown).replace('"', " ").split())
    client = MlflowClient(tracking_uri=f"sqlite:///{reproduced / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dltorch").experiment_id])
    tagged = {run.data.tags.get("dvc_exp"): run for run in runs}
    for name, lr in experiments.items():
        assert name in tagged, f"no MLflow run tagged dvc_exp={name}: {sorted(map(str, tagged))}"
        assert tagged[name].data.params["train.lr"] == lr and "val_accuracy" in tagged[name].data.metrics
