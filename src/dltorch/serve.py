"""HTTP serving: MLflow's own scoring app (the one `mlflow models serve` runs) with a request guard in front.

What the guard adds, and why (measured on MLflow 3.17.2's scoring server, see README "Serving"):
- a body-size limit: MLflow reads any body whole (`await request.body()`), so a 50 MB request was read, parsed
  and answered 200 after seconds of work; here it is a 413 before the body is read past the limit;
- non-finite values: MLflow casts `NaN`, `Infinity` and `null` to float and answers 200 with `NaN` logits (not
  even valid JSON); booleans are cast to 1.0/0.0. Here they are a 400 naming what was found.
Shape and dtype are left to MLflow: the logged signature (float32, (-1, C, H, W)) already answers 400 to both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_MAX_BODY_BYTES = 10 * 2**20  # ~500 images of 28x28 as JSON text
# An oversized body is read and dropped (never kept) up to this many times the limit, then the connection closes.
DRAIN_FACTOR = 8
# Only a body holding one of these can carry a value that is not a finite number; the rest skip the parse.
_SUSPECT_TOKENS = (b"NaN", b"Infinity", b"null", b"true", b"false")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestGuard:
    """Pure ASGI middleware: bounds the request body and rejects non-finite values before the app sees them."""

    def __init__(self, app: Callable, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _reject(send, 400, f"Content-Length '{declared.decode(errors='replace')}' is not a number")
            return
        if declared is not None and int(declared) > self.max_body_bytes:
            # A client that asked `Expect: 100-continue` (curl does for big bodies) has sent nothing yet: answer
            # now. Others are sending the body regardless; closing on them would reset the connection before they
            # read the 413, so the rest is read and dropped, up to a bound.
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await _discard(receive, DRAIN_FACTOR * self.max_body_bytes)
            await _reject(send, 413, self._too_large(int(declared)))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:  # a chunked body, without Content-Length: stop keeping it here
                await _discard(receive, DRAIN_FACTOR * self.max_body_bytes)
                await _reject(send, 413, self._too_large(len(body), at_least=True))
                return
            if not message.get("more_body", False):
                break
        if scope["path"].rstrip("/") == "/invocations" and (problem := non_finite_values(bytes(body))):
            await _reject(send, 400, problem)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (f"request body is {'more than ' if at_least else ''}{size} bytes; the limit is "
                f"{self.max_body_bytes} bytes: send fewer inputs per request")


def non_finite_values(body: bytes) -> str | None:
    """Why the JSON body holds values that are not finite numbers, or None. Malformed JSON is left to MLflow."""
    if not any(token in body for token in _SUSPECT_TOKENS):
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    counts = {"NaN or Infinity": 0, "null": 0, "boolean": 0}
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, bool):
            counts["boolean"] += 1
        elif value is None:
            counts["null"] += 1
        elif isinstance(value, float) and not math.isfinite(value):
            counts["NaN or Infinity"] += 1
    found = [f"{count} {kind}" for kind, count in counts.items() if count]
    if not found:
        return None
    return f"inputs must be finite numbers; found {', '.join(found)} value(s)"


async def _discard(receive: Receive, budget: int) -> None:
    """Read and drop the rest of the body, at most `budget` bytes: memory stays bounded, and so does the time."""
    dropped = 0
    while dropped <= budget:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body, already read, handed to the app as one message; later calls go to the server (disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _reject(send: Send, status: int, message: str) -> None:
    """The error in MLflow's own shape, so a client parses one format; the connection closes after it."""
    error_code = "REQUEST_LIMIT_EXCEEDED" if status == 413 else "BAD_REQUEST"
    content = json.dumps({"error_code": error_code, "message": message}).encode()
    await send_json(send, status, content, close=True)


async def send_json(send: Send, status: int, content: bytes, close: bool = False) -> None:
    """A whole JSON response: every answer and error of both serving backends."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"connection", b"close")] if close else [])})
    await send({"type": "http.response.body", "body": content})


def create_app(model_uri: str, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> RequestGuard:
    """MLflow's scoring app for `model_uri` (e.g. models:/mlp@champion), behind the guard."""
    from mlflow.pyfunc import load_model, scoring_server

    return RequestGuard(scoring_server.init(load_model(model_uri)), max_body_bytes)


def serve(model_uri: str, host: str, port: int, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    import uvicorn

    uvicorn.run(create_app(model_uri, max_body_bytes), host=host, port=port, log_level="info")
