"""check_server: an http(s) MLflow server that does not answer is named in seconds, not after MLflow's retries."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from facex_model.mlflow_server import ServerUnreachableError, check_server
from tests.helpers import free_port


@pytest.fixture
def answering_server():
    """A localhost HTTP server that answers /health with 200 and anything else with 404; -> its base URI."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_connection_names_the_server_and_the_variable_that_points_at_it(monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ServerUnreachableError) as err:
        check_server(uri)
    message = str(err.value)
    assert f"the MLflow server at {uri} does not answer" in message and "refused" in message
    assert "point MLFLOW_TRACKING_URI at a running server" in message
    assert isinstance(err.value, ConnectionError)  # what the stages catch


def test_a_server_that_accepts_but_never_answers_times_out():
    with socket.socket() as listener:  # the kernel accepts the connection; nobody ever reads or writes
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ServerUnreachableError, match="timed out"):
            check_server(uri, timeout=0.5)


def test_any_http_answer_counts_as_reachable(answering_server):
    check_server(answering_server)  # 200 on /health
    check_server(answering_server + "/prefix")  # 404: an old server or a proxy path, but a server
    check_server(answering_server + "/")


@pytest.mark.parametrize("uri", [None, "", "sqlite:///mlflow.db", "file:///tmp/mlruns", "/tmp/mlruns", "databricks"])
def test_local_stores_are_not_probed(uri, monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError(f"{uri!r} was probed")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    check_server(uri)
