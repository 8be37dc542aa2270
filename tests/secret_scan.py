"""A pytest plugin: secrets planted in the fixtures must never show up in any captured stream.

Planted for the whole session: the environment variables the example inventory names
(``CODER_SESSION_TOKEN`` is a short token on purpose: redaction by shape would miss it).
Known besides: every secret the toolkit registered in this process
(:func:`coder_migrate.sensitive.registered`), the lab's secret files (``.lab/secrets``), and
small files whose names say token, secret or key in the test's ``tmp_path`` and the session
emulators' directories (their admin tokens, the DNS tests' keys).

Scanned, for every test: what pytest captured (stdout, stderr, log records) in setup, call and
teardown; the output of every ``CliRunner.invoke``; and the output of every ``coder-migrate``,
``ansible-playbook`` and ``ansible-inventory`` process a test runs through ``subprocess.run``.
A hit fails the test, naming the stream and which secret (never the value).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from coder_migrate import sensitive

PLANTED = {
    "CODER_SESSION_TOKEN": "pl4nT",
    "PDNS_API_KEY": "planted-pdns-api-key-5f0c2b",
}
_LAB_SECRETS = Path(__file__).resolve().parent.parent / ".lab" / "secrets"
_SECRET_FILE_NAME = re.compile(r"token|secret|key", re.IGNORECASE)
_SCANNED_PROGRAMS = ("coder-migrate", "ansible-playbook")

_hits: list[str] = []
_saved_environment: dict[str, str | None] = {}
_basetemp: list[Path] = []
_current: list[pytest.Item] = []


def pytest_configure(config: pytest.Config) -> None:
    for name, value in PLANTED.items():
        _saved_environment[name] = os.environ.get(name)
        os.environ[name] = value
    CliRunner.invoke = _scanned_invoke(CliRunner.invoke)  # type: ignore[method-assign]
    subprocess.run = _scanned_run(subprocess.run)  # type: ignore[assignment]


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_sessionstart(session: pytest.Session) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        _basetemp.append(Path(factory.getbasetemp()))


def known_secrets() -> dict[str, str]:
    """Every secret value this test run knows of, with a name to report it by."""
    known = {f"planted env {name}": value for name, value in PLANTED.items()}
    for value in sensitive.registered():
        known.setdefault("a secret the toolkit resolved", value)
    for path in _secret_files():
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        for line in [text, *text.splitlines()]:
            if len(line.strip()) >= 8 and not line.startswith("-----"):
                known.setdefault(f"secret file {path.name}", line.strip())
    return {name: value for name, value in known.items() if len(value) >= sensitive.MIN_LENGTH}


def _secret_files() -> Iterable[Path]:
    if _LAB_SECRETS.is_dir():
        yield from (p for p in _LAB_SECRETS.iterdir() if p.is_file())
    places = [d for base in _basetemp for d in base.glob("coderd*")]
    if _current and isinstance(_current[0].funcargs.get("tmp_path"), Path):  # type: ignore[attr-defined]
        places.append(_current[0].funcargs["tmp_path"])  # type: ignore[attr-defined]
    for place in places:
        for path in place.rglob("*"):
            if (_SECRET_FILE_NAME.search(path.name) and path.suffix not in (".py", ".yml")
                    and path.is_file() and path.stat().st_size < 4096):
                yield path


def scan(text: str | bytes | None, where: str) -> None:
    """Record a hit for every known secret in *text* (the test fails at its report)."""
    if not text:
        return
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for name, value in known_secrets().items():
        if value in text:
            _hits.append(f"{name} appears in {where}")


def _scanned_invoke(invoke: Callable[..., Result]) -> Callable[..., Result]:
    def wrapper(self: CliRunner, cli: Any, args: Any = None, *rest: Any, **kwargs: Any) -> Result:
        result = invoke(self, cli, args, *rest, **kwargs)
        scan(result.stdout, f"the stdout of CliRunner.invoke({args!r})")
        scan(result.stderr, f"the stderr of CliRunner.invoke({args!r})")
        return result

    return wrapper


def _scanned_run(run: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = run(*args, **kwargs)
        command = args[0] if args else kwargs.get("args")
        words = [str(w) for w in command] if isinstance(command, list | tuple) else []
        program = Path(words[0]).name if words else ""
        if program in _SCANNED_PROGRAMS or words[1:3] == ["-m", "coder_migrate"]:
            scan(getattr(result, "stdout", None), f"the stdout of {program} {words[1:3]}")
            scan(getattr(result, "stderr", None), f"the stderr of {program} {words[1:3]}")
        return result

    return wrapper


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[
    None, object, object
]:
    _current[:] = [item]
    try:
        return (yield)
    finally:
        _current.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    for title, content in report.sections:
        if title.endswith(f" {report.when}"):  # earlier phases were scanned at their report
            scan(content, f"pytest's {title.lower()}")
    if _hits:
        found = "secret scan: " + "; ".join(dict.fromkeys(_hits))
        if report.outcome == "failed":
            report.sections.append(("secret scan", found))
        else:
            report.outcome = "failed"
            report.longrepr = found
    _hits.clear()
    return report
