"""The lab's DNS servers: PowerDNS Authoritative (HTTP API, LUA records, ECS) and BIND 9
(RFC 2136 updates signed with TSIG). Both are Debian's binaries run with our own config
directory, on loopback only, as processes the lab starts and stops by PID.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import httpx

from coder_migrate.errors import ClusterNotReady, ToolchainMissing
from coder_migrate.lab.process import ProcessRef, spawn, stop, wait_until
from coder_migrate.lab.settings import TSIG_ALGORITHM, TSIG_KEY_NAME, ZONE

POWERDNS_SCHEMA = Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql")
POWERDNS_SERVER_ID = "localhost"
START_TIMEOUT_SECONDS = 30.0
NAMESERVER = f"ns1.{ZONE}"


def _require_binary(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        raise ToolchainMissing(
            f"{name} is not installed; run `scripts/bootstrap` (installs Debian {package}) "
            "and retry `coder-migrate lab up`"
        )
    return found


def _answers_soa(port: int) -> bool:
    query = dns.message.make_query(ZONE, dns.rdatatype.SOA)
    response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
    return bool(response.answer)


def _started_or_fail(ref: ProcessRef, check_ok: bool, what: str, log: Path) -> None:
    if not check_ok:
        stop(ref)
        raise ClusterNotReady(
            f"{what} did not start within {START_TIMEOUT_SECONDS:.0f} s; see {log}, then run "
            "`coder-migrate lab down` and retry `coder-migrate lab up`"
        )


# --- PowerDNS ---------------------------------------------------------------------------------


def powerdns_config(
    directory: Path,
    dns_port: int,
    api_port: int,
    api_key: str,
    *,
    lua_records: str = "yes",
    health_check_interval: int | None = None,
    soa_content: str | None = None,
    geoip_database: Path | None = None,
    no_caches: bool = False,
) -> str:
    """``pdns.conf`` for a loopback PowerDNS with the API, LUA records and ECS.

    The lab uses the defaults; the DNS tests and ``bench/dns.py`` ask for a faster health
    check, no caches (answers must follow health changes, not a cache TTL) and the GeoIP
    backend.
    """
    settings: dict[str, object] = {
        "launch": "gsqlite3,geoip" if geoip_database is not None else "gsqlite3",
        "gsqlite3-database": directory / "pdns.sqlite3",
        "local-address": "127.0.0.1",
        "local-port": dns_port,
        "api": "yes",
        "api-key": api_key,
        "webserver": "yes",
        "webserver-address": "127.0.0.1",
        "webserver-port": api_port,
        "webserver-allow-from": "127.0.0.0/8",
        "enable-lua-records": lua_records,
        "edns-subnet-processing": "yes",
        # No security-status lookup: nothing of the lab reaches beyond loopback.
        "security-poll-suffix": "",
        "socket-dir": directory,
        "guardian": "no",
        "daemon": "no",
        "disable-syslog": "yes",
        "write-pid": "no",
        "loglevel": 4,
    }
    if health_check_interval is not None:
        settings["lua-health-checks-interval"] = health_check_interval
    if soa_content is not None:
        settings["default-soa-content"] = soa_content
    if no_caches:
        for cache in ("cache-ttl", "query-cache-ttl", "negquery-cache-ttl",
                      "zone-metadata-cache-ttl"):
            settings[cache] = 0
    if geoip_database is not None:
        settings["geoip-database-files"] = f"mmdb:{geoip_database}"
        settings["geoip-zones-file"] = _geoip_stub_zones(directory)
    lines = [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(["# Written by coder-migrate.", *lines, ""])


def _geoip_stub_zones(directory: Path) -> Path:
    """The GeoIP backend's zones file: 4.7 refuses an empty domain list, so one stub zone."""
    geoip_zones = directory / "geoip-zones.yaml"
    geoip_zones.write_text(
        "domains:\n- domain: geoip-stub.invalid\n  ttl: 60\n  records:\n"
        "    geoip-stub.invalid:\n      - soa: ns.geoip-stub.invalid. "
        "hostmaster.geoip-stub.invalid. 1 7200 3600 86400 60\n",
        encoding="utf-8",
    )
    return geoip_zones


