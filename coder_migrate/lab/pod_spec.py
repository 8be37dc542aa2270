"""A region pod as the kubelet reads it (pure): which image mode a container runs, its env, and
where the lab plays it.

The mode is the container's args, as the real images take it: ``coderd replica`` is a Coder v1
satellite (coder/coder 1.21.0 with ``coderd.satellite.enable``), ``wsproxy server`` a Coder v2
workspace proxy (coder-v2/coder with ``coder.workspaceProxy``), ``envproxy run`` a Coder v1
envproxy (coder/workspace-provider); ``coderd run`` and ``server`` are
primaries, which the lab does not run: its primary is the Coder emulator, which follows the
version of the lab's primary release (:func:`primary_version`). The env is
resolved as the kubelet resolves it (``envFrom`` Secrets, then ``env`` in order with ``$(VAR)``
expansion, ``secretKeyRef``, ``fieldRef`` with the pod IP played by 127.0.0.1,
``resourceFieldRef`` from the container's resources) and passed to the bundled proxy as it is:
the proxy reads the real names (docs/proxy.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from coder_migrate.errors import LabError
from coder_migrate.lab.settings import NODE_NAME

__all__ = [
    "POD_IP",
    "PodMode",
    "PodPlan",
    "child_environment",
    "container_mode",
    "decode_secret",
    "expand",
    "host_environment",
    "image_args",
    "is_proxy_pod",
    "plan_pod",
    "pod_fields",
    "primary_version",
    "release_name",
    "resolve_env",
]

#: The pod IP every pod of the lab gets: the process runs on the host's loopback.
POD_IP = "127.0.0.1"
#: kwok's node allocatable, what ``resourceFieldRef`` gives for a limit the pod does not set.
NODE_ALLOCATABLE = {"cpu": "1k", "memory": "1Ti", "ephemeral-storage": "1Ti"}
#: The host's environment a child keeps (a pod gets none of it; Python needs these).
_HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
#: Where each mode's image reads its own access URL (the chart's env names).
_ACCESS_URL_ENV = {
    "satellite": "CODER_SATELLITE_ACCESS_URL",
    "workspace-proxy": "CODER_ACCESS_URL",
    "envproxy": "ENVPROXY_ACCESS_URL",
    # A provisioner daemon listens nowhere: CODER_URL is the primary it dials.
    "provisioner": "CODER_URL",
}
_SHELLS = frozenset({"sh", "bash", "/bin/sh", "/bin/bash"})

PodMode = Literal["satellite", "workspace-proxy", "envproxy", "provisioner", "primary"]
PRIMARY_MODE: Final[PodMode] = "primary"
"""A Coder primary's container (``coderd run``, ``server``): never played, only read."""
PlayedMode = Literal["satellite", "workspace-proxy", "envproxy", "provisioner"]
PROVISIONER_MODE: Final[PlayedMode] = "provisioner"
"""coder-v2/coder-provisioner's ``provisionerd start`` (``coder_migrate.lab.provisionerd``)."""
SecretLookup = Callable[[str, str], Mapping[str, str] | None]


def image_args(container: Mapping[str, Any]) -> list[str]:
    """The arguments the image's program gets, as the container runtime starts it: with a
    ``command``, what follows the program in ``command`` + ``args``; without one, ``args``
    (the image's own entrypoint gets them). A ``sh -c`` script's last ``exec`` line is the
    program it becomes (coder/coder 1.20.0 starts ``coderd run`` that way)."""
    command = [str(part) for part in container.get("command") or []]
    args = [str(part) for part in container.get("args") or []]
    if not command:
        return args
    argv = [*command, *args]
    if argv[0] in _SHELLS and len(argv) >= 3 and argv[1] == "-c":
        execs = [line.strip()[5:] for line in argv[2].splitlines() if line.strip()[:5] == "exec "]
        try:
            argv = shlex.split(execs[-1], comments=True) if execs else []
        except ValueError:
            argv = []
    return argv[1:]


def container_mode(container: Mapping[str, Any]) -> PodMode | None:
    """What the real image runs for this container's args; None for anything else."""
    args = image_args(container)
    if args[:2] == ["coderd", "replica"]:
        return "satellite"
    if args[:2] == ["wsproxy", "server"]:
        return "workspace-proxy"
    if args[:2] == ["envproxy", "run"]:
        return "envproxy"
    if args[:2] == ["provisionerd", "start"]:
        return PROVISIONER_MODE
    if args[:2] == ["coderd", "run"] or args[:1] == ["server"]:
        return PRIMARY_MODE
    return None


def is_proxy_pod(container: Mapping[str, Any]) -> bool:
    """A container the lab plays: a v1 satellite or envproxy, or a v2 workspace proxy."""
    return container_mode(container) in _ACCESS_URL_ENV


