"""The shared tracking server recipe, for real: `mlflow server` on a PostgreSQL backend store.

PostgreSQL comes from Debian's `postgresql` package (`make setup` installs it when run as root;
CI does); the test starts its own cluster on 127.0.0.1 and a free port, and removes it after.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.pyfunc import PythonModel

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries not installed (apt-get install postgresql)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(cmd: list[str]) -> list[str]:
    # the server refuses to run as root; Debian's package creates the `postgres` user
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres():
    bindir = Path(PG_BIN[-1])
    root = Path(tempfile.mkdtemp(prefix="facex-pg-", dir="/tmp"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run(as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True)
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
    # -l: the server must not inherit our pipes, or waiting for pg_ctl waits for the server
    subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-o", opts,
                                "-w", "start"]), check=True, capture_output=True)
    try:
        subprocess.run(as_postgres([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                    "mlflow"]), check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


class MlflowServer:
    def __init__(self, backend: str, artifacts: Path):
        self.backend, self.artifacts, self.port, self.proc = backend, artifacts, free_port(), None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
               "--artifacts-destination", str(self.artifacts), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("mlflow server did not become healthy in 120 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


class Doubler(PythonModel):
    """A minimal pyfunc so the registry round trip is about the server, not about FaceX."""

    def predict(self, context, model_input, params=None):
        return model_input * 2


def test_registry_on_postgres_survives_a_server_restart(postgres, tmp_path, monkeypatch):
    server = MlflowServer(postgres, tmp_path / "artifacts")
    server.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        mlflow.set_tracking_uri(server.uri)
        client = mlflow.MlflowClient(server.uri)
        mlflow.set_experiment("facex-infra-test")
        with mlflow.start_run() as run:
            mlflow.log_params({"lr": 1e-5, "batch": 32})
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            info = mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=[],
                                           registered_model_name="facex-infra-test")
        client.set_registered_model_alias("facex-infra-test", "champion", info.registered_model_version)

        server.stop()
        server.start()

        fetched = client.get_run(run.info.run_id)
        assert fetched.data.params == {"lr": "1e-05", "batch": "32"}
        assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [1.0, 0.5, 1 / 3]
        version = client.get_model_version_by_alias("facex-infra-test", "champion")
        assert version.version == str(info.registered_model_version)
        model = mlflow.pyfunc.load_model("models:/facex-infra-test@champion")
        out = model.predict(pd.DataFrame({"x": [1.0, 2.5]}))
        assert out["x"].tolist() == [2.0, 5.0]
    finally:
        server.stop()
