"""The shared tracking server recipe, for real: `mlflow server` on a PostgreSQL backend store.

PostgreSQL comes from Debian's `postgresql` package (`make setup` installs it when run as root;
CI does); the test starts its own cluster on 127.0.0.1 and a free port, and removes it after.
"""

from __future__ import annotations

import glob
import json
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

from tests.helpers import face_change

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries not installed (apt-get install postgresql)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# util-linux's runuser is in /usr/sbin, which a trimmed PATH (a CI job's, `env PATH=/usr/bin:/bin`) leaves out
RUNUSER = shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def as_postgres(cmd: list[str]) -> list[str]:
    # the server refuses to run as root; Debian's package creates the `postgres` user
    if os.geteuid() != 0:
        return cmd
    if RUNUSER is None:
        raise RuntimeError("root starts PostgreSQL as the `postgres` user with util-linux's runuser: not found")
    return [RUNUSER, "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def pg_cluster():
    """One PostgreSQL cluster for the module (initdb + start take seconds); each test gets its own database."""
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
        yield bindir, port
    finally:
        subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_database(pg_cluster: tuple[Path, int], name: str) -> str:
    """A fresh, empty database in the module's cluster, as a SQLAlchemy URI for `mlflow server`."""
    bindir, port = pg_cluster
    subprocess.run(as_postgres([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                name]), check=True, capture_output=True)
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{name}"


@pytest.fixture
def postgres(pg_cluster, request):
    return new_database(pg_cluster, request.node.name.lower().replace("-", "_")[:60])


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
        mlflow.set_registry_uri(server.uri)  # a registry URI an earlier test left set would otherwise win
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


@pytest.fixture(scope="module")
def registered(pg_cluster, tmp_path_factory):
    """The register stage run once against `mlflow server` on PostgreSQL, then the server stopped and started again."""
    import torch
    import yaml

    from facex_model.backbone import build_tiny_backbone
    from facex_model.model import FaceXConfig, FaceXModel
    from pipelines.register import main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("register-pg")
    backbone = build_tiny_backbone(root / "backbone", seed=0)
    for name in ("generalist", "swap"):
        torch.manual_seed(0)
        FaceXModel(FaceXConfig.tiny(backbone)).save_pretrained(root / "models" / name)
        (root / "models" / name / "train_metrics.json").write_text(json.dumps({"heldout_loss": 0.5}))
    server = MlflowServer(new_database(pg_cluster, "register_stage"), root / "artifacts")
    server.start()
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({
        "tracking": {"uri": server.uri, "experiment": "facex-register-pg", "model_prefix": "facex"},
        "register": {"models_dir": str(root / "models"), "models": ["generalist", "swap"],
                     "metrics": str(root / "no-metrics" / "metrics.json")},
    }))  # fmt: skip
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", server.uri)
            assert main(["--params", str(params), "--out", str(root / "registry-1.json")]) == 0
            server.stop()
            server.start()
            mlflow.set_tracking_uri(server.uri)
            mlflow.set_registry_uri(server.uri)
            yield root, params, server
    finally:
        server.stop()


def test_register_stage_versions_and_champion_survive_a_restart_and_load_by_alias(registered):
    from facex_model.pyfunc import FaceXPyfunc
    from pipelines.register import main

    root, params, server = registered
    summary = json.loads((root / "registry-1.json").read_text())["models"]
    client = mlflow.MlflowClient(server.uri)
    for name in ("generalist", "swap"):
        assert summary[name]["version"] == "1" and summary[name]["champion_moved"]
        champion = client.get_model_version_by_alias(f"facex-{name}", "champion")
        assert champion.version == "1"
        assert champion.tags["headline.name"] == "heldout_loss" and champion.tags["headline.value"] == "0.5"
        run = client.get_run(champion.tags["run_id"])
        assert run.data.metrics == {"headline.heldout_loss": 0.5} and run.data.tags["facex.model"] == name

    model = mlflow.pyfunc.load_model("models:/facex-swap@champion")
    assert isinstance(model.unwrap_python_model(), FaceXPyfunc)
    assert model.unwrap_python_model().pipeline.model.config.backbone_path == str(root / "backbone")

    # the champion's headline tags are read back from PostgreSQL: the decision compares against them
    assert main(["--params", str(params), "--models", "swap", "--out", str(root / "registry-2.json")]) == 0
    second = json.loads((root / "registry-2.json").read_text())["models"]["swap"]
    assert second["version"] == "2" and "0.5 <= champion's 0.5" in second["reason"]
    assert sorted(v.version for v in client.search_model_versions("name='facex-swap'")) == ["1", "2"]
    assert client.get_model_version_by_alias("facex-swap", "champion").version == "2"


@pytest.mark.real
def test_champion_loaded_from_the_postgres_registry_swaps_two_real_faces(registered, real_data, tmp_path):
    from PIL import Image

    from facex_model.pyfunc import decode_png

    faces = {}
    for role, file in (("source", "portrait_02.jpg"), ("target", "portrait_05.jpg")):
        faces[role] = tmp_path / f"{role}.png"
        Image.open(real_data / "images" / file).convert("RGB").resize((256, 240)).save(faces[role])
    model = mlflow.pyfunc.load_model("models:/facex-swap@champion")
    out = model.predict({"task": "swap", "source": str(faces["source"]), "target": str(faces["target"]), "steps": 1})
    image = decode_png(out["image"][0])
    assert image.size == (256, 240)
    inside, frame = face_change(image, faces["target"])
    assert inside > 8 and frame < 4  # the face was generated anew, the rest of the target kept
