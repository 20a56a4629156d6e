"""`dltorch predict`: image files of any size through the exported ONNX model, against onnxruntime on the dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dltorch.bundle import build_model
from dltorch.cli import main
from dltorch.export import CLASSES_KEY, export_onnx, onnx_session, run_onnx, write_metadata
from dltorch.predict import load_image, softmax
from dltorch.tasks import classification
from tests.conftest import REPO, tiny_params_dict

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture
def setup(tmp_path: Path, raw_root: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """An exported (untrained, but deterministic) MLP, a params.yaml naming it, and the tiny test images."""
    train, _ = classification.load_train_val(raw_root, "fashion_mnist", 0, 0)
    model = build_model("mlp", {"hidden": [16]}, "classification", classification.model_inputs(train, "fashion_mnist"))
    onnx_path = tmp_path / "models" / "mlp" / "model.onnx"
    export_onnx(model, (1, 28, 28), onnx_path, 18, "pixels", "logits")
    write_metadata(onnx_path, {CLASSES_KEY: json.dumps(list(train.classes))})  # as the export stage writes it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    monkeypatch.chdir(tmp_path)
    return {"onnx": onnx_path, "test": classification.load_test(raw_root, "fashion_mnist")}


def _as_file(pixels: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.uint8(pixels * 255 + 0.5)).save(path)
    return path


def _as_photo(pixels: np.ndarray, path: Path) -> Path:
    """The dataset's image as a product photo: dark on white, 10x larger, on a wider canvas, RGB."""
    big = Image.fromarray(np.uint8((1 - pixels) * 255 + 0.5)).resize((280, 280), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (400, 300), 255)
    canvas.paste(big, (60, 10))
    canvas.convert("RGB").save(path, quality=95)
    return path


def test_a_dataset_image_saved_as_png_is_read_back_exactly(tmp_path: Path, setup: dict):
    pixels = setup["test"].inputs[0, 0].numpy()
    loaded = load_image(_as_file(pixels, tmp_path / "a.png"), (28, 28))
    assert loaded.shape == (1, 28, 28) and loaded.dtype == np.float32
    assert np.abs(loaded[0] - pixels).max() <= 0.5 / 255 + 1e-6


def test_a_photo_on_white_is_inverted_trimmed_and_resized_like_the_dataset(tmp_path: Path, setup: dict):
    pixels = setup["test"].inputs[0, 0].numpy()
    loaded = load_image(_as_photo(pixels, tmp_path / "photo.jpg"), (28, 28))
    assert loaded.shape == (1, 28, 28)
    assert abs(loaded.mean() - pixels.mean()) < 0.05  # inverted back: light object, dark background
    assert np.corrcoef(loaded.ravel(), pixels.ravel())[0, 1] > 0.8
    never = load_image(tmp_path / "photo.jpg", (28, 28), invert="no")
    assert abs(never.mean() - (1 - pixels.mean())) < 0.05  # `--invert no` keeps it dark on light


def test_predict_prints_top_k_like_onnxruntime_on_the_same_pixels(tmp_path: Path, setup: dict, capsys):
    images = setup["test"].inputs[:3].numpy()
    files = [_as_file(images[i, 0], tmp_path / f"{i}.png") for i in range(3)]
    assert main(["predict", "--model", "mlp", "--top-k", "2", "--json", *map(str, files)]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = softmax(run_onnx(onnx_session(setup["onnx"]), images, 3))
    for i, result in enumerate(printed["predictions"]):
        order = np.argsort(-expected[i])[:2]
        assert result["file"] == str(files[i])
        assert [row["class"] for row in result["top"]] == [CLASSES[j] for j in order]
        assert [row["probability"] for row in result["top"]] == pytest.approx(expected[i][order], abs=1e-3)


def test_an_unreadable_file_is_named_and_the_others_are_still_predicted(tmp_path: Path, setup: dict, capsys):
    good = _as_file(setup["test"].inputs[0, 0].numpy(), tmp_path / "good.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    missing = tmp_path / "missing.jpg"
    code = main(["predict", "--model", "mlp", str(corrupt), str(good), str(missing)])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"error: {corrupt}: not a readable image" in err and f"error: {missing}: no such file" in err
    assert out.startswith(f"{good}: ") and out.count("\n") == 1 and len(out.split(", ")) == 3


def test_unknown_model_and_missing_onnx_are_usage_errors(tmp_path: Path, setup: dict, capsys):
    image = _as_file(setup["test"].inputs[0, 0].numpy(), tmp_path / "x.png")
    assert main(["predict", "--model", "resnet999", str(image)]) == 2
    assert "models.resnet999: no such model" in capsys.readouterr().err
    assert main(["predict", "--model", "mlp", "--onnx", str(tmp_path / "none.onnx"), str(image)]) == 2
    assert "none.onnx: no exported model" in capsys.readouterr().err


def test_a_model_that_is_not_an_image_classifier_is_a_usage_error(tmp_path: Path, setup: dict, capsys):
    """By params (a sequence model) or by file (a regression's ONNX given as --onnx): exit 2, no traceback."""
    image = _as_file(setup["test"].inputs[0, 0].numpy(), tmp_path / "x.png")
    raw = tiny_params_dict()
    raw["models"]["lstm"] = {"arch": "lstm", "task": "sequence", "data": "synthetic/sequences", "args": {},
                             "train": {"loss": "mse", "val_size": 0}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["predict", "--model", "lstm", str(image)]) == 2
    assert "lstm: a sequence model; `dltorch predict` classifies images" in capsys.readouterr().err
    line = tmp_path / "line.onnx"
    export_onnx(build_model("mlp", {"hidden": []}, "regression", {"in_shape": [1], "num_outputs": 1}), (1,), line,
                18, "x", "y")
    assert main(["predict", "--model", "mlp", "--onnx", str(line), str(image)]) == 2
    assert "line.onnx: not an image classifier: its input 'x' has shape ['batch', 1]" in capsys.readouterr().err


def test_the_installed_console_script_prints_what_main_prints(tmp_path: Path, setup: dict, capsys):
    """`dltorch` as pip installed it (pyproject's [project.scripts]), run as a user runs it."""
    image = _as_photo(setup["test"].inputs[1, 0].numpy(), tmp_path / "photo.jpg")
    script = Path(sys.executable).parent / "dltorch"
    result = subprocess.run([str(script), "predict", "--model", "mlp", "--json", str(image)], capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert main(["predict", "--model", "mlp", "--json", str(image)]) == 0
    in_process = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    top = json.loads(result.stdout)["predictions"][0]["top"]
    assert [row["class"] for row in top] == [row["class"] for row in in_process] and len(top) == 3
    assert [row["probability"] for row in top] == pytest.approx([row["probability"] for row in in_process])
