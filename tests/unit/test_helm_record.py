"""Decoding helm's release records (storage driver ``secret``) without a cluster."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from coder_migrate.providers.helm import latest_release, release_from_record


def storage_item(record: dict[str, Any], *, revision: int, compress: bool = True) -> dict[str, Any]:
    payload = json.dumps(record).encode()
    if compress:
        payload = gzip.compress(payload)
    # helm base64-encodes the (gzipped) JSON; the Secret's data is base64 once more.
    encoded = base64.b64encode(base64.b64encode(payload)).decode()
    return {
        "metadata": {"labels": {"owner": "helm", "name": record["name"], "version": str(revision)}},
        "data": {"release": encoded},
    }


def record(revision: int, status: str, values: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "satellite",
        "namespace": "coder-eu",
        "version": revision,
        "info": {"status": status},
        "chart": {"metadata": {"name": "coder", "version": "1.21.0", "appVersion": "1.21.0"}},
        "config": values,
        "manifest": "---\n",
    }


def test_a_record_decodes_to_chart_status_revision_and_user_values() -> None:
    values = {"coderd": {"satellite": {"enable": True}}}
    state = release_from_record(storage_item(record(3, "deployed", values), revision=3))
    assert state is not None
    assert (state.chart, state.chart_name, state.chart_version) == (
        "coder-1.21.0", "coder", "1.21.0")
    assert (state.status, state.revision, state.app_version, state.values) == (
        "deployed", 3, "1.21.0", values)


def test_uncompressed_records_are_read_too() -> None:
    state = release_from_record(storage_item(record(1, "failed", {}), revision=1, compress=False))
    assert state is not None and state.status == "failed"


def test_the_newest_revision_wins_by_its_label_not_by_order() -> None:
    items = [
        storage_item(record(10, "deployed", {"v": 10}), revision=10),
        storage_item(record(9, "superseded", {"v": 9}), revision=9),
        storage_item(record(11, "pending-upgrade", {"v": 11}), revision=11),
    ]
    state = latest_release(items)
    assert state is not None and (state.revision, state.pending, state.values) == (
        11, True, {"v": 11})


def test_an_uninstalled_release_kept_in_history_is_absent() -> None:
    items = [storage_item(record(2, "uninstalled", {}), revision=2)]
    assert latest_release(items) is None
    assert latest_release([]) is None


def test_unreadable_records_are_none_not_an_exception() -> None:
    assert release_from_record({"data": {"release": "not base64!"}}) is None
    assert release_from_record({"data": {}}) is None
