"""Segmentation: the shapes set, the folder-pair dataset and its errors, albumentations, Dice/IoU, and a UNet
through train, evaluate and export with parity at a second image size."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, jaccard_score

from dltorch import engine
from dltorch.bundle import build_model, load_model
from dltorch.config import AugmentConfig, ShapesConfig, parse_params
from dltorch.data import segmentation, shapes
from dltorch.data.streamed import StreamedData
from dltorch.errors import DataError, ParamsError
from dltorch.export import onnx_session, run_onnx
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.train import train
from dltorch.tasks import segmentation as task
from tests.conftest import TINY_SHAPES, tiny_params_dict
from tests.helpers import assert_same_weights, export_trained, interrupt_and_resume

TINY = ShapesConfig(**TINY_SHAPES)


def test_a_seed_gives_the_same_files_another_seed_others(tmp_path: Path):
    first = shapes.write(TINY, tmp_path / "a")
    assert shapes.write(TINY, tmp_path / "b") == first
    assert shapes.write(TINY.model_copy(update={"seed": 1}), tmp_path / "c") != first
    for split, count in (("train", 16), ("val", 8)):
        images = sorted((tmp_path / "a" / split / "images").iterdir())
        masks = sorted((tmp_path / "a" / split / "masks").iterdir())
        assert len(images) == len(masks) == count
        assert [m.name for m in masks] == [i.stem + "_mask.gif" for i in images]
    folder = segmentation.MaskedImageFolder(tmp_path / "a" / "train" / "images", tmp_path / "a" / "train" / "masks")
    for index in range(len(folder)):
        image, mask = folder.read(index)
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
        assert 0.01 < mask.mean() < 0.9  # there is a foreground, and a background
        # the foreground was drawn to stand out: its mean colour differs from the background's
        assert np.linalg.norm(image[mask == 1].mean(0) - image[mask == 0].mean(0)) > 20


def _write_pair(folder: Path, count: int, mask_name: str = "{stem}_mask.gif", size: int = 20) -> tuple[Path, Path]:
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for index in range(count):
        pixels = np.zeros((size, size, 3), dtype=np.uint8)
        pixels[4:12, 2 + index : 10 + index] = 250  # a bright square, a pixel further right each time
        Image.fromarray(pixels).save(images / f"car{index}.png")
        mask = (pixels[..., 0] > 128).astype(np.uint8) * 255
        Image.fromarray(mask).save(masks / mask_name.format(stem=f"car{index}"))
    return images, masks


def test_the_dataset_reads_a_folder_pair_the_test_writes(tmp_path: Path):
    images, masks = _write_pair(tmp_path / "gif", 3)
    folder = segmentation.MaskedImageFolder(images, masks, segmentation.eval_transform((32, 48)))
    assert len(folder) == 3
    image, mask = folder[1]
    assert image.shape == (3, 32, 48) and mask.shape == (1, 32, 48) and image.dtype == mask.dtype == torch.float32
    assert float(image.max()) == pytest.approx(250 / 255, abs=0.01) and float(image.min()) == 0.0
    raw_image, raw_mask = folder.read(1)
    assert raw_mask.sum() == 64 and raw_mask[4:12, 3:11].all()  # the square, as 0/1
    # PNG masks holding 0/1 (not 0/255) and named <id>.png work too
    png_images, png_masks = _write_pair(tmp_path / "png", 2, mask_name="{stem}.png")
    for path in png_masks.iterdir():
        Image.fromarray((np.asarray(Image.open(path)) > 0).astype(np.uint8)).save(path)
    assert segmentation.MaskedImageFolder(png_images, png_masks).read(0)[1].sum() == 64


def test_a_count_mismatch_a_missing_mask_and_an_unreadable_image_name_the_file(tmp_path: Path):
    images, masks = _write_pair(tmp_path / "pair", 3)
    (masks / "stray_mask.gif").write_bytes((masks / "car0_mask.gif").read_bytes())
    with pytest.raises(DataError, match=r"masks: 4 masks for 3 images in .*images; no image for .*stray_mask.gif"):
        segmentation.MaskedImageFolder(images, masks)
    (masks / "stray_mask.gif").unlink()
    (masks / "car2_mask.gif").unlink()
    with pytest.raises(DataError, match=r"car2.png: no mask in .*masks \(looked for car2_mask.gif"):
        segmentation.MaskedImageFolder(images, masks)
    (masks / "car2_mask.gif").write_bytes((masks / "car0_mask.gif").read_bytes())
    (images / "car1.png").write_bytes(b"not a PNG at all")
    folder = segmentation.MaskedImageFolder(images, masks)
    with pytest.raises(DataError, match=r"car1.png: unreadable image"):
        folder.read(1)
    truncated = Image.new("RGB", (20, 20), (200, 10, 10))
    truncated.save(images / "car1.png")
    (images / "car1.png").write_bytes((images / "car1.png").read_bytes()[:40])
    with pytest.raises(DataError, match=r"car1.png: unreadable image"):
        folder[1]


def test_augmentation_moves_the_mask_with_the_image_and_repeats_for_a_seed(tmp_path: Path):
    images, masks = _write_pair(tmp_path / "pair", 4, size=32)
    augment = AugmentConfig(hflip=True, vflip=0.5, rotate_limit=35)
    folder = segmentation.MaskedImageFolder(images, masks, segmentation.train_transform((32, 32), augment))
    data = StreamedData(folder, (3, 32, 32), "test")
    draws = [list(data.batches(2, torch.Generator().manual_seed(seed))) for seed in (5, 5, 6)]
    assert all(torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
               for a, b in zip(draws[0], draws[1], strict=True))
    assert not torch.equal(draws[0][0].inputs, draws[2][0].inputs)
    plain = segmentation.MaskedImageFolder(images, masks, segmentation.eval_transform((32, 32)))
    moved = 0
    for batch in draws[0] + draws[2]:
        for image, mask in zip(batch.inputs, batch.targets, strict=True):
            bright = image[0] > 0.5
            # the mask turned and flipped with its image (nearest vs bilinear: edges may differ by a pixel)
            assert (bright == (mask[0] > 0.5)).float().mean() > 0.93
            moved += int(not any(torch.equal(mask, plain[i][1]) for i in range(len(plain))))
    assert moved > 0  # and the augmentation did change something


def test_dice_iou_and_pixel_accuracy_on_hand_made_masks():
    truth = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    truth[0, 0, :2, :2] = True  # 4 pixels
    predicted = torch.zeros_like(truth)
    predicted[0, 0, :2, :3] = True  # 6 pixels, 4 of them right
    scores = task.mask_scores(predicted, truth)  # image 2: both empty, a perfect 1
    assert scores["dice"].tolist() == pytest.approx([2 * 4 / (6 + 4), 1.0])
    assert scores["iou"].tolist() == pytest.approx([4 / 6, 1.0])
    assert scores["pixel_accuracy"].tolist() == pytest.approx([14 / 16, 1.0])
    logits = torch.where(truth, 10.0, -10.0).float()
    loss = task.TASK.make_loss("bce_dice")
    assert loss(logits, truth.float()).item() < 0.01 < loss(-logits, truth.float()).item()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"image_size": [40, 32]}, "train.image_size: height and width must be multiples of 16, not [40, 32]"),
        ({"image_size": None}, "models.unet: train.image_size: required for task segmentation"),
        ({"loss": "cross_entropy"}, "train.loss: 'cross_entropy' is not a segmentation loss; known: bce, bce_dice"),
        ({"augment": {"crop_padding": 2}}, "train.augment.crop_padding: only task classification crops"),
        ({"augment": {"test_time_hflip": True}},
         "train.augment.test_time_hflip: only task classification averages over mirror images, not segmentation"),
    ],
)
def test_segmentation_settings_are_checked(change: dict, expected: str):
    with pytest.raises(ParamsError) as caught:
        parse_params(_unet_params(**change))
    assert expected in str(caught.value)


def test_segmentation_settings_are_errors_on_other_tasks():
    raw = tiny_params_dict()
    raw["models"]["mlp"]["train"]["augment"] = {"rotate_limit": 10}
    with pytest.raises(ParamsError, match="train.augment.rotate_limit: only task segmentation augments this way"):
        parse_params(raw)



def test_a_streamed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path, synthetic_root: Path):
    """The engine's checkpoint and resume hold for DataLoader batches with albumentations draws too."""
    data = synthetic_root / "synthetic" / "shapes"
    cfg = parse_params(_unet_params(epochs=2)).model("unet").train

    def fit(checkpoint: Path, on_epoch=None, resume=None):
        train_data, val = task.load_train_val(data, "shapes", cfg.val_size, cfg.seed, settings=cfg)
        assert isinstance(train_data, StreamedData) and len(train_data) == 12 and len(val) == 4
        torch.manual_seed(0)
        model = build_model("unet", {"features": [4, 8]}, "segmentation", task.model_inputs(train_data, "shapes"))
        objective = engine.Objective(task.TASK.make_loss(cfg.loss), task.batch_scores, task.TASK.monitor)
        history = engine.fit(model, objective, train_data, val, cfg, engine.CheckpointSpec(checkpoint, "fp", resume),
                             on_epoch)
        return model, history

    run = interrupt_and_resume(fit, tmp_path)
    assert [row["epoch"] for row in run.history] == [1, 2]
    assert run.history[-1]["train_loss"] == run.full_history[-1]["train_loss"]
    assert_same_weights(run.uninterrupted, run.resumed)


