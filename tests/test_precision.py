"""`precision: auto` trains in whichever precision this machine runs the model's step faster, decided once per
machine and model shape, without disturbing the run it decides for."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from dltorch import engine, precision
from dltorch.bundle import build_model
from dltorch.config import TrainConfig
from dltorch.tasks import classification
from tests.test_engine import _setup

MLP = ("mlp", {"hidden": [16], "dropout": 0.2})


def _fit_recording_dtypes(raw_root, tmp_path, cfg: TrainConfig, arch: tuple[str, dict] = MLP):
    _, train, val = _setup(raw_root, cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(*arch, "classification", classification.model_inputs(train, "fashion_mnist"))
    dtypes: set[torch.dtype] = set()
    first_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    first_linear.register_forward_hook(lambda m, _i, out: dtypes.add(out.dtype) if m.training else None)
    objective = engine.Objective(classification.TASK.make_loss(cfg.loss), classification.batch_scores)
    history = engine.fit(model, objective, train, val, cfg, engine.CheckpointSpec(tmp_path / "c.pt", "fp"))
    return history, dtypes


def _timed(fp32_ms: float, bf16_ms: float, calls: list | None = None):
    def fake(step, model):
        if calls is not None:
            calls.append(tuple(p.shape for p in model.parameters()))
        return {"fp32": fp32_ms, "bf16": bf16_ms}
    return fake


@pytest.mark.parametrize(("fp32_ms", "bf16_ms", "chosen", "dtype"), [
    (10.0, 5.0, "bf16", torch.bfloat16),   # twice as fast: bf16
    (10.0, 9.5, "fp32", torch.float32),    # 5% is within noise: fp32, the exact one
    (5.0, 10.0, "fp32", torch.float32),    # the Xeon's case: bf16 slower
])
def test_auto_trains_in_the_precision_measured_faster(raw_root, tmp_path, monkeypatch, fp32_ms, bf16_ms, chosen,
                                                       dtype):
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "measure", _timed(fp32_ms, bf16_ms))
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, val_size=40, precision="auto", device="cpu")
    history, dtypes = _fit_recording_dtypes(raw_root, tmp_path, cfg)
    assert dtypes == {dtype}
    assert history[-1]["precision"] == chosen


def _others_using(monkeypatch: pytest.MonkeyPatch, cores: float) -> None:
    """Other processes used `cores` while the verdict was measured (precision.OthersCpu's reading)."""
    monkeypatch.setattr(precision.OthersCpu, "cores", lambda self: cores)


def test_the_verdict_is_measured_once_per_machine_and_model_shape(raw_root, tmp_path, monkeypatch):
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    _others_using(monkeypatch, 0.0)  # a quiet machine (pytest-xdist's is not)
    calls: list = []
    monkeypatch.setattr(precision, "measure", _timed(10.0, 5.0, calls))
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, val_size=40, precision="auto", device="cpu")
    _fit_recording_dtypes(raw_root, tmp_path, cfg)
    history, dtypes = _fit_recording_dtypes(raw_root, tmp_path, cfg)  # a rerun reads the cache
    assert len(calls) == 1 and dtypes == {torch.bfloat16}
    _fit_recording_dtypes(raw_root, tmp_path, cfg, ("mlp", {"hidden": [24], "dropout": 0.2}))  # another shape

    assert len(calls) == 2
    cached = precision.read_json(tmp_path / "cache" / "precision.json")
    machine = precision.machine(torch.device("cpu"))
    assert len(cached) == 2 and all(key.startswith(machine + "|") for key in cached)
    assert {entry["precision"] for entry in cached.values()} == {"bf16"}


def test_measuring_leaves_the_run_as_it_would_have_been(raw_root, tmp_path, monkeypatch):
    # the real measurement (steps in both precisions of a model with dropout and BatchNorm), with the verdict forced
    # to fp32: the run must equal a plain fp32 run, batch for batch (the probe touches neither the model's weights
    # and running statistics nor the random stream)
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "decide", lambda fp32_ms, bf16_ms: "fp32")
    auto = TrainConfig(epochs=2, batch_size=32, lr=0.01, val_size=40, precision="auto", device="cpu")
    net = ("resnet", {"widths": [4, 8], "blocks": [1, 1], "dropout": 0.2})
    measured, _ = _fit_recording_dtypes(raw_root, tmp_path, auto, net)
    plain, _ = _fit_recording_dtypes(raw_root, tmp_path, auto.model_copy(update={"precision": "fp32"}), net)
    assert [row["train_loss"] for row in measured] == [row["train_loss"] for row in plain]
    assert [row["val_loss"] for row in measured] == [row["val_loss"] for row in plain]


def test_an_unreadable_cache_is_measured_over_not_fatal(raw_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "precision.json").write_text("{not json")
    monkeypatch.setenv(precision.CACHE_ENV, str(cache))
    _others_using(monkeypatch, 0.0)
    calls: list = []
    monkeypatch.setattr(precision, "measure", _timed(5.0, 10.0, calls))
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, val_size=40, precision="auto", device="cpu")
    history, _ = _fit_recording_dtypes(raw_root, tmp_path, cfg)
    assert len(calls) == 1 and history[-1]["precision"] == "fp32"
    assert len(precision.read_json(cache / "precision.json")) == 1


def test_a_verdict_measured_on_busy_cores_decides_its_run_but_is_not_cached(raw_root, tmp_path, monkeypatch):
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    _others_using(monkeypatch, 1.0)
    calls: list = []
    monkeypatch.setattr(precision, "measure", _timed(10.0, 5.0, calls))
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, val_size=40, precision="auto", device="cpu")
    _, dtypes = _fit_recording_dtypes(raw_root, tmp_path, cfg)
    assert dtypes == {torch.bfloat16}  # the run trains in what was measured
    assert not (tmp_path / "cache" / "precision.json").exists()
    _others_using(monkeypatch, 0.0)
    _fit_recording_dtypes(raw_root, tmp_path, cfg)
    assert len(calls) == 2 and len(precision.read_json(tmp_path / "cache" / "precision.json")) == 1


def test_other_processes_cpu_time_is_seen():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the spinner started
        watch = precision.OthersCpu()
        time.sleep(1.0)
        assert watch.cores() > 0.5  # the spinner's core, and whatever else runs (pytest-xdist's other worker)
    finally:
        spinner.kill()
