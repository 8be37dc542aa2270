"""Golden tests of the stand-in charts: rendered with the lab's helm (``helm template``, no
cluster), each asserting a fact of the real chart the stand-in claims, cited by file and line.

Real sources (read, not copied; coder_migrate/lab/charts/README.md):
- 1.21.0: coder/enterprise-helm tag 1.21.0 (3a9b365c), ``templates/...``, ``values.yaml``;
- 1.20.0: coder/enterprise-helm tag 1.20.0 (44eeb9e8);
- WP: cdr/enterprise-helm branch workspace-providers-envproxy-only (cda83829);
- v2: coder/coder ``helm/coder/tests/testdata/workspace_proxy.golden`` (0cffa29),
  ``helm/coder/templates/service.yaml`` (0e8b89a), ``helm/coder/templates/ingress.yaml``
  (bdaae5e), ``helm/libcoder/templates/_helpers.tpl`` (17b1283), ``helm/coder/values.yaml``
  of 2.15.0 (008b8d9).
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from coder_migrate.engine.values import release_values
from coder_migrate.inventory import load_topology
from coder_migrate.lab.tools import StandInChart, chart_path, helm_binary, helm_environment

pytestmark = pytest.mark.integration

LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventories" / "lab"
NAMESPACE = "coder-satellite"
PRIMARY = "https://coder.example.com"
SATELLITE = "https://coder-eu.example.com"
WP_REQUIRED = (
    "envproxy.accessURL=https://eu.example.com",
    "envproxy.clusterAddress=https://kubernetes.default.svc",
    "cemanager.accessURL=https://coder.example.com",
)


def _helm(chart: StandInChart, values: dict[str, Any], sets: tuple[str, ...],
          tmp: Path) -> subprocess.CompletedProcess[str]:
    values_file = tmp / f"values-{chart}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    command = [str(helm_binary()), "template", "release", str(chart_path(chart)),
               "--namespace", NAMESPACE, "-f", str(values_file)]
    for value in sets:
        command += ["--set", value]
    env = {**os.environ, **helm_environment()}
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def render(chart: StandInChart, *sets: str, values: dict[str, Any] | None = None,
           tmp: Path) -> list[dict[str, Any]]:
    result = _helm(chart, values or {}, sets, tmp)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def refused(chart: StandInChart, *sets: str, tmp: Path) -> str:
    result = _helm(chart, {}, sets, tmp)
    assert result.returncode != 0
    return result.stderr


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name} in {sorted(kinds(docs))}")


def kinds(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


def toolkit_values(generation: str, region: bool) -> dict[str, Any]:
    """What coder-migrate renders for the lab inventory's eu-west (or its primary); as v2,
    with the lab's coder_values for that chart (a ClusterIP Service)."""
    topology = load_topology(LAB_INVENTORY)
    topology = topology.model_copy(update={"generation": generation})
    site = topology.region("eu-west") if region else topology.primary
    if generation == "v2":
        site = site.model_copy(update={"values": {"coder": {"service": {"type": "ClusterIP"}}}})
    return release_values(topology, site)


# -- coder/coder 1.21.0 (coder-v1) ------------------------------------------------------------


def test_v1_satellite_from_the_toolkits_values(tmp_path: Path) -> None:
    docs = render("coder-v1", values=toolkit_values("v1", region=True), tmp=tmp_path)
    coderd = find(docs, "Deployment", "coderd")
    spec = coderd["spec"]["template"]["spec"]
    main = container(coderd)
    # templates/coderd.yaml:183-191: `/entrypoint.sh coderd replica` in satellite mode.
    assert (main["command"], main["args"]) == (["/entrypoint.sh"], ["coderd", "replica"])
    env = env_of(coderd)
    # templates/coderd.yaml:146-155: the key from Secret coder-replica-private-key/privateKey,
    # the primary and the satellite URLs.
    assert env["CODER_SATELLITE_PRIVATE_KEY"] == {
        "secretKeyRef": {"name": "coder-replica-private-key", "key": "privateKey"}}
    assert env["CODER_PRIMARY_ACCESS_URL"] == "http://127.0.0.1:17080"
    assert env["CODER_SATELLITE_ACCESS_URL"] == "http://127.0.1.2:17082"
    # templates/coderd.yaml:122-123: DEVURL_HOST from coderd.devurlsHost.
    assert env["DEVURL_HOST"] == "*.coder-eu-west.lab.coder-migrate.test"
    # templates/_common.tpl:25 (DB_SSL_MODE, not DB_SSLMODE); no invented names.
    assert env["DB_SSL_MODE"] == "disable"
    assert not {"DB_SSLMODE", "CODER_SATELLITE_ENABLE", "CODER_PRIMARY_URL",
                "CODER_REPLICA_PRIVATE_KEY", "CODER_ACCESS_URL"} & set(env)
    # templates/coderd.yaml:41-48: no service account and no migrations on a satellite.
    assert "serviceAccountName" not in spec and "initContainers" not in spec
    # templates/coderd.yaml:192-205: both probes GET /cem-healthz on 8080.
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/cem-healthz", "port": 8080}
    # templates/coderd.yaml:209-224: the key Secret, an ECDSA key from genPrivateKey.
    secret = find(docs, "Secret", "coder-replica-private-key")
    assert b"EC PRIVATE KEY" in base64.b64decode(secret["data"]["privateKey"])
    # templates/rbac.yaml:1 and timescale.yaml:2: none of it on a satellite.
    assert not {k for k in kinds(docs) if k[0] in ("Role", "RoleBinding", "StatefulSet")}


