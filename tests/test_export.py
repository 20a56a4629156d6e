"""ONNX export against torch, the oracle: parity passes for a real export and fails for a perturbed one."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from dltorch.bundle import build_model
from dltorch.config import MAX_OPSET, MIN_OPSET
from dltorch.errors import ExportError, ParityError
from dltorch.export import (
    assert_parity,
    check_parity,
    export_onnx,
    fold_input_normalization,
    onnx_session,
    quantize_onnx,
    run_onnx,
)
from dltorch.tasks import classification


@pytest.fixture
def model_and_test(raw_root: Path):
    train, _ = classification.load_train_val(raw_root, "fashion_mnist", 0, 0)
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [16]}, "classification", classification.model_inputs(train, "fashion_mnist"))
    return model.eval(), classification.load_test(raw_root, "fashion_mnist")


@pytest.fixture
def exported(tmp_path: Path, model_and_test) -> Path:
    path = tmp_path / "model.onnx"
    export_onnx(model_and_test[0], (1, 28, 28), path, 18, "pixels", "logits")
    return path


def test_export_is_valid_onnx_with_a_dynamic_batch(exported: Path, model_and_test):
    graph = onnx.load(str(exported)).graph
    assert [i.name for i in graph.input] == ["pixels"] and [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    session = onnx_session(exported)
    for batch in (1, 3, 50):
        out = run_onnx(session, model_and_test[1].inputs[:batch].numpy(), batch)
        assert out.shape == (batch, 10)


def test_normalization_is_inside_the_graph(exported: Path, model_and_test):
    """The ONNX model takes pixels in [0, 1]: feeding them raw must match torch's full model."""
    model, test = model_and_test
    pixels = test.inputs[:20]
    expected = model(pixels).detach().numpy()
    np.testing.assert_allclose(run_onnx(onnx_session(exported), pixels.numpy(), 20), expected, atol=1e-5)


def test_an_mlps_normalization_is_folded_into_its_first_layer(exported: Path):
    """(x - mean) / std, then flatten, then a Gemm: the graph keeps the flatten and the Gemm, whose weights hold the
    normalization (the outputs still match torch: the tests around this one)."""
    graph = onnx.load(str(exported)).graph
    assert [node.op_type for node in graph.node][:2] == ["Reshape", "Gemm"] and graph.node[0].input[0] == "pixels"
    assert not {"Sub", "Div"} & {node.op_type for node in graph.node}


