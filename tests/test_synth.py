"""The synth stage: the course's own code is the oracle; same params give the same bytes, other params others."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dltorch.config import FOLDER_SETS, GRAPH_SETS, SynthConfig, parse_params
from dltorch.data.regression import GENERATORS, generate, read_set
from dltorch.data.synth import write_sets
from dltorch.errors import DataError, ParamsError
from tests.conftest import REPO, TINY_SBM, TINY_SEQUENCES, TINY_SHAPES, tiny_params_dict

# The defaults are the course's recipes; the sequences, shapes and SBM sets shrink to keep the tests fast (their own
# tests are in test_sequence.py and test_segmentation.py).
COURSE = SynthConfig(sequences=TINY_SEQUENCES, shapes=TINY_SHAPES, sbm=TINY_SBM)


def _sha256(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.csv"))}


def test_same_params_give_byte_identical_files(tmp_path: Path):
    first = write_sets(COURSE, tmp_path / "a")
    second = write_sets(COURSE, tmp_path / "b")
    assert first == second
    assert _sha256(tmp_path / "a") == _sha256(tmp_path / "b") == {f"{n}.csv": d for n, d in first.items()
                                                                  if n not in FOLDER_SETS + GRAPH_SETS}
    assert len(first) == 11  # the course's six CSV sets, blobs, sequences, shapes and the two graphs


@pytest.mark.parametrize("name", list(GENERATORS))
@pytest.mark.parametrize("field", ["seed", "size", "noise"])
def test_other_params_give_other_data_and_leave_other_sets_alone(tmp_path: Path, name: str, field: str):
    base = write_sets(COURSE, tmp_path / "base")
    entry = getattr(COURSE, name).model_dump()
    entry[field] = {"seed": entry["seed"] + 1, "size": entry["size"] + 10, "noise": entry["noise"] * 2}[field]
    changed = write_sets(SynthConfig(**{**COURSE.model_dump(), name: entry}), tmp_path / "changed")
    assert changed[name] != base[name]
    assert {k: v for k, v in changed.items() if k != name} == {k: v for k, v in base.items() if k != name}


def test_line_is_the_course_line_with_the_first_80_rows_training(tmp_path: Path):
    np.random.seed(0)
    x = np.random.rand(100)
    y = 2 * x + 3 + np.random.randn(100)
    write_sets(COURSE, tmp_path)
    data = read_set(tmp_path / "line.csv")  # read back from the CSV: full precision survives the round trip
    assert np.array_equal(data.x, x) and np.array_equal(data.y, y)
    assert list(data.split) == ["train"] * 80 + ["test"] * 20


def test_line_small_noise_trains_on_the_course_100_rows_and_tests_on_extra_draws():
    np.random.seed(42)  # the course's lesson, as it writes it: all 100 points train, no shuffle, no split
    x = np.random.rand(100, 1)
    y = 1 + 2 * x + 0.1 * np.random.randn(100, 1)
    x_extra = np.random.rand(20, 1)  # ours only: 20 more points from the same RNG, to evaluate on
    y_extra = 1 + 2 * x_extra + 0.1 * np.random.randn(20, 1)
    data = generate("line_small_noise", COURSE)
    train_x, train_y = data.part("train")
    test_x, test_y = data.part("test")
    assert np.array_equal(train_x, x.ravel()) and np.array_equal(train_y, y.ravel())
    assert np.array_equal(test_x, x_extra.ravel()) and np.array_equal(test_y, y_extra.ravel())


def course_train_test_split(x: np.ndarray, y: np.ndarray, test_size: float, random_state: int):
    """sklearn's train_test_split(X, Y, test_size=..., random_state=...) for a float test_size, as its source
    does it (model_selection/_split.py): ShuffleSplit's n_test = ceil(test_size n), n_train = n - n_test;
    permutation = RandomState(random_state).permutation(n); test = permutation[:n_test], train the next n_train."""
    n = len(x)
    n_test = math.ceil(test_size * n)
    permutation = np.random.RandomState(random_state).permutation(n)
    test, train = permutation[:n_test], permutation[n_test : n_test + (n - n_test)]
    return x[train], x[test], y[train], y[test]


def test_the_split_snippet_reproduces_sklearns_documented_example():
    """train_test_split's docstring: X = arange(10).reshape((5, 2)), test_size=0.33, random_state=42 gives
    X_train [[4, 5], [0, 1], [6, 7]], X_test [[2, 3], [8, 9]], y_train [2, 0, 3], y_test [1, 4]."""
    x_train, x_test, y_train, y_test = course_train_test_split(np.arange(10).reshape((5, 2)), np.arange(5),
                                                               test_size=0.33, random_state=42)
    assert x_train.tolist() == [[4, 5], [0, 1], [6, 7]] and x_test.tolist() == [[2, 3], [8, 9]]
    assert y_train.tolist() == [2, 0, 3] and y_test.tolist() == [1, 4]


def test_quadratic_is_the_course_set_and_its_train_test_split():
    np.random.seed(32)
    x = np.random.uniform(-5, 5, 100)
    y = x**2 + 1 + 5 * np.random.normal(0, 1, 100)
    x_train, x_test, y_train, y_test = course_train_test_split(x, y, test_size=0.3, random_state=0)
    data = generate("quadratic", COURSE)
    assert np.array_equal(data.part("train")[0], x_train) and np.array_equal(data.part("train")[1], y_train)
    assert np.array_equal(data.part("test")[0], x_test) and np.array_equal(data.part("test")[1], y_test)


def test_parabola_is_the_course_set():
    np.random.seed(0)
    x = np.linspace(-5, 5, 1000)
    y = 0.3 * x**2 + np.random.randn(1000)
    data = generate("parabola", COURSE)
    assert np.array_equal(data.x, x) and np.array_equal(data.y, y) and set(data.split) == {"train"}


def test_dropout_points_are_the_course_points_with_an_independent_test_draw():
    torch.manual_seed(2333)
    x = torch.unsqueeze(torch.linspace(-1, 1, 20), 1)
    y = x + 0.3 * torch.normal(torch.zeros(20, 1), torch.ones(20, 1))
    test_y = x + 0.3 * torch.normal(torch.zeros(20, 1), torch.ones(20, 1))
    data = generate("dropout_points", COURSE)
    train_x, train_y = data.part("train")
    test_x, test_y_read = data.part("test")
    assert np.array_equal(train_x, test_x) and np.array_equal(train_x.astype(np.float32), x.numpy().ravel())
    assert np.array_equal(train_y.astype(np.float32), y.numpy().ravel())
    assert np.array_equal(test_y_read.astype(np.float32), test_y.numpy().ravel())


@pytest.mark.parametrize(
    ("synth", "expected"),
    [
        ({"lines": {"seed": 0, "size": 10, "noise": 1.0}},
         "params.yaml: synth.lines: unknown key; did you mean 'line'?"),
        ({"line": {"seed": 0, "size": 100, "noise": 1.0, "train_size": 100}},
         "params.yaml: synth.line: train_size: 100 leaves no test rows out of size 100"),
        ({"quadratic": {"seed": 32, "size": 100, "noise": 5.0, "train_size": 0, "split_seed": 1}},
         "synth.quadratic.train_size: Input should be greater than or equal to 1"),
        ({"parabola": {"seed": 0, "size": 1000, "noise": -1.0}}, "synth.parabola.noise: "),
    ],
)
def test_bad_sets_and_inconsistent_splits_are_schema_errors(synth: dict, expected: str):
    with pytest.raises(ParamsError) as caught:
        parse_params({**tiny_params_dict(), "synth": synth})
    assert expected in str(caught.value)


def test_a_model_reading_an_unknown_set_is_a_schema_error():
    raw = tiny_params_dict()
    raw["models"]["fit"] = {"arch": "mlp", "task": "regression", "data": "synthetic/circle.csv",
                            "args": {"hidden": []}, "train": {"loss": "mse", "val_size": 0}}
    with pytest.raises(ParamsError, match="models.fit.data: 'synthetic/circle.csv' is not a synth set; known: "):
        parse_params(raw)


def test_reading_a_missing_or_corrupt_set_names_the_file(tmp_path: Path):
    with pytest.raises(DataError, match="line.csv: missing; run the synth stage first"):
        read_set(tmp_path / "line.csv")
    corrupt = tmp_path / "corrupt.csv"
    corrupt.write_text("x,y,split\n0.5,1.0,train\n0.7,oops,train\n")
    with pytest.raises(DataError, match="corrupt.csv: line 3: expected x,y,split"):
        read_set(corrupt)
    corrupt.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a synthetic set"):
        read_set(corrupt)


def test_synth_stage_writes_the_sets_or_fails_cleanly(tmp_path: Path):
    params = {**tiny_params_dict(), "synth": {"sequences": TINY_SEQUENCES, "shapes": TINY_SHAPES}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out = tmp_path / "synthetic"
    stage = [sys.executable, str(REPO / "stages" / "synth.py"), "--params", str(params_file), "--out", str(out)]
    done = subprocess.run(stage, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    digests = write_sets(COURSE, tmp_path / "again")
    assert _sha256(out) == {f"{n}.csv": d for n, d in digests.items()
                            if n not in FOLDER_SETS + GRAPH_SETS}
    for name in ("sequences", "shapes"):  # folders: the digest printed is the one of the same files written again
        assert f"{out / name}  sha256 {digests[name]}" in done.stdout

    params["synth"] = {"line": {"seed": 0, "size": 10, "noise": 1.0, "train_size": 12}}
    params_file.write_text(yaml.safe_dump(params))
    bad_out = tmp_path / "bad"
    failed = subprocess.run([*stage[:-1], str(bad_out)], capture_output=True, text=True, cwd=tmp_path)
    assert failed.returncode == 2 and "synth.line: train_size: 12 leaves no test rows" in failed.stderr
    assert "Traceback" not in failed.stderr and not bad_out.exists()
