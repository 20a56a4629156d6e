"""Every figure. Each is written atomically as PNG and returned as its path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dltorch.io import atomic_path


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], layout: str | None = None,
              **kwargs: Any) -> tuple[Figure, Any]:
    """A figure outside pyplot: no backend to choose, no display needed (servers, CI), nothing global to close;
    savefig renders PNG with Agg when it draws."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _label_above(ax: Any, text: str, **style: Any) -> None:
    """A grid panel's label where its title would be. Not set_title: on every draw matplotlib places each title
    clear of its axes' tick labels, measuring them even with the axis off, over half of a 32-image grid's time."""
    ax.text(0.5, 1.03, text, transform=ax.transAxes, ha="center", va="bottom", **style)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def training_curves(history: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Loss and every score per epoch, train against validation."""
    epochs = [row["epoch"] for row in history]
    scores = sorted({key.split("_", 1)[1] for key in history[0] if key.startswith("train_")})
    fig, axes = _subplots(1, len(scores), figsize=(5 * len(scores), 3.6), squeeze=False)
    for ax, score in zip(axes[0], scores, strict=True):
        for split in ("train", "val"):
            key = f"{split}_{score}"
            if key in history[0]:
                ax.plot(epochs, [row[key] for row in history], marker="o", label=split)
        ax.set(title=f"{title}: {score}", xlabel="epoch", ylabel=score)
        if score == "loss" and min(row["train_loss"] for row in history) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(confusion: list[list[int]], classes: list[str], title: str, path: Path) -> Path:
    matrix = np.asarray(confusion)
    fig, ax = _subplots(figsize=(7.5, 6.5))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    threshold = matrix.max() / 2
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > threshold else "black")
    return _save(fig, path)


def prediction_grid(images: np.ndarray, predicted: np.ndarray, true: np.ndarray, classes: list[str],
                    title: str, path: Path, columns: int = 8) -> Path:
    """Test images with predicted / true labels; mistakes in red."""
    rows = -(-len(images) // columns)
    fig, axes = _subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, label in zip(axes.flat, images, predicted, true, strict=False):
        ax.imshow(image.squeeze(), cmap="gray_r", vmin=0, vmax=1)
        _label_above(ax, f"{classes[pred]}\n({classes[label]})", fontsize=7, color="black" if pred == label else "red")
    fig.suptitle(f"{title}: predicted (true)")
    return _save(fig, path)


def _spans_decades(values: list[float]) -> bool:
    """Log scale when positive values span more than a factor of 100."""
    finite = [v for v in values if np.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


def fit_over_points(points: dict[str, tuple[np.ndarray, np.ndarray]], lines: dict[str, Any], title: str,
                    path: Path) -> Path:
    """Scattered (x, y) sets with fitted curves over them; `lines` maps a label to a function of x."""
    fig, ax = _subplots(figsize=(6, 4.2))
    for label, (x, y) in points.items():
        ax.scatter(x, y, s=14, alpha=0.7, label=f"{label} points")
    low = min(float(np.min(x)) for x, _ in points.values())
    high = max(float(np.max(x)) for x, _ in points.values())
    grid = np.linspace(low, high, 200)
    for (label, curve), style in zip(lines.items(), ("-", "--", ":", "-."), strict=False):
        ax.plot(grid, curve(grid), style, linewidth=2, label=label)
    ax.set(title=title, xlabel="x", ylabel="y")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def decision_boundary(points: np.ndarray, labels: np.ndarray, probability: Any, title: str, path: Path,
                      lines: dict[str, Any] | None = None) -> Path:
    """Two-class 2-D points over the model's probability of class 1 (shaded), its boundary p = 0.5 (solid), and
    `lines`: label -> x2 as a function of x1 (e.g. the true boundary, dashed). `probability` maps (M, 2) to (M,)."""
    fig, ax = _subplots(figsize=(6, 5))
    margin = 0.5
    (low1, low2), (high1, high2) = points.min(0) - margin, points.max(0) + margin
    grid1, grid2 = np.meshgrid(np.linspace(low1, high1, 200), np.linspace(low2, high2, 200))
    prob = probability(np.stack([grid1.ravel(), grid2.ravel()], axis=1)).reshape(grid1.shape)
    shade = ax.contourf(grid1, grid2, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
    fig.colorbar(shade, ax=ax, fraction=0.046, label="p(class 1)")
    ax.contour(grid1, grid2, prob, levels=[0.5], colors="k", linewidths=2)
    ax.plot([], [], "k-", linewidth=2, label="model: p = 0.5")
    for label, color in ((0, "tab:blue"), (1, "tab:red")):
        chosen = labels == label
        ax.scatter(points[chosen, 0], points[chosen, 1], s=14, c=color, edgecolors="white", linewidths=0.4,
                   label=f"class {label}")
    for (label, line), style in zip((lines or {}).items(), ("--", ":", "-."), strict=False):
        ax.plot(grid1[0], line(grid1[0]), style, color="0.2", linewidth=1.5, label=label)
    ax.set(title=title, xlabel="x1", ylabel="x2", xlim=(low1, high1), ylim=(low2, high2))
    ax.legend(fontsize=8)
    return _save(fig, path)


def predicted_vs_actual(actual: np.ndarray, predicted: np.ndarray, title: str, path: Path) -> Path:
    """A regression's counterpart of the confusion matrix: predictions against truth, the diagonal is perfect."""
    fig, ax = _subplots(figsize=(4.8, 4.5))
    ax.scatter(actual, predicted, s=16)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="predicted = actual")
    ax.set(title=title, xlabel="actual y", ylabel="predicted y")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


