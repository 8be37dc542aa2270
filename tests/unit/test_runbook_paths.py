"""Runbooks print kubeconfig paths the shell expands: ``~`` unquoted at the start of the word,
relative paths joined to the inventory as the user gave it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from coder_migrate.inventory import load_topology
from coder_migrate.runbook import render_runbook
from coder_migrate.runbook.steps import path_word
from tests.helpers import copy_inventory, edit_yaml


@pytest.mark.parametrize(("path", "home_relative"), [
    ("~/.kube/config", ".kube/config"),
    ("~/my clusters/prod config", "my clusters/prod config"),
    ("~", ""),
])
def test_the_shell_expands_the_home_directory_of_a_path_word(
    path: str, home_relative: str, tmp_path: Path
) -> None:
    word = path_word(path)
    assert not word.startswith("'")
    expanded = subprocess.run(
        ["bash", "-c", f"printf '%s' {word}"], capture_output=True, text=True, check=True,
        env={**os.environ, "HOME": str(tmp_path)},
    ).stdout
    assert expanded == str(tmp_path / home_relative) if home_relative else str(tmp_path)


def test_runbook_kubeconfig_paths(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "host_vars" / "eu-west.yml",
              lambda data: data.update(coder_kubeconfig="~/.kube/prod eu-west.yaml"))
    edit_yaml(inventory / "host_vars" / "us-east.yml",
              lambda data: data.update(coder_kubeconfig="kube/us-east.yaml"))
    text = render_runbook(load_topology(inventory), "inventories/prod")
    assert "--kubeconfig ~/'.kube/prod eu-west.yaml'" in text
    assert "--kubeconfig inventories/prod/kube/us-east.yaml" in text
    assert not re.search(r"'~", text)
