"""Serving the ``refresh`` flow on a schedule.

Two ways, chosen by whether a Prefect server is configured:

- With ``PREFECT_API_URL`` set (a ``prefect server start`` or Prefect Cloud), the flow is
  served as the deployment ``refresh/scalefit-serve`` with a cron schedule in the configured
  time zone: it shows in the Prefect UI and Prefect's scheduler triggers it. (The work-pool
  deployment of ``prefect.yaml`` is ``refresh/scalefit-worker``: the two never overwrite
  each other.)
- Without one, Prefect's ephemeral mode has no scheduler ("Cannot schedule flows on an
  ephemeral server"), so the schedule is kept here: sleep until the next cron time, run the
  flow (a real flow run, recorded like any other), repeat.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from scalefit.pipeline import RefreshInfo
from scalefit.schedule import next_runs

from .refresh import refresh

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "scalefit-serve"
"""Name of the deployment ``scalefit serve`` registers (``prefect.yaml``'s is another)."""


def build_deployment(cron: str, timezone: str, config_path: Path | None) -> RunnerDeployment:
    """The deployment ``scalefit serve`` registers: the refresh flow on ``cron`` in ``timezone``."""
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Cron

    deployment = refresh.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(cron, timezone=timezone)],
        parameters={"config_path": str(config_path) if config_path else None},
        description="scalefit refresh on a schedule (scalefit serve)",
    )
    # Prefect dispatches on the caller: a coroutine inside an event loop, the deployment in
    # synchronous code (``scalefit serve``, the tests).
    if not isinstance(deployment, RunnerDeployment):
        deployment.close()
        raise RuntimeError("build_deployment is synchronous: call it outside an event loop")
    return deployment


def serve_with_server(cron: str, timezone: str, config_path: Path | None) -> None:
    """Serve the flow as a Prefect deployment with a cron schedule (blocks until stopped)."""
    from prefect import serve

    serve(build_deployment(cron, timezone, config_path))


def schedule_settings() -> dict[str, str]:
    """A ``prefect deploy`` build step (see ``prefect.yaml``): the ``[schedule]`` settings.

    Read like every command reads them (``SCALEFIT_CRON``/``SCALEFIT_TIMEZONE`` > the
    ``scalefit.toml`` of the working directory or ``$SCALEFIT_CONFIG`` > the defaults), so the
    deployment's schedule is the one ``scalefit serve`` would keep. Returns ``{"cron": ...,
    "timezone": ...}`` for the deployment's ``schedules`` to template.
    """
    from scalefit.config import load_settings

    settings = load_settings()
    return {"cron": settings.cron, "timezone": settings.timezone}


def serve_locally(
    cron: str,
    timezone: str,
    config_path: Path | None,
    *,
    max_runs: int | None = None,
    on_schedule: Callable[[dt.datetime], None] | None = None,
    on_run: Callable[[RefreshInfo | None], None] | None = None,
) -> int:
    """Run the flow at every cron time, in Prefect's ephemeral mode; returns runs done.

    ``max_runs`` stops after that many runs (default: run until interrupted). A failed run
    is logged and the schedule goes on.
    """
    done = 0
    while max_runs is None or done < max_runs:
        (when,) = next_runs(cron, timezone=timezone)
        if on_schedule:
            on_schedule(when)
        delay = (when - dt.datetime.now(when.tzinfo)).total_seconds()
        if delay > 0:
            time.sleep(delay)
        try:
            info = refresh(config_path=config_path)
        except Exception:  # a failed refresh must not end the schedule
            log.exception("scheduled refresh failed; next run as scheduled")
            info = None
        if on_run:
            on_run(info)
        done += 1
    return done
