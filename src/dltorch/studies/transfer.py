"""Does a pretrained network help? Pretrain a CNN on every training image of some Fashion-MNIST classes (the
source task), then learn other classes (the target task) from a few labelled images per class, three ways:
from scratch, fine-tuning every layer of the pretrained network, and training only a new head on its frozen
backbone. Test accuracy on every test image of the target classes, per variant and label budget."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltorch import engine, plots
from dltorch.config import Params, TrainConfig, TransferConfig, TransferVariant
from dltorch.data.classification import LabelledImages, load_split
from dltorch.data.tensors import TensorData
from dltorch.errors import DataError, ParamsError
from dltorch.io import write_csv, write_json
from dltorch.models import create
from dltorch.studies.common import CURVES_FILE, FIGURE_FILE, METRICS_FILE, AnyStudy
from dltorch.studies.registry import register_study
from dltorch.tasks.classification import TASK as classification
from dltorch.tasks.classification import model_inputs
from dltorch.tracking import Tracker


def class_subset(data: LabelledImages, classes: list[int]) -> LabelledImages:
    """The images of `classes`, relabelled 0, 1, ... in the order listed, with those classes' names."""
    keep = torch.isin(data.targets, torch.tensor(classes))
    relabel = torch.full((int(data.targets.max()) + 1,), -1, dtype=torch.long)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    return LabelledImages(data.inputs[keep], relabel[data.targets[keep]], tuple(data.classes[c] for c in classes))


def labelled_sample(data: TensorData, per_class: int, seed: int) -> TensorData:
    """`per_class` images of every class, the first ones of one seeded permutation: the images of a smaller budget
    are among those of every larger one, so budgets differ only in how many labels they add."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    picks = []
    for label in range(int(data.targets.max()) + 1):
        of_class = order[data.targets[order] == label]
        if len(of_class) < per_class:
            raise DataError(f"transfer: class {label} has {len(of_class)} training images, fewer than {per_class}")
        picks.append(of_class[:per_class])
    return data.subset(torch.cat(picks))


def head_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the model's last Linear layer: the classifier head a new task replaces."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ParamsError("transfer: the architecture has no Linear layer to serve as the classifier head")
    return {f"{linear[-1]}.{key}" for key in ("weight", "bias")}


def load_except_head(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every pretrained weight but the head's; the model keeps its own (freshly initialized) head."""
    head = head_keys(model)
    try:
        missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise ParamsError(f"transfer: the pretrained weights do not fit the model ({exc})") from None
    if set(missing) != head or unexpected:
        raise ParamsError(f"transfer: the pretrained weights do not fit the model (missing {missing}, "
                          f"unexpected {unexpected})")


def freeze_backbone(model: nn.Module) -> None:
    """Only the head learns. (The study's CNNs have no BatchNorm or dropout, whose train mode would still act.)"""
    head = head_keys(model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in head)


@register_study
class Transfer(AnyStudy):
    name = "transfer"
    curve = ("budgets", ["test_accuracy"])

    def run(self, params: Params, data: Path, out_dir: Path, tracker: Tracker) -> dict[str, Any]:
        cfg = params.transfer
        if cfg is None:
            raise ParamsError("transfer: no such section in params.yaml")
        train, test = (load_split(data, params.fetch.dataset, train=split) for split in (True, False))
        source, target = class_subset(train, cfg.source), class_subset(train, cfg.target)
        inputs = model_inputs(source, params.fetch.dataset)  # one normalization, the source's, for every variant
        with tracker.study_run(self.name) as parent:
            parent.log_params({"data": cfg.data, "arch": cfg.arch, "args": cfg.args, "source": cfg.source,
                               "target": cfg.target, "budgets": cfg.budgets, "steps": cfg.steps})
            torch.manual_seed(cfg.pretrain.seed)
            pretrained = _build(cfg, inputs, len(cfg.source))
            parent.log_history(_fit(pretrained, source, cfg.pretrain))  # the pretraining's per-epoch curves
            state = {k: v.detach().clone() for k, v in pretrained.state_dict().items()}
            table = {}
            for variant in cfg.variants:
                with parent.variant_run(self.name, variant) as child:
                    table[variant] = _accuracies(cfg, variant, lambda: _build(cfg, inputs, len(cfg.target)), state,
                                                 target, class_subset(test, cfg.target))
                    child.log_params({**cfg.variants[variant].model_dump(exclude={"train"}),
                                      **cfg.variant_train(variant).model_dump(mode="json")})
                    child.log_history([{"budget": int(b), "test_accuracy": a} for b, a in table[variant].items()],
                                      step_key="budget")
            baseline = next((name for name, spec in cfg.variants.items() if spec.init == "scratch"), None)
            metrics = summarize(table, _accuracy(pretrained, class_subset(test, cfg.source)), baseline)
            written = _write(table, metrics, cfg, out_dir)
            parent.log_metrics(metrics)
            parent.log_artifacts(written, self.name)
        return metrics