def create_powerdns_database(directory: Path) -> Path:
    """The sqlite3 database of the API backend, created from Debian's schema if missing."""
    if not POWERDNS_SCHEMA.is_file():
        raise ToolchainMissing(
            f"{POWERDNS_SCHEMA} is missing; run `scripts/bootstrap` (installs Debian "
            "pdns-backend-sqlite3) and retry"
        )
    database = directory / "pdns.sqlite3"
    if not database.exists():
        with sqlite3.connect(database) as connection:
            connection.executescript(POWERDNS_SCHEMA.read_text())
    return database


def start_powerdns(
    directory: Path, log: Path, dns_port: int, api_port: int, api_key: str
) -> ProcessRef:
    binary = _require_binary("pdns_server", "pdns-server")
    directory.mkdir(parents=True, exist_ok=True)
    create_powerdns_database(directory)
    config = directory / "pdns.conf"
    config.write_text(powerdns_config(directory, dns_port, api_port, api_key))
    config.chmod(0o600)
    ref, _ = spawn("pdns_server", [binary, f"--config-dir={directory}"], log)
    api = f"http://127.0.0.1:{api_port}/api/v1/servers/{POWERDNS_SERVER_ID}"
    headers = {"X-API-Key": api_key}

    def api_ready() -> bool:
        return httpx.get(api, headers=headers, timeout=1.0).status_code == 200

    _started_or_fail(ref, wait_until(api_ready, START_TIMEOUT_SECONDS), "PowerDNS", log)
    ensure_powerdns_zone(api, headers)
    return ref


def ensure_powerdns_zone(api: str, headers: dict[str, str]) -> None:
    """Create the lab zone (NS and the nameserver's A record) unless it exists."""
    if httpx.get(f"{api}/zones/{ZONE}", headers=headers, timeout=5.0).status_code == 200:
        return
    body = {
        "name": ZONE,
        "kind": "Native",
        "nameservers": [NAMESERVER],
        "rrsets": [
            {
                "name": NAMESERVER,
                "type": "A",
                "ttl": 60,
                "records": [{"content": "127.0.0.1", "disabled": False}],
            }
        ],
    }
    response = httpx.post(f"{api}/zones", headers=headers, json=body, timeout=10.0)
    if response.status_code != 201:
        raise ClusterNotReady(
            f"PowerDNS refused to create zone {ZONE} ({response.status_code}); see the PowerDNS "
            "log under the lab state directory, then `coder-migrate lab down` and retry"
        )


# --- BIND -------------------------------------------------------------------------------------


def bind_config(
    directory: Path,
    dns_port: int,
    tsig_secret: str,
    *,
    zone: str = ZONE,
    key_name: str = TSIG_KEY_NAME,
    algorithm: str = TSIG_ALGORITHM,
    zone_file: Path | None = None,
) -> str:
    """``named.conf`` for one primary zone that takes only TSIG-signed updates and transfers."""
    zone = zone.rstrip(".")
    key = key_name.rstrip(".")
    return f"""\
// Written by coder-migrate.
options {{
    directory "{directory}";
    pid-file none;
    listen-on port {dns_port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ 127.0.0.0/8; }};
    session-keyfile none;
    managed-keys-directory "{directory}";
    notify no;
}};
// No rndc control channel: named is stopped by PID.
controls {{ }};
key "{key}" {{
    algorithm {algorithm};
    secret "{tsig_secret}";
}};
zone "{zone}" {{
    type primary;
    file "{zone_file or directory / "db.lab"}";
    // Only updates and transfers signed with the TSIG key; unsigned ones are refused.
    update-policy {{ grant {key} zonesub ANY; }};
    allow-transfer {{ key {key}; }};
}};
"""


def bind_zone_file(zone: str = ZONE) -> str:
    zone = zone.rstrip(".") + "."
    return f"""\
$ORIGIN {zone}
$TTL 60
@ IN SOA ns1.{zone} hostmaster.{zone} 1 60 60 600 60
@ IN NS ns1.{zone}
ns1.{zone} IN A 127.0.0.1
"""


def start_bind(directory: Path, log: Path, dns_port: int, tsig_secret: str) -> ProcessRef:
    binary = _require_binary("named", "bind9")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "named.conf"
    config.write_text(bind_config(directory, dns_port, tsig_secret))
    config.chmod(0o600)
    zone_file = directory / "db.lab"
    if not zone_file.exists():
        zone_file.write_text(bind_zone_file())
    ref, _ = spawn("named", [binary, "-c", str(config), "-f", "-4", "-n", "1"], log)
    _started_or_fail(
        ref, wait_until(lambda: _answers_soa(dns_port), START_TIMEOUT_SECONDS), "BIND", log
    )
    return ref
