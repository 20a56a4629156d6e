"""The GAN's parts that stand on their own: the DCGAN's shapes, its adversarial step inside the engine's one loop
(both optimizers step, the checkpoint carries both, a resumed run ends identical), and the Fréchet distance against
hand-computed and scipy oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from dltorch import distributed, engine
from dltorch.config import TrainConfig
from dltorch.data.tensors import TensorData
from dltorch.errors import ParamsError
from dltorch.models import create
from dltorch.models.gan import adversarial_step, optimizers
from dltorch.tasks.gan import frechet_distance, frechet_distance_of, gaussian
from tests.helpers import assert_same_weights, interrupt_and_resume

CFG = TrainConfig(epochs=3, batch_size=16, lr=2e-4, val_size=0, seed=0)


def _gan(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create("gan", {"noise": 8, "width": 4}, in_shape=(1, 28, 28), num_outputs=1)


def _images(count: int = 48) -> TensorData:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(count, 1, 28, 28, generator=generator)
    return TensorData(images, torch.zeros(count, dtype=torch.long))  # labels: unused by the adversarial step


def _objective() -> engine.Objective:
    return engine.Objective(torch.nn.BCEWithLogitsLoss(), lambda outputs, targets: {}, ("epoch", "max"),
                            step=adversarial_step, optimizers=optimizers)


def _fit(checkpoint: Path, on_epoch=None, resume=None):
    model = _gan()
    history = engine.fit(model, _objective(), _images(), None, CFG, engine.CheckpointSpec(checkpoint, "fp", resume),
                         on_epoch)
    return model, history


def test_generator_makes_images_from_noise_and_the_discriminator_one_logit_each():
    model = _gan()
    images = model(torch.randn(3, 8))
    assert images.shape == (3, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert model.discriminator(images).shape == (3, 1)


def test_both_players_learn_in_the_one_loop_and_the_checkpoint_holds_both_optimizers(tmp_path: Path):
    start = {name: value.detach().clone() for name, value in _gan().named_parameters()}
    model, history = _fit(tmp_path / "ckpt.pt")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(np.isfinite(row[key]) for row in history for key in ("train_loss", "train_d_loss", "train_g_loss"))
    assert history[0]["train_loss"] == history[0]["train_g_loss"]  # the step reports the generator's loss
    moved = {name.split(".")[0] for name, value in model.named_parameters() if not torch.equal(value, start[name])}
    assert moved == {"generator", "discriminator"}
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert set(state["optimizer"]) == set(state["lr_scheduler"]) == {"generator", "discriminator"}
    assert state["optimizer"]["generator"]["param_groups"][0]["betas"] == (0.5, 0.999)


def test_an_interrupted_gan_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path):
    run = interrupt_and_resume(_fit, tmp_path)
    assert run.state["epoch"] == 1 and [row["epoch"] for row in run.history] == [1, 2, 3]
    assert run.history == [{**row, "seconds": mine["seconds"], "samples_per_second": mine["samples_per_second"]}
                           for row, mine in zip(run.full_history, run.history, strict=True)]
    assert_same_weights(run.uninterrupted, run.resumed)


def test_a_checkpoint_of_other_optimizers_is_not_resumed(tmp_path: Path):
    single = engine.Objective(torch.nn.MSELoss(), lambda outputs, targets: {})
    net = torch.nn.Linear(2, 1)
    data = TensorData(torch.randn(8, 2), torch.randn(8, 1))
    engine.fit(net, single, data, None, CFG.model_copy(update={"epochs": 1}), engine.CheckpointSpec(tmp_path / "a.pt",
                                                                                                    "fp"))
    foreign = engine.load_checkpoint(tmp_path / "a.pt", "fp")
    _, history = _fit(tmp_path / "b.pt", resume=foreign)  # one optimizer "model": the GAN starts afresh
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_a_task_step_refuses_ddp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ParamsError, match="train.distributed.nproc: a task with its own training step"):
        _fit(tmp_path / "ckpt.pt")


def test_frechet_distance_of_two_1d_gaussians_by_hand():
    # N(0, 1) against N(1, 4): (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    first = (torch.tensor([0.0], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64))
    second = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64))
    assert frechet_distance(first, second) == pytest.approx(2.0, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_and_is_zero_for_one_set():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(500, 5, generator=generator, dtype=torch.float64) @ torch.randn(5, 5, generator=generator,
                                                                                    dtype=torch.float64)
    b = torch.randn(400, 5, generator=generator, dtype=torch.float64) * 2 + 1
    mean_a, mean_b = a.numpy().mean(0), b.numpy().mean(0)
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b).real
    oracle = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)
    assert frechet_distance_of(a, b) == pytest.approx(oracle, rel=1e-9)
    assert frechet_distance_of(a, a) == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(gaussian(a)[1], torch.from_numpy(cov_a))
