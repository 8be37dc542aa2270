"""Pure parts of the emulator: health classification, faults, config, names."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from coder_migrate.errors import ConfigError
from coder_migrate.lab.coderd import serve_command
from coder_migrate.lab.coderd.config import EmulatorConfig, FaultRule, load_config
from coder_migrate.lab.coderd.faults import Faults
from coder_migrate.lab.coderd.health import classify
from coder_migrate.lab.coderd.server import parse_listen
from coder_migrate.lab.coderd.v2_common import Proxies


@pytest.mark.parametrize(
    ("url", "response", "status"),
    [
        ("", None, "unregistered"),
        ("http://p", None, "unreachable"),
        ("http://p", httpx.Response(500, json={"errors": []}), "unhealthy"),
        ("http://p", httpx.Response(200, text="<html>"), "unhealthy"),
        ("http://p", httpx.Response(200, json=["x"]), "unhealthy"),
        ("http://p", httpx.Response(200, json={"errors": ["e"], "warnings": []}), "unhealthy"),
        ("http://p", httpx.Response(200, json={"errors": [], "warnings": ["w"]}), "ok"),
        ("http://p", httpx.Response(200, json={"errors": None, "warnings": None}), "ok"),
    ],
)
def test_health_classification(url: str, response: httpx.Response | None, status: str) -> None:
    result = classify(url, response, "ConnectError")
    assert result["status"] == status
    assert isinstance(result["report"]["errors"], list)
    assert isinstance(result["report"]["warnings"], list)


def test_fault_counts_are_used_up_and_admin_paths_are_exempt() -> None:
    faults = Faults([FaultRule(kind="status", path="/api/v0", count=2)])
    assert faults.for_request("GET", "/emulator/faults") == []
    assert len(faults.for_request("GET", "/api/v0/users/me")) == 1
    assert faults.for_request("GET", "/api/v2/x") == []
    assert len(faults.for_request("POST", "/api/v0/x")) == 1
    assert faults.rules() == []


def test_fault_method_and_build_matching() -> None:
    faults = Faults()
    faults.add(FaultRule(kind="drop", path="/a", method="post"))
    faults.add(FaultRule(kind="fail_build", workspace="ws-1", count=1))
    assert faults.for_request("GET", "/a") == []
    assert [r.kind for r in faults.for_request("POST", "/a/b")] == ["drop"]
    assert faults.for_build("other-id", "ws-2") is None
    assert faults.for_build("id", "ws-1") == "fail_build"
    assert faults.for_build("id", "ws-1") is None


def test_default_seed_follows_the_regions() -> None:
    config = EmulatorConfig(regions=["a", "b"])
    assert [p.name for p in config.providers or []] == ["a", "b"]
    assert [w.name for w in config.workspaces or []] == ["migration-check-a", "migration-check-b"]
    assert all(p.enable_net_v2 is False and p.status == "ready" for p in config.providers or [])
    assert {u.username for u in config.users} == {"admin", "platform-bot"}


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("health_interval_seconds: -1\n")
    # errors.redact masks long tmp paths, so the file is matched by its suffix.
    with pytest.raises(ConfigError, match=r"\.yaml: health_interval_seconds: "):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)
    path.write_text("unknown_key: 1\n")
    with pytest.raises(ConfigError, match="unknown_key"):
        load_config(path)


@pytest.mark.parametrize(
    ("listen", "ok"),
    [
        ("127.0.0.1:80", True),
        ("127.0.0.2:1", True),
        ("::1:5", True),
        ("0.0.0.0:1", False),
        ("localhost:1", False),
        ("10.0.0.1:1", False),
        ("127.0.0.1", False),
    ],
)
def test_listen_must_be_loopback(listen: str, ok: bool) -> None:
    if ok:
        assert parse_listen(listen)[1] > 0
    else:
        with pytest.raises(ConfigError):
            parse_listen(listen)


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        ("", True),
        ("*.proxy.example.com", True),
        ("*--suffix.example.com", True),
        ("proxy.example.com", False),
        ("*.*.example.com", False),
        ("*.example.com.", False),
        ("*", False),
        ("*.exa mple.com", False),
    ],
)
def test_wildcard_hostname_rule(pattern: str, ok: bool) -> None:
    assert Proxies.valid_wildcard(pattern) is ok


def test_serve_command_is_the_documented_command_line(tmp_path: Path) -> None:
    command = serve_command(
        listen="127.0.0.1:7080",
        state_dir=tmp_path / "s",
        mode="v1.21",
        token_file=tmp_path / "t",
        config=tmp_path / "c.yaml",
        python="python",
    )
    assert command == [
        "python", "-m", "coder_migrate.lab.coderd", "serve",
        "--listen", "127.0.0.1:7080", "--state-dir", str(tmp_path / "s"),
        "--mode", "v1.21", "--token-file", str(tmp_path / "t"),
        "--config", str(tmp_path / "c.yaml"),
    ]  # fmt: skip
