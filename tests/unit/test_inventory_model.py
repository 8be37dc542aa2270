"""The typed model: secret references, derived names, the generated argument spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from coder_migrate.cli import main
from coder_migrate.errors import SecretError
from coder_migrate.inventory import SecretRef, load_topology
from coder_migrate.inventory.argspec import argument_spec_yaml
from tests.helpers import EXAMPLE_INVENTORY, REPO


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_TEST_TOKEN", " value-from-env\n")
    assert SecretRef(env="CM_TEST_TOKEN").resolve() == "value-from-env"


def test_secret_from_file_relative_to_inventory(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("value-from-file\n")
    assert SecretRef(file="token").resolve(base=tmp_path) == "value-from-file"


def test_missing_secret_names_the_reference_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CM_TEST_ABSENT", raising=False)
    with pytest.raises(SecretError, match="environment variable CM_TEST_ABSENT is not set"):
        SecretRef(env="CM_TEST_ABSENT").resolve()


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        SecretRef(file=str(tmp_path / "empty")).resolve()


def test_generated_argument_spec_matches_the_committed_file() -> None:
    committed = (REPO / "roles/inventory_validate/meta/argument_specs.yml").read_text()
    assert committed == argument_spec_yaml(), (
        "regenerate: coder-migrate inventory argument-spec > "
        "roles/inventory_validate/meta/argument_specs.yml"
    )


def test_argument_spec_documents_every_inventory_setting() -> None:
    options = yaml.safe_load(argument_spec_yaml())["argument_specs"]["main"]["options"]
    example_keys = set()
    for path in EXAMPLE_INVENTORY.rglob("*.yml"):
        data = yaml.safe_load(path.read_text()) or {}
        if "all" not in data:
            example_keys |= {k for k in data if k.startswith("coder_")}
    assert example_keys <= set(options)
    assert "secret reference" in options["coder_session_token"]["description"][1]


def test_show_prints_the_five_regions_and_json() -> None:
    runner = CliRunner()
    text = runner.invoke(main, ["inventory", "show", "-i", str(EXAMPLE_INVENTORY)],
                         )
    assert text.exit_code == 0, text.output
    for region in ("us-east", "us-west", "eu-west", "ap-southeast", "australia-southeast1"):
        assert region in text.output
    assert "coder-sydney.example.com" in text.output
    as_json = runner.invoke(
        main, ["inventory", "show", "-i", str(EXAMPLE_INVENTORY), "--output", "json"]
    )
    assert as_json.exit_code == 0
    topology = load_topology(EXAMPLE_INVENTORY)
    assert yaml.safe_load(as_json.output) == topology.model_dump(mode="json")


def test_version_option() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("coder-migrate, version ")


def test_missing_inventory_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
