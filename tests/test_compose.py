"""docker-compose.yaml renders with the committed .env.example into the CeleryExecutor stack mlpipe expects."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = REPO / ".env.example"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
MOUNTS = {"dags": "/opt/airflow/dags", "plugins": "/opt/airflow/plugins", "include": "/opt/airflow/include"}


def _env_example_keys() -> set[str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return {line.split("=", 1)[0].strip() for line in lines if "=" in line and not line.lstrip().startswith("#")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """`docker-compose config` of the repo's compose file, with .env.example as its .env."""
    binary = shutil.which("docker-compose")
    if binary is None:
        reason = "docker-compose not installed (Debian: apt-get install docker-compose; `make compose-tool`)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    # Values from the caller's shell would override .env.example in the rendering; leave them out.
    env = {key: value for key, value in os.environ.items() if key not in _env_example_keys()}
    env["ENV_FILE_PATH"] = str(ENV_EXAMPLE)
    result = subprocess.run(
        [binary, "--env-file", str(ENV_EXAMPLE), "-f", str(REPO / "docker-compose.yaml"), "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path, for compose v1's "src:dst:mode" strings and v2's long form."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def test_services_present(compose: dict[str, Any]) -> None:
    assert {"postgres", "redis"} | AIRFLOW_SERVICES <= set(compose["services"])


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_service_runs_celery_with_repo_mounted(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    environment = service["environment"]
    assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert environment["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert environment["MLPIPE_HOME"] == "/opt/airflow/mlpipe"
    for conn in ("AIRFLOW_CONN_MLPIPE_SOURCE", "AIRFLOW_CONN_MLPIPE_REGISTRY"):
        assert "@postgres:" in environment[conn], f"{name}: {conn} must point at the compose postgres"
    mounts = _mounts(service)
    for folder, target in MOUNTS.items():
        assert target in mounts, f"{name} does not mount ./{folder} at {target}"
        assert Path(mounts[target]).resolve() == (REPO / folder).resolve()


def test_components_share_the_jwt_secret(compose: dict[str, Any]) -> None:
    """The API server verifies tokens the scheduler and workers sign: one secret for all containers."""
    secrets = {compose["services"][name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}
    assert len(secrets) == 1
    assert secrets != {""}
