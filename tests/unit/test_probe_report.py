"""The probe's report from recorded samples, drops and progress events (no network, no
clock): counts, gaps, percentiles per phase, the step of each failure, the printed lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coder_migrate.inventory import load_topology
from coder_migrate.probe.report import (
    Drop,
    Sample,
    StepLog,
    build_report,
    percentile,
)
from coder_migrate.probe.users import SATELLITE, targets_of
from tests.helpers import REPO, copy_inventory, edit_yaml

START, END = 100.0, 130.0


def samples(region: str, start: float, end: float, *, latency: float = 0.004,
            route: str = "envproxy") -> list[Sample]:
    """A healthy user: a request every 0.2 s from *start* to *end*."""
    count = round((end - start) / 0.2)
    return [Sample(region, start + i * 0.2, latency, True, route) for i in range(count)]


def steps() -> StepLog:
    log = StepLog()
    log.record("us-east", "started", "install release coder-satellite", 105.0)
    log.record("us-east", "done", "installed", 107.0)
    log.record("us-east", "gate", "waiting for the health gate", 107.1)
    log.record("us-east", "started", "switch provider us-east to Networking v2", 110.0)
    log.record("eu-west", "started", "install release coder-satellite", 115.0)
    log.finish(125.0)
    return log


def test_a_healthy_run_reports_0_failed_and_the_latency_of_each_phase() -> None:
    recorded = (samples("us-east", START, 112.0) + samples("us-east", 112.0, END, latency=0.01,
                                                            route=SATELLITE)
                + samples("eu-west", START, END))
    report = build_report(["us-east", "eu-west"], recorded, [], steps(), start=START, end=END,
                          wall_offset=0.0)
    assert report.failed == 0
    east = report.regions[0]
    assert (east.requests, east.failed_requests, east.failed_websockets) == (150, 0, 0)
    assert east.routes == ("envproxy", SATELLITE)
    assert east.latency["before"].p50 == pytest.approx(0.004)
    assert east.latency["after"].p99 == pytest.approx(0.01)
    assert east.latency["before"].count == 25  # 100.0 .. 104.8, until the first change
    assert east.longest_gap == pytest.approx(0.2, abs=0.01)
    assert report.total.requests == 300
    lines = report.lines()
    assert any(re.match(r"^us-east: 0 failed; 0 of 150 requests", line) for line in lines)
    assert any(re.match(r"^total: 0 failed; 0 of 300 requests", line) for line in lines)
    assert "via envproxy then satellite" in lines[1]


def test_failures_name_the_step_they_fell_in_and_the_gap_spans_them() -> None:
    recorded = samples("us-east", START, 111.0) + [
        Sample("us-east", 111.0 + i * 0.2, 0.001, False, SATELLITE, "HTTP 502")
        for i in range(5)
    ] + samples("us-east", 112.0, END)
    report = build_report(["us-east"], recorded, [], steps(), start=START, end=END,
                          wall_offset=0.0)
    assert report.failed == 5
    (group,) = report.failures
    assert (group.count, group.reason, group.route) == (5, "HTTP 502", SATELLITE)
    assert group.step == "us-east: switch provider us-east to Networking v2"
    # The last success answered at 110.804; the next at 112.004.
    assert report.regions[0].longest_gap == pytest.approx(1.2, abs=0.01)
    assert any("5 failed request(s) via satellite" in line and "HTTP 502" in line
               and "step: us-east: switch provider" in line for line in report.lines())


def test_a_region_without_a_change_of_its_own_gets_the_change_running_elsewhere() -> None:
    log = steps()
    assert log.step_at("eu-west", 111.0) == "us-east: switch provider us-east to Networking v2"
    assert log.step_at("eu-west", 116.0) == "eu-west: install release coder-satellite"
    assert log.step_at("us-east", 101.0) == "before the first change"
    assert log.step_at("us-east", 126.0) == "after the operation"
    assert [log.phase_at(t) for t in (104.9, 105.0, 124.9, 125.0)] == [
        "before", "during", "during", "after"]


def test_a_region_whose_change_is_done_gets_the_change_running_now() -> None:
    log = StepLog()
    log.record("us-east", "started", "check DNS answers for us-east", 100.0)
    log.record("us-east", "done", "answers as planned", 101.0)
    log.record("eu-west", "started", "install release coder-satellite", 102.0)
    assert log.step_at("us-east", 100.5) == "us-east: check DNS answers for us-east"
    assert log.step_at("us-east", 101.5) == "us-east: check DNS answers for us-east"
    assert log.step_at("us-east", 103.0) == "eu-west: install release coder-satellite"


def test_websocket_drops_count_only_when_not_reconnected_within_a_second() -> None:
    drops = [
        Drop("us-east", 108.0, 108.4, "envproxy", "closed (CLOSE)"),      # back in 0.4 s
        Drop("us-east", 110.5, 112.0, SATELLITE, "ClientConnectorError"),  # 1.5 s: counts
        Drop("us-east", 129.5, None, SATELLITE, "ServerDisconnectedError"),  # never back
    ]
    report = build_report(["us-east"], samples("us-east", START, END), drops, steps(),
                          start=START, end=END, wall_offset=0.0)
    east = report.regions[0]
    assert (east.websocket_drops, east.failed_websockets, east.failed) == (3, 2, 2)
    assert east.longest_ws_down == pytest.approx(1.5)
    channels = [(g.channel, g.step) for g in report.failures]
    assert channels == [("websocket", "us-east: switch provider us-east to Networking v2"),
                     ("websocket", "after the operation")]
    assert "not reconnected" in report.failures[1].reason


def test_a_region_that_never_answered_has_the_whole_run_as_its_gap() -> None:
    failed = [Sample("ap-southeast", START + i, 5.0, False, "envproxy",
                     "no answer within 5 s") for i in range(6)]
    report = build_report(["ap-southeast"], failed, [], StepLog(), start=START, end=END,
                          wall_offset=0.0, phased=False)
    assert report.regions[0].longest_gap == pytest.approx(END - START)
    assert report.regions[0].latency["all"].p50 is None
    assert "latency p50/p99 ms all -/-" in report.lines()[1]
    assert report.to_json()["failed"] == 6


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (50.0, 99.0)
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


def test_the_targets_are_the_inventorys_test_workspaces_through_their_satellites() -> None:
    topology = load_topology(REPO / "inventories" / "lab")
    targets = {t.region: t for t in targets_of(topology)}
    assert set(targets) == {"us-east", "eu-west", "ap-southeast"}
    east = targets["us-east"]
    assert east.satellite.base_url == "http://127.0.1.1:17081"
    assert east.satellite.host == ("code-server--main--migration-check-us-east--platform-bot"
                                   ".coder-us-east.lab.coder-migrate.test")
    envproxy = east.envproxy("http://127.0.1.1:17181/", "*.us-east.envproxy.test")
    assert (envproxy.base_url, envproxy.host) == (
        "http://127.0.1.1:17181",
        "code-server--main--migration-check-us-east--platform-bot.us-east.envproxy.test")


def test_an_inventory_without_test_workspaces_is_refused_naming_the_keys(tmp_path: Path) -> None:
    from coder_migrate.errors import ConfigError
    from tests.helpers import fold_world_into_host_vars

    inventory = copy_inventory(tmp_path / "inv", REPO / "inventories" / "lab")
    fold_world_into_host_vars(inventory)
    for region in ("us-east", "eu-west", "ap-southeast"):
        edit_yaml(inventory / "host_vars" / f"{region}.yml",
                  lambda data: data.pop("coder_test_workspace", None))
    with pytest.raises(ConfigError, match="coder_test_workspace"):
        targets_of(load_topology(inventory))
