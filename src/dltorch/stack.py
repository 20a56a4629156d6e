"""A team's services on one machine: PostgreSQL (MLflow's backend store), an S3 server (artifacts and the DVC
remote) and `mlflow server` in front of both, all on loopback. `dltorch stack up|down|env`; `make stack` calls it.

The code that uses the stack speaks plain PostgreSQL and S3, so a team points the same settings at a real
database and AWS S3 or MinIO instead (README, "For a team"). Each service's pid and log live in the data folder;
`up` leaves a service that already answers alone, and `down` stops only what that folder's pid files name.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dltorch.errors import DltorchError

S3_KEY, S3_SECRET, S3_REGION = "dltorch", "dltorch-secret", "us-east-1"  # moto accepts any; AWS needs real ones
DATABASE, DB_USER = "mlflow", "mlflow"
START_TIMEOUT_S = 90


class StackError(DltorchError):
    """A service of the stack could not be started, reached or stopped."""


@dataclass(frozen=True)
class StackSpec:
    """Where the stack keeps its files and which loopback ports it listens on."""

    data_dir: Path
    host: str = "127.0.0.1"
    postgres_port: int = 5433
    s3_port: int = 5002
    mlflow_port: int = 5000
    artifacts_bucket: str = "dltorch-artifacts"
    dvc_bucket: str = "dltorch-dvc"

    @property
    def database_uri(self) -> str:
        return f"postgresql://{DB_USER}@{self.host}:{self.postgres_port}/{DATABASE}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"


def client_env(spec: StackSpec) -> dict[str, str]:
    """What a client exports: MLflow's server, and S3's endpoint and keys (for `dvc push`/`pull`; MLflow's
    artifacts go through the tracking server, which alone needs them)."""
    return {"MLFLOW_TRACKING_URI": spec.tracking_uri, "AWS_ENDPOINT_URL": spec.s3_endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": S3_REGION}


def up(spec: StackSpec) -> dict[str, str]:
    """Start what is not running yet (PostgreSQL, then S3 and its buckets, then MLflow); returns client_env."""
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    _start_postgres(spec)
    _start_service(spec, "s3", [_bin("moto_server"), "-H", spec.host, "-p", str(spec.s3_port)],
                   f"{spec.s3_endpoint}/moto-api/")
    _create_buckets(spec)
    # No job runner: MLflow's server otherwise starts seven huey consumer processes, each importing MLflow, for
    # GenAI jobs (scorers, prompt optimization, trace rollups) this project never submits; they were most of the
    # stack's start-up CPU and made stopping the server wait for them.
    server_env = {**os.environ, **client_env(spec), "MLFLOW_S3_ENDPOINT_URL": spec.s3_endpoint,
                  "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server_env.pop("MLFLOW_TRACKING_URI")
    _start_service(spec, "mlflow", [
        _bin("mlflow"), "server", "--host", spec.host, "--port", str(spec.mlflow_port), "--workers", "1",
        "--backend-store-uri", spec.database_uri,
        "--artifacts-destination", f"s3://{spec.artifacts_bucket}/mlflow"],
        f"{spec.tracking_uri}/health", env=server_env)
    return client_env(spec)


def down(spec: StackSpec) -> list[str]:
    """Stop MLflow, S3 and PostgreSQL if running; returns the names of those stopped."""
    stopped = [name for name in ("mlflow", "s3") if _stop_service(spec, name)]
    cluster = spec.data_dir / "postgres"
    if (cluster / "postmaster.pid").is_file():
        _as_postgres_owner(spec, [_pg("pg_ctl"), "-D", str(cluster), "-m", "fast", "-w", "stop"])
        stopped.append("postgres")
    return stopped


def export_lines(env: dict[str, str]) -> str:
    return "\n".join(f"export {name}={value}" for name, value in env.items())


def _bin(name: str) -> str:
    """A console script of this environment (the venv's, not whatever PATH finds first)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _pg(tool: str) -> str:
    """Debian installs the server's tools under /usr/lib/postgresql/<version>/bin, outside PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")) or ([shutil.which(tool)] if shutil.which(tool)
                                                                         else [])
    if not found:
        raise StackError(f"PostgreSQL's {tool} not found: install Debian's `postgresql` (make setup does, as root)")
    return found[-1]


def _as_postgres_owner(spec: StackSpec, command: list[str]) -> str:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user Debian creates."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd="/")
    if result.returncode != 0:
        raise StackError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def _start_postgres(spec: StackSpec) -> None:
    cluster, sockets = spec.data_dir / "postgres", spec.data_dir / "postgres-socket"
    if not (cluster / "PG_VERSION").is_file():
        cluster.mkdir(parents=True, exist_ok=True)
        sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(cluster, "postgres")
            shutil.chown(sockets, "postgres")
            cluster.chmod(0o700)
        # trust on loopback only: a local stack for one machine. A team's server uses passwords (README).
        _as_postgres_owner(spec, [_pg("initdb"), "-D", str(cluster), "-U", DB_USER, "--auth=trust",
                                  "--encoding=UTF8", "--no-instructions"])
    if not _answers_tcp(spec.host, spec.postgres_port):
        options = f"-h {spec.host} -p {spec.postgres_port} -k {sockets}"
        _as_postgres_owner(spec, [_pg("pg_ctl"), "-D", str(cluster), "-o", options, "-l",
                                  str(cluster / "server.log"), "-w", "-t", str(START_TIMEOUT_S), "start"])
    databases = _as_postgres_owner(spec, [_pg("psql"), "-h", spec.host, "-p", str(spec.postgres_port), "-U",
                                          DB_USER, "-d", "postgres", "-Atc", "SELECT datname FROM pg_database"])
    if DATABASE not in databases.split():
        _as_postgres_owner(spec, [_pg("createdb"), "-h", spec.host, "-p", str(spec.postgres_port), "-U", DB_USER,
                                  DATABASE])


def _start_service(spec: StackSpec, name: str, command: list[str], ready_url: str,
                   env: dict[str, str] | None = None) -> None:
    if _answers_http(ready_url):
        return
    log = (spec.data_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                               cwd=spec.data_dir)
    (spec.data_dir / f"{name}.pid").write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers_http(ready_url):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_service(spec, name)
            raise StackError(f"{name} did not start on {ready_url}; see {spec.data_dir / f'{name}.log'}")
        time.sleep(0.5)


def _stop_service(spec: StackSpec, name: str) -> bool:
    pid_file = spec.data_dir / f"{name}.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)  # its own session: the server and the workers it forked
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    return True


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
        return finished == 0
    except ChildProcessError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _create_buckets(spec: StackSpec) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=spec.s3_endpoint, aws_access_key_id=S3_KEY,
                      aws_secret_access_key=S3_SECRET, region_name=S3_REGION)
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for bucket in (spec.artifacts_bucket, spec.dvc_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _answers_tcp(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0
