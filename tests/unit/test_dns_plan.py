"""Desired rrsets, ownership markers and the DNS diff, against rrsets held in memory."""

from __future__ import annotations

from typing import Any

import pytest

from coder_migrate.dns import GeoOptions, desired_state, diff_rrsets, marker_rrset, parse_marker
from coder_migrate.dns.desired import DesiredState
from coder_migrate.dns.lua import LuaRegion, health_url, shared_record_script
from coder_migrate.engine.plan import Action
from coder_migrate.errors import PlanError, UnsafePlan
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns import Capabilities, RRSet
from tests.fixtures.dns import LAB_ZONE, lab_topology_data

SHARED = f"coder.{LAB_ZONE}"
PDNS = Capabilities(provider="powerdns", lua_records=True, client_subnet=True)
PDNS_GEOIP = Capabilities(provider="powerdns", lua_records=True, client_subnet=True, geoip=True)
BIND = Capabilities(provider="rfc2136")
SETTINGS = {"provider": "zonefile", "zonefile": {"path": "zone"}}


def _topology(edit: Any = None) -> Topology:
    data = lab_topology_data(SETTINGS, health_port=8443)
    if edit is not None:
        edit(data)
    return Topology.model_validate(data)


def _state(
    capabilities: Capabilities = PDNS, edit: Any = None, options: GeoOptions | None = None
) -> DesiredState:
    return desired_state(_topology(edit), capabilities, options)


def _applied(desired: DesiredState, extra: list[RRSet] | None = None) -> list[RRSet]:
    """The zone as it is after *desired* was applied: rrsets, markers, and *extra*."""
    owned = [d.rrset for d in desired.rrsets]
    markers = [marker_rrset(r.key, owner=desired.owner, ttl=desired.ttl) for r in owned]
    return [*owned, *markers, *(extra or [])]


def test_region_name_and_wildcard_point_at_the_region_targets() -> None:
    rrsets = {d.rrset.key: d for d in _state().rrsets}
    eu = rrsets[(f"coder-eu-west.{LAB_ZONE}", "A")]
    assert eu.rrset.records == ("127.0.1.1",) and eu.region == "eu-west"
    assert rrsets[(f"*.coder-eu-west.{LAB_ZONE}", "A")].rrset.records == ("127.0.1.1",)
    assert rrsets[(f"*.{SHARED}", "A")].region == "primary"
    # The primary's access URL is the shared hostname, which only the LUA record answers;
    # its own name (seed 001's coder-primary) is a plain A that no geo rule touches.
    assert (SHARED, "A") not in rrsets and (SHARED, "LUA") in rrsets
    assert rrsets[(f"coder-primary.{LAB_ZONE}", "A")].rrset.records == ("127.0.9.1",)


def test_ipv6_targets_get_aaaa_and_a_second_lua_record() -> None:
    def add_v6(data: dict[str, Any]) -> None:
        data["regions"][0]["dns_targets"] = ["127.0.1.1", "2001:db8::11"]
        data["primary"]["dns_targets"] = ["127.0.9.1", "2001:db8::1"]

    rrsets = {d.rrset.key: d.rrset for d in _state(edit=add_v6).rrsets}
    assert rrsets[(f"coder-eu-west.{LAB_ZONE}", "AAAA")].records == ("2001:db8::11",)
    lua = rrsets[(SHARED, "LUA")].records
    assert [r.split(" ", 1)[0] for r in lua] == ["A", "AAAA"]
    assert "'2001:db8::11'" in lua[1] and "'2001:db8::11'" not in lua[0]


def test_lua_record_is_byte_identical_for_the_same_inventory() -> None:
    first = {d.rrset.key: d.rrset for d in _state().rrsets}[(SHARED, "LUA")]
    second = {d.rrset.key: d.rrset for d in _state().rrsets}[(SHARED, "LUA")]
    assert first.records == second.records
    script = first.records[0]
    assert script.startswith('A ";local fallback={\'127.0.9.1\'}') and "\n" not in script
    assert "netmask({'203.0.113.0/26'})" in script
    # v1 probes /cem-healthz, what coder/coder 1.21's probes use (providers/coder/health.py).
    assert f"pick('http://coder-eu-west.{LAB_ZONE}:8443/cem-healthz',{{'127.0.1.1'}})" in script


