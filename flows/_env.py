"""Where the flows' Prefect API comes from, and Prefect's defaults for scalefit.

Importing this module imports no Prefect: :func:`prepare_prefect_environment` must run before
Prefect reads its settings.

Prefect 3.8 starts its temporary ("ephemeral") API server when the first client is made
(``prefect.client.orchestration.get_client``) and ``PREFECT_API_URL`` is not set: a uvicorn
subprocess that imports Prefect's server and migrates its SQLite database, ~4 s on a quiet
2-core machine and the largest fixed cost of a ``scalefit refresh``. With ``PREFECT_API_URL``
set (``prefect server start``, Prefect Cloud) Prefect uses that server and starts none: the
cheapest way to refresh often. Without one, :func:`start_ephemeral_server` starts the same
server (Prefect's own ``SubprocessASGIServer``, which Prefect then finds and reuses) while
the command goes on importing the flow and the libraries it runs.
"""

from __future__ import annotations

import os
import threading


def prepare_prefect_environment() -> None:
    """Defaults that keep Prefect's ephemeral mode local and quiet.

    scalefit promises nothing leaves 127.0.0.1, so Prefect's telemetry is off unless the user
    turned it on; a cold start of the ephemeral server takes 10-15 s on a small, busy machine,
    so the startup wait is generous. Each is only a default: an explicit setting wins.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def has_prefect_server() -> bool:
    """True when a Prefect API (server or Cloud) is configured: the environment's
    ``PREFECT_API_URL``, or the active Prefect profile's."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


class ServerStart:
    """An ephemeral server starting in a thread; :meth:`wait` until it answers."""

    def __init__(self) -> None:
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> ServerStart:
        # Prefect's server class is imported here, in the calling thread: only the subprocess
        # start and the health polling (I/O) run in the thread, so no import runs
        # concurrently with the caller's.
        from prefect.server.api.server import SubprocessASGIServer

        def run() -> None:
            try:
                SubprocessASGIServer().start()
            except BaseException as exc:  # re-raised in the caller by wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="prefect-ephemeral-server", daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the server answers (re-raising its start's error); no-op if none."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error


def start_ephemeral_server() -> ServerStart:
    """Start Prefect's ephemeral server now, unless a server is configured or ephemeral mode
    is off (then Prefect's own rules apply unchanged). Call :meth:`ServerStart.wait` before
    the first flow runs: Prefect takes the started server as running at once."""
    prepare_prefect_environment()
    if has_prefect_server():
        return ServerStart()
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_ENABLED

    if not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return ServerStart()
    return ServerStart().begin()
