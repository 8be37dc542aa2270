"""The secret scan fails a test whose captured output shows a planted secret, in any stream:
print, logging, a CliRunner invocation or a coder-migrate process; and a clean test passes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LEAKS = '''
import logging, os, subprocess, sys

import click
from click.testing import CliRunner


def test_print_leaks():
    print("token:", os.environ["CODER_SESSION_TOKEN"])


def test_log_leaks():
    logging.getLogger("x").warning("key %s", os.environ["PDNS_API_KEY"])


def test_cli_leaks():
    @click.command()
    def show():
        click.echo(os.environ["PDNS_API_KEY"])

    CliRunner().invoke(show, [])


def test_process_leaks(tmp_path):
    program = tmp_path / "coder-migrate"
    program.write_text("#!/bin/sh\\necho $CODER_SESSION_TOKEN\\n")
    program.chmod(0o700)
    subprocess.run([str(program)], capture_output=True, text=True, check=False)


def test_a_token_file_of_the_test_leaks(tmp_path):
    (tmp_path / "admin-token").write_text("d41d8cd98f00b204e980\\n")
    print("d41d8cd98f00b204e980")


def test_clean():
    print("nothing secret here")
'''


def test_the_scan_fails_every_leak_and_passes_the_clean_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_leaks=LEAKS)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = pytester.run(
        sys.executable, "-m", "pytest", "-p", "tests.secret_scan", "-p", "no:cacheprovider",
        # The inner run keeps its captured output to itself: it holds the planted secrets.
        "-q", "--show-capture=no", "-o", "addopts=", str(pytester.path / "test_leaks.py"),
    )
    output = result.stdout.str()
    result.assert_outcomes(failed=5, passed=1)
    for name in ("planted env CODER_SESSION_TOKEN appears in pytest's captured stdout call",
                 "planted env PDNS_API_KEY appears in pytest's captured log call",
                 "planted env PDNS_API_KEY appears in the stdout of CliRunner.invoke",
                 "planted env CODER_SESSION_TOKEN appears in the stdout of coder-migrate",
                 "secret file admin-token appears in pytest's captured stdout call"):
        assert name in output, output
    assert "pl4nT" not in output.replace("echo $CODER_SESSION_TOKEN", "")
