"""What a sweep reaches over the network, checked once and quickly before anything else (no
sweep record, no parent run, no Ray): the MLflow tracking server and the Ray cluster of
``--address``. Left to their clients, an unreachable tracking server is retried for minutes
(MLflow's own retries) and an unreachable Ray address for about a minute, then a long traceback.

During the sweep the driver's MLflow client is given a short budget (``short_mlflow_retries``):
a store that does not answer at once is an outage, and the outbox (outbox.py) takes over with
its own back-off, instead of MLflow's retries holding up Tune's driver loop.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from superpos.errors import ConfigError

#: seconds to wait for the tracking server or the Ray head to answer
CHECK_TIMEOUT_S = 5.0
#: the driver's MLflow HTTP client during a sweep (MLflow's defaults: 7 retries with back-off, 120 s timeout),
#: and no "View run" line per ended child run (MLflow prints one, after a get_run of its own, at
#: each set_terminated through a tracking server: thousands in a sweep's output); a value the user
#: sets in the environment wins
DRIVER_MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def check_tracking_uri(uri: str, where: str) -> None:
    """An http(s) tracking URI must answer (any HTTP status counts: a server that refuses the
    path or asks for credentials is up); other stores (sqlite, databases) are opened later."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=CHECK_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(
            f"{where}: the MLflow tracking server {uri} does not answer ({reason}; waited {CHECK_TIMEOUT_S:g} s); "
            "start it, or give another tracking URI. Nothing was started or written"
        ) from None


def check_ray_address(address: str | None) -> None:
    """``--address HOST:PORT`` (or ``ray://HOST:PORT``) must accept a connection; ``auto`` is
    resolved by Ray itself (``ray_session`` names it if nothing is found)."""
    if address in (None, "auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT (the Ray head's GCS port, e.g. 10.0.0.1:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CHECK_TIMEOUT_S):
            return
    except OSError as e:
        raise ConfigError(
            f"--address {address}: no Ray cluster answers there ({e}; waited {CHECK_TIMEOUT_S:g} s); start it (`ray start --head`), "
            "or leave --address out to run on a new local Ray. Nothing was started or written"
        ) from None


def short_mlflow_retries() -> None:
    for key, value in DRIVER_MLFLOW_HTTP.items():
        os.environ.setdefault(key, value)