def test_v1_service_is_coderd_from_service_spec(tmp_path: Path) -> None:
    docs = render("coder-v1", "coderd.satellite.enable=true", tmp=tmp_path)
    service = find(docs, "Service", "coderd")["spec"]
    # values.yaml:12,15 and templates/coderd.yaml:225-248: a fresh namespace gets the
    # `coderd` LoadBalancer, externalTrafficPolicy Local, 80->8080 and 443->8443.
    assert (service["type"], service["externalTrafficPolicy"]) == ("LoadBalancer", "Local")
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(80, 8080), (443, 8443)]
    lab = render("coder-v1", values=toolkit_values("v1", region=True), tmp=tmp_path)
    assert find(lab, "Service", "coderd")["spec"]["type"] == "NodePort"  # inventories/lab


def test_v1_tls_files_are_joined_with_colons(tmp_path: Path) -> None:
    docs = render("coder-v1", "coderd.satellite.enable=true", "coderd.tls.hostSecretName=host",
                  "coderd.tls.devurlsHostSecretName=wild", tmp=tmp_path)
    coderd = find(docs, "Deployment", "coderd")
    env = env_of(coderd)
    # templates/coderd.yaml:157-174: both files, host first, joined with ":".
    assert env["SSL_SERVER_CERT_FILE"] == ":".join(
        f"/etc/ssl/certs/{d}/tls.crt" for d in ("host", "devurls"))
    assert env["SSL_SERVER_KEY_FILE"] == ":".join(
        f"/etc/ssl/certs/{d}/tls.key" for d in ("host", "devurls"))
    # templates/_common.tpl:57-66, 81-90: mounted at /etc/ssl/certs/host and .../devurls.
    mounts = {m["name"]: m["mountPath"] for m in container(coderd)["volumeMounts"]}
    assert mounts == {"tls": "/etc/ssl/certs/host", "devurltls": "/etc/ssl/certs/devurls"}


def test_v1_primary_runs_coderd_run_with_migrations_and_rbac(tmp_path: Path) -> None:
    docs = render("coder-v1", values=toolkit_values("v1", region=False), tmp=tmp_path)
    coderd = find(docs, "Deployment", "coderd")
    spec = coderd["spec"]["template"]["spec"]
    # templates/coderd.yaml:186-188: `coderd run`; :46-78: the migrations init container.
    assert container(coderd)["args"] == ["coderd", "run"]
    assert [c["name"] for c in spec["initContainers"]] == ["migrations"]
    assert spec["initContainers"][0]["args"] == ["coderd", "migrate", "up"]
    # templates/coderd.yaml:42: the `coder` service account; rbac.yaml:5-41 its RBAC names.
    assert spec["serviceAccountName"] == "coder"
    assert {("ServiceAccount", "coder"), ("Role", "coder"), ("RoleBinding", "coder"),
            ("StatefulSet", "timescale"), ("Service", "timescale")} <= kinds(docs)
    # templates/coderd.yaml:146, 209: no key env and no key Secret on a primary.
    assert "CODER_SATELLITE_PRIVATE_KEY" not in env_of(coderd)
    assert ("Secret", "coder-replica-private-key") not in kinds(docs)


