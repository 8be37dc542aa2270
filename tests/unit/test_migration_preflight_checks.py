"""Preflight's reachability and credential checks, and the stop message after retries.

The integration tests (tests/integration/test_migration_faults.py) run the same checks
against the lab; these pin the pieces that need no services.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coder_migrate.errors import CoderUnavailable, DnsError
from coder_migrate.inventory import Topology, load_topology
from coder_migrate.migrations.v1_20_to_v1_21.observe import (
    MigrationState,
    probe_primary_url,
    satellite_primary_url,
)
from coder_migrate.migrations.v1_20_to_v1_21.preflight import preflight_problems
from coder_migrate.providers.coder import RetryPolicy
from coder_migrate.providers.coder.transport import CoderTransport
from coder_migrate.providers.dns import PowerDnsAdapter, ZoneFileAdapter
from tests.fixtures.coderd import free_loopback_port
from tests.helpers import copy_inventory, edit_yaml
from tests.unit.test_migration_plan import providers, workspaces


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return load_topology(copy_inventory(tmp_path_factory.mktemp("v1")))


def _state(topology: Topology, **overrides: object) -> MigrationState:
    state = MigrationState(version="1.21.0", version_ok=True, providers=providers(topology),
                           workspaces=workspaces(topology))
    for name, value in overrides.items():
        setattr(state, name, value)
    return state


# -- the satellite's primaryURL ---------------------------------------------------------------


def test_the_probed_url_is_the_one_rendered_into_the_satellite_values(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    topology = load_topology(inventory)
    region = topology.regions[0]
    # The primary on its own name (seed 001), not the geo-routed access URL.
    assert satellite_primary_url(topology, region) == topology.primary.own_url
    assert topology.primary.own_url == "https://coder-primary.example.com"

    internal = "https://coder.coder.svc.cluster.local"
    edit_yaml(inventory / "host_vars" / f"{region.name}.yml", lambda d: d.setdefault(
        "coder_values", {}).update({"coderd": {"satellite": {"primaryURL": internal}}}))
    topology = load_topology(inventory)
    assert satellite_primary_url(topology, topology.region(region.name)) == internal


def test_unreachable_primary_urls_are_listed_per_region_with_the_dns_problem(
    v1: Topology,
) -> None:
    state = _state(v1, primary_url_problems={
        "eu-west": "the satellite's primaryURL https://x.test does not answer from here: "
                   "GET /api: could not reach https://x.test (ConnectError) after 1 attempt(s)"},
        dns_problem="the powerdns zone example.com cannot be used: refused the API key")
    assert preflight_problems(v1, state) == [
        "eu-west: the satellite's primaryURL https://x.test does not answer from here: "
        "GET /api: could not reach https://x.test (ConnectError) after 1 attempt(s)",
        "dns: the powerdns zone example.com cannot be used: refused the API key",
    ]


def test_a_dns_problem_is_listed_even_when_the_primary_does_not_answer(v1: Topology) -> None:
    state = MigrationState(primary_problem="the primary at X does not answer: refused",
                           dns_problem="refused TSIG key k")
    assert preflight_problems(v1, state) == [
        "primary: the primary at X does not answer: refused", "dns: refused TSIG key k"]


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """*handler* on a loopback port for the block; its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    """A web server on loopback that is not a Coder primary (no coder-version header)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            return None

    with serving(Handler) as url:
        yield url


def test_a_server_that_is_not_a_coder_primary_is_named_as_such(plain_http_server: str) -> None:
    reason = asyncio.run(probe_primary_url(plain_http_server, "token-never-shown"))
    assert reason == "GET /api answered without a coder-version header: not a Coder primary"


def test_a_closed_port_fails_fast_and_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_loopback_port()}"
    reason = asyncio.run(probe_primary_url(url, "token-never-shown"))
    assert "could not reach the primary at " + url in reason
    assert "after 1 attempt(s)" in reason


# -- the stop after retries -------------------------------------------------------------------


def test_503_after_the_retry_budget_names_the_primary_status_method_path_and_attempts() -> None:
    calls: list[httpx.Request] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"error": {"msg": "overloaded", "code": "x"}})

    async def main() -> None:
        http = CoderTransport(
            "http://primary.test", auth_headers={"Session-Token": "tok"}, error_style="v1",
            retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002),
            transport=httpx.MockTransport(unavailable),
        )
        try:
            await http.request("GET", "/api/private/resource-pools/p1")
        finally:
            await http.aclose()

    with pytest.raises(CoderUnavailable) as raised:
        asyncio.run(main())
    assert len(calls) == 3
    assert str(raised.value) == (
        "GET /api/private/resource-pools/p1 (503): the primary at http://primary.test "
        "answered 503 on all 3 attempts: overloaded")


# -- DNS credentials --------------------------------------------------------------------------


def test_a_refused_powerdns_key_is_a_clear_error_without_the_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"  # a read: nothing is changed
        return httpx.Response(401, text="Unauthorized")

    async def main() -> None:
        async with PowerDnsAdapter(
            api_url="http://pdns.test", api_key="wrong-key-value", zone="example.com",
            key_source="env PDNS_KEY", transport=httpx.MockTransport(refuse),
        ) as adapter:
            await adapter.check_access()

    with pytest.raises(DnsError) as raised:
        asyncio.run(main())
    assert "refused the API key from env PDNS_KEY (401 on GET" in str(raised.value)
    assert "wrong-key-value" not in str(raised.value)


def test_zone_file_access_needs_a_directory_to_write_in(tmp_path: Path) -> None:
    def check(path: Path) -> None:
        adapter = ZoneFileAdapter(path=path, zone="example.com",
                                  shared_hostname="coder.example.com")
        asyncio.run(adapter.check_access())

    check(tmp_path / "not" / "yet" / "there" / "example.com.zone")  # apply creates these
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DnsError, match=r"a-file/example.com.zone cannot be read: Not a dir"):
        check(blocker / "example.com.zone")
    broken = tmp_path / "broken.zone"
    broken.write_text("this is not a zone\n")
    with pytest.raises(DnsError, match="not a valid zone file"):
        check(broken)


def test_another_origin_gets_no_token_and_a_401_counts_as_answering() -> None:
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    with serving(Handler) as url:
        assert asyncio.run(probe_primary_url(url, None)) == ""
    assert seen and not any(k.lower() == "session-token" for k in seen[0])


def test_without_a_token_a_server_that_is_not_coder_is_named(plain_http_server: str) -> None:
    reason = asyncio.run(probe_primary_url(plain_http_server, None))
    assert reason == "GET /api answered 200 without a coder-version header: not a Coder primary"