def expand(text: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined name is replaced, ``$$`` is a literal
    ``$``, and anything else (an undefined name, no closing parenthesis) stays as written."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        following = text[index + 1] if index + 1 < len(text) else ""
        if char == "$" and following == "$":
            out.append("$")
            index += 2
        elif char == "$" and following == "(":
            end = text.find(")", index + 2)
            if end < 0:
                out.append(text[index:])
                break
            name = text[index + 2 : end]
            out.append(defined[name] if name in defined else text[index : end + 1])
            index = end + 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def pod_fields(namespace: str, deployment: str) -> dict[str, str]:
    """What ``fieldRef`` reads in the lab: the pod runs on the host's loopback."""
    return {
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
        "status.hostIP": POD_IP,
        "status.hostIPs": POD_IP,
        "metadata.name": f"{deployment}-lab",
        "metadata.namespace": namespace,
        "spec.nodeName": NODE_NAME,
    }


def resource_field(container: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """``resourceFieldRef`` as the kubelet computes it: the container's request or limit (a
    missing limit is the node's allocatable), divided by ``divisor`` and rounded up."""
    from kubernetes.utils.quantity import parse_quantity

    resource = str(reference.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in NODE_ALLOCATABLE:
        raise LabError(f"resourceFieldRef {resource!r} is not a container resource")
    resources = container.get("resources") or {}
    quantity = (resources.get(kind) or {}).get(name)
    if quantity is None and kind == "requests":
        quantity = (resources.get("limits") or {}).get(name)
    if quantity is None:
        quantity = NODE_ALLOCATABLE[name] if kind == "limits" else "0"
    try:
        # The API server defaults `divisor` to "0", which the kubelet reads as 1.
        divisor = parse_quantity(reference.get("divisor") or "1") or 1  # type: ignore[no-untyped-call]
        value = parse_quantity(quantity) / divisor  # type: ignore[no-untyped-call]
    except (ValueError, ArithmeticError) as error:
        raise LabError(f"resourceFieldRef {resource}: not a quantity ({error})") from None
    return str(math.ceil(Decimal(value)))


def _from_secret(name: str, source: Mapping[str, Any], namespace: str, secret: SecretLookup) -> (
    str | None
):
    reference = source["secretKeyRef"]
    secret_name, key = str(reference.get("name", "")), str(reference.get("key", ""))
    data = secret(namespace, secret_name)
    value = None if data is None else data.get(key)
    if value is None and not reference.get("optional"):
        what = "not found" if data is None else f"has no key {key!r}"
        raise LabError(f"env {name}: secret {namespace}/{secret_name} {what}")
    return value


def _value_from(
    entry: Mapping[str, Any],
    container: Mapping[str, Any],
    namespace: str,
    secret: SecretLookup,
    fields: Mapping[str, str],
) -> str | None:
    """One ``valueFrom``; None for an optional reference that is absent (the name is left out)."""
    name, source = str(entry["name"]), entry["valueFrom"]
    if source.get("secretKeyRef") is not None:
        return _from_secret(name, source, namespace, secret)
    if source.get("fieldRef") is not None:
        path = str(source["fieldRef"].get("fieldPath", ""))
        if path not in fields:
            raise LabError(f"env {name}: fieldRef {path} is not played by the lab")
        return fields[path]
    if source.get("resourceFieldRef") is not None:
        return resource_field(container, source["resourceFieldRef"])
    kind = next(iter(source), "valueFrom")
    raise LabError(f"env {name}: {kind} is not played by the lab")


def resolve_env(
    container: Mapping[str, Any],
    namespace: str,
    secret: SecretLookup,
    fields: Mapping[str, str],
) -> dict[str, str]:
    """The env a container starts with: ``envFrom`` first, then ``env`` in order, each
    ``value`` expanded against what is defined before it (as the kubelet does).

    Raises :class:`LabError` for what the kubelet would refuse (a missing Secret or key that
    is not optional) and for sources the lab does not play (ConfigMaps).
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        reference = source.get("secretRef")
        if reference is None:
            raise LabError("envFrom: only secretRef is played by the lab")
        data = secret(namespace, str(reference.get("name", "")))
        if data is None and not reference.get("optional"):
            raise LabError(f"envFrom: secret {namespace}/{reference.get('name')} not found")
        prefix = str(source.get("prefix") or "")
        env.update({prefix + key: value for key, value in (data or {}).items()})
    for entry in container.get("env") or []:
        name = str(entry["name"])
        if entry.get("valueFrom") is None:
            env[name] = expand(str(entry.get("value") or ""), env)
            continue
        value = _value_from(entry, container, namespace, secret, fields)
        if value is not None:
            env[name] = value
    return env


def _containers(deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(spec.get("containers") or [])


def played_containers(deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in _containers(deployment) if is_proxy_pod(c)]


@dataclass(frozen=True)
class PodPlan:
    """One region pod to run: where, in which mode, with which env (never shown)."""

    cluster: str
    namespace: str
    deployment: str
    release: str
    mode: PlayedMode
    listen: tuple[str, int]
    access_url: str
    env: Mapping[str, str] = field(repr=False)
    replicas: int = 1
    """Daemons a provisioner pod plays (the Deployment's replicas); 1 for the others."""

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.deployment}"

    @property
    def metrics(self) -> bool:
        return self.env.get("CODER_PROMETHEUS_ENABLE", "").strip().lower() in ("1", "true")

    @property
    def env_hash(self) -> str:
        """sha256 of the resolved env, the mode and the listen address: changes when any does."""
        material = json.dumps(
            [sorted(self.env.items()), self.mode, list(self.listen), self.replicas]
        ).encode()
        return hashlib.sha256(material).hexdigest()


def listen_address(access_url: str, variable: str = "CODER_ACCESS_URL") -> tuple[str, int]:
    """Host and port of an ``http://`` loopback access URL; :class:`LabError` otherwise."""
    parts = urlsplit(access_url)
    host = parts.hostname or ""
    if parts.scheme != "http" or not host:
        raise LabError(
            f"{variable} {access_url!r}: the lab plays http:// loopback access URLs only"
        )
    try:
        loopback = ip_address("127.0.0.1" if host == "localhost" else host).is_loopback
        port = parts.port or 80
    except ValueError:
        loopback = False
    if not loopback:
        raise LabError(
            f"{variable} {access_url!r} is not a loopback address (127.0.0.0/8); "
            "the lab listens on loopback only"
        )
    return ("127.0.0.1" if host == "localhost" else host), port


def release_name(metadata: Mapping[str, Any]) -> str:
    """The Helm release a Deployment belongs to: helm marks what it installs with the
    release's name (coder/coder 1.21.0 sets no instance label of its own)."""
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    return str(annotations.get("meta.helm.sh/release-name")
               or labels.get("app.kubernetes.io/instance") or metadata.get("name", ""))


def primary_version(deployment: Mapping[str, Any]) -> str | None:
    """The Coder version a primary Deployment runs: its primary container's image tag
    (``docker.io/coderenvs/coder-service:1.20.0``, ``ghcr.io/coder/coder:v2.15.0``); None
    for any other Deployment, one scaled to 0, or an image without a tag."""
    if (deployment.get("spec") or {}).get("replicas", 1) == 0:
        return None
    for container in _containers(deployment):
        if container_mode(container) == PRIMARY_MODE:
            image = str(container.get("image") or "").split("@", 1)[0]
            name, _, tag = image.rpartition(":")
            return tag if name and "/" not in tag else None
    return None


def plan_pod(cluster: str, deployment: Mapping[str, Any], secret: SecretLookup) -> PodPlan | None:
    """The pod to run for DEPLOYMENT, None when it is not a region proxy or has 0 replicas.

    Raises :class:`LabError` (never with a secret value) when it cannot be played.
    """
    metadata = deployment.get("metadata") or {}
    containers = played_containers(deployment)
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    if not containers or replicas == 0:
        return None
    container = containers[0]
    mode = cast(PlayedMode, container_mode(container))
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
    release = release_name(metadata)
    env = resolve_env(container, namespace, secret, pod_fields(namespace, name))
    variable = _ACCESS_URL_ENV[mode]
    access_url = env.get(variable, "")
    if not access_url:
        raise LabError(f"no {variable} in the pod's env: the lab cannot tell where it listens")
    if mode == PROVISIONER_MODE:
        return PodPlan(
            cluster=cluster, namespace=namespace, deployment=name, release=release, mode=mode,
            listen=("", 0), access_url=access_url, env=env, replicas=int(replicas),
        )
    return PodPlan(
        cluster=cluster,
        namespace=namespace,
        deployment=name,
        release=release,
        mode=mode,
        listen=listen_address(access_url, variable),
        access_url=access_url,
        env=env,
    )


def host_environment(host: Mapping[str, str]) -> dict[str, str]:
    """What a pod's process keeps of the host's environment (Python needs these)."""
    return {key: host[key] for key in _HOST_ENV if key in host}


def child_environment(
    plan: PodPlan, metrics_port: int | None, env_file: Path, host: Mapping[str, str]
) -> dict[str, str]:
    """The proxy's environment: the pod's env, the mode its args chose, the lab's addresses."""
    env = host_environment(host)
    env.update(plan.env)
    # The real image takes its mode from the args; the bundled proxy from this setting.
    env["CODER_PROXY_MODE"] = plan.mode
    env["CODER_HTTP_ADDRESS"] = f"{plan.listen[0]}:{plan.listen[1]}"
    if metrics_port is not None:
        env["CODER_PROMETHEUS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
    # The pod has no /etc/coder.d: never let the host's env file add settings.
    env["CODER_PROXY_ENV_FILE"] = str(env_file)
    return env


def decode_secret(item: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data as text (what ``secretKeyRef`` and ``envFrom`` give a container)."""
    data: dict[str, str] = {}
    for key, encoded in (item.get("data") or {}).items():
        with contextlib.suppress(binascii.Error, UnicodeDecodeError, TypeError):
            data[str(key)] = base64.b64decode(str(encoded)).decode()
    data.update({str(k): str(v) for k, v in (item.get("stringData") or {}).items()})
    return data
