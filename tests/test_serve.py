"""Serving: the request guard on its own, then the real servers as subprocesses on loopback.

`mlflow models serve` (as the issue runs it) answers like torch; `dltorch serve` (what `make serve` runs: the same
MLflow app behind the guard) answers every bad request with a 4xx that says what is wrong, and keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dltorch.bundle import load_model
from dltorch.config import ExportConfig, parse_params
from dltorch.data.classification import load_split
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.export import ExportPaths, export
from dltorch.pipeline.train import train
from dltorch.serve import RequestGuard, non_finite_values
from tests.conftest import REPO, tiny_params_dict, write_tiny_raw
from tests.helpers import HOST, free_port, wait_for

# one worker runs this file: its module-scoped servers and repos are built once
pytestmark = pytest.mark.xdist_group("serve")

ATOL = 1e-4  # the parity tolerance of params.yaml
MAX_BODY = 10 * 2**20


# ---- the guard alone, with a stand-in app -------------------------------------------------------------------

def _call(guard: RequestGuard, body_chunks: list[bytes], headers: dict[str, str], method: str = "POST"):
    """Run one request through the guard; returns (status, response body, what the app received or None)."""
    seen: dict = {}

    async def app(scope, receive, send):
        message = await receive()
        seen["body"] = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard.app = app
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
                for i, chunk in enumerate(body_chunks)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/invocations",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], seen.get("body")


def test_guard_passes_a_good_body_through_whole():
    body = json.dumps({"inputs": [[0.5, 1.0]]}).encode()
    status, _, seen = _call(RequestGuard(None, 100), [body[:10], body[10:]], {"content-length": str(len(body))})
    assert (status, seen) == (200, body)


def test_guard_rejects_a_declared_oversized_body_without_calling_the_app():
    status, answer, seen = _call(RequestGuard(None, 100), [b"x" * 50, b"x" * 51], {"content-length": "101"})
    assert status == 413 and seen is None
    assert json.loads(answer)["message"] == "request body is 101 bytes; the limit is 100 bytes: send fewer inputs " \
                                            "per request"


def test_guard_stops_a_chunked_body_at_the_limit():
    status, answer, seen = _call(RequestGuard(None, 100), [b"x" * 60] * 5, {"transfer-encoding": "chunked"})
    assert status == 413 and seen is None and b"more than 120 bytes" in answer


def test_guard_rejects_a_non_numeric_content_length():
    status, answer, _ = _call(RequestGuard(None, 100), [b"{}"], {"content-length": "lots"})
    assert status == 400 and b"Content-Length 'lots' is not a number" in answer


@pytest.mark.parametrize(("body", "found"), [
    (b'{"inputs": [[NaN, 0.5]]}', "1 NaN or Infinity"),
    (b'{"inputs": [[Infinity, -Infinity]]}', "2 NaN or Infinity"),
    (b'{"inputs": [[null, 0.5, null]]}', "2 null"),
    (b'{"inputs": [[true, 0.5]]}', "1 boolean"),
])
def test_non_finite_values_are_named(body, found):
    assert non_finite_values(body) == f"inputs must be finite numbers; found {found} value(s)"
    status, answer, seen = _call(RequestGuard(None, 1000), [body], {"content-length": str(len(body))})
    assert status == 400 and seen is None and found.encode() in answer


@pytest.mark.parametrize("body", [b'{"inputs": [[0.5, 1e-3]]}', b'{"inputs": "NaN"}', b'{"inputs": [[Na'])
def test_finite_strings_and_malformed_json_are_left_to_mlflow(body):
    assert non_finite_values(body) is None


# ---- the real servers ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A tiny MLP trained, evaluated and exported, so `models:/mlp@champion` exists in a private store."""
    root = tmp_path_factory.mktemp("serving")
    write_tiny_raw(root / "raw")
    store = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        model_dir = root / "models" / "mlp"
        params = parse_params(tiny_params_dict())
        train(params, "mlp", root / "raw", model_dir)
        evaluate(root / "raw", model_dir, model_dir / "eval")
        deploy = export(ExportPaths.beside(root / "raw", model_dir, model_dir / "eval" / "metrics.json", model_dir),
                        ExportConfig(atol=ATOL, batch_size=16, calibration_size=100), params.registry_rule("mlp"))
    assert deploy["registry"]["fp32"]["decision"] == "promoted"
    yield {"store": store, "model_dir": model_dir, "root": root}


