"""Scheduling: the local scheduler runs real flow runs at cron times; prefect.yaml is sound."""

from __future__ import annotations

import datetime as dt
import inspect
from pathlib import Path

import pytest
import yaml

from scalefit import store

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_local_schedule_runs_the_flow_at_cron_times(prefect_harness, tmp_path: Path) -> None:
    from scalefit.flows.serve import serve_locally

    config = tmp_path / "scalefit.toml"
    config.write_text('[store]\ndb = "sf.duckdb"\nreports = "out"\n')
    scheduled: list[dt.datetime] = []
    infos: list[object] = []
    runs = serve_locally(
        "*/2 * * * * *",  # every two seconds (six fields: seconds first)
        "UTC",
        config,
        max_runs=2,
        on_schedule=scheduled.append,
        on_run=infos.append,
    )
    assert runs == 2 and len(infos) == 2 and all(info is not None for info in infos)
    assert all(t.second % 2 == 0 for t in scheduled)
    assert scheduled[1] > scheduled[0]
    with store.connect(tmp_path / "sf.duckdb", read_only=True) as con:
        assert store.table_counts(con)["models"] == 34
    assert infos[1].changes == {}


def _yaml_deployment() -> tuple[dict, dict]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = doc["deployments"]
    return doc, deployment


def test_prefect_yaml_points_at_the_refresh_flow() -> None:
    from scalefit.flows.refresh import refresh
    from scalefit.flows.serve import DEPLOYMENT_NAME

    _, deployment = _yaml_deployment()
    path, name = deployment["entrypoint"].split(":")
    assert (ROOT / path).is_file()
    assert name == refresh.fn.__name__
    assert set(deployment["parameters"]) <= set(inspect.signature(refresh.fn).parameters)
    # `prefect deploy` and `scalefit serve` register different deployments of the flow.
    assert deployment["name"] != DEPLOYMENT_NAME


def _deploy_schedule(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """What `prefect deploy` makes of prefect.yaml's schedule, run from ``cwd``: Prefect's own
    build-step runner and schedule templating, with no server."""
    import asyncio

    from prefect.cli.deploy._schedules import _construct_schedules
    from prefect.deployments.steps.core import run_steps

    doc, deployment = _yaml_deployment()
    monkeypatch.chdir(cwd)
    outputs = asyncio.run(run_steps(doc["build"], print_function=lambda *a: None))
    (schedule,) = _construct_schedules(
        deployment, outputs, console=None, is_interactive=lambda: False
    )
    return schedule["schedule"].cron, schedule["schedule"].timezone


def test_prefect_yaml_takes_its_schedule_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SCALEFIT_CRON", "SCALEFIT_TIMEZONE", "SCALEFIT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert _deploy_schedule(tmp_path, monkeypatch) == ("0 3 * * *", "UTC")  # no scalefit.toml
    (tmp_path / "scalefit.toml").write_text(
        '[schedule]\ncron = "30 2 * * 1"\ntimezone = "Europe/Paris"\n'
    )
    assert _deploy_schedule(tmp_path, monkeypatch) == ("30 2 * * 1", "Europe/Paris")
    monkeypatch.setenv("SCALEFIT_TIMEZONE", "America/New_York")
    assert _deploy_schedule(tmp_path, monkeypatch) == ("30 2 * * 1", "America/New_York")


def test_prefect_yaml_deployment_runs_without_a_config_file(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker runs the flow with the deployment's parameters in SCALEFIT_HOME: a fresh clone
    has no scalefit.toml, and the defaults apply (the store lands in that folder)."""
    from scalefit.flows.refresh import refresh

    monkeypatch.delenv("SCALEFIT_CONFIG", raising=False)
    monkeypatch.delenv("SCALEFIT_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    _, deployment = _yaml_deployment()
    info = refresh(**deployment["parameters"])
    assert info.db_path == Path("scalefit.duckdb") and not info.errors
    with store.connect(tmp_path / "scalefit.duckdb", read_only=True) as con:
        assert store.table_counts(con)["models"] == 34


def test_serve_registers_its_schedule_in_the_time_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a Prefect server configured, `scalefit serve` serves a deployment whose cron
    schedule carries the time zone (option > SCALEFIT_TIMEZONE > scalefit.toml > UTC). Only
    Prefect's `serve` call, which would talk to the server, is replaced by a recorder."""
    import prefect
    from typer.testing import CliRunner

    from scalefit.cli import app
    from scalefit.flows.serve import DEPLOYMENT_NAME

    served: list = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: served.extend(deployments))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.delenv("SCALEFIT_TIMEZONE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scalefit.toml").write_text(
        '[schedule]\ncron = "0 5 * * *"\ntimezone = "Asia/Tokyo"\n'
    )
    cases = [
        (["--timezone", "Europe/Paris"], {"SCALEFIT_TIMEZONE": "America/Chicago"}, "Europe/Paris"),
        ([], {"SCALEFIT_TIMEZONE": "America/Chicago"}, "America/Chicago"),
        ([], {}, "Asia/Tokyo"),
    ]
    for args, env, zone in cases:
        result = CliRunner().invoke(app, ["serve", *args], env=env)
        assert result.exit_code == 0, result.output
        deployment = served.pop()
        assert deployment.name == DEPLOYMENT_NAME
        (schedule,) = deployment.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 5 * * *", zone)
    (tmp_path / "scalefit.toml").unlink()
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert served.pop().schedules[0].schedule.timezone == "UTC"
