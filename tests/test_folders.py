"""Image folders (ImageFolder's layout) as classification data: the classes come from the folder names and travel
into the bundle, the ONNX metadata and `dltorch predict`; bad folders are DataErrors naming the folder or file.
And the folders stage, which writes the fetched set as such a folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from dltorch.bundle import load_model
from dltorch.cli import main
from dltorch.config import ExportConfig, FoldersConfig, default_registry, parse_params
from dltorch.data.classification import load_split
from dltorch.data.folders import write_image_folders
from dltorch.errors import DataError, ParamsError
from dltorch.export import CLASSES_KEY
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.export import ExportPaths, export
from dltorch.pipeline.train import train
from dltorch.tasks import classification
from tests.conftest import tiny_params_dict

CLASSES = ("cat", "dog", "owl")  # sorted: ImageFolder's order


def _png(path: Path, value: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> Path:
    """An image whose every pixel is `value` (each class gets its own values, so it can be learnt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 255 - value, 0)).save(path)
    return path


def _folder(root: Path, per_class: int = 4, splits: tuple[str, ...] = ("train", "test")) -> Path:
    for split in splits:
        for label, name in enumerate(CLASSES):
            for i in range(per_class):
                _png(root / split / name / f"{i}.png", 40 + 80 * label + i)
    return root


def test_an_image_folder_reads_as_labelled_tensors_with_its_folder_names(tmp_path: Path):
    root = _folder(tmp_path / "pets")
    (root / "test" / "dog").rename(root / "test-dog-aside")  # test may lack a class: labels still mean train's
    train, val = classification.load_train_val(root, "ignored", 0, 0)
    test = classification.load_test(root, "ignored")
    assert train.classes == test.classes == CLASSES and val is None
    assert train.inputs.shape == (12, 1, 8, 8) and train.inputs.dtype == torch.float32
    assert train.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert test.targets.tolist() == [0] * 4 + [2] * 4  # owl is 2, not 1
    assert test.inputs[4, 0, 0, 0].item() == pytest.approx((40 + 160) / 255)  # owl's first image, exactly
    inputs = classification.model_inputs(train, "pets")
    assert inputs["classes"] == list(CLASSES) and inputs["num_outputs"] == 3 and inputs["in_shape"] == (1, 8, 8)
    assert classification.dataset_name(root, "fashion_mnist") == "pets"


def test_val_folder_is_the_validation_split_else_val_size_holds_out_training_images(tmp_path: Path):
    root = _folder(tmp_path / "pets")
    train, val = classification.load_train_val(root, "pets", 3, 0)
    assert (len(train), len(val)) == (9, 3)
    _folder(root, per_class=2, splits=("val",))
    train, val = classification.load_train_val(root, "pets", 3, 0)
    assert (len(train), len(val)) == (12, 6) and val.classes == CLASSES


def test_grayscale_unless_a_training_image_is_colour(tmp_path: Path):
    root = _folder(tmp_path / "pets")
    _png(root / "train" / "cat" / "rgb.png", 10, mode="RGB")
    train, _ = classification.load_train_val(root, "pets", 0, 0)
    test = classification.load_test(root, "pets")
    assert train.inputs.shape[1] == test.inputs.shape[1] == 3  # the grayscale test images follow train


def test_mixed_sizes_are_refused_naming_two_files_unless_image_size_resizes(tmp_path: Path):
    root = _folder(tmp_path / "pets")
    odd = _png(root / "test" / "owl" / "big.png", 200, size=(12, 10))
    with pytest.raises(DataError, match=rf"{odd} is 12x10 but .*/train/cat/0.png is 8x8"):
        classification.load_test(root, "pets")
    settings = parse_params(_folder_params(image_size=[6, 5])).model("pets").train
    test = classification.load_test(root, "pets", settings)
    assert test.inputs.shape == (13, 1, 6, 5)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda root: (root / "train" / "dog" / "empty").mkdir() or (root / "train" / "empty").mkdir(),
         r"train/empty: empty class: no images"),
        (lambda root: _png(root / "test" / "horse" / "0.png", 9), r"test/horse: class 'horse' is not in .*/train"),
        (lambda root: (root / "train" / "dog" / "2.png").write_bytes(b"not a png"),
         r"train/dog/2.png: unreadable image"),
        (lambda root: [p.unlink() for p in (root / "test").rglob("*.png")] and None, r"test/cat: empty class"),
        (lambda root: [p.rename(p.with_suffix(".txt")) for p in root.rglob("*.png")] and None,
         r"train/cat: empty class: no images \(.*\.png"),
    ],
    ids=["empty_class", "class_not_in_train", "unreadable", "no_test_images", "no_images"],
)
def test_bad_folders_are_errors_naming_the_folder_or_file(tmp_path: Path, spoil, message: str):
    root = _folder(tmp_path / "pets")
    spoil(root)
    with pytest.raises(DataError, match=message):
        classification.load_train_val(root, "pets", 0, 0)
        classification.load_test(root, "pets")