def test_v1_pre_1_21_shape_and_moved_keys(tmp_path: Path) -> None:
    docs = render("coder-v1", "ingress.useDefault=false", "devurls.host=*.old.example.com",
                  "coderd.devurlsHost=*.new.example.com", tmp=tmp_path)
    # _ingress.tpl:35-45 (useServiceNext false) and coderd.yaml:249-267: `services.type`
    # (values.yaml:196, ClusterIP) on 8080 and 8443.
    service = find(docs, "Service", "coderd")["spec"]
    assert service["type"] == "ClusterIP"
    assert [p["port"] for p in service["ports"]] == [8080, 8443]
    # envproxy.yaml:1-25 and coderd.yaml:138-144: the built-in envproxy and its token.
    assert ("Deployment", "envproxy") in kinds(docs)
    assert env_of(find(docs, "Deployment", "coderd"))["BUILT_IN_ENVPROXY_TOKEN"] == {
        "secretKeyRef": {"name": "built-in-envproxy-token", "key": "token"}}
    # _migrate.tpl:11, 39-54: a moved key's old name, when set, still wins.
    assert env_of(find(docs, "Deployment", "coderd"))["DEVURL_HOST"] == "*.old.example.com"


def test_v1_replicas_zero_renders_no_replicas(tmp_path: Path) -> None:
    # templates/coderd.yaml:14 reads coderd.replicas through movedValue (_migrate.tpl:62-64),
    # which treats 0 as unset and has no default there: `replicas:` is null, and Kubernetes
    # runs one pod. A 1.21.0 satellite cannot be scaled to 0 by its values.
    docs = render("coder-v1", "coderd.satellite.enable=true", "coderd.replicas=0", tmp=tmp_path)
    assert find(docs, "Deployment", "coderd")["spec"]["replicas"] is None
    two = render("coder-v1", "coderd.satellite.enable=true", "coderd.replicas=2", tmp=tmp_path)
    assert find(two, "Deployment", "coderd")["spec"]["replicas"] == 2


def test_v1_satellite_mode_is_any_non_empty_value(tmp_path: Path) -> None:
    # templates/coderd.yaml:146 tests truthiness only: the string "false" turns it on.
    docs = render("coder-v1", "coderd.satellite.enable=false-but-a-string", tmp=tmp_path)
    assert container(find(docs, "Deployment", "coderd"))["args"] == ["coderd", "replica"]


@pytest.mark.parametrize(
    "value",
    [
        "coderd.serviceAnnotations.a=b",  # 1.21.1
        "coderd.superAdmin.passwordSecret.name=x",  # 1.22
        "metrics.amplitudeKey=x",  # 1.23
        "coderd.affinity.x=y",  # 1.25
        "coderd.extraLabels.a=b",  # 1.26
        "postgres.ssl.certSecret.name=x",  # 1.26
        "coderd.proxy.http=x",  # 1.27
        "coderd.networkPolicy.enable=false",  # 1.27
        "coderd.alternateHostnames[0]=x",  # 1.28
        "ingress.className=nginx",  # 1.28
        "coderd.liveness.periodSeconds=5",  # 1.29.2
        "coderd.workspaceServiceAccount.labels.a=b",  # 1.33
        "coderd.scim.authSecret.name=x",  # 1.34
        "postgres.noPasswordEnv=true",  # 1.35
    ],
)
def test_v1_keys_of_later_versions_are_refused(value: str, tmp_path: Path) -> None:
    """values.yaml and the templates of 1.21.0 read none of these (real-charts.md lists the
    version that added each): the real chart would ignore them, the stand-in refuses them."""
    key = value.split("=")[0].split("[")[0].split(".")
    message = refused("coder-v1", value, tmp=tmp_path)
    assert "coder/coder 1.21.0 has no such value, the real chart would ignore it" in message
    # The first key along the path that 1.21.0 does not have is the one named.
    assert any(f"at '/{'/'.join(key[:n])}'" in message for n in range(1, len(key) + 1))


# -- coder/coder 1.20.0 (coder-v1.20) ---------------------------------------------------------


