"""docker-compose.yaml renders with the committed .env.example into the CeleryExecutor stack mlpipe expects.

``docker-compose config`` (no Docker engine needed) resolves anchors, ``${...}`` and defaults; the
tests then check the topology that matters: the services and their health-gated start order, one
environment and one image (built from requirements.lock) for every Airflow container, Connections
that mlpipe itself resolves to the stack's PostgreSQL and MinIO bucket, and secrets kept to the
containers that need them.
"""

from __future__ import annotations

import json
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
    "airflow-cli",
    "flower",
}
# What a service adds to the shared environment, and why it alone has it.
OWN_ENV = {
    "airflow-init": {
        "_AIRFLOW_DB_MIGRATE",
        "MLPIPE_PG_USER",
        "MLPIPE_PG_PASSWORD",
        "AIRFLOW_ADMIN_USER",
        "AIRFLOW_ADMIN_PASSWORD",
    },
    "airflow-worker": {"DUMB_INIT_SETSID"},
    "airflow-cli": {"CONNECTION_CHECK_MAX_COUNT"},
}
MOUNTS = {"dags": "/opt/airflow/dags", "plugins": "/opt/airflow/plugins", "include": "/opt/airflow/include"}
CONNECTIONS = (
    "AIRFLOW_CONN_MLPIPE_SOURCE",
    "AIRFLOW_CONN_MLPIPE_REGISTRY",
    "AIRFLOW_CONN_MLPIPE_STORE",
    "AIRFLOW_CONN_MLPIPE_S3",
)


def _env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


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
    env = {key: value for key, value in os.environ.items() if key not in _env_example()}
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


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    text = command if isinstance(command, str) else "\n".join(command)
    return text.replace("$$", "$")  # compose v1 prints escaped dollars as they were written