def _accuracies(cfg: TransferConfig, variant: str, build: Callable[[], nn.Module], pretrained: dict[str, Any],
                target: TensorData, test: TensorData) -> dict[str, float]:
    """The variant's test accuracy at every label budget (as "<labels per class>": accuracy)."""
    spec, settings = cfg.variants[variant], cfg.variant_train(variant)
    accuracies = {}
    for budget in cfg.budgets:
        torch.manual_seed(cfg.train.seed)  # every variant and budget: the same new head
        model = _target_model(spec, build(), pretrained)
        _fit(model, labelled_sample(target, budget, cfg.train.seed),
             _for_steps(settings, cfg.steps, budget * len(cfg.target)))
        accuracies[str(budget)] = _accuracy(model, test)
    return accuracies


def _write(table: dict[str, dict[str, float]], metrics: dict[str, Any], cfg: TransferConfig,
           out_dir: Path) -> list[Path]:
    write_json(out_dir / METRICS_FILE, metrics)
    write_csv(out_dir / CURVES_FILE, ["variant", "budget", "test_accuracy"],
              ([variant, int(b), a] for variant, row in table.items() for b, a in row.items()))
    return [_figure(table, cfg, out_dir / FIGURE_FILE), out_dir / METRICS_FILE, out_dir / CURVES_FILE]


def summarize(table: dict[str, dict[str, float]], pretrain_accuracy: float, baseline: str | None) -> dict[str, Any]:
    """metrics.json: the source task's test accuracy, each other variant's lead over the `baseline` (the first
    variant from scratch) at the smallest budget (the study's question), and the whole table (variant -> labels per
    class -> test accuracy)."""
    smallest = min(next(iter(table.values())), key=int)
    leads = {f"{variant}_minus_{baseline}_at_{smallest}": row[smallest] - table[baseline][smallest]
             for variant, row in table.items() if baseline is not None and variant != baseline}
    return {"pretrain_source_test_accuracy": pretrain_accuracy, **leads, "variants": table}


def _build(cfg: TransferConfig, inputs: dict[str, Any], classes: int) -> nn.Module:
    net = create(cfg.arch, cfg.args, in_shape=tuple(inputs["in_shape"]), num_outputs=classes)
    return classification.wrap(net, inputs)  # normalization in the model, as the pipeline's classifiers


def _target_model(spec: TransferVariant, model: nn.Module, pretrained: dict[str, torch.Tensor]) -> nn.Module:
    """A freshly built `model` as the variant starts: as built, or the pretrained backbone under its new head,
    every layer learning or only the head."""
    if spec.init == "pretrained":
        load_except_head(model, pretrained)
    if spec.freeze_backbone:
        freeze_backbone(model)
    return model


def _for_steps(cfg: TrainConfig, steps: int, size: int) -> TrainConfig:
    """The settings with as many epochs as `steps` optimizer steps take on `size` images."""
    epochs = math.ceil(steps / math.ceil(size / cfg.batch_size))
    return TrainConfig.model_validate({**cfg.model_dump(), "epochs": epochs})


def _fit(model: nn.Module, data: TensorData, cfg: TrainConfig) -> list[dict[str, Any]]:
    objective = engine.Objective(classification.make_loss(cfg.loss, cfg.label_smoothing), classification.batch_scores)
    history = engine.fit(model, objective, data, None, cfg, checkpoint=None)
    model.cpu().eval()
    return history


def _accuracy(model: nn.Module, test: TensorData) -> float:
    loss_fn = classification.make_loss("cross_entropy")
    scores = engine.evaluate(model, loss_fn, classification.batch_scores, test, engine.INFERENCE_BATCH,
                             torch.device("cpu"))
    return scores["accuracy"]


def _figure(table: dict[str, dict[str, float]], cfg: TransferConfig, path: Path) -> Path:
    curves = {variant: ([int(b) for b in row], list(row.values())) for variant, row in table.items()}
    panel = plots.Panel(f"classes {cfg.target} after pretraining on {cfg.source}", "labelled images per class",
                        "test accuracy", curves, log_y=False)
    return plots.panels([panel], "Transfer learning: does a pretrained network help?", path)
