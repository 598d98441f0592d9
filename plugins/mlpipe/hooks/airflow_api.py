"""Airflow's public REST API (v2), for processes that are not Airflow tasks: asset events from the CLI.

Configured by environment (read at call time): ``MLPIPE_AIRFLOW_API_URL`` (the API server's base
URL, e.g. ``http://localhost:8080``) and either ``MLPIPE_AIRFLOW_API_TOKEN`` (a JWT) or
``MLPIPE_AIRFLOW_API_USER`` / ``MLPIPE_AIRFLOW_API_PASSWORD``, exchanged for a JWT at the auth
manager's ``POST /auth/token`` (the simple auth manager's, and any manager that serves it).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from mlpipe.errors import MlpipeError

TIMEOUT = 30  # seconds for one request


class AirflowApiError(MlpipeError):
    """The API server refused or failed a request; the message says which, and what it answered."""


@dataclass(frozen=True)
class AirflowApi:
    """An Airflow API server: its base URL and how to authenticate."""

    base_url: str
    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls) -> AirflowApi | None:
        """The API server the environment configures, or None when ``MLPIPE_AIRFLOW_API_URL`` is unset."""
        url = os.environ.get("MLPIPE_AIRFLOW_API_URL", "").strip()
        if not url:
            return None
        return cls(
            base_url=url.rstrip("/"),
            token=os.environ.get("MLPIPE_AIRFLOW_API_TOKEN") or None,
            username=os.environ.get("MLPIPE_AIRFLOW_API_USER") or None,
            password=os.environ.get("MLPIPE_AIRFLOW_API_PASSWORD") or None,
        )

    def _request(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AirflowApiError(f"{method} {self.base_url}{path} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise AirflowApiError(f"{method} {self.base_url}{path} failed: {getattr(exc, 'reason', exc)}") from None

    def access_token(self) -> str:
        """The configured JWT, or one from ``POST /auth/token`` for the configured user."""
        if self.token:
            return self.token
        if not (self.username and self.password):
            raise AirflowApiError(
                f"MLPIPE_AIRFLOW_API_URL is {self.base_url} but no credentials are set: set "
                "MLPIPE_AIRFLOW_API_TOKEN, or MLPIPE_AIRFLOW_API_USER and MLPIPE_AIRFLOW_API_PASSWORD"
            )
        answer = self._request("POST", "/auth/token", {"username": self.username, "password": self.password})
        return str(answer["access_token"])

    def asset_id(self, name: str, uri: str, token: str) -> int | None:
        """The id Airflow gave the asset ``name`` with ``uri``, or None when Airflow does not know it."""
        query = urllib.parse.urlencode({"name_pattern": name, "limit": 100})
        for asset in self._request("GET", f"/api/v2/assets?{query}", token=token)["assets"]:
            if asset["name"] == name and asset["uri"] == uri:
                return int(asset["id"])
        return None

    def create_asset_event(self, asset_id: int, extra: dict[str, Any], token: str) -> dict[str, Any]:
        """``POST /api/v2/assets/events``: the event, as the scheduler then sees it (DAGs on the asset queued)."""
        return self._request("POST", "/api/v2/assets/events", {"asset_id": asset_id, "extra": extra}, token=token)