def test_services_present(compose: dict[str, Any]) -> None:
    assert {"postgres", "redis", "minio", "minio-init"} | AIRFLOW_SERVICES <= set(compose["services"])
    profiles = {name: s.get("profiles") for name, s in compose["services"].items() if s.get("profiles")}
    assert profiles == {"airflow-cli": ["debug"], "flower": ["flower"]}, (
        "only the optional services sit behind a profile"
    )


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_service_runs_celery_with_repo_mounted(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    environment = service["environment"]
    assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert environment["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert environment["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert environment["MLPIPE_HOME"] == "/opt/airflow/mlpipe"
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in environment
    for conn in ("AIRFLOW_CONN_MLPIPE_SOURCE", "AIRFLOW_CONN_MLPIPE_REGISTRY"):
        assert "@postgres:" in environment[conn], f"{name}: {conn} must point at the compose postgres"
    mounts = _mounts(service)
    for folder, target in MOUNTS.items():
        assert target in mounts, f"{name} does not mount ./{folder} at {target}"
        assert Path(mounts[target]).resolve() == (REPO / folder).resolve()


def test_every_airflow_service_shares_one_environment(compose: dict[str, Any]) -> None:
    """Same settings, secrets and Connections everywhere (tokens signed by one are verified by another)."""
    common = compose["services"]["airflow-scheduler"]["environment"]
    assert common["AIRFLOW__API_AUTH__JWT_SECRET"] and common["AIRFLOW__CORE__FERNET_KEY"]
    assert set(CONNECTIONS) <= set(common)
    for name in AIRFLOW_SERVICES:
        environment = compose["services"][name]["environment"]
        extra = set(environment) - set(common)
        assert extra == OWN_ENV.get(name, set()), f"{name} adds {extra}"
        assert {k: environment[k] for k in common} == common, f"{name} differs from the shared environment"


def test_secrets_come_from_the_env_file_and_stay_where_needed(compose: dict[str, Any]) -> None:
    values = _env_example()
    rendered = json.dumps(compose)
    for key in ("POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "MLPIPE_S3_SECRET_KEY"):
        assert values[key] in rendered, f"{key} of .env.example is not used"
    for name in AIRFLOW_SERVICES:
        environment = compose["services"][name]["environment"]
        assert "MINIO_ROOT_PASSWORD" not in environment and values["MINIO_ROOT_PASSWORD"] not in json.dumps(environment)
        if name != "airflow-init":
            assert values["AIRFLOW_ADMIN_PASSWORD"] not in json.dumps(environment), f"{name} sees the UI password"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False).returncode
    example_ignored = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO, check=False).returncode
    assert (ignored, example_ignored) == (0, 1), ".env must be git-ignored and .env.example committed"


def test_one_image_built_from_the_lock(compose: dict[str, Any]) -> None:
    images = {compose["services"][name]["image"] for name in AIRFLOW_SERVICES}
    assert len(images) == 1
    for name in AIRFLOW_SERVICES:
        build = compose["services"][name]["build"]
        assert Path(build["context"]).resolve() == REPO and build.get("dockerfile", "Dockerfile") == "Dockerfile"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY --chown=airflow:0 requirements.lock" in dockerfile
    assert "-r /tmp/requirements.lock" in dockerfile
    pinned = next(
        line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("apache-airflow==")
    )
    assert f"FROM apache/airflow:{pinned.split('==')[1]}-python3.11" in dockerfile, (
        "the base image is the locked Airflow"
    )


def test_connections_resolve_to_the_stack(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """mlpipe's own resolution of the rendered Connections: the stack's databases and its MinIO bucket."""
    from mlpipe.hooks.aws import s3_client
    from mlpipe.hooks.connections import get_connection
    from mlpipe.hooks.sql import sqlalchemy_url
    from mlpipe.hooks.store import open_store
    from mlpipe.storage import S3Store

    environment = compose["services"]["airflow-worker"]["environment"]
    for key in CONNECTIONS:
        monkeypatch.setenv(key, environment[key])
    values = _env_example()
    for conn_id, database in (("mlpipe_source", "mlpipe_source"), ("mlpipe_registry", "mlpipe_registry")):
        url = sqlalchemy_url(get_connection(conn_id))
        user, password = values["POSTGRES_USER"], values["POSTGRES_PASSWORD"]
        assert url == f"postgresql+psycopg2://{user}:{password}@postgres:5432/{database}"
    store = open_store()
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == (values["MLPIPE_BUCKET"], "artifacts")
    # The S3 demo spec's source connection reaches the same MinIO with the same key.
    example = yaml.safe_load((REPO / "docs" / "examples" / "flights_delay_s3.yaml").read_text())["source"]
    assert example["bucket"] == values["MLPIPE_BUCKET"]
    source_client = s3_client(example["connection_id"])
    for client in (store.client, source_client):
        assert client.meta.endpoint_url == "http://minio:9000"
        assert client.meta.config.s3 == {"addressing_style": "path"}
        credentials = client._request_signer._credentials
        assert (credentials.access_key, credentials.secret_key) == (
            values["MLPIPE_S3_ACCESS_KEY"],
            values["MLPIPE_S3_SECRET_KEY"],
        )


def test_bucket_is_created_before_airflow_starts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init = services["minio-init"]
    script = _command(init)
    bucket = _env_example()["MLPIPE_BUCKET"]
    assert init["environment"]["MLPIPE_BUCKET"] == bucket
    assert 'mc mb --ignore-existing "stack/$MLPIPE_BUCKET"' in script
    assert 'mc admin user add stack "$MLPIPE_S3_ACCESS_KEY"' in script, "mlpipe gets a key of its own"
    assert "arn:aws:s3:::$MLPIPE_BUCKET/*" in script, "... allowed only its bucket"
    assert init["environment"]["MLPIPE_S3_ACCESS_KEY"] == _env_example()["MLPIPE_S3_ACCESS_KEY"]
    assert _depends_on(init) == {"minio": "service_healthy"}
    assert _depends_on(services["airflow-init"])["minio-init"] == "service_completed_successfully"


def test_start_order_is_gated_on_health_and_on_init(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "minio", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in ("airflow-triggerer", "airflow-worker", "flower"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in AIRFLOW_SERVICES:
        needs = _depends_on(services[name])
        assert needs["postgres"] == needs["redis"] == "service_healthy", name
        if name not in {"airflow-init", "airflow-cli"}:
            assert needs["airflow-init"] == "service_completed_successfully", name
    assert _depends_on(services["airflow-worker"])["airflow-apiserver"] == "service_healthy"


def test_init_migrates_everything_and_sets_the_login(compose: dict[str, Any]) -> None:
    init = compose["services"]["airflow-init"]
    script = _command(init)
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"  # the image's entrypoint migrates Airflow's DB
    for database in ("mlpipe_source", "mlpipe_registry"):
        assert database in script
    assert "python -m mlpipe registry upgrade" in script
    passwords = init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script and "AIRFLOW_ADMIN_PASSWORD" in script
    values = _env_example()
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"] == values["AIRFLOW_ADMIN_PASSWORD"]
    assert init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == f"{values['AIRFLOW_ADMIN_USER']}:admin"
    # The API server reads the file init wrote: the same volume at the same place.
    folder = str(Path(passwords).parent)
    apiserver = compose["services"]["airflow-apiserver"]
    assert _mounts(init)[folder] == _mounts(apiserver)[folder] == "airflow-auth"
