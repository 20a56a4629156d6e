"""The one training loop: every model and task goes through `fit`.

Small named steps in the style of the torchvision references: `train_one_epoch`, `evaluate`, and
checkpoints that are plain dicts of state, written each epoch so an interrupted run resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dltorch import distributed, precision
from dltorch.augment import augment_batch
from dltorch.config import TrainConfig
from dltorch.data.streamed import StreamedData
from dltorch.data.tensors import TensorData
from dltorch.errors import DeviceError, ParamsError
from dltorch.io import save_torch

if TYPE_CHECKING:
    from dltorch.tasks import Task

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
EpochCallback = Callable[[dict[str, Any]], None]
StepCallback = Callable[[float, float], None]  # (batch loss, learning rate of the step)
# Training data: in-memory tensors (sliced into batches, augmented a whole batch at a time), or samples a task
# streams through a DataLoader because each needs its own random transform (a segmentation image with its mask).
TrainData = TensorData | StreamedData
# Inference (validation, evaluate's predictions, the export's torch oracle) runs in batches this large, images in
# channels-last: on a 2-core EPYC (Zen 4, 1 MB L2 per core) the CNNs' 10,000 test images took 3.1-4.4 s so, against
# 8-19 s in NCHW batches of 1000, whose activations spill out of the caches.
INFERENCE_BATCH = 128


@dataclass(frozen=True)
class Batch:
    """One step's share of a batch: inputs and targets on the model's device, and the weight of its loss (this
    rank's share of the global batch under DDP, else 1)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    weight: float


# A training step: updates the model through the optimization's optimizers; returns the batch's loss (a float, the
# mean per sample) and its scores summed over the batch's samples.
StepFn = Callable[["Objective", nn.Module, Batch, "Optimization", TrainConfig], tuple[float, dict[str, float]]]
# What a task's optimizers are: name -> optimizer over the model's parameters (a GAN's generator and discriminator)
OptimizersFn = Callable[[nn.Module, TrainConfig], dict[str, torch.optim.Optimizer]]


def supervised_step(objective: Objective, model: nn.Module, batch: Batch, optimization: Optimization,
                    cfg: TrainConfig) -> tuple[float, dict[str, float]]:
    """Every task's step but a GAN's: forward, the loss against the targets, backward, one optimizer step."""
    optimizer = optimization.optimizer
    with precision.autocast(batch.inputs.device, cfg.precision):
        outputs = model(batch.inputs)
        loss = objective.loss_fn(outputs, batch.targets)
    optimizer.zero_grad(set_to_none=True)
    (loss * batch.weight).backward()
    if cfg.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.item(), objective.score_fn(outputs.detach(), batch.targets)


@dataclass(frozen=True)
class Objective:
    """What a task trains for: its loss, its per-batch scores (summed over samples), and the validation score
    that picks the best epoch and drives early stopping (name, "min" or "max"). A task with its own training step
    (a GAN: two optimizers, two losses) supplies `step` and the `optimizers` it steps; by default one optimizer from
    the train settings and supervised_step."""

    loss_fn: LossFn
    score_fn: ScoreFn
    monitor: tuple[str, str] = ("val_loss", "min")
    step: StepFn = supervised_step
    optimizers: OptimizersFn | None = None

    @classmethod
    def for_task(cls, task: Task, cfg: TrainConfig) -> Objective:
        """A task's loss, scores and monitor; its own training step and optimizers where it has them (a GAN)."""
        step = task.step if task.step is not None else supervised_step
        return cls(task.make_loss(cfg.loss, cfg.label_smoothing), task.batch_scores, task.monitor, step,
                   task.optimizers)

    def make_optimizers(self, model: nn.Module, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        if self.optimizers is None:
            return {"model": make_optimizer(model.parameters(), cfg)}
        return self.optimizers(model, cfg)


@dataclass(frozen=True)
class CheckpointSpec:
    """Where a run persists itself after every epoch, and what it resumes from.

    `fingerprint` identifies what the run trains on (a checkpoint with another one is not resumed), `extra` rides
    along (e.g. the tracking run id), `resume` is a loaded checkpoint, and `writes` says whether this process
    writes (rank 0 alone under torchrun: the door knows, from distributed.process_group).
    """

    path: Path
    fingerprint: str
    resume: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    writes: bool = True


@dataclass(frozen=True)
class Optimization:
    """The optimizers, by name, each with its per-batch learning-rate schedule: what one step updates. Most tasks
    have one; the first is the one whose learning rate is reported."""

    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return next(iter(self.optimizers.values()))

    def step_schedules(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    name, lr, wd = cfg.optimizer, cfg.lr, cfg.weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    raise ValueError(f"unknown optimizer '{name}'")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Schedules step once per batch; an optional linear warm-up precedes the main schedule."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    main_steps = total - warmup
    if cfg.scheduler == "none":
        main = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    elif cfg.scheduler == "step":
        main = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, main_steps // 3), gamma=0.1)
    elif cfg.scheduler == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, main_steps))
    elif cfg.scheduler == "onecycle":
        # One-cycle has its own warm-up phase (pct_start); a separate warm-up would be redundant.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    else:
        raise ValueError(f"unknown scheduler '{cfg.scheduler}'")
    if warmup == 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def training_step_probe(objective: Objective, batch: Batch, cfg: TrainConfig) -> precision.Step:
    """The task's own training step (forward, backward, its optimizers' steps) on one batch in a given precision:
    what `auto` times. The probe model gets optimizers of its own, so the run's are never touched."""
    optimizations: dict[int, Optimization] = {}

    def step(probe: nn.Module, chosen: str) -> None:
        if id(probe) not in optimizations:
            optimizations[id(probe)] = Optimization(objective.make_optimizers(probe, cfg), {})
        objective.step(objective, probe, batch, optimizations[id(probe)], cfg.model_copy(update={"precision": chosen}))

    return step


def resolve_precision(model: nn.Module, objective: Objective, train: TrainData, cfg: TrainConfig,
                      device: torch.device) -> str:
    """cfg.precision, with "auto" decided by timing the model's own step in fp32 and bf16 (dltorch.precision),
    once per machine and model shape. Under torchrun every rank trains in rank 0's choice."""
    if cfg.precision != "auto":
        return cfg.precision
    batch = next(batches(train, cfg.batch_size, epoch_generator(cfg.seed, 0)))
    inputs, targets = batch.inputs.to(device, memory_format=memory_format(batch.inputs)), batch.targets.to(device)
    step = training_step_probe(objective, Batch(inputs, targets, 1.0), cfg)
    verdict = precision.resolve(device, model, tuple(inputs.shape), step)
    chosen = distributed.agree(verdict.precision)
    if distributed.is_main():
        tqdm.write(verdict.describe())
    return chosen


def to_device(data: TrainData, device: torch.device) -> TrainData:
    """On CUDA the whole set moves once, through pinned memory; on CPU it stays where it is. Streamed data moves
    batch by batch."""
    if device.type != "cuda" or isinstance(data, StreamedData):
        return data
    return TensorData(data.inputs.pin_memory().to(device, non_blocking=True),
                      data.targets.pin_memory().to(device, non_blocking=True))


def memory_format(inputs: torch.Tensor) -> torch.memory_format:
    """Image batches train in channels-last: oneDNN's convolutions run markedly faster in it on CPU."""
    return torch.channels_last if inputs.ndim == 4 else torch.contiguous_format


def _sample_ndim(data: TrainData) -> int:
    """The rank of a batch of the data's inputs."""
    return data.inputs.ndim if isinstance(data, TensorData) else 1 + len(data.sample_shape)


def batches(data: TrainData, batch_size: int, generator: torch.Generator | None = None,
            fresh: bool = False) -> Iterator[TensorData]:
    """Slices of in-memory tensors, shuffled when a generator is given; or the streamed data's shuffled batches.
    `fresh`: as many batches, each the head of a new permutation (rows may recur within an epoch), as the course's
    `next(iter(DataLoader(..., shuffle=True)))` draws a fresh random batch every step."""
    if fresh:
        if isinstance(data, StreamedData) or generator is None:
            raise ValueError("fresh batches are drawn from in-memory data with the epoch's generator")
        for _ in range(0, len(data), batch_size):
            yield data.subset(torch.randperm(len(data), generator=generator)[:batch_size].to(data.inputs.device))
        return
    if isinstance(data, StreamedData):
        if generator is None:
            raise ValueError("streamed data is only drawn shuffled, for training: pass the epoch's generator")
        yield from data.batches(batch_size, generator)
        return
    # A batch holding the whole set is the same set in any order: shuffling it would only change the rounding of its
    # loss, so the full-batch lessons sum their rows in the course's order.
    shuffle = generator is not None and batch_size < len(data)
    order = torch.randperm(len(data), generator=generator).to(data.inputs.device) if shuffle else None
    for start in range(0, len(data), batch_size):
        if order is None:
            yield TensorData(data.inputs[start : start + batch_size], data.targets[start : start + batch_size])
        else:
            yield data.subset(order[start : start + batch_size])


def train_one_epoch(model: nn.Module, objective: Objective, optimization: Optimization, data: TrainData,
                    cfg: TrainConfig, epoch: int, on_step: StepCallback | None = None) -> dict[str, float]:
    """One pass over `data` in the epoch's order (a function of cfg.seed and epoch), in batches of
    cfg.batch_size, on the device the model is on; returns the mean loss and scores per sample."""
    model.train()
    device = next(model.parameters()).device
    generator = epoch_generator(cfg.seed, epoch)
    totals: dict[str, float] = {"loss": 0.0, "samples": 0.0}  # samples: fresh batches may see more rows than the set
    quiet = None if distributed.is_main() else True  # a bar on rank 0's terminal; none in logs
    # streamed samples come augmented, each with its target (a mask turns with its image): never a second time here
    augment = isinstance(data, TensorData) and (cfg.augment.crop_padding or cfg.augment.hflip)
    with tqdm(total=len(data), desc=f"epoch {epoch}/{cfg.epochs}", unit="img", unit_scale=True, mininterval=1.0,
              leave=False, disable=quiet) as bar:
        for batch in batches(data, cfg.batch_size, generator, fresh=cfg.sampling == "fresh_batches"):
            inputs, targets = batch.inputs, batch.targets
            if augment:
                # augment the global batch, then shard: every rank draws the same random numbers
                inputs = augment_batch(inputs, cfg.augment.crop_padding, cfg.augment.hflip, generator)
            inputs, targets, weight = distributed.shard(inputs, targets)
            inputs, targets = inputs.to(device, memory_format=memory_format(inputs)), targets.to(device)
            loss, scores = objective.step(objective, model, Batch(inputs, targets, weight), optimization, cfg)
            if on_step is not None:  # studies watch single steps: their loss and the schedule's learning rate
                on_step(loss, optimization.optimizer.param_groups[0]["lr"])
            optimization.step_schedules()
            _accumulate(totals, loss * len(targets), scores)
            totals["samples"] += len(targets)
            bar.update(len(batch.targets))
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    summed = distributed.sum_across_ranks(totals)
    samples = summed.pop("samples")
    return {name: value / samples for name, value in summed.items()}


def evaluate(
    model: nn.Module, loss_fn: LossFn, score_fn: ScoreFn, data: TensorData, batch_size: int, device: torch.device
) -> dict[str, float]:
    layout = _inference_layout(model, data.inputs)
    totals: dict[str, float] = {"loss": 0.0}
    with torch.inference_mode():
        for batch in batches(data, batch_size):
            inputs, targets = batch.inputs.to(device, memory_format=layout), batch.targets.to(device)
            outputs = model(inputs)
            _accumulate(totals, loss_fn(outputs, targets).item() * len(targets), score_fn(outputs, targets))
    return {name: value / len(data) for name, value in totals.items()}


def predict(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The model's output on every input (its first output, where it returns a tuple)."""
    return predict_outputs(model, inputs, device)[0]


def predict_outputs(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every output of the model (a tuple, or one tensor), over all inputs in INFERENCE_BATCH batches, on the CPU."""
    layout = _inference_layout(model, inputs)
    with torch.inference_mode():
        runs = [model(inputs[i : i + INFERENCE_BATCH].to(device, memory_format=layout))
                for i in range(0, len(inputs), INFERENCE_BATCH)]
    runs = [run if isinstance(run, tuple) else (run,) for run in runs]
    return [torch.cat([part.cpu() for part in parts]) for parts in zip(*runs, strict=True)]


def _inference_layout(model: nn.Module, inputs: torch.Tensor) -> torch.memory_format:
    """Puts the model in eval mode and, for image inputs, its weights in channels-last as training has them: the
    speed-up of channels-last needs both the weights and the batch in it. Outside inference mode, so that the
    converted weights stay ordinary tensors the model can go on training and loading state into."""
    model.eval()
    layout = memory_format(inputs)
    if layout == torch.channels_last:
        model.to(memory_format=layout)
    return layout


def _accumulate(totals: dict[str, float], loss_sum: float, scores: dict[str, float]) -> None:
    totals["loss"] += loss_sum
    for name, value in scores.items():
        totals[name] = totals.get(name, 0.0) + value


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None when absent, unreadable or written for other params/data."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: start over rather than crash
        log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it was written for other params or data", path)
        return None
    return state


@dataclass
class Progress:
    """What a checkpoint must carry besides the model and optimizer so a resumed run ends identically."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def improve(self, record: dict[str, Any], monitor: str, mode: str, model: nn.Module) -> None:
        score = record.get(monitor)
        if score is None:  # no validation split: the latest epoch is the best we know
            score, better = record["epoch"], True
        else:
            better = self.best_score is None or (score > self.best_score if mode == "max" else score < self.best_score)
        if better:
            self.best_score, self.best_epoch = score, record["epoch"]
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def should_stop(self, epoch: int, patience: int | None) -> bool:
        return patience is not None and epoch - self.best_epoch >= patience


def _save_checkpoint(spec: CheckpointSpec, model, optimization: Optimization, epoch: int,
                     progress: Progress) -> None:
    save_torch(spec.path, {
        "model": model.state_dict(),
        "optimizer": {name: optimizer.state_dict() for name, optimizer in optimization.optimizers.items()},
        "lr_scheduler": {name: scheduler.state_dict() for name, scheduler in optimization.schedulers.items()},
        "epoch": epoch, "rng": torch.get_rng_state(),
        "history": progress.history, "best_score": progress.best_score, "best_epoch": progress.best_epoch,
        "best_state": progress.best_state, "fingerprint": spec.fingerprint, "extra": spec.extra or {},
    })


def _restore(state: dict[str, Any], model, optimization: Optimization) -> tuple[int, Progress]:
    model.load_state_dict(state["model"])
    for name, optimizer in optimization.optimizers.items():
        optimizer.load_state_dict(state["optimizer"][name])
        optimization.schedulers[name].load_state_dict(state["lr_scheduler"][name])
    torch.set_rng_state(state["rng"])
    log.info("resuming from the checkpoint of epoch %d", state["epoch"])
    return state["epoch"] + 1, Progress(state["history"], state["best_score"], state["best_epoch"], state["best_state"])


def fit(model: nn.Module, objective: Objective, train: TrainData, val: TensorData | None, cfg: TrainConfig,
        checkpoint: CheckpointSpec | None, on_epoch: EpochCallback | None = None,
        on_step: StepCallback | None = None) -> list[dict[str, Any]]:
    """Train for cfg.epochs (continuing from checkpoint.resume); returns the per-epoch history.

    The objective's monitor picks the best epoch, whose weights the model holds on return, and drives early
    stopping. Where checkpoint.writes, a checkpoint is written after every epoch and on_epoch is called; with no
    checkpoint (a study reruns in seconds) only on_epoch. `on_step` sees every optimizer step's batch loss and
    learning rate.
    """
    device = select_device(cfg.device)
    distributed.require_group()
    model.to(device, memory_format=torch.channels_last if _sample_ndim(train) == 4 else torch.contiguous_format)
    optimizers = objective.make_optimizers(model, cfg)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    optimization = Optimization(optimizers, {name: make_scheduler(optimizer, cfg, steps_per_epoch)
                                             for name, optimizer in optimizers.items()})
    resume = checkpoint.resume if checkpoint is not None else None
    if resume and set(resume["optimizer"]) != set(optimizers):  # written before optimizers were named
        log.warning("ignoring checkpoint %s: it holds optimizers %s, not %s", checkpoint.path,
                    sorted(resume["optimizer"]), sorted(optimizers))
        resume = None
    if objective.step is not supervised_step and distributed.world_size() > 1:
        # its step reaches into the model's parts (a GAN's generator and discriminator), past DDP's gradient hooks
        raise ParamsError("train.distributed.nproc: a task with its own training step trains on one process")
    writes = checkpoint is None or checkpoint.writes
    start, progress = _restore(resume, model, optimization) if resume else (1, Progress())
    trained = DistributedDataParallel(model) if distributed.world_size() > 1 else model
    train, val = to_device(train, device), (to_device(val, device) if val is not None else None)
    cfg = cfg.model_copy(update={"precision": resolve_precision(model, objective, train, cfg, device)})
    for epoch in range(start, cfg.epochs + 1):
        if progress.should_stop(epoch - 1, cfg.early_stopping_patience):
            break
        record = _run_epoch(trained, model, objective, optimization, train, val, cfg, epoch, on_step)
        progress.history.append(record)
        progress.improve(record, *objective.monitor, model)
        if writes:
            if checkpoint is not None:  # a model's run; a study's thousands of sub-second epochs print nothing
                tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
                _save_checkpoint(checkpoint, model, optimization, epoch, progress)
            if on_epoch is not None:
                on_epoch(record)
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    return progress.history


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Shuffling and augmentation are a function of (seed, epoch): resume needs no generator state."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _run_epoch(trained, model, objective: Objective, optimization: Optimization, train: TrainData,
               val: TensorData | None, cfg: TrainConfig, epoch: int, on_step: StepCallback | None) -> dict[str, Any]:
    """One epoch: `trained` (the model, or its DDP wrapper) learns; `model` itself is validated."""
    started = time.perf_counter()
    lr = optimization.optimizer.param_groups[0]["lr"]
    scores = train_one_epoch(trained, objective, optimization, train, cfg, epoch, on_step)
    seconds = time.perf_counter() - started
    record: dict[str, Any] = {"epoch": epoch, "lr": lr, "seconds": round(seconds, 3),
                              "samples_per_second": round(len(train) / seconds, 1), "precision": cfg.precision}
    record.update({f"train_{k}": v for k, v in scores.items()})
    if val is not None:
        val_scores = evaluate(model, objective.loss_fn, objective.score_fn, val, INFERENCE_BATCH,
                              next(model.parameters()).device)
        record.update({f"val_{k}": v for k, v in val_scores.items()})
    return record