def test_geo_part_of_the_script_follows_the_geoip_switch() -> None:
    def script(capabilities: Capabilities, options: GeoOptions | None = None) -> str:
        rrsets = {d.rrset.key: d.rrset for d in _state(capabilities, options=options).rrsets}
        return rrsets[(SHARED, "LUA")].records[0]

    assert "country(" not in script(PDNS) and "continent(" not in script(PDNS)
    with_geo = script(PDNS_GEOIP)
    assert "country({'DE','FR'})" in with_geo and "continent({'EU'})" in with_geo
    # Rules run most specific first: every subnet rule, then countries, then continents.
    assert with_geo.rindex("netmask(") < with_geo.index("country(") < with_geo.index("continent(")
    assert "country(" not in script(PDNS_GEOIP, GeoOptions(geoip=False))


def test_script_refuses_quotes_that_would_break_out_of_the_record() -> None:
    region = LuaRegion("x", ("127.0.0.1",), ("10.0.0.0/8",), (), (), "http://x'/healthz")
    with pytest.raises(ValueError, match="not allowed in a LUA record"):
        shared_record_script([region], ["127.0.0.2"], geoip=False)


def test_health_url_keeps_scheme_and_port_of_the_access_url() -> None:
    assert health_url("https://10.0.0.1:8443", "coder-x.example.com", "/healthz") == (
        "https://coder-x.example.com:8443/healthz"
    )
    assert health_url("https://coder-x.example.com", "coder-x.example.com", "/healthz") == (
        "https://coder-x.example.com/healthz"
    )


def test_without_lua_the_shared_name_lists_every_deployment_and_says_so() -> None:
    state = _state(BIND)
    rrsets = {d.rrset.key: d.rrset for d in state.rrsets}
    assert rrsets[(SHARED, "A")].records == ("127.0.1.1", "127.0.2.1", "127.0.3.1", "127.0.9.1")
    assert (SHARED, "LUA") not in rrsets
    assert any("geo routing is not available on provider rfc2136" in n for n in state.notes)


def test_first_plan_creates_markers_before_the_records_they_claim() -> None:
    desired = _state()
    plan = diff_rrsets(desired, [], provider="powerdns")
    ids = [c.id for c in plan.effective]
    for change in plan.effective:
        if parse_marker(RRSet.model_validate(change.after)) is None:
            assert change.depends_on and ids.index(change.depends_on[0]) < ids.index(change.id)
    assert all(c.action is Action.CREATE and c.kind == "DnsRRSet" for c in plan.effective)
    assert f"primary/DnsRRSet/LUA/{SHARED}" in ids


def test_replan_after_apply_is_empty() -> None:
    desired = _state()
    assert diff_rrsets(desired, _applied(desired), provider="powerdns").is_empty


def test_rrsets_without_our_marker_are_kept_and_said_to_be_kept() -> None:
    desired = _state()
    foreign_a = RRSet(name=f"coder-us-east.{LAB_ZONE}", type="A", ttl=300, records=("10.0.0.5",))
    foreign_txt = RRSet(name=f"coder-eu-west.{LAB_ZONE}", type="TXT", ttl=300, records=('"x"',))
    foreign_cname = RRSet(
        name=f"*.coder-ap-southeast.{LAB_ZONE}", type="CNAME", ttl=300, records=("elsewhere.",)
    )
    observed = [foreign_a, foreign_txt, foreign_cname]
    plan = diff_rrsets(desired, observed, provider="powerdns")
    touched = {(c.target, c.action) for c in plan.effective}
    assert not any(target.endswith(f" coder-us-east.{LAB_ZONE}") for target, _ in touched)
    assert (f"A *.coder-ap-southeast.{LAB_ZONE}", Action.CREATE) not in touched
    kept = {c.target: c.reason for c in plan.changes if c.action is Action.KEEP}
    assert "exists without our ownership marker" in kept[f"A coder-us-east.{LAB_ZONE}"]
    assert "CNAME" in kept[f"A *.coder-ap-southeast.{LAB_ZONE}"]
    assert "no marker" in kept[f"TXT coder-eu-west.{LAB_ZONE}"]
    assert (f"A coder-eu-west.{LAB_ZONE}", Action.CREATE) in touched


