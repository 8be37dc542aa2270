"""Verify the geodns role through what users rely on: the answers, and an empty re-plan."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import dns.message
import dns.query
import httpx

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve().parent.parent
INVENTORY = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "lab-inventory"
PLAYBOOK = REPO / "playbooks" / "dns.yml"
BIN = Path(sys.executable).parent
ZONE = "geodns-molecule.coder-migrate.test"
NAMESERVER = ("127.0.0.1", 15353)
PDNS_ZONE_API = f"http://127.0.0.1:15380/api/v1/servers/localhost/zones/{ZONE}."
REGIONS = {"us-east": "127.0.1.1", "eu-west": "127.0.1.2", "ap-southeast": "127.0.1.3"}


def _answer(name: str, rdtype: str = "A") -> list[str]:
    query = dns.message.make_query(name, rdtype)
    response = dns.query.udp(query, NAMESERVER[0], port=NAMESERVER[1], timeout=2)
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def _play(host, *flags: str, inventory: Path = INVENTORY, verify: bool = False):  # type: ignore[no-untyped-def]
    # Every region's health port is closed on purpose (prepare.yml), so the role's verify
    # step, which expects healthy regions, is off unless a test asks for it.
    extra = "" if verify else "-e geodns_verify=false"
    return host.run(
        f"cd {shlex.quote(str(REPO))} && {BIN / 'ansible-playbook'} {' '.join(flags)} {extra} "
        f"-i {shlex.quote(str(inventory))} {shlex.quote(str(PLAYBOOK))}"
    )


def test_each_region_name_and_wildcard_answers_its_targets() -> None:
    for region, target in REGIONS.items():
        assert _answer(f"coder-{region}.{ZONE}") == [target]
        assert _answer(f"any-dev-url.coder-{region}.{ZONE}") == [target]
    markers = _answer(f"_coder-migrate-lua.coder.{ZONE}", "TXT")
    assert markers == [f'"heritage=coder-migrate,owner=coder.{ZONE},rrset=LUA coder.{ZONE}"']


def test_dns_check_passes_with_every_health_endpoint_down(host) -> None:  # type: ignore[no-untyped-def]
    # The inventory's health ports have no listener: every region fails over to the primary.
    down = " ".join(f"--expect-down {region}" for region in REGIONS)
    result = host.run(
        f"{BIN / 'coder-migrate'} dns check -i {shlex.quote(str(INVENTORY))} {down} --output json"
    )
    assert result.rc == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and len(report["results"]) == 9
    shared = [r for r in report["results"] if r["name"] == f"coder.{ZONE}"]
    assert {tuple(r["got"]) for r in shared} == {("127.0.0.1",)}


def test_check_mode_after_converge_changes_nothing(host) -> None:  # type: ignore[no-untyped-def]
    result = _play(host, "--check", "--diff")
    assert result.rc == 0, result.stdout + result.stderr
    assert "changed=0" in result.stdout and "failed=0" in result.stdout


def test_a_record_changed_behind_our_back_shows_in_diff_and_is_put_back(host) -> None:  # type: ignore[no-untyped-def]
    key = (REPO / ".lab" / "secrets" / "pdns-api-key").read_text().strip()
    name = f"coder-eu-west.{ZONE}."
    response = httpx.patch(
        PDNS_ZONE_API,
        headers={"X-API-Key": key},
        json={"rrsets": [{
            "name": name, "type": "A", "ttl": 60, "changetype": "REPLACE",
            "records": [{"content": "127.0.77.7", "disabled": False}],
        }]},
        timeout=10,
    )
    assert response.status_code == 204, response.text

    checked = _play(host, "--check", "--diff")
    assert checked.rc == 0, checked.stdout + checked.stderr
    assert "changed=1" in checked.stdout
    assert f"-{name} 60 A 127.0.77.7" in checked.stdout
    assert f"+{name} 60 A 127.0.1.2" in checked.stdout
    assert key not in checked.stdout + checked.stderr
    assert _answer(name) == ["127.0.77.7"], "check mode changed the record"

    # Applied with the role's verify step: the record is put back, then the play fails
    # because eu-west (the region whose record changed) is down, naming it and its answer.
    applied = _play(host, "--diff", "-e geodns_verify_timeout=1", verify=True)
    output = applied.stdout + applied.stderr
    assert applied.rc != 0, output
    assert "DNS answers not as planned after 1 s: eu-west: A" in output
    assert "answered 127.0.0.1, expected 127.0.1.2" in output
    assert "us-east" not in output
    assert key not in output
    assert _answer(name) == ["127.0.1.2"]
    again = _play(host, "--check")
    assert "changed=0" in again.stdout, again.stdout



def test_a_wrong_api_key_fails_with_the_engine_line_and_no_key(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inventory = tmp_path / "inventory"
    host.run_test(f"cp -r {shlex.quote(str(INVENTORY))} {shlex.quote(str(inventory))}")
    wrong_key = tmp_path / "wrong-key"
    wrong_key.write_text("0123456789abcdef-not-the-key\n")
    wrong_key.chmod(0o600)  # a secret file others can read is refused before any request
    settings = inventory / "group_vars" / "all" / "coder.yml"
    text, replaced = re.subn(
        r"(api_key:\n\s+file: ).*", rf"\g<1>{wrong_key}", settings.read_text()
    )
    assert replaced == 1
    settings.write_text(text)
    before = _answer(f"coder-us-east.{ZONE}")

    result = _play(host, inventory=inventory)
    assert result.rc != 0
    output = result.stdout + result.stderr
    assert f"refused the API key from file {wrong_key} (401" in output, output
    assert "0123456789abcdef-not-the-key" not in output
    assert _answer(f"coder-us-east.{ZONE}") == before