def test_a_folder_without_class_folders_or_a_test_split_is_an_error(tmp_path: Path):
    root = tmp_path / "pets"
    (root / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"pets/train: no class folders"):
        classification.load_train_val(root, "pets", 0, 0)
    _folder(root, splits=("train",))
    with pytest.raises(DataError, match=r"pets/test: missing"):
        classification.load_test(root, "pets")
    with pytest.raises(DataError, match=r"FashionMNIST/raw: missing; run the fetch .* or give the model an image"):
        classification.load_test(tmp_path / "nothing", "fashion_mnist")


def _folder_params(**train) -> dict:
    raw = tiny_params_dict(val_size=3, epochs=3, batch_size=4, lr=0.05, **train)
    model = raw["models"].pop("mlp")
    raw["models"]["pets"] = {**model, "data": "folders/pets"}
    return raw


def test_class_names_reach_the_bundle_metrics_onnx_metadata_and_predict(tmp_path: Path, monkeypatch, capsys):
    root = _folder(tmp_path / "data" / "folders" / "pets")
    params = parse_params(_folder_params())
    model_dir, eval_dir, out = tmp_path / "models" / "pets", tmp_path / "models" / "pets" / "eval", tmp_path / "out"
    train(params, "pets", root, model_dir)
    bundle, _ = load_model(model_dir / "model.pt")
    assert bundle.inputs["classes"] == list(CLASSES) and bundle.dataset == "pets"
    evaluate(root, model_dir, eval_dir)
    assert set(json.loads((eval_dir / "details.json").read_text())["per_class_accuracy"]) == set(CLASSES)
    export(ExportPaths.beside(root, model_dir, eval_dir / "metrics.json", out),
           ExportConfig(batch_size=4, calibration_size=4), default_registry()["classification"])
    for onnx_file in ("model.onnx", "model.int8.onnx"):
        props = {p.key: p.value for p in onnx.load(str(out / onnx_file)).metadata_props}
        assert json.loads(props[CLASSES_KEY]) == list(CLASSES) and props["dltorch.model"] == "pets"
    (tmp_path / "params.yaml").write_text(json.dumps(_folder_params()))
    monkeypatch.chdir(tmp_path)
    owl = root / "test" / "owl" / "0.png"
    capsys.readouterr()  # training's progress lines
    assert main(["predict", "--model", "pets", "--onnx", str(out / "model.onnx"), "--top-k", "3", "--json",
                 str(owl)]) == 0
    printed = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    assert sorted(row["class"] for row in printed) == list(CLASSES)
    assert {row["class"]: row["index"] for row in printed} == {name: i for i, name in enumerate(CLASSES)}


def test_predict_refuses_an_onnx_file_without_class_names(tmp_path: Path, monkeypatch):
    from dltorch.errors import CheckpointError
    from dltorch.export import write_metadata
    from dltorch.predict import Predictor

    root = _folder(tmp_path / "pets")
    train_data, _ = classification.load_train_val(root, "pets", 0, 0)
    from dltorch.bundle import build_model
    from dltorch.export import export_onnx

    model = build_model("mlp", {"hidden": [4]}, "classification", classification.model_inputs(train_data, "pets"))
    path = tmp_path / "model.onnx"
    export_onnx(model, (1, 8, 8), path, 18, "pixels", "logits")
    with pytest.raises(CheckpointError, match="no class names in its metadata"):
        Predictor(path)
    write_metadata(path, {CLASSES_KEY: json.dumps(["a", "b", "c"])})
    assert Predictor(path).classes == ["a", "b", "c"]


def test_image_size_is_refused_for_the_fetched_set_and_sides_need_not_divide_by_16():
    raw = tiny_params_dict(image_size=[28, 28])
    with pytest.raises(ParamsError, match=r"models.mlp: train.image_size: the fetched image set .* is read as it is"):
        parse_params(raw)
    assert parse_params(_folder_params(image_size=[28, 20])).model("pets").train.image_size == (28, 20)


def test_the_folders_stage_writes_each_class_as_png_files_of_the_idx_pixels(tmp_path: Path, raw_root: Path):
    out = tmp_path / "folders" / "fashion_mnist"
    write_image_folders(raw_root, "fashion_mnist", FoldersConfig(train_per_class=3, test_per_class=1), out)
    idx = load_split(raw_root, "fashion_mnist", train=False)
    folders = sorted(p.name for p in (out / "test").iterdir())
    assert folders == sorted(name.replace("/", "_") for name in idx.classes) and "T-shirt_top" in folders
    assert all(len(list((out / split / name).glob("*.png"))) == count
               for split, count in (("train", 3), ("test", 1)) for name in folders)
    first_bag = int(np.flatnonzero(idx.targets.numpy() == 8)[0])  # class 8: Bag
    pixels = np.asarray(Image.open(out / "test" / "Bag" / f"{first_bag:05d}.png"), dtype=np.float32) / 255
    assert np.array_equal(pixels, idx.inputs[first_bag, 0].numpy())
    read = classification.load_test(out, "fashion_mnist")  # the classification reader takes it as a folder
    assert read.classes == tuple(folders) and len(read) == 10


def test_the_folders_stage_refuses_more_images_per_class_than_the_set_has(tmp_path: Path, raw_root: Path):
    out = tmp_path / "fashion_mnist"
    with pytest.raises(DataError, match=r"fewer than folders.train_per_class \(1000\)"):
        write_image_folders(raw_root, "fashion_mnist", FoldersConfig(train_per_class=1000), out)
    assert not out.exists()  # nothing half-written