def test_another_owners_marker_is_respected() -> None:
    desired = _state()
    key = (f"coder-eu-west.{LAB_ZONE}", "A")
    theirs = RRSet(name=key[0], type="A", ttl=60, records=("10.9.9.9",))
    observed = [theirs, marker_rrset(key, owner="coder.other.test", ttl=60)]
    plan = diff_rrsets(desired, observed, provider="powerdns")
    kept = {c.target: c.reason for c in plan.changes if c.action is Action.KEEP}
    assert "another coder-migrate deployment (coder.other.test)" in kept[f"A {key[0]}"]
    touched = {c.target for c in plan.effective}
    assert f"A {key[0]}" not in touched
    assert f"TXT _coder-migrate-a.{key[0]}" not in touched


def test_owned_rrsets_no_longer_wanted_are_deleted_marker_last() -> None:
    desired = _state()
    observed = _applied(desired)

    def drop_ap(data: dict[str, Any]) -> None:
        data["regions"] = data["regions"][:2]

    smaller = _state(edit=drop_ap)
    plan = diff_rrsets(smaller, observed, provider="powerdns")
    deletes = [c for c in plan.effective if c.action is Action.DELETE]
    targets = [c.target for c in deletes]
    assert f"A coder-ap-southeast.{LAB_ZONE}" in targets
    data_index = targets.index(f"A coder-ap-southeast.{LAB_ZONE}")
    marker_index = targets.index(f"TXT _coder-migrate-a.coder-ap-southeast.{LAB_ZONE}")
    assert data_index < marker_index
    assert deletes[data_index].before is not None  # the snapshot rollback puts back


def _move_two_regions(data: dict[str, Any]) -> None:
    data["regions"][0]["dns_targets"] = ["127.0.1.9"]
    data["regions"][1]["dns_targets"] = ["127.0.2.9"]


def _threshold_from(minimum: int) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["dns"]["threshold_min_rrsets"] = minimum
        _move_two_regions(data)

    return edit


def test_more_than_30_percent_of_owned_rrsets_need_force_from_the_minimum_on() -> None:
    desired = _state(edit=lambda d: d["dns"].update(threshold_min_rrsets=9))
    observed = _applied(desired)  # 9 owned rrsets: 4 names, 4 wildcards, the LUA record

    def new_subnet(data: dict[str, Any]) -> None:
        data["dns"]["threshold_min_rrsets"] = 9
        data["regions"][2]["geo"]["subnets"].append("192.0.2.128/26")

    small = diff_rrsets(_state(edit=new_subnet), observed, provider="powerdns")
    assert [c.target for c in small.effective] == [f"LUA {SHARED}"]
    small.raise_if_unsafe(force=False)  # 1 of 9 owned rrsets
    large = diff_rrsets(_state(edit=_threshold_from(9)), observed, provider="powerdns")
    assert all(c.needs_force for c in large.effective if c.action is Action.UPDATE)
    with pytest.raises(UnsafePlan, match="need --force"):
        large.raise_if_unsafe(force=False)
    large.raise_if_unsafe(force=True)
    assert any("5 of 9 owned rrsets (more than 30%)" in n for n in large.notes)