def _normalized_graph(layers: list[onnx.NodeProto], weight: np.ndarray, mean: np.ndarray) -> onnx.ModelProto:
    """pixels (N, 1, 4, 4) -> Sub(mean) -> Div(0.5) -> `layers` (the first reads "normalized", the last writes "out";
    initializers "w" and a bias "b" of 3)."""
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Sub", ["pixels", "mean"], ["centered"]),
         helper.make_node("Div", ["centered", "std"], ["normalized"]), *layers],
        "g", [helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(mean.astype(np.float32), "mean"),
         numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "std"),
         numpy_helper.from_array(weight.astype(np.float32), "w"), numpy_helper.from_array(np.ones(3, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_only_a_scalar_normalization_before_a_fully_connected_layer_is_folded(tmp_path: Path):
    rng, node = np.random.default_rng(0), onnx.helper.make_node
    dense = [node("Flatten", ["normalized"], ["flat"]), node("Gemm", ["flat", "w", "b"], ["out"], transB=1)]
    scalar, per_pixel = np.full((1, 1, 1, 1), 0.25), rng.random((1, 1, 4, 4))
    folded = _normalized_graph(dense, rng.random((3, 16)), scalar)
    pixels = rng.random((2, 1, 4, 4), dtype=np.float32)
    onnx.save(folded, str(tmp_path / "before.onnx"))
    assert fold_input_normalization(folded) and [n.op_type for n in folded.graph.node] == ["Flatten", "Gemm"]
    onnx.save(folded, str(tmp_path / "after.onnx"))
    np.testing.assert_allclose(run_onnx(onnx_session(tmp_path / "after.onnx"), pixels, 2),
                               run_onnx(onnx_session(tmp_path / "before.onnx"), pixels, 2), atol=1e-5)
    for proto in (_normalized_graph([node("Conv", ["normalized", "w"], ["out"], pads=[1, 1, 1, 1])],
                                    rng.random((2, 1, 3, 3)), scalar),  # zero padding: not the raw image's
                  _normalized_graph(dense, rng.random((3, 16)), per_pixel)):
        before = proto.SerializeToString()
        assert not fold_input_normalization(proto) and proto.SerializeToString() == before


def test_parity_passes_on_the_whole_test_set(exported: Path, model_and_test):
    model, test = model_and_test
    report = check_parity(exported, model, test.inputs, test.targets, atol=1e-4, batch_size=16,
                          task_checks=classification.parity_checks)
    assert report["passed"] and report["samples"] == len(test)
    assert report["checks"]["max_abs_diff"]["measured"] < 1e-4
    assert report["torch_accuracy"] == report["onnx_accuracy"]
    assert_parity(report, exported)


def test_parity_gate_fails_on_a_perturbed_model(tmp_path: Path, exported: Path, model_and_test):
    model, test = model_and_test
    proto = onnx.load(str(exported))
    weight = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    perturbed = numpy_helper.to_array(weight) + np.float32(0.05)
    weight.CopyFrom(numpy_helper.from_array(perturbed.astype(np.float32), weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    report = check_parity(broken, model, test.inputs, test.targets, atol=1e-4, batch_size=16,
                          task_checks=classification.parity_checks)
    assert not report["passed"]
    assert not report["checks"]["max_abs_diff"]["passed"]
    assert report["checks"]["max_abs_diff"]["measured"] > 1e-3
    with pytest.raises(ParityError, match=r"max_abs_diff: measured .*, limit 0.0001"):
        assert_parity(report, broken)


class _BatchAsInt(torch.nn.Module):
    """A forward that turns the batch size into a Python int, as len(x) does."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.reshape(len(pixels), -1)[:, :10] * torch.ones(len(pixels), 1)


def test_a_graph_with_a_fixed_batch_size_is_refused(tmp_path: Path):
    with pytest.raises(ExportError, match="fixed batch size 4"):
        export_onnx(_BatchAsInt(), (1, 28, 28), tmp_path / "model.onnx", 18, "pixels", "logits")
    assert not (tmp_path / "model.onnx").exists()


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_model_is_int8_and_agrees_with_fp32(tmp_path: Path, exported: Path, model_and_test, mode):
    _, test = model_and_test
    int8 = tmp_path / f"{mode}.onnx"
    quantize_onnx(exported, int8, mode, calibration=test.inputs[:40].numpy())
    ops = _op_types(int8)
    # dynamic: int8 weights multiplied by activations quantized at run time; static: QDQ pairs around each op
    expected = ({"DynamicQuantizeLinear", "MatMulInteger"} if mode == "dynamic"
                else {"QuantizeLinear", "DequantizeLinear"})
    assert expected <= ops
    fp32_out = run_onnx(onnx_session(exported), test.inputs.numpy(), 16)
    int8_out = run_onnx(onnx_session(int8), test.inputs.numpy(), 16)
    assert int8_out.shape == fp32_out.shape and np.isfinite(int8_out).all()
    assert (int8_out.argmax(1) == fp32_out.argmax(1)).mean() >= 0.9
    assert 0 < np.abs(int8_out - fp32_out).max() < 0.5 * np.abs(fp32_out).max()  # quantized, not a copy


def test_static_quantization_without_calibration_is_an_error(tmp_path: Path, exported: Path):
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx(exported, tmp_path / "int8.onnx", "static", calibration=None)
    assert not (tmp_path / "int8.onnx").exists()


class _ThreeCells(torch.nn.Module):
    """An LSTM, a GRU and a two-layer tanh RNN side by side on one window: every recurrent translation in one
    small graph."""

    def __init__(self) -> None:
        super().__init__()
        self.cells = torch.nn.ModuleList([torch.nn.LSTM(1, 4, batch_first=True), torch.nn.GRU(1, 4, batch_first=True),
                                          torch.nn.RNN(1, 3, num_layers=2, batch_first=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([cell(x)[0][:, -1] for cell in self.cells], dim=1)


@pytest.mark.parametrize("opset", range(MIN_OPSET, MAX_OPSET + 1))
def test_recurrent_cells_export_at_every_allowed_opset(opset: int, tmp_path: Path):
    """Each opset params allow: the file declares it, keeps batch and length dynamic, and matches torch at lengths
    unlike the example's. One process exports six times, as torch's dispatch cache once broke the second export."""
    torch.manual_seed(0)
    model, path = _ThreeCells().eval(), tmp_path / "cells.onnx"
    export_onnx(model, (6, 1), path, opset, "window", "forecast", {0: ("batch", 1), 1: ("steps", 1)})
    proto = onnx.load(str(path))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {opset}
    assert {"LSTM", "GRU", "RNN"} <= {node.op_type for node in proto.graph.node}
    session = onnx_session(path)
    for batch, steps in ((3, 9), (2, 2)):
        window = torch.randn(batch, steps, 1)
        with torch.no_grad():
            np.testing.assert_allclose(run_onnx(session, window.numpy(), batch), model(window).numpy(), atol=1e-5)


def test_the_exporters_registry_is_built_once_per_opset_and_each_export_gets_its_own_copy(tmp_path: Path,
                                                                                         monkeypatch, model_and_test):
    """An RNN's custom translations go into its export's registry only, not into the next export's."""
    from torch.onnx._internal.exporter import _core, _registration

    built, registries, build, export = [], [], _registration.ONNXRegistry.from_torchlib, _core.export

    def counted_build(opset_version: int):
        built.append(opset_version)
        return build(opset_version=opset_version)

    def spied_export(*args, registry, **kwargs):
        registries.append(registry)
        return export(*args, registry=registry, **kwargs)

    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib", counted_build)
    monkeypatch.setattr(_core, "export", spied_export)
    export_onnx(_ThreeCells().eval(), (6, 1), tmp_path / "cells.onnx", 18, "window", "forecast")
    export_onnx(model_and_test[0], (1, 28, 28), tmp_path / "mlp.onnx", 18, "pixels", "logits")
    export_onnx(model_and_test[0], (1, 28, 28), tmp_path / "mlp19.onnx", 19, "pixels", "logits")
    assert built == [18, 19]
    custom = [{str(t) for t, decomps in r.functions.items() if any(d.is_custom for d in decomps)} for r in registries]
    assert custom[0] and not custom[1] and not custom[2], custom
    assert _registration.ONNXRegistry.from_torchlib is counted_build  # put back after each export


def test_recurrent_export_refuses_a_torch_it_was_not_written_for(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.15.0")
    with pytest.raises(ExportError, match=r"torch 2\.14\.x; this is torch 2\.15\.0"):
        export_onnx(_ThreeCells(), (6, 1), tmp_path / "cells.onnx", 18, "window", "forecast")
    assert not (tmp_path / "cells.onnx").exists()


def test_mirror_averaging_is_in_the_model_and_its_graph(tmp_path: Path, raw_root: Path, model_and_test):
    """train.augment.test_time_hflip: at inference an image and its mirror image get the same logits (the mean of
    both), in torch and in the exported graph; training still sees each image alone."""
    plain, test = model_and_test
    train, _ = classification.load_train_val(raw_root, "fashion_mnist", 0, 0)
    inputs = {**classification.model_inputs(train, "fashion_mnist"), "test_time_hflip": True}
    averaged = build_model("mlp", {"hidden": [16]}, "classification", inputs)
    averaged.load_state_dict(plain.state_dict())  # the same keys: the wrapper adds no weights
    pixels, mirrored = test.inputs[:20], test.inputs[:20].flip(-1)
    with torch.no_grad():
        assert not torch.allclose(plain(pixels), plain(mirrored), atol=1e-3)
        torch.testing.assert_close(averaged.eval()(pixels), averaged(mirrored))
        torch.testing.assert_close(averaged.train()(pixels), plain(pixels))
    path = tmp_path / "mirror.onnx"
    export_onnx(averaged.eval(), (1, 28, 28), path, 18, "pixels", "logits")
    session = onnx_session(path)
    onnx_out = run_onnx(session, pixels.numpy(), 20)
    np.testing.assert_allclose(onnx_out, run_onnx(session, mirrored.numpy(), 20), atol=1e-5)
    np.testing.assert_allclose(onnx_out, averaged(pixels).detach().numpy(), atol=1e-5)


def test_a_mirror_averaged_cnn_quantizes_statically(tmp_path: Path, raw_root: Path, model_and_test):
    """onnxruntime's symbolic shape inference loses the shape of a convolution fed the mirrored batch (a TypeError
    inside quant_pre_process); ONNX's shape inference stands in, so the CNN recipes still get their INT8 file."""
    _, test = model_and_test
    train, _ = classification.load_train_val(raw_root, "fashion_mnist", 0, 0)
    inputs = {**classification.model_inputs(train, "fashion_mnist"), "test_time_hflip": True}
    torch.manual_seed(0)
    model = build_model("fast_cnn", {"stem": 4, "widths": [8, 8]}, "classification", inputs).eval()
    path, int8 = tmp_path / "cnn.onnx", tmp_path / "cnn.int8.onnx"
    export_onnx(model, (1, 28, 28), path, 18, "pixels", "logits")
    quantize_onnx(path, int8, "static", test.inputs[:100].numpy())
    pixels = test.inputs[:20].numpy()
    quantized = run_onnx(onnx_session(int8), pixels, 20)
    np.testing.assert_allclose(quantized, run_onnx(onnx_session(int8), pixels[..., ::-1].copy(), 20), atol=1e-5)
    assert quantized.shape == (20, 10) and np.isfinite(quantized).all()


def test_graphs_compared_for_speed_are_timed_in_turns_so_a_slowdown_weighs_on_both():
    """The machine slows down 20-fold halfway through: timed one after the other, the graph timed second would lose
    to an equally fast one; in turns, both medians see the same mix of fast and slow calls."""
    from dltorch.export import interleaved_median_ms

    order: list[str] = []

    def call(name: str) -> None:
        order.append(name)
        time.sleep(0.0005 if len(order) <= 40 else 0.01)

    medians = interleaved_median_ms({"a": lambda: call("a"), "b": lambda: call("b")}, runs=30, warmup=5)
    assert order == ["a", "b"] * 35  # the warm-up rounds, then the timed ones: each graph once per round
    assert medians["a"] / medians["b"] == pytest.approx(1, rel=0.5)


def test_a_latency_median_spans_at_least_min_seconds_of_calls():
    """A call of microseconds is timed over min_seconds, not only over `runs` calls; the warm-up a fifth of that."""
    from dltorch.export import median_ms

    calls = []
    start = time.perf_counter()
    assert median_ms(lambda: calls.append(time.perf_counter()), runs=3, warmup=1, min_seconds=0.05) >= 0
    assert time.perf_counter() - start >= 0.06 and len(calls) > 3 + 1
    calls.clear()
    median_ms(lambda: calls.append(1), runs=3, warmup=1)
    assert len(calls) == 4  # no floor: exactly warmup + runs