def test_v1_20_cemanager_envproxy_and_nginx(tmp_path: Path) -> None:
    docs = render("coder-v1.20", tmp=tmp_path)
    manager = find(docs, "Deployment", "cemanager")
    # 1.20.0 templates/coderd.yaml:154-163: coderd run behind bash; :166 /cem-healthz.
    assert container(manager)["command"][:2] == ["/bin/bash", "-c"]
    assert container(manager)["command"][2].rstrip().endswith("exec /entrypoint.sh coderd run")
    assert container(manager)["readinessProbe"]["httpGet"]["path"] == "/cem-healthz"
    # :143-147: BUILT_IN_ENVPROXY_TOKEN from Secret built-in-envproxy-token/token.
    token_ref = {"secretKeyRef": {"name": "built-in-envproxy-token", "key": "token"}}
    assert env_of(manager)["BUILT_IN_ENVPROXY_TOKEN"] == token_ref
    # :193-212: Service cemanager on 8080, 8443 and 5349.
    assert [p["port"] for p in find(docs, "Service", "cemanager")["spec"]["ports"]] == [
        8080, 8443, 5349]
    # envproxy.yaml:101-111: ENVPROXY_ACCESS_URL, CEMANAGER_ACCESS_URL, CEMANAGER_TOKEN.
    envproxy = env_of(find(docs, "Deployment", "envproxy"))
    assert envproxy["CEMANAGER_TOKEN"] == token_ref
    assert envproxy["CEMANAGER_ACCESS_URL"] == (
        f"http://cemanager.{NAMESPACE}.svc.cluster.local:8080")
    assert "ENVPROXY_ACCESS_URL" in envproxy
    # values.yaml:27,33 and ingress.yaml:3, 309-320: the nginx ingress by default, with the
    # `ingress-nginx` LoadBalancer Service and `web-ingress`.
    assert find(docs, "Service", "ingress-nginx")["spec"]["type"] == "LoadBalancer"
    assert ("Ingress", "web-ingress") in kinds(docs)
    message = refused("coder-v1.20", "coderd.satellite.enable=true", tmp=tmp_path)
    assert "coder/coder 1.20.0 has no such value" in message


# -- coder/workspace-provider -----------------------------------------------------------------


def test_workspace_provider_envproxy(tmp_path: Path) -> None:
    docs = render("workspace-provider", *WP_REQUIRED, "envproxy.token=abc", tmp=tmp_path)
    envproxy = find(docs, "Deployment", "envproxy")
    # templates/envproxy.yaml:79-82: `/entrypoint.sh envproxy run` as the command.
    assert container(envproxy)["command"] == ["/entrypoint.sh", "envproxy", "run"]
    env = env_of(envproxy)
    # :57-78: the env names; CEMANAGER_TOKEN is the plain value of envproxy.token (:71-72).
    assert env["ENVPROXY_ACCESS_URL"] == "https://eu.example.com"
    assert env["CEMANAGER_ACCESS_URL"] == "https://coder.example.com"
    assert env["CEMANAGER_TOKEN"] == "abc"
    assert env["CLUSTER_ADDRESS"] == "https://kubernetes.default.svc"
    assert env["ENVIRONMENT_SA_NAME"] == "release-environments"
    assert {"DEVURL_HOST", "SSH_ENABLED"} <= set(env)
    # :113-131: Service envproxy on 8080 and 2222.
    assert [p["port"] for p in find(docs, "Service", "envproxy")["spec"]["ports"]] == [8080, 2222]
    # values.yaml:27 and ingress.yaml:3, 300-311: its own nginx, `ingress-nginx` a
    # LoadBalancer with externalTrafficPolicy Local; `web-ingress` (:332).
    nginx = find(docs, "Service", "ingress-nginx")["spec"]
    assert (nginx["type"], nginx["externalTrafficPolicy"]) == ("LoadBalancer", "Local")
    assert ("Ingress", "web-ingress") in kinds(docs)
    # rbac.yaml:4-98: ServiceAccount, Role, RoleBinding `coder`, no resource-policy in this era.
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        assert "annotations" not in find(docs, kind, "coder")["metadata"]


def test_workspace_provider_required_values_fail_as_the_real_chart(tmp_path: Path) -> None:
    # templates/_common.tpl:45, 62, 72.
    assert "envproxy.clusterAddress must be set" in refused("workspace-provider", tmp=tmp_path)
    assert "cemanager.accessURL must be set" in refused(
        "workspace-provider", *WP_REQUIRED[:2], tmp=tmp_path)


# -- coder-v2/coder 2.15.0 (coder-v2) ---------------------------------------------------------


