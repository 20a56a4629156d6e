"""The one training loop: repeatable, resumable, and every optimizer and schedule by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dltorch import augment, engine
from dltorch.bundle import build_model
from dltorch.config import TrainConfig
from dltorch.errors import DeviceError
from dltorch.tasks import classification
from tests.helpers import assert_same_weights, interrupt_and_resume


def _setup(raw_root: Path, cfg: TrainConfig):
    train, val = classification.load_train_val(raw_root, "fashion_mnist", cfg.val_size, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model("mlp", {"hidden": [16], "dropout": 0.2}, "classification",
                        classification.model_inputs(train, "fashion_mnist"))
    return model, train, val


def _fit(raw_root: Path, cfg: TrainConfig, checkpoint: Path, on_epoch=None, resume=None):
    model, train, val = _setup(raw_root, cfg)
    objective = engine.Objective(classification.TASK.make_loss(cfg.loss), classification.batch_scores)
    history = engine.fit(model, objective, train, val, cfg, engine.CheckpointSpec(checkpoint, "fp", resume), on_epoch)
    return model, history


def test_training_learns_and_is_repeatable(raw_root, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.01, val_size=40)
    first, history = _fit(raw_root, cfg, tmp_path / "a.pt")
    second, _ = _fit(raw_root, cfg, tmp_path / "b.pt")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.5  # tiny data is made to be learnable; chance is 0.1
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_after_interruption_matches_an_uninterrupted_run(raw_root, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.01, val_size=40)
    run = interrupt_and_resume(lambda checkpoint, **kw: _fit(raw_root, cfg, checkpoint, **kw), tmp_path)
    assert run.state["epoch"] == 1
    assert [row["epoch"] for row in run.history] == [1, 2, 3]
    assert run.history[-1]["train_loss"] == run.full_history[-1]["train_loss"]
    assert_same_weights(run.uninterrupted, run.resumed)


def test_checkpoint_for_other_params_or_a_torn_file_is_ignored(raw_root, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=32, val_size=40)
    checkpoint = tmp_path / "ckpt.pt"
    _fit(raw_root, cfg, checkpoint)
    assert engine.load_checkpoint(checkpoint, "fp") is not None
    assert engine.load_checkpoint(checkpoint, "other-fingerprint") is None
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert engine.load_checkpoint(checkpoint, "fp") is None


def test_checkpoint_loads_with_weights_only(raw_root, tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    _fit(raw_root, TrainConfig(epochs=1, batch_size=32, val_size=40), checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "rng", "history"} <= set(state)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adagrad", "rmsprop"])
def test_every_optimizer_by_name_takes_a_step(optimizer):
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, momentum=0.5 if optimizer in ("sgd", "rmsprop") else 0.0)
    weight = torch.nn.Parameter(torch.ones(3))
    opt = engine.make_optimizer([weight], cfg)
    (weight**2).sum().backward()
    opt.step()
    assert torch.all(weight < 1)


@pytest.mark.parametrize(("scheduler", "last_factor"), [("none", 1.0), ("step", 0.001), ("cosine", 0.0)])
def test_schedulers_by_name(scheduler, last_factor):
    cfg = TrainConfig(epochs=3, scheduler=scheduler, lr=1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = engine.make_scheduler(opt, cfg, steps_per_epoch=10)
    for _ in range(30):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(last_factor, abs=1e-6)


def test_a_warmup_that_rounds_up_to_every_step_still_schedules():
    # 1.6 warm-up epochs of one step each round to 2 = all the steps: the cosine has no step of its own left
    cfg = TrainConfig(epochs=2, scheduler="cosine", warmup_epochs=1.6, lr=1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = engine.make_scheduler(opt, cfg, steps_per_epoch=1)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(2):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    # by hand: the linear ramp starts at 1/2 warm-up steps = 0.5, climbs by 0.25 a step, and the cosine takes over
    # at its first step, the full lr
    assert seen == pytest.approx([0.5, 0.75, 1.0])


def test_onecycle_peaks_at_lr():
    cfg = TrainConfig(epochs=2, scheduler="onecycle", lr=0.5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = engine.make_scheduler(opt, cfg, steps_per_epoch=50)
    seen = []
    for _ in range(99):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert max(seen) == pytest.approx(0.5, rel=1e-3) and seen[-1] < 0.01


def test_batches_cover_every_sample_once(raw_root):
    train, _ = classification.load_train_val(raw_root, "fashion_mnist", 0, 0)
    seen = torch.cat([b.targets for b in engine.batches(train, 7, torch.Generator().manual_seed(1))])
    assert len(seen) == len(train) and sorted(seen.tolist()) == sorted(train.targets.tolist())


def test_early_stopping_stops_when_validation_stalls(raw_root, tmp_path):
    # A learning rate this small leaves the validation accuracy where it started: no epoch beats epoch 1.
    cfg = TrainConfig(epochs=10, batch_size=32, optimizer="sgd", lr=1e-12, val_size=40, early_stopping_patience=2)
    model, train, val = _setup(raw_root, cfg)
    objective = engine.Objective(classification.TASK.make_loss("cross_entropy"), classification.batch_scores,
                                 classification.TASK.monitor)
    history = engine.fit(model, objective, train, val, cfg, engine.CheckpointSpec(tmp_path / "c.pt", "fp"))
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_the_best_validation_epoch_is_the_one_kept(raw_root, tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=16, optimizer="sgd", lr=0.5, momentum=0.9, val_size=40)
    model, train, val = _setup(raw_root, cfg)
    snapshots = {}

    def snapshot(record):
        snapshots[record["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    objective = engine.Objective(classification.TASK.make_loss("cross_entropy"), classification.batch_scores,
                                 ("val_loss", "min"))
    history = engine.fit(model, objective, train, val, cfg, engine.CheckpointSpec(tmp_path / "c.pt", "fp"), snapshot)
    best = min(history, key=lambda row: row["val_loss"])["epoch"]
    assert best != history[-1]["epoch"], "this recipe overshoots, so the best epoch is not the last"
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[best][name])


def test_augmentation_is_off_by_default_and_changes_inputs_when_on(raw_root, tmp_path):
    seen: list[torch.Tensor] = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if self.training:
                seen.append(x.detach().clone())
            return self.inner(x)

    for augmentation, expect_changed in (({}, False), ({"crop_padding": 2, "hflip": True}, True)):
        seen.clear()
        # batches smaller than the set: a batch holding the whole set is not shuffled (the course's full batch)
        cfg = TrainConfig(epochs=1, batch_size=100, val_size=0, augment=augmentation)
        model, train, _ = _setup(raw_root, cfg)
        objective = engine.Objective(classification.TASK.make_loss("cross_entropy"), classification.batch_scores)
        engine.fit(Spy(model), objective, train, None, cfg, engine.CheckpointSpec(tmp_path / "c.pt", "fp"))
        order = torch.randperm(len(train), generator=engine.epoch_generator(cfg.seed, 1))
        unchanged = torch.equal(seen[0], train.inputs[order[: cfg.batch_size]])
        assert unchanged != expect_changed


def test_random_crop_shifts_each_image_within_the_padding():
    images = torch.rand(64, 1, 28, 28)
    cropped = augment.random_crop(images, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    shifts = set()
    for index in range(len(images)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(cropped[index], padded[index, :, dy : dy + 28, dx : dx + 28])]
        assert matches, f"image {index} is not a crop of its padded self"
        shifts.add(matches[0])
    assert len(shifts) > 5  # offsets differ per image


def test_random_hflip_flips_about_half_of_the_images():
    images = torch.rand(200, 1, 28, 28)
    flipped = augment.random_hflip(images, torch.Generator().manual_seed(0))
    is_flipped = torch.tensor([torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images, strict=True)])
    is_same = torch.tensor([torch.equal(f, i) for f, i in zip(flipped, images, strict=True)])
    assert torch.all(is_flipped ^ is_same) and 60 < int(is_flipped.sum()) < 140


def test_warmup_ramps_linearly_then_hands_over_to_the_schedule():
    cfg = TrainConfig(epochs=4, scheduler="cosine", lr=1.0, warmup_epochs=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = engine.make_scheduler(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(0.91)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10], strict=False))


@pytest.mark.parametrize(("precision", "expected"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_dtype_of_the_forward_pass_on_cpu(raw_root, tmp_path, precision, expected):
    dtypes: list[torch.dtype] = []
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.01, val_size=40, precision=precision, device="cpu")
    model, train, val = _setup(raw_root, cfg)
    first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype) if _m.training else None)
    objective = engine.Objective(classification.TASK.make_loss(cfg.loss), classification.batch_scores)
    history = engine.fit(model, objective, train, val, cfg, engine.CheckpointSpec(tmp_path / "p.pt", "fp"))
    assert set(dtypes) == {expected}
    assert next(model.parameters()).dtype == torch.float32  # autocast keeps fp32 master weights
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_a_process_that_does_not_write_trains_alike_but_leaves_no_checkpoint(raw_root, tmp_path):
    # the other ranks of a torchrun group: the same epochs, but rank 0 alone writes and reports them
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.01, val_size=40)
    model, train, val = _setup(raw_root, cfg)
    reported = []
    objective = engine.Objective(classification.TASK.make_loss(cfg.loss), classification.batch_scores)
    silent = engine.CheckpointSpec(tmp_path / "c.pt", "fp", writes=False)
    history = engine.fit(model, objective, train, val, cfg, silent, reported.append)
    _, writer_history = _fit(raw_root, cfg, tmp_path / "w.pt")
    assert not (tmp_path / "c.pt").exists() and reported == []
    assert [row["train_loss"] for row in history] == [row["train_loss"] for row in writer_history]
    assert (tmp_path / "w.pt").exists()


def test_asking_for_cuda_without_a_cuda_device_is_a_device_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="train.device is 'cuda' but no CUDA device is available"):
        engine.select_device("cuda")
    assert engine.select_device("auto") == torch.device("cpu")


def test_inference_runs_an_image_model_in_channels_last_and_leaves_it_trainable():
    """predict (evaluate's outputs, the export's torch oracle) in INFERENCE_BATCH batches in channels-last gives the
    plain forward's outputs, for more inputs than one batch; the model trains and loads state afterwards."""
    torch.manual_seed(0)
    model = build_model("lenet5", {}, "classification", {"in_shape": (1, 28, 28), "num_outputs": 10,
                                                         "mean": [0.3], "std": [0.3], "classes": list("abcdefghij")})
    inputs = torch.rand(engine.INFERENCE_BATCH + 5, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(inputs)
    outputs = engine.predict(model, inputs, torch.device("cpu"))
    torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=1e-5)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})  # no inference tensor inside
    model.train()(inputs[:8]).sum().backward()
    assert all(w.grad is not None for w in convs)
