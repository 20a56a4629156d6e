"""The typed schema of params.yaml. Validation happens once, here, with the key path in every error."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dltorch.data.datasets import DATASETS
from dltorch.errors import ParamsError

# Model architectures and tasks are validated against their registries, imported when a validator first needs them
# (they bring torch): a stage that reads only `fetch` or `synth` (load_section) stays light.

Optimizer = Literal["sgd", "adam", "adamw", "adagrad", "rmsprop"]
Scheduler = Literal["none", "step", "cosine", "onecycle"]
# The engine trains every model; a task may keep hand-written loops as lessons (regression: numpy_gd, ...).
ENGINE = "engine"
SetName = Literal["line", "line_small_noise", "quadratic", "parabola", "dropout_points", "adagrad_line"]
BETTER = {"max": "higher", "min": "lower"}
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")  # the others have no momentum argument: a momentum would be ignored
FETCHED_DIR = "raw"  # a model reading the fetched image set has data: raw
SYNTHETIC_DIR = "synthetic"  # models read a synthetic set as data: synthetic/<set>.csv, or synthetic/<set>/
FOLDER_SETS = ("sequences", "shapes")  # sets written as a folder of files rather than one CSV
GRAPH_SETS = ("sbm", "karate")  # graphs for node classification, each one .npz file (data/node_classification.py)
# A UNet of up to four levels halves each side four times: sides must be multiples of this.
SIDE_MULTIPLE = 16
# The ONNX opsets an export may ask for: torch.onnx builds at 18 and up; 23 is the newest onnxruntime here runs.
MIN_OPSET, MAX_OPSET = 18, 23


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FetchConfig(Strict):
    dataset: str = "fashion_mnist"  # a key of data/datasets.py's DATASETS
    # Where a local copy of the four IDX .gz files lives (Debian's dataset-fashion-mnist puts them here).
    source_dir: Path | None = Path("/usr/share/datasets/fashion-mnist")
    download: bool = True

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"'{name}' is not an image set fetch knows; known: {', '.join(DATASETS)}")
        return name


class SetConfig(Strict):
    """A synthetic set: the course's recipe (data/regression.py) drawn with this seed, size and noise."""

    seed: int = Field(ge=0)
    size: int = Field(ge=2)
    noise: float = Field(ge=0)


class SplitSetConfig(SetConfig):
    """A set whose rows are split into train and test: train_size rows train, the rest test."""

    train_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _split_fits(self) -> SplitSetConfig:
        if self.train_size >= self.size:
            raise ValueError(f"train_size: {self.train_size} leaves no test rows out of size {self.size}")
        return self


class HeldOutSetConfig(SetConfig):
    """A set whose `size` rows all train, as the course's; test_size more rows, drawn after them, test."""

    test_size: int = Field(ge=1)


class ShuffledSplitSetConfig(SplitSetConfig):
    # The split draws from its own generator, as sklearn's train_test_split(random_state=split_seed) does.
    split_seed: int = Field(ge=0)


class BlobsConfig(SplitSetConfig):
    """Two classes of 2-D points, Gaussian blobs of std `noise` around +-(center, center) (data/binary.py)."""

    center: float = Field(gt=0)


class SequencesConfig(Strict):
    """Sums of sines with random frequencies and phases plus noise (data/sequence.py). Whole series go to the
    training, validation or test split, each cut into every window of `window` steps followed by `horizon` more."""

    seed: int = Field(ge=0)
    count: int = Field(ge=3)  # series
    length: int = Field(ge=2)  # steps per series
    noise: float = Field(ge=0)  # standard deviation of the Gaussian noise added to every step
    window: int = Field(ge=1)  # steps the model reads
    horizon: int = Field(ge=1)  # steps it predicts
    val_count: int = Field(ge=1)  # series held out for validation
    test_count: int = Field(ge=1)  # series held out for the test
    moving_average: int = Field(ge=1)  # the moving-average baseline's span (the last this many steps)

    @model_validator(mode="after")
    def _fits(self) -> SequencesConfig:
        if self.window + self.horizon > self.length:
            raise ValueError(f"window + horizon ({self.window} + {self.horizon}) exceed length {self.length}")
        if self.val_count + self.test_count >= self.count:
            raise ValueError(f"val_count + test_count ({self.val_count} + {self.test_count}) leave no training "
                             f"series out of count {self.count}")
        if self.moving_average > self.window:
            raise ValueError(f"moving_average: {self.moving_average} is longer than the window ({self.window})")
        return self