def _unet_params(**train) -> dict:
    raw = tiny_params_dict()
    settings = {"epochs": 1, "batch_size": 8, "lr": 0.003, "loss": "bce_dice", "val_size": 4, "seed": 0,
                "image_size": [32, 32], "augment": {"hflip": True, "vflip": 0.1, "rotate_limit": 35}}
    raw["models"] = {"unet": {"arch": "unet", "task": "segmentation", "data": "synthetic/shapes",
                              "args": {"features": [8, 16]}, "train": {**settings, **train},
                              "export": {"atol": 1e-3, "quantize": "static"}}}
    return raw


def test_unet_trains_an_epoch_exports_and_passes_parity_at_a_second_size(tmp_path: Path, synthetic_root: Path,
                                                                          mlflow_store, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # nothing may land in the working folder (onnxruntime's shape-inference dumps)
    params = parse_params(_unet_params())
    data = synthetic_root / "synthetic" / "shapes"
    model_dir = tmp_path / "unet"
    history = train(params, "unet", data, model_dir)
    assert len(history) == 1 and {"train_dice", "val_dice", "val_iou", "val_pixel_accuracy"} <= set(history[0])

    metrics = evaluate(data, model_dir, model_dir / "eval")
    test = task.load_test(data, "shapes", settings=params.model("unet").train)
    assert test.inputs.shape == (8, 3, 32, 32) and test.targets.shape == (8, 1, 32, 32)  # the val/ folder
    _, model = load_model(model_dir / "model.pt")
    with torch.no_grad():
        predicted = model(test.inputs) > 0
    truth = test.targets > 0.5
    # scikit-learn as the oracle: Dice of binary masks is their F1 score, IoU their Jaccard index
    pairs = [(t.flatten().numpy(), p.flatten().numpy()) for p, t in zip(predicted, truth, strict=True)]
    assert metrics["dice"] == pytest.approx(np.mean([f1_score(t, p, zero_division=1.0) for t, p in pairs]), rel=1e-5)
    assert metrics["iou"] == pytest.approx(np.mean([jaccard_score(t, p, zero_division=1.0) for t, p in pairs]),
                                           rel=1e-5)
    assert metrics["pixel_accuracy"] == pytest.approx(np.mean([accuracy_score(t, p) for t, p in pairs]), rel=1e-5)
    for figure in ("curves.png", "predictions.png", "confusion.png"):
        assert (model_dir / "eval" / figure).read_bytes()[:4] == b"\x89PNG"

    rule = params.registry_rule("unet")
    assert (rule.metric, rule.direction) == ("dice", "max")
    onnx_path = tmp_path / "model.onnx"
    deploy, report = export_trained(params, "unet", data, model_dir, tmp_path, batch_size=4, quantize="static",
                                    calibration_size=8)
    assert report["passed"] and report["shapes"] == {"example": [4, 3, 32, 32], "other": [7, 3, 64, 48]}
    assert report["checks"]["mask_iou"]["measured"] >= 0.999
    assert report["checks"]["mask_iou_shape_3x64x48"]["passed"]
    assert report["checks"]["max_abs_diff_shape_3x64x48"]["passed"]
    assert deploy["int8"]["mode"] == "static" and "dice" in deploy["int8"]["int8"]
    assert [p.name for p in workdir.iterdir()] == []
    dims = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 3 and dims[2].dim_param and dims[3].dim_param
    other = torch.rand(2, 3, 48, 80)  # a third size: still torch's numbers
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(onnx_session(onnx_path), other.numpy(), 2), model(other).numpy(),
                                   atol=1e-3)
    # the registered model's signature leaves height and width open too, so a server takes any size the graph does
    served = mlflow.pyfunc.load_model("models:/unet@champion")
    assert served.predict(other.numpy())["logits"].shape == (2, 1, 48, 80)
