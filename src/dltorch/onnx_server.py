"""`dltorch serve --backend onnx`: the champion's ONNX file in onnxruntime behind a minimal ASGI app.

Why a second backend: profiling MLflow's scoring server on the served MLP (bench/serve_load.py; README "Serving")
showed the model itself is a small part of a request: onnxruntime answers a 28x28 image in ~0.04 ms, while the
request crosses FastAPI's middleware stack, a thread-pool hop, a pandas-aware input parser (~0.4 ms for 784 floats)
and schema enforcement on every call, in one uvicorn worker that uses one of the cores. This app does what a
request needs and no more:
- one process per core (uvicorn workers), each with a single-threaded onnxruntime session, so workers do not fight
  over cores (ORT's default thread pool spins on every core);
- the body parsed by orjson straight into a float32 array, checked against the registered signature's shape;
- answers and errors in MLflow's own format ({"predictions": {<output>: ...}}; {"error_code", "message"}), with
  the same request guard in front (body-size limit, non-finite values), so a client can switch backends.
It serves the same `models:/<name>@<alias>`: the registered ONNX file and signature are downloaded once from the
tracking server by the parent process and read by each worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dltorch.errors import DltorchError
from dltorch.serve import DEFAULT_MAX_BODY_BYTES, RequestGuard, send_json

log = logging.getLogger(__name__)

MODEL_DIR_ENV = "DLTORCH_SERVE_MODEL_DIR"  # how the parent hands the downloaded model to its workers
MAX_BODY_ENV = "DLTORCH_SERVE_MAX_BODY"
INPUT_KEYS = ("inputs", "instances")  # MLflow's tensor input fields

Send = Callable[[dict[str, Any]], Awaitable[None]]


class BadRequest(ValueError):
    """A request this model cannot answer: a 400 whose message says why."""


@dataclass(frozen=True)
class OnnxModel:
    """A registered ONNX model as served: its session, the signature's input shape (-1 = any size) and dtype."""

    session: Any
    input_name: str
    input_shape: tuple[int, ...]
    dtype: np.dtype
    output_names: tuple[str, ...]

    @classmethod
    def load(cls, folder: Path) -> OnnxModel:
        """A downloaded MLflow ONNX model folder: MLmodel (flavor, signature) and the .onnx file it names."""
        import onnxruntime as ort
        from mlflow.models import Model

        meta = Model.load(str(folder / "MLmodel"))
        flavor = meta.flavors.get("onnx")
        if flavor is None or meta.signature is None:
            raise DltorchError(f"{folder}: not an ONNX model with a signature (flavors: {', '.join(meta.flavors)})")
        spec = meta.signature.inputs.inputs[0]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one worker per core: parallelism comes from the workers
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(folder / flavor["data"]), options, providers=["CPUExecutionProvider"])
        return cls(session, session.get_inputs()[0].name, tuple(spec.shape), np.dtype(spec.type),
                   tuple(output.name for output in session.get_outputs()))

    def predict(self, payload: Any) -> dict[str, np.ndarray]:
        inputs = self.to_array(payload)
        outputs = self.session.run(None, {self.input_name: inputs})
        return dict(zip(self.output_names, outputs, strict=True))

    def to_array(self, payload: Any) -> np.ndarray:
        """The request's inputs as the signature's dtype and shape, or a BadRequest saying what differs."""
        if not isinstance(payload, dict) or sum(key in payload for key in INPUT_KEYS) != 1:
            raise BadRequest("The input must be a JSON dictionary with exactly one of the input fields "
                             f"{set(INPUT_KEYS)}")
        values = next(payload[key] for key in INPUT_KEYS if key in payload)
        if isinstance(values, dict):  # MLflow's named-tensor form: {"inputs": {<input name>: [...]}}
            if list(values) != [self.input_name]:
                raise BadRequest(f"the model's one input is named '{self.input_name}', got {list(values)}")
            values = values[self.input_name]
        try:
            array = np.asarray(values, dtype=self.dtype)
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"the inputs are not {self.dtype} numbers: {exc}") from None
        expected = self.input_shape
        if array.ndim != len(expected) or any(want not in (-1, got) for want, got in zip(expected, array.shape,
                                                                                           strict=False)):
            raise BadRequest(f"Shape of input {array.shape} does not match expected shape {expected}")
        return array


def _loads(body: bytes) -> Any:
    import orjson

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _dumps(outputs: dict[str, np.ndarray]) -> bytes:
    import orjson

    return orjson.dumps({"predictions": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)


class OnnxApp:
    """A pure ASGI app: GET /ping and /health, POST /invocations; everything else 404."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model

    async def __call__(self, scope: dict, receive: Callable, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path, method = scope["path"].rstrip("/"), scope["method"]
        if method == "GET" and path in ("/ping", "/health"):
            await send_json(send, 200, b"\n")
        elif method == "POST" and path == "/invocations":
            await self._invocations(receive, send)
        else:
            await send_json(send, 404, _error("ENDPOINT_NOT_FOUND", f"{method} {scope['path']}: not served here"))

    async def _invocations(self, receive: Callable, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            answer = _dumps(self.model.predict(_loads(bytes(body))))
        except BadRequest as exc:
            await send_json(send, 400, _error("BAD_REQUEST", str(exc)))
            return
        except Exception as exc:  # onnxruntime refused what passed the checks: say so, keep serving
            log.exception("inference failed")
            await send_json(send, 500, _error("INTERNAL_ERROR", f"inference failed: {exc}"))
            return
        await send_json(send, 200, answer)


def _error(code: str, message: str) -> bytes:
    import orjson

    return orjson.dumps({"error_code": code, "message": message})


async def _lifespan(receive: Callable, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(model_dir: Path, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> RequestGuard:
    return RequestGuard(OnnxApp(OnnxModel.load(model_dir)), max_body_bytes)


def app_from_env() -> RequestGuard:
    """Each uvicorn worker's app (a factory: workers are fresh processes that read what the parent downloaded)."""
    return create_app(Path(os.environ[MODEL_DIR_ENV]), int(os.environ[MAX_BODY_ENV]))


def download(model_uri: str, into: Path) -> Path:
    """The registered model's files (MLmodel, the .onnx file) from the tracking server, into a local folder."""
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into)))
    except mlflow.exceptions.MlflowException as exc:
        raise DltorchError(f"{model_uri}: cannot be served: {exc.message}") from None


def serve(model_uri: str, host: str, port: int, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          workers: int | None = None) -> None:
    import tempfile

    import uvicorn

    with tempfile.TemporaryDirectory(prefix="dltorch-serve-") as folder:
        model_dir = download(model_uri, Path(folder))
        OnnxModel.load(model_dir)  # a bad model fails here, once, not in every worker
        os.environ[MODEL_DIR_ENV], os.environ[MAX_BODY_ENV] = str(model_dir), str(max_body_bytes)
        uvicorn.run("dltorch.onnx_server:app_from_env", factory=True, host=host, port=port,
                    workers=workers or os.cpu_count() or 1, log_level="warning", access_log=False)
