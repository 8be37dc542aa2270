"""The lab's stand-in for a cloud's load-balancer controller.

A cloud gives each Service of type LoadBalancer an external address
(``status.loadBalancer.ingress``); until then ``helm --wait`` waits for it and ``status``
shows it pending. The lab has no cloud, so the pods supervisor calls :func:`provision` for
every cluster on each tick: a LoadBalancer Service without an address gets its
``spec.loadBalancerIP`` when set, else :data:`LAB_LOAD_BALANCER_IP`. No traffic goes through
it: the lab's pods listen on their own loopback addresses (docs/lab.md).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["LAB_LOAD_BALANCER_IP", "provision", "unprovisioned"]

LAB_LOAD_BALANCER_IP = "127.0.0.1"


def unprovisioned(services: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(namespace, name, address to give) of each LoadBalancer Service without an address."""
    found = []
    for service in services:
        spec = service.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            continue
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if ingress:
            continue
        meta = service.get("metadata") or {}
        address = spec.get("loadBalancerIP") or LAB_LOAD_BALANCER_IP
        found.append((str(meta.get("namespace", "")), str(meta.get("name", "")), address))
    return found


def provision(core: Any, timeout: float) -> list[str]:
    """Give every unprovisioned LoadBalancer Service of the cluster its address; return
    ``namespace/name=address`` of each one given."""
    listed = core.list_service_for_all_namespaces(_preload_content=False,
                                                  _request_timeout=timeout)
    items = json.loads(listed.data).get("items") or []
    given = []
    for namespace, name, address in unprovisioned(items):
        body = {"status": {"loadBalancer": {"ingress": [{"ip": address, "ipMode": "VIP"}]}}}
        core.patch_namespaced_service_status(name, namespace, body, _request_timeout=timeout)
        given.append(f"{namespace}/{name}={address}")
    return given