def test_v2_workspace_proxy_from_the_toolkits_values(tmp_path: Path) -> None:
    docs = render("coder-v2", values=toolkit_values("v2", region=True), tmp=tmp_path)
    coder = find(docs, "Deployment", "coder")
    main = container(coder)
    # workspace_proxy.golden:149-152: command /opt/coder, args `wsproxy server`.
    assert (main["command"], main["args"]) == (["/opt/coder"], ["wsproxy", "server"])
    names = [e["name"] for e in main["env"]]
    # golden:154-178: the chart's env first (no default CODER_ACCESS_URL: the user set one,
    # _coder.tpl hasAccessURL), then coder.env verbatim, a secretKeyRef kept as it is.
    assert names == [
        "CODER_HTTP_ADDRESS", "CODER_PROMETHEUS_ADDRESS", "CODER_PPROF_ADDRESS",
        "KUBE_POD_IP", "CODER_DERP_SERVER_RELAY_URL", "GOMEMLIMIT",
        "CODER_PRIMARY_ACCESS_URL", "CODER_PROXY_SESSION_TOKEN", "CODER_ACCESS_URL",
        "CODER_WILDCARD_ACCESS_URL",
    ]
    env = env_of(coder)
    assert env["CODER_PROXY_SESSION_TOKEN"] == {
        "secretKeyRef": {"name": "coder-workspace-proxy-token", "key": "token"}}
    assert env["GOMEMLIMIT"] == {"resourceFieldRef": {"resource": "limits.memory"}}  # :168-171
    assert env["CODER_DERP_SERVER_RELAY_URL"] == "http://$(KUBE_POD_IP):8080"  # :166-167
    # golden:187-189: the readiness probe on /healthz at port `http`.
    assert main["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http",
                                                 "scheme": "HTTP"}
    # service.yaml:12, 31-37: coder.service.type honoured; no traffic policy off a LoadBalancer.
    service = find(docs, "Service", "coder")["spec"]
    assert service["type"] == "ClusterIP" and "externalTrafficPolicy" not in service
    # golden:19-21, 62-64: Role coder-workspace-perms, RoleBinding named after the account.
    assert {("Role", "coder-workspace-perms"), ("RoleBinding", "coder"),
            ("ServiceAccount", "coder")} <= kinds(docs)


def test_v2_defaults_and_tls(tmp_path: Path) -> None:
    docs = render("coder-v2", "coder.tls.secretNames={a,b}", tmp=tmp_path)
    coder = find(docs, "Deployment", "coder")
    env = env_of(coder)
    # golden:160-161 / _helpers.tpl defaultAccessURL: with no CODER_ACCESS_URL in coder.env,
    # the in-cluster URL (https with TLS).
    assert env["CODER_ACCESS_URL"] == f"https://coder.{NAMESPACE}.svc.cluster.local"
    # libcoder _helpers.tpl:66-77: TLS env, files comma-joined, port 8443.
    assert env["CODER_TLS_CERT_FILE"] == ",".join(
        f"/etc/ssl/certs/coder/{name}/tls.crt" for name in ("a", "b"))
    assert env["CODER_TLS_ADDRESS"] == "0.0.0.0:8443"
    assert container(coder)["args"] == ["server"]
    # golden:90-98 and service.yaml:31-37: LoadBalancer, Cluster policy, 80 and 443.
    service = find(docs, "Service", "coder")["spec"]
    assert (service["type"], service["externalTrafficPolicy"]) == ("LoadBalancer", "Cluster")
    assert [p["port"] for p in service["ports"]] == [80, 443]


def test_v2_ingress_is_coder_ingress(tmp_path: Path) -> None:
    docs = render("coder-v2", "coder.ingress.enable=true", "coder.ingress.host=coder.example.com",
                  "coder.ingress.wildcardHost=*--apps.example.com", tmp=tmp_path)
    # ingress.yaml:1, 19, 29-30: coder.ingress.*; a suffixed wildcard loses its suffix.
    rules = find(docs, "Ingress", "coder")["spec"]["rules"]
    assert [r["host"] for r in rules] == ["coder.example.com", "*.example.com"]


@pytest.mark.parametrize("value", ["service.type=ClusterIP", "ingress.enable=true"])
def test_v2_top_level_service_and_ingress_are_refused(value: str, tmp_path: Path) -> None:
    """The real chart reads coder.service.* and coder.ingress.* (service.yaml:1,12;
    ingress.yaml:1): a top-level service.* is silently ignored there (the user gets a
    LoadBalancer), refused here."""
    top = value.split(".")[0]
    message = refused("coder-v2", value, tmp=tmp_path)
    assert f"reads coder.{top}.*, the real chart ignores a top-level {top}.*" in message
