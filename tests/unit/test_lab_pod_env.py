"""The lab's region pods without a cluster: env resolution as the kubelet does it, which
Deployments are played (by the args the real images take), where they listen, and the proxy
settings a chart's env gives (the names coder/coder 1.21.0 and coder-v2/coder render)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from coder_migrate.errors import ConfigError, LabError
from coder_migrate.lab.pod_spec import (
    POD_IP,
    child_environment,
    container_mode,
    expand,
    is_proxy_pod,
    plan_pod,
    pod_fields,
    resolve_env,
)
from coder_migrate.providers.coder import satellite_key
from coder_migrate.proxy.config import load_settings
from coder_migrate.proxy.http1 import RequestHead
from coder_migrate.proxy.router import Local, RouteTable, route

TOKEN = "2fb6500b-bb47-4783-a0db-dedde895b865:" + "ab" * 32
SECRETS: dict[tuple[str, str], dict[str, str]] = {
    ("eu", "coder-workspace-proxy-token"): {"token": TOKEN},
    ("eu", "extra"): {"A": "from-secret", "B": "b"},
}


def lookup(namespace: str, name: str) -> Mapping[str, str] | None:
    return SECRETS.get((namespace, name))


def resolve(container: dict[str, Any]) -> dict[str, str]:
    return resolve_env(container, "eu", lookup, pod_fields("eu", "coder"))


# -- $(VAR) expansion ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://$(IP):8080", "http://127.0.0.1:8080"),
        ("$(IP)$(IP)", "127.0.0.1127.0.0.1"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),  # kept as written
        ("$$(IP)", "$(IP)"),  # escaped
        ("$$$(IP)", "$127.0.0.1"),
        ("cost $5", "cost $5"),
        ("$(IP", "$(IP"),  # no closing parenthesis
        ("trailing $", "trailing $"),
        ("$()", "$()"),
        ("", ""),
    ],
)
def test_expand_as_kubernetes_does(text: str, expected: str) -> None:
    assert expand(text, {"IP": "127.0.0.1"}) == expected


def test_env_in_order_with_secret_field_and_expansion() -> None:
    env = resolve(
        {
            "env": [
                {"name": "LATER_REF", "value": "$(KUBE_POD_IP)"},  # defined after: not expanded
                {"name": "KUBE_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "RELAY", "value": "http://$(KUBE_POD_IP):8080"},
                {
                    "name": "CODER_PROXY_SESSION_TOKEN",
                    "valueFrom": {
                        "secretKeyRef": {"name": "coder-workspace-proxy-token", "key": "token"}
                    },
                },
                # A secret value is never expanded (only `value` is).
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "EMPTY"},
                {"name": "RELAY", "value": "$(RELAY)/again"},  # a later entry wins
            ]
        }
    )
    assert env == {
        "LATER_REF": "$(KUBE_POD_IP)",
        "KUBE_POD_IP": POD_IP,
        "RELAY": "http://127.0.0.1:8080/again",
        "CODER_PROXY_SESSION_TOKEN": TOKEN,
        "NS": "eu",
        "EMPTY": "",
    }


def test_env_from_secret_then_env_overrides() -> None:
    env = resolve(
        {
            "envFrom": [{"secretRef": {"name": "extra"}, "prefix": "X_"}],
            "env": [{"name": "X_A", "value": "$(X_B)-env"}],
        }
    )
    assert env == {"X_A": "b-env", "X_B": "b"}


def test_missing_secret_refused_unless_optional() -> None:
    ref = {"secretKeyRef": {"name": "absent", "key": "token"}}
    with pytest.raises(LabError, match="secret eu/absent not found"):
        resolve({"env": [{"name": "T", "valueFrom": ref}]})
    missing_key = {"secretKeyRef": {"name": "extra", "key": "nope"}}
    with pytest.raises(LabError, match="has no key 'nope'"):
        resolve({"env": [{"name": "T", "valueFrom": missing_key}]})
    optional = {"secretKeyRef": {"name": "absent", "key": "token", "optional": True}}
    assert resolve({"env": [{"name": "T", "valueFrom": optional}]}) == {}


def test_unplayed_sources_are_named() -> None:
    with pytest.raises(LabError, match="configMapKeyRef is not played"):
        resolve({"env": [{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c"}}}]})
    with pytest.raises(LabError, match=r"fieldRef spec\.unknown"):
        resolve({"env": [{"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.unknown"}}}]})


def test_resource_fields_as_the_kubelet_gives_them() -> None:
    """coder-v2/coder sets GOMEMLIMIT from limits.memory (its workspace_proxy.golden): the
    kubelet gives the limit in bytes, divided by ``divisor`` and rounded up; a limit the
    container does not set is the node's allocatable (kwok: 1Ti)."""

    def field(resource: str, resources: dict[str, Any], divisor: str = "") -> str:
        ref: dict[str, Any] = {"resource": resource}
        if divisor:
            ref["divisor"] = divisor
        container = {
            "resources": resources,
            "env": [{"name": "V", "valueFrom": {"resourceFieldRef": ref}}],
        }
        return resolve(container)["V"]

    limits = {"limits": {"cpu": "2000m", "memory": "4096Mi"}, "requests": {"cpu": "250m"}}
    assert field("limits.memory", limits) == str(4096 * 1024 * 1024)
    assert field("limits.memory", limits, divisor="1Mi") == "4096"
    assert field("limits.memory", limits, divisor="0") == str(4096 * 1024 * 1024)  # API default
    assert field("limits.cpu", limits) == "2"
    assert field("requests.cpu", limits) == "1"  # 0.25 rounded up
    assert field("requests.memory", limits) == str(4096 * 1024 * 1024)  # defaults to the limit
    assert field("limits.memory", {}) == str(1024**4)
    with pytest.raises(LabError, match="not a container resource"):
        field("limits.gpu", limits)


