"""What several test files do the same way: free ports, starting a server and polling it, running dvc in a copy of
the repo, and interrupting a training run to resume it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from dltorch import engine
from tests.conftest import REPO

HOST = "127.0.0.1"  # loopback only, in every test
BIN = Path(sys.executable).parent  # the virtualenv's console scripts: dvc, mlflow, dltorch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; bounded, and a server that exits while starting fails at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    state = f"exited with {process.returncode}" if process.poll() is not None else f"no answer in {seconds} s"
    raise AssertionError(f"{url}: {state}" + (f"; its log: {log}" if log else ""))


def copy_repo(dest: Path) -> None:
    """The repo as git sees it (tracked and untracked-not-ignored files), without dvc.lock, as a fresh git repo."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if (REPO / name).is_file() and name != "dvc.lock":  # a fresh pipeline: no record of earlier runs
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=dest, check=True)


def dvc(repo: Path, *args: str, timeout: int = 600, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """`dvc <args>` in `repo` with this virtualenv's tools first on PATH, no MLflow/DVC/AWS settings inherited, and
    `env` on top (e.g. a team stack's); by default it must succeed."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "AWS_"))}
    base["PATH"] = f"{BIN}{os.pathsep}{base['PATH']}"
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env={**base, **(env or {})}, capture_output=True,
                            text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def digests(repo: Path, folders: tuple[str, ...] = ("data/raw", "models")) -> dict[str, str]:
    """sha256 of every file under `folders` of `repo` (DVC's .gitignore files aside), by path: a remote round trip
    must give them back byte for byte."""
    import hashlib

    files = [p for folder in folders for p in (repo / folder).rglob("*") if p.is_file() and p.name != ".gitignore"]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (make setup)
MLP_STAGES = ("fetch", "train@mlp", "evaluate@mlp", "export@mlp")


def tiny_mlp_repo(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A copy of the repo whose params hold one model, a 32-unit MLP for one epoch on the real Fashion-MNIST (read
    from Debian's copy), plus `overrides` (top-level params sections); dvc reproduces MLP_STAGES in seconds."""
    import yaml

    assert (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(), "run `make setup` for the real Fashion-MNIST"
    copy_repo(dest)
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    mlp = raw["models"]["mlp"]
    mlp["args"] = {"hidden": [32]}
    mlp["train"].update(epochs=1, batch_size=500, val_size=1000)
    mlp["gate"] = {"metric": "test_accuracy", "min": 0.75}  # README's 0.865 is for the full recipe
    raw["models"] = {"mlp": mlp}
    raw["fetch"].update(source_dir=str(FASHION_MNIST), download=False)
    (dest / "params.yaml").write_text(yaml.safe_dump({**raw, **(overrides or {})}, sort_keys=False))
    return dest


def export_trained(params: Any, name: str, data: Path, model_dir: Path, out: Path, **spec: Any) -> tuple[dict, dict]:
    """The export stage on a model trained and evaluated in model_dir, with its params' export settings overridden
    by `spec` and its outputs in `out`: (deploy report, parity report)."""
    import json

    from dltorch.pipeline.export import ExportPaths, export

    paths = ExportPaths.beside(data, model_dir, model_dir / "eval" / "metrics.json", out)
    deploy = export(paths, params.model(name).export.model_copy(update=spec), params.registry_rule(name))
    return deploy, json.loads(paths.parity.read_text())


class Interrupted(Exception):
    """Stands for a killed run: raised from the engine's per-epoch callback."""


@dataclass
class Resumption:
    uninterrupted: torch.nn.Module
    full_history: list[dict[str, Any]]
    resumed: torch.nn.Module
    history: list[dict[str, Any]]
    state: dict[str, Any]  # the checkpoint the resumed run started from


def interrupt_and_resume(fit: Callable[..., tuple[torch.nn.Module, list]], tmp_path: Path,
                         fingerprint: str = "fp") -> Resumption:
    """Train once without a break; then again, interrupted after epoch 1, and resumed from its checkpoint.
    `fit(checkpoint, on_epoch=None, resume=None)` builds, seeds and trains a fresh model."""
    uninterrupted, full_history = fit(tmp_path / "full.pt")

    def stop_after_first_epoch(record: dict) -> None:
        if record["epoch"] == 1:
            raise Interrupted

    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupted):
        fit(checkpoint, on_epoch=stop_after_first_epoch)
    state = engine.load_checkpoint(checkpoint, fingerprint)
    assert state is not None, "the interrupted run left no checkpoint"
    resumed, history = fit(checkpoint, resume=state)
    return Resumption(uninterrupted, full_history, resumed, history, state)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for left, right in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(left, right)