def _post(url: str, body: bytes, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def start_server(registered: dict) -> Iterator:
    started: list[subprocess.Popen] = []

    def start(command: list[str]) -> str:
        port = free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": registered["store"],
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # uvicorn, for mlflow
        log = open(registered["root"] / f"server-{port}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=registered["root"])
        started.append(process)
        base = f"http://{HOST}:{port}"
        wait_for(f"{base}/ping", process, seconds=120, log=Path(log.name))  # bounded, for a loaded machine
        return base

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _torch_logits(model_dir: Path, inputs: np.ndarray) -> np.ndarray:
    _, model = load_model(model_dir / "model.pt")
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


def _check_against_torch(base: str, registered: dict, count: int = 8) -> None:
    """Test-set images as {"inputs": ...}: the same argmax as torch, logits within the parity tolerance."""
    inputs = load_split(registered["root"] / "raw", "fashion_mnist", train=False).inputs[:count].numpy()
    model_dir = registered["model_dir"]
    status, answer = _post(f"{base}/invocations", json.dumps({"inputs": inputs.tolist()}).encode())
    assert status == 200, answer
    served = np.asarray(answer["predictions"]["logits"], dtype=np.float32)
    expected = _torch_logits(model_dir, inputs)
    assert served.shape == expected.shape
    assert (served.argmax(1) == expected.argmax(1)).all()
    assert np.abs(served - expected).max() <= ATOL


def test_mlflow_models_serve_answers_like_torch(registered: dict, start_server):
    base = start_server([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/mlp@champion",
                         "--env-manager", "local", "--host", HOST])
    _check_against_torch(base, registered)


@pytest.fixture(scope="module", params=["mlflow", "onnx"])
def guarded(start_server, request) -> str:
    """What `make serve` runs: `dltorch serve` on the champion, default limits, on each backend."""
    return start_server([sys.executable, "-m", "dltorch.cli", "serve", "--model", "mlp", "--host", HOST,
                         "--backend", request.param])


def test_each_backend_answers_like_torch_from_every_worker(guarded, registered):
    for _ in range(4):  # requests spread over the workers (two here): each answers the same
        _check_against_torch(guarded, registered)


def test_the_onnx_backend_refuses_a_model_that_is_not_registered(registered):
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["store"]}
    done = subprocess.run([sys.executable, "-m", "dltorch.cli", "serve", "--model", "nosuch", "--backend", "onnx",
                           "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "models:/nosuch@champion: cannot be served" in done.stderr


def _image_json(array: np.ndarray) -> bytes:
    return json.dumps({"inputs": array.tolist()}).encode()


def _fifty_megabytes() -> bytes:
    one = json.dumps(np.full((1, 28, 28), 0.123456789).tolist())
    count = 50 * 2**20 // (len(one) + 2) + 1
    return ('{"inputs": [' + ", ".join([one] * count) + "]}").encode()


BAD_REQUESTS = {
    "malformed JSON": (b'{"inputs": [[0.1, 0.2', 400, "valid JSON"),
    "empty body": (b"", 400, "valid JSON"),
    "wrong shape": (_image_json(np.zeros((2, 784))), 400, "does not match expected shape (-1, 1, 28, 28)"),
    "wrong image size": (_image_json(np.zeros((1, 1, 14, 14))), 400, "does not match expected shape"),
    "ragged": (json.dumps({"inputs": [[[0.1] * 28] * 27 + [[0.1] * 3]]}).encode(), 400, "inhomogeneous"),
    "wrong dtype (strings)": (json.dumps({"inputs": [[[["a"] * 28] * 28]]}).encode(), 400,
                              "could not convert string to float"),
    "wrong dtype (booleans)": (json.dumps({"inputs": [[[[True] * 28] * 28]]}).encode(), 400, "784 boolean"),
    "NaN values": (_image_json(np.where(np.eye(28) > 0, np.nan, 0.5)[None, None]), 400, "28 NaN or Infinity"),
    "null values": (json.dumps({"inputs": [[[[None] * 28] * 28]]}).encode(), 400, "784 null"),
    "no inputs key": (b'{"pixels": [1]}', 400, "must be a JSON dictionary with exactly one of the input fields"),
    "50 MB body": (None, 413, "the limit is 10485760 bytes"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_that_says_what_is_wrong_and_serving_goes_on(case, guarded, registered):
    body, status, message = BAD_REQUESTS[case]
    body = _fifty_megabytes() if body is None else body
    started = time.perf_counter()
    got, answer = _post(f"{guarded}/invocations", body)
    assert (got, message in answer["message"]) == (status, True), answer["message"][-400:]
    assert time.perf_counter() - started < 30  # answered, not hung
    _check_against_torch(guarded, registered, count=2)


def test_make_serve_binds_loopback_by_default():
    dry_run = subprocess.run(["make", "-n", "serve", "MODEL=mlp"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    assert "dltorch.cli serve --model mlp --host 127.0.0.1 --port 5001" in dry_run
