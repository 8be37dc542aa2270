"""docs/inventory.md is the model's reference: every key the loader reads and every sub-key,
with a type, a default, where it may be set and examples the model accepts."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import TypeAdapter

from coder_migrate.inventory.loader import _KNOWN_VARS, GLOBAL_FIELDS, _field
from coder_migrate.inventory.model import Primary, Region, Topology
from coder_migrate.inventory.reference import EXAMPLES, keys, reference_markdown
from tests.helpers import REPO

KEYS = keys()


def test_the_committed_reference_matches_the_model() -> None:
    committed = (REPO / "docs" / "inventory.md").read_text()
    assert committed == reference_markdown(), (
        "regenerate: coder-migrate inventory reference > docs/inventory.md"
    )


def test_every_key_the_loader_reads_is_documented() -> None:
    assert {key.name for key in KEYS} == _KNOWN_VARS
    assert set(EXAMPLES) == _KNOWN_VARS


def _field_info(variable: str) -> Any:
    field = _field(variable)
    if field in GLOBAL_FIELDS or field == "chart":
        return Topology.model_fields[field]
    return (Primary.model_fields | Region.model_fields)[field]


@pytest.mark.parametrize("key", KEYS, ids=[k.name for k in KEYS])
def test_each_key_has_a_type_default_place_and_valid_examples(key: Any) -> None:
    assert key.kind and key.default and key.where and key.meaning
    info = _field_info(key.name)
    annotation = (Annotated[(info.annotation, *info.metadata)] if info.metadata
                  else info.annotation)
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    assert key.examples
    for example in EXAMPLES[key.name]:
        adapter.validate_python(example)


def _paths(value: Any, prefix: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        for name, child in value.items():
            path = f"{prefix}{name}"
            found |= {path, *_paths(child, f"{path}.")}
    elif isinstance(value, list):
        for child in value:
            found |= _paths(child, prefix)
    return found


@pytest.mark.parametrize("key", [k for k in KEYS if k.sub_keys],
                         ids=[k.name for k in KEYS if k.sub_keys])
def test_every_sub_key_appears_in_an_example(key: Any) -> None:
    shown = set().union(*(_paths(example) for example in EXAMPLES[key.name]))
    for sub in key.sub_keys:
        assert sub.kind and sub.default and sub.meaning, sub
        assert sub.name in shown, f"no example of {key.name} shows {sub.name}"


def test_the_reference_documents_the_rules_users_meet() -> None:
    text = reference_markdown()
    for words in ("relative to the inventory directory", "`~` is expanded",
                  "never\n  host names", "chmod 600", "--vault-password-file",
                  "[coder_regions:vars]", "coder_region", "1.21.x"):
        assert words in text, words
