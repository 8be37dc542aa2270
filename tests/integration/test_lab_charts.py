"""The stand-in charts keep the real charts' values interfaces and behaviour (rendered with the
lab's helm; no cluster needed).
"""

from __future__ import annotations

import base64
import os
import subprocess
from typing import Any

import pytest
import yaml

from coder_migrate.lab.tools import StandInChart, chart_path, helm_binary, helm_environment

pytestmark = pytest.mark.integration


def _template(chart: StandInChart, *values: str) -> list[dict[str, Any]]:
    command = [str(helm_binary()), "template", "release", str(chart_path(chart))]
    for value in values:
        command += ["--set", value]
    env = {**os.environ, **helm_environment()}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(
        f"no {kind}/{name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    )


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def _values(chart: StandInChart) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((chart_path(chart) / "values.yaml").read_text())
    return loaded


def test_coder_v1_values_have_the_1_21_keys() -> None:
    values = _values("coder-v1")
    assert set(values["coderd"]["satellite"]) == {"enable", "accessURL", "primaryURL"}
    assert set(values["coderd"]["tls"]) == {"hostSecretName", "devurlsHostSecretName"}
    assert {"devurlsHost", "replicas", "image", "serviceSpec", "trustProxyIP"} <= set(
        values["coderd"]
    )
    assert values["services"]["type"] == "ClusterIP"
    assert {"host", "port", "user", "database", "passwordSecret", "sslMode", "default"} <= set(
        values["postgres"]
    )
    old = _values("coder-v1.20")
    assert "satellite" not in str(old)
    assert {"serviceType", "ingress", "devurls", "cemanager", "envproxy", "dashboard"} <= set(old)


def test_coder_v1_satellite_mode_is_truthiness_and_drops_primary_parts() -> None:
    primary = _template("coder-v1")
    assert _find(primary, "StatefulSet", "timescale")
    assert _find(primary, "ServiceAccount", "coder")
    # As in the real chart, any non-empty string turns satellite mode on, even "false".
    satellite = _template(
        "coder-v1",
        "coderd.satellite.enable=false-but-a-string",
        "coderd.satellite.primaryURL=https://coder.example.com",
        "coderd.satellite.accessURL=https://coder-eu.example.com",
    )
    kinds = {doc["kind"] for doc in satellite}
    assert "StatefulSet" not in kinds and "ServiceAccount" not in kinds and "Role" not in kinds
    env = _env(_find(satellite, "Deployment", "coderd"))
    assert env["CODER_PRIMARY_URL"] == "https://coder.example.com"
    assert env["CODER_ACCESS_URL"] == "https://coder-eu.example.com"


def test_coder_v1_replica_key_is_an_ecdsa_key_and_pre_1_21_keys_still_work() -> None:
    docs = _template("coder-v1", "devurls.host=*.old.example.com", "serviceType=NodePort")
    secret = _find(docs, "Secret", "coder-replica-private-key")
    assert b"EC PRIVATE KEY" in base64.b64decode(secret["data"]["privateKey"])
    assert _env(_find(docs, "Deployment", "coderd"))["DEVURL_HOST"] == "*.old.example.com"
    assert _find(docs, "Service", "coderd")["spec"]["type"] == "NodePort"
    newer = _template(
        "coder-v1", "devurls.host=*.old.example.com", "coderd.devurlsHost=*.new.example.com"
    )
    assert _env(_find(newer, "Deployment", "coderd"))["DEVURL_HOST"] == "*.new.example.com"


def test_coder_v2_workspace_proxy_changes_only_the_arguments() -> None:
    server = _template("coder-v2", "coder.tls.secretNames={host-tls}")
    proxy = _template("coder-v2", "coder.tls.secretNames={host-tls}", "coder.workspaceProxy=true")
    server_deployment = _find(server, "Deployment", "coder")
    proxy_deployment = _find(proxy, "Deployment", "coder")
    server_container = server_deployment["spec"]["template"]["spec"]["containers"][0]
    proxy_container = proxy_deployment["spec"]["template"]["spec"]["containers"][0]
    assert server_container["args"] == ["server"]
    assert proxy_container["args"] == ["wsproxy", "server"]
    assert _env(server_deployment) == _env(proxy_deployment)
    assert _env(proxy_deployment)["CODER_TLS_CERT_FILE"] == "/etc/ssl/certs/coder/host-tls/tls.crt"
    assert [d["kind"] for d in server] == [d["kind"] for d in proxy]


def test_workspace_provider_runs_envproxy_with_http_and_ssh() -> None:
    docs = _template("workspace-provider", "envproxy.accessURL=https://coder.example.com")
    service = _find(docs, "Service", "envproxy")
    assert {port["port"] for port in service["spec"]["ports"]} == {8080, 2222}
    assert _env(_find(docs, "Deployment", "envproxy"))["ACCESS_URL"] == "https://coder.example.com"