@dataclass
class Panel:
    """One axes of a study figure: named curves (x values, y values), optional scattered points."""

    title: str
    xlabel: str
    ylabel: str
    curves: dict[str, tuple[list[float], list[float]]]
    points: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    log_y: bool | None = None  # None: log scale when the curves span decades


def panels(items: list[Panel], title: str, path: Path) -> Path:
    """Panels side by side, each with title, axis labels and a legend."""
    fig, axes = _subplots(1, len(items), figsize=(5 * len(items), 3.9), squeeze=False)
    for ax, panel in zip(axes[0], items, strict=True):
        for label, (x, y) in panel.points.items():
            ax.scatter(x, y, s=14, alpha=0.7, label=label)
        for label, (x, y) in panel.curves.items():
            ax.plot(x, y, linewidth=1.5, label=label)
        values = [v for _, ys in panel.curves.values() for v in ys]
        if panel.log_y or (panel.log_y is None and _spans_decades(values)):
            ax.set_yscale("log")
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def forecasts(history: np.ndarray, truth: np.ndarray, lines: dict[str, np.ndarray], title: str, path: Path,
              columns: int = 3) -> Path:
    """A few windows: the steps the model read, then the true continuation against each forecast.
    history (N, window), truth (N, horizon), lines: label -> (N, horizon) forecasts."""
    rows = -(-len(history) // columns)
    fig, axes = _subplots(rows, columns, figsize=(4.6 * columns, 3.2 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    window = history.shape[1]
    past, future = np.arange(window), np.arange(window, window + truth.shape[1])
    for index, ax in zip(range(len(history)), axes.flat, strict=False):
        ax.axis("on")
        ax.plot(past, history[index], color="0.5", linewidth=1.2, label="input")
        ax.plot(future, truth[index], "k.-", linewidth=1.5, label="truth")
        for (label, forecast), style in zip(lines.items(), ("-", "--", ":", "-."), strict=False):
            ax.plot(future, forecast[index], style, linewidth=1.5, label=label)
        ax.axvline(window - 0.5, color="0.8", linewidth=1)
        ax.set(xlabel="step", title=f"test window {index + 1}")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def mask_overlays(images: np.ndarray, true_masks: np.ndarray, predicted: np.ndarray, title: str, path: Path,
                  columns: int = 4) -> Path:
    """Images (N, 3, H, W) in [0, 1] with the true mask's outline in green and the predicted mask tinted red;
    each panel's title is the image's Dice."""
    rows = -(-len(images) // columns)
    fig, axes = _subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, truth, pred in zip(axes.flat, images, true_masks, predicted, strict=False):
        rgb = np.clip(image.transpose(1, 2, 0), 0, 1)
        tinted = np.where(pred[..., None], 0.55 * rgb + 0.45 * np.array([1.0, 0.1, 0.1]), rgb)
        ax.imshow(tinted)
        ax.contour(truth, levels=[0.5], colors="lime", linewidths=0.9)
        overlap = 2 * np.logical_and(truth, pred).sum()
        dice = overlap / max(1, truth.sum() + pred.sum()) if truth.any() or pred.any() else 1.0
        _label_above(ax, f"Dice {dice:.3f}", fontsize=8)
    fig.suptitle(f"{title}: predicted (red) and true outline (green)")
    return _save(fig, path)


def reconstructions(originals: np.ndarray, rebuilt: np.ndarray, title: str, path: Path) -> Path:
    """Images (N, C, H, W) in [0, 1] in the top row, their reconstructions under them."""
    columns = len(originals)
    fig, axes = _subplots(2, columns, figsize=(1.2 * columns, 2.8), squeeze=False)
    for row, (images, label) in enumerate(((originals, "original"), (rebuilt, "reconstruction"))):
        for ax, image in zip(axes[row], images, strict=True):
            ax.imshow(image.squeeze(), cmap="gray_r", vmin=0, vmax=1)
            ax.set(xticks=[], yticks=[])
        axes[row][0].set_ylabel(label, fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def codes_by_class(points: np.ndarray, labels: np.ndarray, classes: list[str], title: str, axis_names: tuple[str, str],
                   path: Path) -> Path:
    """Points (N, 2), one colour per class."""
    fig, ax = _subplots(figsize=(6.4, 5.2))
    for index, name in enumerate(classes):
        chosen = labels == index
        ax.scatter(points[chosen, 0], points[chosen, 1], s=3, alpha=0.5, label=name, color=f"C{index % 10}")
    ax.set(title=title, xlabel=axis_names[0], ylabel=axis_names[1])
    ax.legend(fontsize=7, markerscale=4, loc="best")
    return _save(fig, path)


def sample_grid(images: np.ndarray, title: str, path: Path, columns: int = 8) -> Path:
    """Images (N, C, H, W) in [0, 1] in rows of `columns`: a generator's samples."""
    rows = -(-len(images) // columns)
    fig, axes = _subplots(rows, columns, figsize=(0.9 * columns, 0.9 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image in zip(axes.flat, images, strict=False):
        ax.imshow(image.squeeze(), cmap="gray_r", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def accuracy_over_time(curves: dict[str, list[tuple[float, float]]], targets: list[float], path: Path) -> Path:
    """Validation accuracy against seconds of training, one line per model, the targets as dashed lines."""
    fig, ax = _subplots(figsize=(7.5, 4.5))
    for name, curve in curves.items():
        ax.plot(*zip(*curve, strict=True), marker="o", markersize=3, label=name)
    for target in targets:
        ax.axhline(target, linestyle="--", color="grey", linewidth=0.8)
    lowest = min((accuracy for curve in curves.values() for _, accuracy in curve), default=min(targets))
    ax.set(xlabel="seconds of training", ylabel="validation accuracy", ylim=(max(lowest, min(targets) - 0.05), None),
           title="time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