# -- which Deployments, where they listen ------------------------------------------------


def deployment(container: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "coder",
            "namespace": "eu",
            "labels": {"app.kubernetes.io/instance": "coder-proxy"},
        },
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [container]}}},
    }


def v2_container(access_url: str) -> dict[str, Any]:
    return {
        "name": "coder",
        "args": ["wsproxy", "server"],
        "env": [
            {"name": "CODER_HTTP_ADDRESS", "value": "0.0.0.0:8080"},
            {"name": "CODER_PROMETHEUS_ADDRESS", "value": "0.0.0.0:2112"},
            {"name": "CODER_PRIMARY_ACCESS_URL", "value": "http://127.0.0.1:17080"},
            {
                "name": "CODER_PROXY_SESSION_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": "coder-workspace-proxy-token", "key": "token"}
                },
            },
            {"name": "CODER_ACCESS_URL", "value": access_url},
        ],
    }


def v1_satellite_container(access_url: str) -> dict[str, Any]:
    """What the coder-v1 stand-in renders for a satellite, as coder/coder 1.21.0 does
    (templates/coderd.yaml:146-155 env, :183-191 command and args)."""
    return {
        "name": "coderd",
        "command": ["/entrypoint.sh"],
        "args": ["coderd", "replica"],
        "env": [
            {"name": "DEVURL_HOST", "value": "*.sat.lab.internal"},
            {
                "name": "CODER_SATELLITE_PRIVATE_KEY",
                "valueFrom": {
                    "secretKeyRef": {"name": "coder-replica-private-key", "key": "privateKey"}
                },
            },
            {"name": "CODER_PRIMARY_ACCESS_URL", "value": "http://127.0.0.1:17080"},
            {"name": "CODER_SATELLITE_ACCESS_URL", "value": access_url},
            {"name": "DB_SSL_MODE", "value": "disable"},
        ],
    }


