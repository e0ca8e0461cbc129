"""One quick look at an MLflow tracking/registry server before MLflow's own client talks to it.

MLflow retries a refused or timed-out connection with exponential back-off (MLFLOW_HTTP_REQUEST_MAX_RETRIES,
default 7) and then reports the request that failed: against a server that is down, `facex swap --model
models:/facex-swap@champion` waited 4 min 19 s and then said the model was "not found in the registry". One GET
with a short timeout tells a user in seconds that the server itself does not answer, and which one.
"""

from __future__ import annotations

import http.client
import os
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 5.0  # a connection a healthy server on a cluster network opens in well under this


class ServerUnreachableError(ConnectionError):
    """An http(s) MLflow server that does not answer; the message names it and the fix."""


def check_server(uri: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ServerUnreachableError if `uri` is an http(s) MLflow server that does not answer within `timeout` s.

    Any HTTP answer counts as reachable (a 401 from an authenticating proxy, a 404 from an old server without
    /health): only a refused, reset or timed-out connection fails. Local stores (sqlite, file paths) pass untouched.
    """
    if not uri or urlsplit(uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:  # the server answered, if not with OK
        return
    except (OSError, http.client.HTTPException) as err:  # URLError, refused, reset, timed out, not HTTP
        reason = getattr(err, "reason", None) or err
        if isinstance(reason, ssl.SSLError):  # a TLS handshake happened: the server is there (MLflow's own CA settings)
            return
        names = [n for n in ("MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI") if os.environ.get(n) == uri]
        env = " / ".join(names) or "the tracking URI"
        raise ServerUnreachableError(
            f"the MLflow server at {uri} does not answer ({reason}); start it (infra/README.md section 4, or "
            f"`mlflow server` on that host), or point {env} at a running server or a local store such as "
            "sqlite:///mlflow.db"
        ) from None