def test_below_the_minimum_of_owned_rrsets_no_change_needs_force() -> None:
    """octoDNS applies its threshold only from MIN_EXISTING_RECORDS (10): moving two of three
    regions touches 5 of 9 owned rrsets and applies without --force by default."""
    observed = _applied(_state())
    plan = diff_rrsets(_state(edit=_move_two_regions), observed, provider="powerdns")
    assert len([c for c in plan.effective if c.action is Action.UPDATE]) == 5
    assert not any(c.needs_force for c in plan.effective)
    plan.raise_if_unsafe(force=False)
    assert not any("more than 30%" in n for n in plan.notes)


def test_touching_ns_or_soa_needs_force_even_when_small() -> None:
    desired = _state()
    apex_ns = (LAB_ZONE, "NS")
    # A marker claiming the apex NS (e.g. written by hand) makes it "ours" and unwanted.
    ns = RRSet(name=LAB_ZONE, type="NS", ttl=3600, records=("ns1.lab.test.",))
    observed = [*_applied(desired), ns, marker_rrset(apex_ns, owner=desired.owner, ttl=60)]
    plan = diff_rrsets(desired, observed, provider="powerdns")
    ns_change = next(c for c in plan.effective if c.target == f"NS {LAB_ZONE}")
    assert ns_change.action is Action.DELETE and ns_change.needs_force


def test_markers_parse_only_when_exact() -> None:
    key = (f"*.coder-eu-west.{LAB_ZONE}", "A")
    marker = marker_rrset(key, owner=SHARED, ttl=60)
    assert marker.name == f"_coder-migrate-wildcard-a.coder-eu-west.{LAB_ZONE}"
    parsed = parse_marker(marker)
    assert parsed is not None and parsed.target == key and parsed.owner == SHARED
    moved = marker.model_copy(update={"name": f"_coder-migrate-a.elsewhere.{LAB_ZONE}"})
    assert parse_marker(moved) is None
    spoofed = marker.model_copy(update={"records": ('"heritage=external-dns,owner=x"',)})
    assert parse_marker(spoofed) is None


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["regions"][1]["geo"].update(subnets=["203.0.113.0/24"], test_subnets=[]),
            "eu-west|us-east: coder_geo.subnets: expected subnets that do not overlap",
        ),
        (
            lambda d: d["regions"][0].update(wildcard_host="*.coder-eu.other.test"),
            "eu-west: coder_wildcard_host: expected '\\*.<domain>' with the domain under lab.test",
        ),
    ],
    ids=["overlapping-subnets", "wildcard-outside-zone"],
)
def test_inventory_rules_dns_depends_on_are_enforced(edit: Any, expected: str) -> None:
    with pytest.raises(PlanError, match=expected):
        _state(edit=edit)


def test_rrsets_compare_as_sets_of_records_with_normalised_names() -> None:
    one = RRSet(name="Coder.Lab.Test.", type="a", ttl=60, records=("127.0.0.2", "127.0.0.1"))
    two = RRSet(name="coder.lab.test", type="A", ttl=60, records=("127.0.0.1", "127.0.0.2"))
    assert one == two and one.key == ("coder.lab.test", "A")
    assert one != two.model_copy(update={"ttl": 30})


def test_a_marker_that_would_not_fit_one_txt_string_is_refused() -> None:
    long_name = ".".join(["a" * 55] * 4) + f".{LAB_ZONE}"
    with pytest.raises(PlanError, match="too long for an ownership marker"):
        marker_rrset((long_name, "A"), owner=SHARED, ttl=60)


def test_expectations_follow_geo_routing() -> None:
    from coder_migrate.dns.check import expectations

    topology = _topology()
    geo = {(e.region, e.name): e.expected for e in expectations(topology, PDNS)}
    assert geo[("eu-west", SHARED)] == ("127.0.1.1",)
    assert geo[("eu-west", f"coder-eu-west.{LAB_ZONE}")] == ("127.0.1.1",)
    plain = {(e.region, e.name): e.expected for e in expectations(topology, BIND)}
    assert plain[("eu-west", SHARED)] == ("127.0.1.1", "127.0.2.1", "127.0.3.1", "127.0.9.1")