def test_the_mode_is_the_args_the_real_images_take() -> None:
    assert container_mode({"command": ["/entrypoint.sh"], "args": ["coderd", "replica"]}) == (
        "satellite"
    )
    assert container_mode({"command": ["/opt/coder"], "args": ["wsproxy", "server"]}) == (
        "workspace-proxy"
    )
    assert container_mode({"command": ["/entrypoint.sh"], "args": ["coderd", "run"]}) == "primary"
    assert container_mode({"command": ["/opt/coder"], "args": ["server"]}) == "primary"
    # What follows the program in command + args: coder/workspace-provider's envproxy
    # (workspace-providers-envproxy-only templates/envproxy.yaml: /entrypoint.sh envproxy run).
    envproxy = {"command": ["/entrypoint.sh", "envproxy", "run"]}
    assert container_mode(envproxy) == "envproxy"
    assert is_proxy_pod(envproxy)
    # The invented flag of the old stand-in turns nothing on: the args decide.
    assert not is_proxy_pod({"env": [{"name": "CODER_SATELLITE_ENABLE", "value": "true"}]})
    assert plan_pod("eu-west", deployment({"args": ["server"]}), lookup) is None
    assert plan_pod("eu-west", deployment({"args": ["coderd", "run"]}), lookup) is None
    scaled_down = deployment(v2_container("http://127.0.2.1:18000"), replicas=0)
    assert plan_pod("eu-west", scaled_down, lookup) is None


def test_a_satellite_listens_on_its_satellite_access_url(tmp_path: Path) -> None:
    pem = satellite_key.generate_private_key_pem()
    SECRETS[("eu", "coder-replica-private-key")] = {"privateKey": pem}
    try:
        plan = plan_pod(
            "eu-west", deployment(v1_satellite_container("http://127.0.2.9:18009")), lookup
        )
    finally:
        del SECRETS[("eu", "coder-replica-private-key")]
    assert plan is not None
    assert (plan.mode, plan.listen) == ("satellite", ("127.0.2.9", 18009))
    assert pem not in repr(plan)
    env = child_environment(plan, None, _empty(tmp_path), {"PATH": "/usr/bin"})
    assert env["CODER_PROXY_MODE"] == "satellite"
    settings = load_settings({}, environ=env, env_file=_empty(tmp_path))
    assert settings.mode == "satellite"
    assert settings.access_url == "http://127.0.2.9:18009"
    assert settings.primary_access_url == "http://127.0.0.1:17080"
    assert settings.wildcard_access_url == "*.sat.lab.internal"
    assert settings.satellite_private_key == pem.strip()


def test_plan_listens_on_the_access_url_and_hides_the_env() -> None:
    plan = plan_pod("eu-west", deployment(v2_container("http://127.0.2.1:18000")), lookup)
    assert plan is not None
    assert (plan.key, plan.release, plan.mode) == (
        "eu-west/eu/coder",
        "coder-proxy",
        "workspace-proxy",
    )
    assert plan.listen == ("127.0.2.1", 18000)
    assert TOKEN not in repr(plan)
    other = plan_pod("eu-west", deployment(v2_container("http://127.0.2.1:18001")), lookup)
    assert other is not None and other.env_hash != plan.env_hash