class ShapesConfig(Strict):
    """RGB images of ellipses, rectangles and car-like blobs over textured, noisy backgrounds with their binary
    masks (data/segmentation.py), as JPEG images and GIF masks in train/ and val/ folders."""

    seed: int = Field(ge=0)
    count: int = Field(ge=2)  # images in all
    size: int = Field(ge=16)  # side in pixels
    val_count: int = Field(ge=1)  # of them in val/

    @model_validator(mode="after")
    def _fits(self) -> ShapesConfig:
        if self.val_count >= self.count:
            raise ValueError(f"val_count: {self.val_count} leaves no training images out of count {self.count}")
        return self


class NodeSplitConfig(Strict):
    """How a graph's nodes split: train_per_class labelled nodes of each class train, val_size more validate,
    every other node tests; drawn with `seed`."""

    seed: int = Field(ge=0)
    train_per_class: int = Field(ge=1)
    val_size: int = Field(ge=1)


class SBMConfig(NodeSplitConfig):
    """A stochastic block model graph (data/node_classification.py): `classes` blocks of `nodes_per_class` nodes, an
    edge inside a block with probability p_in, between blocks with p_out. A node's features are its class's mean
    (a random unit vector times `signal`) plus Gaussian noise of std `noise`: weakly informative on their own."""

    classes: int = Field(ge=2)
    nodes_per_class: int = Field(ge=2)
    p_in: float = Field(ge=0, le=1)
    p_out: float = Field(ge=0, le=1)
    features: int = Field(ge=1)
    signal: float = Field(ge=0)
    noise: float = Field(gt=0)

    @model_validator(mode="after")
    def _fits(self) -> SBMConfig:
        if self.train_per_class >= self.nodes_per_class:
            raise ValueError(f"train_per_class: {self.train_per_class} leaves no other nodes of a class of "
                             f"{self.nodes_per_class}")
        if self.classes * self.train_per_class + self.val_size >= self.classes * self.nodes_per_class:
            raise ValueError(f"val_size: {self.val_size} leaves no test nodes")
        return self


class SynthConfig(Strict):
    """Every synthetic set; the defaults are the course's recipes (and, for sequences and shapes, params.yaml's)."""

    line: SplitSetConfig = SplitSetConfig(seed=0, size=100, noise=1.0, train_size=80)
    line_small_noise: HeldOutSetConfig = HeldOutSetConfig(seed=42, size=100, noise=0.1, test_size=20)
    quadratic: ShuffledSplitSetConfig = ShuffledSplitSetConfig(seed=32, size=100, noise=5.0, train_size=70,
                                                              split_seed=0)
    parabola: SetConfig = SetConfig(seed=0, size=1000, noise=1.0)
    dropout_points: SetConfig = SetConfig(seed=2333, size=20, noise=0.3)
    adagrad_line: SetConfig = SetConfig(seed=0, size=100, noise=1.0)
    blobs: BlobsConfig = BlobsConfig(seed=0, size=1000, noise=1.0, train_size=800, center=1.0)
    sequences: SequencesConfig = SequencesConfig(seed=0, count=200, length=160, noise=0.05, window=48, horizon=8,
                                                 val_count=20, test_count=20, moving_average=8)
    shapes: ShapesConfig = ShapesConfig(seed=0, count=800, size=96, val_count=160)
    sbm: SBMConfig = SBMConfig(seed=0, classes=4, nodes_per_class=250, p_in=0.03, p_out=0.004, features=16,
                               signal=1.0, noise=1.5, train_per_class=20, val_size=200)
    # Zachary's karate club as PyG ships it (34 nodes, 4 communities, one-hot node ids as features); only its split
    # is drawn here.
    karate: NodeSplitConfig = NodeSplitConfig(seed=0, train_per_class=2, val_size=6)

    @staticmethod
    def path(name: str) -> str:
        """Where the synth stage writes set `name`, relative to data/ (a model's `data:`)."""
        if name in FOLDER_SETS:
            return f"{SYNTHETIC_DIR}/{name}"
        return f"{SYNTHETIC_DIR}/{name}.npz" if name in GRAPH_SETS else f"{SYNTHETIC_DIR}/{name}.csv"


