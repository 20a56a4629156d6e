"""HTTP load on a served champion, run by `make bench` (never by the tests). Needs a registered champion (`dvc repro`).

Starts what `make serve` runs (`dltorch serve --model <name> --backend <b>`: MLflow's scoring server, then the onnx
backend, each behind the request guard) on 127.0.0.1 and a free port, or uses --url (loopback only) if one is already
running; then sends exactly --requests POSTs of one test image each ({"inputs": ...}) from --clients concurrent
clients, each on its own keep-alive connection. Reports errors (goal: 0), p50 and p99 latency and requests/s per
backend; logs them to MLflow (run `bench-serve`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from dltorch import tracking
from dltorch.config import load_params
from dltorch.tasks import get_task

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(model: str, backend: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "dltorch.cli", "serve", "--model", model, "--host", HOST,
                                    "--port", str(port), "--backend", backend], stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
    for _ in range(240):  # bounded wait, ~2 minutes
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}); see {log}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"the server did not answer /ping; see {log}")


def load(url: str, body: bytes, requests: int, clients: int) -> dict:
    """Exactly `requests` POSTs shared among `clients` threads; latencies of the successes, and the errors."""
    parsed = urllib.parse.urlparse(url)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [requests]

    def client() -> None:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                ok = response.status == 200 and b'"predictions"' in answer
            except (OSError, http.client.HTTPException) as exc:
                ok, answer = False, repr(exc).encode()
                connection.close()
                connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors.append(answer[:200].decode(errors="replace"))
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = 1000 * np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {"requests": requests, "clients": clients, "errors": len(errors), "first_errors": errors[:3],
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "requests_per_s": requests / wall, "wall_s": wall}


def run_backend(args: argparse.Namespace, backend: str, body: bytes) -> dict:
    """Start `dltorch serve --backend <backend>` (unless --url names a running server), warm it, load it, stop it."""
    process, url = None, args.url
    if url is None:
        port = free_port()
        log = Path(tempfile.gettempdir()) / f"dltorch-bench-serve-{args.model}-{backend}.log"
        process = start_server(args.model, backend, port, log)
        url = f"http://{HOST}:{port}"
    try:
        load(url, body, 20, 1)  # warm-up, not counted
        return load(url, body, args.requests, args.clients)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data"), help="the model reads <data>/<its data: entry>")
    parser.add_argument("--model", default="mlp", help="a registered model; its @champion is served")
    parser.add_argument("--url", help="an already running server on loopback, e.g. http://127.0.0.1:5001")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backends", nargs="+", choices=["mlflow", "onnx"], default=["mlflow", "onnx"],
                        help="each is started, loaded and stopped in turn, for a side-by-side comparison")
    args = parser.parse_args()
    if args.url and urllib.parse.urlparse(args.url).hostname not in (HOST, "localhost"):
        raise SystemExit("--url: loopback only (127.0.0.1)")
    params = load_params(args.params)
    cfg = params.model(args.model)
    image = get_task(cfg.task).load_test(args.data / cfg.data, params.fetch.dataset, cfg.train).inputs[:1].numpy()
    body = json.dumps({"inputs": image.tolist()}).encode()
    results = {}
    for backend in ([] if args.url else args.backends) or ["given"]:
        results[backend] = run_backend(args, backend, body)
        result = results[backend]
        print(f"{args.model}@champion, backend {backend}: {result['requests']} requests from {result['clients']} "
              f"clients, {result['errors']} errors (goal 0), p50 {result['p50_ms']:.2f} ms, "
              f"p99 {result['p99_ms']:.2f} ms, {result['requests_per_s']:.0f} requests/s", flush=True)
        for error in result["first_errors"]:
            print(f"  error: {error}")
    tracker = tracking.Tracker.for_project(params.mlflow.experiment)
    with tracker.model_run("bench-serve", "bench/serve_load.py") as run:
        run.log_params({"model": args.model, "requests": args.requests, "clients": args.clients})
        run.log_metrics({f"{backend}.{key}": result[key] for backend, result in results.items()
                         for key in ("errors", "p50_ms", "p99_ms", "requests_per_s")})


if __name__ == "__main__":
    main()