@pytest.mark.parametrize(
    ("access_url", "message"),
    [
        ("http://coder.eu.svc.cluster.local", "not a loopback address"),
        ("http://10.0.0.8:8080", "not a loopback address"),
        ("https://127.0.2.1:8443", "http:// loopback access URLs only"),
    ],
)
def test_non_loopback_access_urls_refused(access_url: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        plan_pod("eu-west", deployment(v2_container(access_url)), lookup)


def test_child_env_is_the_pods_with_the_labs_addresses(tmp_path: Path) -> None:
    plan = plan_pod("eu-west", deployment(v2_container("http://127.0.2.1:18000")), lookup)
    assert plan is not None
    host = {"PATH": "/usr/bin", "CODER_PROXY_MODE": "satellite", "SECRET_OF_HOST": "x"}
    env = child_environment(plan, 40000, tmp_path / "empty.env", host)
    assert env["CODER_HTTP_ADDRESS"] == "127.0.2.1:18000"
    assert env["CODER_PROMETHEUS_ADDRESS"] == "127.0.0.1:40000"
    assert env["CODER_PROXY_MODE"] == "workspace-proxy"  # the args, not the host's env
    assert "SECRET_OF_HOST" not in env
    assert env["PATH"] == "/usr/bin"
    (tmp_path / "empty.env").write_text("")
    settings = load_settings({}, environ=env, env_file=tmp_path / "empty.env")
    assert settings.mode == "workspace-proxy"
    assert settings.http_address == ("127.0.2.1", 18000)
    assert settings.proxy_session_token == TOKEN


# -- the chart's names in the proxy's settings --------------------------------------------


def test_the_real_satellite_env_runs_a_satellite_without_a_mode(tmp_path: Path) -> None:
    """The env coder/coder 1.21.0 gives `coderd replica` (templates/coderd.yaml:146-155),
    with no CODER_PROXY_MODE: the proxy starts as a satellite and reads every name."""
    pem = satellite_key.generate_private_key_pem()
    settings = load_settings(
        {},
        environ={
            "CODER_PRIMARY_ACCESS_URL": "http://127.0.0.1:17080",
            "CODER_SATELLITE_ACCESS_URL": "http://127.0.2.1:18000",
            "CODER_SATELLITE_PRIVATE_KEY": pem,
            "DEVURL_HOST": "*.sat.lab.internal",
            "CODER_HTTP_ADDRESS": "127.0.2.1:18000",
        },
        env_file=_empty(tmp_path),
    )
    assert settings.mode == "satellite"
    assert settings.access_url == "http://127.0.2.1:18000"
    assert settings.satellite_private_key == pem.strip()
    assert settings.wildcard_access_url == "*.sat.lab.internal"
    assert settings.sources["access_url"] == "CODER_SATELLITE_ACCESS_URL (environment)"


def test_invented_names_are_not_read(tmp_path: Path) -> None:
    """No chart renders CODER_PRIMARY_URL, CODER_REPLICA_PRIVATE_KEY or CODER_SATELLITE_ENABLE:
    the proxy ignores them (the old stand-in's names)."""
    environ = {
        "CODER_SATELLITE_ENABLE": "true",
        "CODER_PRIMARY_URL": "http://127.0.0.1:2",
        "CODER_PROXY_SESSION_TOKEN": TOKEN,
    }
    with pytest.raises(ConfigError, match=r"^CODER_PRIMARY_ACCESS_URL \(not set\): expected"):
        load_settings({}, environ=environ, env_file=_empty(tmp_path))
    settings = load_settings(
        {},
        environ={**environ, "CODER_PRIMARY_ACCESS_URL": "http://127.0.0.1:1"},
        env_file=_empty(tmp_path),
    )
    assert (settings.mode, settings.primary_access_url) == ("workspace-proxy", "http://127.0.0.1:1")


def test_a_satellite_serves_the_v1_health_path() -> None:
    """coder/coder 1.21.0 probes /cem-healthz (templates/coderd.yaml:192-205); a workspace
    proxy has no such route (it shows the dashboard page), as wsproxy does not serve it."""
    head = RequestHead(
        "GET", b"/cem-healthz", "HTTP/1.1", [(b"host", b"sat")], host="sat",
        content_length=None, chunked=False, upgrade=False, keep_alive=True,
    )
    assert route(head, RouteTable(mode="satellite")) == Local("healthz", "/cem-healthz")
    assert route(head, RouteTable(mode="workspace-proxy")) == Local("dashboard", "/{dashboard}")


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.env"
    path.write_text("")
    return path