class FoldersConfig(Strict):
    """The folders stage: the fetched image set as an image folder of PNG files (data/folders.py), a few images
    per class, so the image-folder path of the classification reader runs end to end."""

    train_per_class: int = Field(100, ge=1)
    test_per_class: int = Field(20, ge=1)


class MlflowConfig(Strict):
    experiment: str = Field("dltorch", min_length=1)


class AugmentConfig(Strict):
    """Applied to training samples only; off by default, as in the course's recipes. Classification augments whole
    batches (crop, flip); segmentation each image with its mask (albumentations: rotate, flips)."""

    crop_padding: int = Field(0, ge=0, le=8)
    hflip: bool = False
    vflip: float = Field(0.0, ge=0, le=1)  # segmentation: the probability of a vertical flip
    rotate_limit: float = Field(0.0, ge=0, le=180)  # segmentation: rotate by up to this many degrees either way
    # classification, at inference (validation, test, the ONNX graph, serving): the mean of the logits of each
    # image and its mirror image, one batch of twice the size through the network (test-time augmentation)
    test_time_hflip: bool = False


class DistributedConfig(Strict):
    # >1: the train stage launches itself under torchrun with this many processes (DDP; gloo on CPU).
    nproc: int = Field(1, ge=1, le=64)


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(100, ge=1)
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, le=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Scheduler = "none"
    warmup_epochs: float = Field(0.0, ge=0)
    loss: str = "cross_entropy"  # one of the model's task's losses (ModelConfig checks)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    val_size: int = Field(5000, ge=0)
    # Stop when the validation score has not improved for this many epochs; the best epoch's weights are kept.
    early_stopping_patience: int | None = Field(None, ge=1)
    augment: AugmentConfig = AugmentConfig()
    distributed: DistributedConfig = DistributedConfig()
    grad_clip: float | None = Field(None, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on CUDA, fp32 on CPU; bf16: also on CPU (fast only with avx512_bf16 or AMX); fp32: never.
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # auto: measured per machine and model (dltorch.precision)
    trainer: str = ENGINE  # or one of the task's hand-written loops (ModelConfig checks)
    # epochs: each epoch cuts one permutation into batches (every row once). fresh_batches: every step draws a new
    # random batch, as the course's mini-batch lesson does with next(iter(a shuffled DataLoader)).
    sampling: Literal["epochs", "fresh_batches"] = "epochs"
    # Every image (segmentation: and mask) is resized to (height, width) to train and evaluate. Segmentation:
    # required, multiples of 16; classification: only an image folder's images (without it they must be of one size).
    image_size: tuple[int, int] | None = None
    # Weights to start from (relative to the repository root): a state_dict, or a dict holding one under "model" or
    # "state_dict" (torchvision's references, dltorch's checkpoints and bundles). See bundle.load_initial_weights.
    # Its digest is part of the checkpoint fingerprint; DVC cannot depend on it (dvc.yaml's deps are every model's).
    init_from: Path | None = None
    # true: the file and the architecture have exactly the same keys; false: the keys they share are loaded and
    # the others listed. Either way a shared key of another shape is an error.
    init_from_strict: bool = True

    @field_validator("loss")
    @classmethod
    def _some_task_loss(cls, loss: str) -> str:
        """Any task's loss here; ModelConfig checks it is its own task's."""
        from dltorch import tasks

        known = sorted({name for task in tasks.names() for name in tasks.get_task(task).losses})
        if loss not in known:
            raise ValueError(f"unknown loss '{loss}'; known: {', '.join(known)}")
        return loss

    @field_validator("image_size")
    @classmethod
    def _positive_sides(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and min(size) < 1:
            raise ValueError(f"height and width must be positive, not {list(size)}")
        return size

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: needs optimizer 'sgd' with momentum > 0")
        if self.early_stopping_patience is not None and self.val_size == 0:
            raise ValueError("early_stopping_patience: needs a validation split (val_size > 0)")
        if self.batch_size < self.distributed.nproc:
            raise ValueError(f"batch_size: the global batch must give every one of {self.distributed.nproc} "
                             "processes at least one sample")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs: must be less than epochs ({self.epochs})")
        if not self.init_from_strict and self.init_from is None:
            raise ValueError("init_from_strict: there is no init_from file to load")
        self._nothing_ignored()
        return self

    def _nothing_ignored(self) -> None:
        """A setting the chosen optimizer, loss, schedule or trainer would silently ignore is an error."""
        if self.momentum and self.optimizer not in MOMENTUM_OPTIMIZERS:
            raise ValueError(f"momentum: optimizer '{self.optimizer}' has none (only {', '.join(MOMENTUM_OPTIMIZERS)})")
        if self.label_smoothing and self.loss != "cross_entropy":
            raise ValueError(f"label_smoothing: only loss 'cross_entropy' smooths labels, not '{self.loss}'")
        if self.warmup_epochs and self.scheduler == "onecycle":
            raise ValueError("warmup_epochs: scheduler 'onecycle' warms up by itself; set warmup_epochs to 0")
        if self.trainer == "engine":
            return
        if self.distributed.nproc > 1:
            raise ValueError(f"distributed.nproc: trainer '{self.trainer}' runs in one process; only 'engine' "
                             "trains with DDP")
        # the course's hand-written loops (tasks/regression.py) read lr, epochs and seed only
        for key in ("momentum", "weight_decay", "grad_clip"):
            if getattr(self, key):
                raise ValueError(f"{key}: trainer '{self.trainer}' ignores it; only 'engine' applies it")
        if self.scheduler != "none":
            raise ValueError(f"scheduler: trainer '{self.trainer}' keeps lr constant; only 'engine' schedules it")


class ExportConfig(Strict):
    opset: int = Field(MIN_OPSET, ge=MIN_OPSET, le=MAX_OPSET)
    atol: float = Field(1e-4, gt=0)
    batch_size: int = Field(1000, ge=1)
    # INT8 by onnxruntime: `dynamic` (weights int8, activations quantized at run time) suits MatMul-heavy models
    # (MLP, ViT); `static` QDQ, with a calibration set drawn from the training data, suits CNNs.
    quantize: Literal["dynamic", "static"] = "dynamic"
    calibration_size: int = Field(500, ge=1)
    # 7-bit weights: onnxruntime's advice for x86 without VNNI. Off by default: measured on this machine, see README.
    reduce_range: bool = False
    # The int8 model is registered only if its score is at most this much below the fp32 model's
    # (0.005 = 0.5 accuracy points).
    int8_max_drop: float = Field(0.005, ge=0)
    # ... and only if its latency is at most this fraction of the fp32 model's at every batch size timed.
    int8_max_latency_ratio: float = Field(0.9, gt=0, le=1)
    # Timed calls per batch size behind each latency median that decides whether INT8 is faster (after a fifth as
    # many warm-up calls; the two graphs timed in turns). More runs steady the verdict on a busy machine; fewer make
    # export quicker.
    latency_runs: int = Field(50, ge=1)


class GateConfig(Strict):
    """A quality gate: evaluate fails when the model's test `metric` falls below `min` (a score) or above `max`
    (an error), so `dvc repro` stops before a regression is exported."""

    metric: str = Field(min_length=1)  # a key of the task's metrics (Task.metrics)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> GateConfig:
        if (self.min is None) == (self.max is None):
            raise ValueError("give exactly one bound: `min` (for a score) or `max` (for an error)")
        return self

    @property
    def bound(self) -> Literal["min", "max"]:
        return "min" if self.min is not None else "max"

    @property
    def required(self) -> float:
        return self.min if self.min is not None else self.max  # type: ignore[return-value]


class RegistryRule(Strict):
    """How the MLflow Model Registry ranks versions of a task's models: `champion` moves on a strictly better metric."""

    metric: str = Field(min_length=1)  # a key of evaluate's metrics.json
    direction: Literal["max", "min"]


def _arch_registry() -> Any:
    from dltorch.models import registry

    return registry


def _known_arch(arch: str) -> str:
    _arch_registry().get(arch)  # raises with the list of known names
    return arch


def _task(name: str) -> Any:
    from dltorch.tasks import get_task

    return get_task(name)


def _trainer_owners(trainer: str) -> str:
    """Which tasks a hand-written trainer belongs to, for the error when a model of another task names it."""
    from dltorch import tasks

    owners = [name for name in tasks.names() if trainer in tasks.get_task(name).trainers]
    if owners:
        return f"'{trainer}' trains a {' or '.join(owners)} only (task: {owners[0]})"
    known = sorted({ENGINE, *(t for name in tasks.names() for t in tasks.get_task(name).trainers)})
    return f"unknown trainer '{trainer}'; known: {', '.join(known)}"


def _known_task(name: str) -> str:
    _task(name)  # raises with the list of known names
    return name


def default_registry() -> dict[str, RegistryRule]:
    """Each task's own ranking (Task.ranking), unless params.yaml's `registry` says otherwise."""
    from dltorch import tasks

    return {name: RegistryRule(metric=tasks.get_task(name).ranking[0], direction=tasks.get_task(name).ranking[1])
            for name in tasks.names()}


class ModelConfig(Strict):
    arch: str
    # Required: dvc.yaml picks the evaluate stage's plot template by it (${item.task}).
    task: str
    # What the model reads, as a path under data/ (dvc.yaml passes data/<data> and depends on it):
    # `raw` is the fetched image set; synthetic sets live under `synthetic/`.
    data: str = Field(min_length=1)
    # Required, not defaulted: DVC tracks models.<name>.args and .train as params, so they must be written out.
    args: dict[str, Any]
    train: TrainConfig
    export: ExportConfig = ExportConfig()
    gate: GateConfig | None = None

    _known_arch = field_validator("arch")(_known_arch)

    _known_task = field_validator("task")(_known_task)

    @model_validator(mode="after")
    def _valid_args(self) -> ModelConfig:
        _arch_registry().validate_args(self.arch, self.args)
        try:
            _arch_registry().check_task(self.arch, self.task)
        except ValueError as exc:
            raise ValueError(f"arch: {exc}") from None
        task = _task(self.task)
        if self.train.loss not in task.losses:
            raise ValueError(f"train.loss: '{self.train.loss}' is not a {self.task} loss; "
                             f"known: {', '.join(task.losses)}")
        if self.train.trainer != ENGINE and self.train.trainer not in task.trainers:
            raise ValueError(f"train.trainer: {_trainer_owners(self.train.trainer)}")
        self._task_settings()
        self._gate_measurable()
        self._exportable()
        return self

    def _gate_measurable(self) -> None:
        if self.gate is None:
            return
        known = _task(self.task).metrics
        if self.gate.metric not in known:
            raise ValueError(f"gate.metric: '{self.gate.metric}' is not a {self.task} metric; known: "
                             f"{', '.join(known)}")
        # a score (better: max) needs a lower bound, an error (better: min) an upper one
        wanted = "min" if known[self.gate.metric] == "max" else "max"
        if self.gate.bound != wanted:
            raise ValueError(f"gate.{self.gate.bound}: {self.gate.metric} is better {BETTER[known[self.gate.metric]]}; "
                             f"bound it with `{wanted}:`")

    def _exportable(self) -> None:
        """A recurrent model exports through onnx_rnn.py, written against one torch release's private APIs."""
        from dltorch.models.lstm import unsupported_torch

        problem = unsupported_torch() if self.arch == "lstm" else None
        if problem:
            raise ValueError(f"args.cell: {problem}")

    def _task_settings(self) -> None:
        """Settings that only one task reads are errors elsewhere, rather than silently ignored."""
        augment, segmentation = self.train.augment, self.task == "segmentation"
        size = self.train.image_size
        if segmentation and size is None:
            raise ValueError("train.image_size: required for task segmentation: [height, width], multiples of "
                             f"{SIDE_MULTIPLE}")
        if segmentation and any(side < SIDE_MULTIPLE or side % SIDE_MULTIPLE for side in size):  # a UNet's levels
            raise ValueError(f"train.image_size: height and width must be multiples of {SIDE_MULTIPLE}, not "
                             f"{list(size)}")
        if size is not None and self.task == "classification" and self.data == FETCHED_DIR:
            raise ValueError(f"train.image_size: the fetched image set (data: {FETCHED_DIR}) is read as it is; only "
                             "an image folder's images are resized")
        if size is not None and self.task not in ("segmentation", "classification"):
            raise ValueError(f"train.image_size: only tasks segmentation and classification resize images, "
                             f"not {self.task}")
        for key in ("vflip", "rotate_limit"):
            if getattr(augment, key) and not segmentation:
                raise ValueError(f"train.augment.{key}: only task segmentation augments this way, not {self.task}")
        if self.train.sampling == "fresh_batches" and segmentation:
            raise ValueError("train.sampling: fresh_batches draws from in-memory data; segmentation streams images")
        if augment.test_time_hflip and self.task != "classification":
            raise ValueError(f"train.augment.test_time_hflip: only task classification averages over mirror "
                             f"images, not {self.task}")
        if augment.crop_padding and self.task != "classification":
            raise ValueError(f"train.augment.crop_padding: only task classification crops, not {self.task}")
        if augment.hflip and self.task in ("regression", "sequence", "node_classification", "binary"):
            raise ValueError(f"train.augment.hflip: a {self.task} has nothing to flip")


class VariantConfig(Strict):
    """One variant of a study: what it changes of the study's architecture, arguments and train settings."""

    arch: str | None = None
    args: dict[str, Any] | None = None
    train: dict[str, Any] = {}


class StudyConfig(Strict):
    """A comparison on one synthetic set: every variant starts from the shared settings and overrides a few."""

    data: SetName
    arch: str
    args: dict[str, Any]
    train: TrainConfig
    variants: dict[str, VariantConfig] = Field(min_length=1)

    _known_arch = field_validator("arch")(_known_arch)

    @model_validator(mode="after")
    def _valid_variants(self) -> StudyConfig:
        for name in self.variants:
            self.variant(name)
        return self

    def variant(self, name: str) -> tuple[str, dict[str, Any], TrainConfig]:
        """The variant's resolved (arch, args, train settings); a bad override is an error naming its key."""
        override = self.variants[name]
        arch = override.arch or self.arch
        args = self.args if override.args is None else override.args
        try:
            _arch_registry().validate_args(arch, args)
        except ValueError as exc:
            raise ValueError(f"variants.{name}: {arch}: {exc}") from None
        try:
            train = TrainConfig.model_validate({**self.train.model_dump(), **override.train})
        except ValidationError as exc:
            raise ValueError("; ".join(f"variants.{name}.train.{_describe(e)}" for e in exc.errors())) from None
        if train.init_from is not None:
            raise ValueError(f"variants.{name}.train.init_from: a study's variants start from fresh weights")
        if train.loss not in _task("regression").losses:
            raise ValueError(f"variants.{name}.train.loss: a study fits a regression; use 'mse'")
        return arch, args, train


class TransferVariant(Strict):
    """One way to learn the target task: from which weights, what learns, and its overrides of the study's `train`."""

    init: Literal["scratch", "pretrained"]
    freeze_backbone: bool = False  # only the new head learns
    train: dict[str, Any] = {}

    @model_validator(mode="after")
    def _frozen_is_pretrained(self) -> TransferVariant:
        if self.freeze_backbone and self.init == "scratch":
            raise ValueError("freeze_backbone: a backbone frozen at its random start would learn nothing; "
                             "use init: pretrained")
        return self


class TransferConfig(Strict):
    """The transfer-learning study: pretrain `arch` on every training image of the `source` classes, then train it
    on `budgets` labelled images per `target` class, from scratch and from the pretrained weights (all layers
    fine-tuned, or the backbone frozen under a new head); scored on every test image of the target classes."""

    data: Literal["raw"] = "raw"  # the fetched image set (dvc.yaml reads the study's data path from here)
    arch: str
    args: dict[str, Any]
    source: list[int] = Field(min_length=2)  # class indices pretrained on
    target: list[int] = Field(min_length=2)  # class indices of the second task
    budgets: list[int] = Field(min_length=1)  # labelled training images per target class, smallest first
    pretrain: TrainConfig
    train: TrainConfig  # every target run; its `epochs` are replaced by `steps` optimizer steps
    steps: int = Field(ge=1)  # optimizer steps per target run, so small and large budgets train equally long
    variants: dict[str, TransferVariant] = Field(min_length=1)

    _known_arch = field_validator("arch")(_known_arch)

    @model_validator(mode="after")
    def _consistent(self) -> TransferConfig:
        _arch_registry().validate_args(self.arch, self.args)
        for key in ("source", "target"):
            classes = getattr(self, key)
            if len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
                raise ValueError(f"{key}: distinct class indices 0-9, not {classes}")
        if set(self.source) & set(self.target):
            raise ValueError(f"target: classes {sorted(set(self.source) & set(self.target))} are also pretrained on")
        if self.budgets != sorted(set(self.budgets)) or self.budgets[0] < 1:
            raise ValueError(f"budgets: distinct positive counts, smallest first, not {self.budgets}")
        for key in ("pretrain", "train"):
            if getattr(self, key).loss != "cross_entropy":
                raise ValueError(f"{key}.loss: the study classifies images: 'cross_entropy'")
        for name in self.variants:
            self.variant_train(name)
        return self

    def variant_train(self, name: str) -> TrainConfig:
        """The study's train settings with the variant's overrides; a bad override is an error naming its key."""
        try:
            train = TrainConfig.model_validate({**self.train.model_dump(), **self.variants[name].train})
        except ValidationError as exc:
            raise ValueError("; ".join(f"variants.{name}.train.{_describe(e)}" for e in exc.errors())) from None
        if train.loss != "cross_entropy":
            raise ValueError(f"variants.{name}.train.loss: the study classifies images: 'cross_entropy'")
        return train


class Params(Strict):
    fetch: FetchConfig = FetchConfig()
    synth: SynthConfig = SynthConfig()
    folders: FoldersConfig = FoldersConfig()
    mlflow: MlflowConfig = MlflowConfig()
    registry: dict[str, RegistryRule] = Field(default_factory=default_registry)
    models: dict[str, ModelConfig]
    # The course's studies. In params.yaml each is a top-level section named as its study (so DVC tracks each on
    # its own); _gather_studies collects the sections the study registry knows. A profile may leave them out.
    studies: dict[str, StudyConfig] = {}
    # The transfer-learning study reads images, not a synthetic set: its own schema (studies/transfer.py).
    transfer: TransferConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _gather_studies(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "studies" in raw:  # DVC tracks a study by its own section: keep them top-level
            raise ValueError("studies: not a section; write each study as a top-level section named as the study")
        if not isinstance(raw, dict) or set(raw) <= set(cls.model_fields):
            return raw
        from dltorch.studies.registry import names as study_names  # a listing of modules: imports no study

        found = {key: value for key, value in raw.items() if key in study_names() and key not in cls.model_fields}
        return {**{k: v for k, v in raw.items() if k not in found}, "studies": found}

    def study(self, name: str) -> StudyConfig:
        if name not in self.studies:
            raise ParamsError(f"{name}: no such study in params.yaml; studies: {', '.join(self.studies) or 'none'}")
        return self.studies[name]

    @model_validator(mode="after")
    def _known_synthetic_sets(self) -> Params:
        known = [SynthConfig.path(name) for name in SynthConfig.model_fields]
        for name, model in self.models.items():
            if model.data.partition("/")[0] == SYNTHETIC_DIR and model.data.rstrip("/") not in known:
                raise ValueError(f"models.{name}.data: '{model.data}' is not a synth set; known: {', '.join(known)}")
        return self

    @field_validator("registry")
    @classmethod
    def _known_tasks(cls, registry: dict[str, RegistryRule]) -> dict[str, RegistryRule]:
        for name in registry:
            _known_task(name)
        return registry

    @model_validator(mode="after")
    def _ranked_by_a_metric(self) -> Params:
        for task, rule in self.registry.items():
            metrics, ranked = _task(task).metrics, _task(task).rankable
            if rule.metric not in ranked:
                raise ValueError(f"registry.{task}.metric: '{rule.metric}' is not a metric {task} versions can be "
                                 f"ranked by (evaluate and the INT8 gate both measure it); known: {', '.join(ranked)}")
            if rule.direction != metrics[rule.metric]:
                raise ValueError(f"registry.{task}.direction: {rule.metric} is better "
                                 f"{BETTER[metrics[rule.metric]]}, so `{metrics[rule.metric]}`")
        return self

    @model_validator(mode="after")
    def _every_task_ranked(self) -> Params:
        for name, model in self.models.items():
            if model.task not in self.registry:
                raise ValueError(f"models.{name}.task: no `registry.{model.task}` rule (metric, direction)")
        return self

    def model(self, name: str) -> ModelConfig:
        if name not in self.models:
            raise ParamsError(f"models.{name}: no such model; known: {', '.join(sorted(self.models))}")
        return self.models[name]

    def registry_rule(self, name: str) -> RegistryRule:
        return self.registry[self.model(name).task]


def _all_field_names() -> set[str]:
    names: set[str] = set()
    schemas = (FetchConfig, SynthConfig, FoldersConfig, HeldOutSetConfig, ShuffledSplitSetConfig, SequencesConfig,
               ShapesConfig, NodeSplitConfig, SBMConfig, BlobsConfig, MlflowConfig, AugmentConfig, DistributedConfig,
               TrainConfig, ExportConfig, GateConfig, RegistryRule, ModelConfig, VariantConfig, StudyConfig,
               TransferConfig, TransferVariant, Params)
    for schema in schemas:
        names.update(schema.model_fields)
    return names


def _describe(error: dict[str, Any]) -> str:
    loc = error["loc"][1:] if error["loc"][:1] == ("studies",) else error["loc"]  # study sections are top-level keys
    path = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        unknown = str(error["loc"][-1])
        candidates = _all_field_names()
        if len(loc) == 1:  # a top-level key may be a misspelt study section
            from dltorch.studies.registry import names as study_names

            candidates |= set(study_names())
        close = difflib.get_close_matches(unknown, candidates, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{path}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; every problem is reported as '<source>: <key.path>: <what>'."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {_describe(error)}" for error in exc.errors()]
        raise ParamsError("\n".join(lines)) from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    return parse_params(_read_yaml(path), source=str(path))


def load_section(path: str | Path,
                 section: Literal["fetch", "synth", "folders"]) -> FetchConfig | SynthConfig | FoldersConfig:
    """One section, validated alone, for the stages that read nothing else (dvc.yaml gives them only it as params):
    they need not load the model zoo and torch to check `models`."""
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: not a mapping of sections")
    schema = {"fetch": FetchConfig, "synth": SynthConfig, "folders": FoldersConfig}[section]
    try:
        return schema.model_validate(raw.get(section) or {})
    except ValidationError as exc:
        lines = [f"{path}: {_describe({**error, 'loc': (section, *error['loc'])})}" for error in exc.errors()]
        raise ParamsError("\n".join(lines)) from None
