"""Secret values the toolkit resolved, and the one scrubber every printed line goes through.

A credential is recognised by its value, not by its shape: a short token echoed back by a
server looks like any other word. So whoever obtains a secret registers it here, in the
statement that obtains it (:func:`register`):

- :meth:`coder_migrate.inventory.model.SecretRef.resolve`: session tokens, DNS API keys, TSIG
  secrets, ``!vault`` values, whatever reference they come from;
- the inventory loader: strings under keys of ``coder_values`` whose names look sensitive
  (:func:`register_masked`), and literal secrets the model refuses;
- adapters that receive a secret from a server (a v2 proxy token, a satellite's private key).

Everything the toolkit prints passes :func:`scrub`: the CLI's stdout and stderr
(:func:`scrubbed_output`), every log record (installed by the first :func:`register`),
Ansible module results (``no_log_values``, :func:`registered`), runbooks and plan files
written to disk, and :func:`coder_migrate.errors.redact`, which adds rules by shape on top.
:func:`mask` is the rule by key name that plans and ``inventory show`` use for values the
toolkit has not resolved (Helm values typed into the inventory).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Set
from typing import Any, TextIO
from urllib.parse import quote

__all__ = [
    "MIN_LENGTH",
    "SENSITIVE",
    "looks_sensitive",
    "mask",
    "pattern_of",
    "register",
    "register_masked",
    "registered",
    "scrub",
    "scrubbed_output",
]

SENSITIVE = "(sensitive)"
"""What is shown in place of a secret."""

MIN_LENGTH = 4
"""Shorter values cannot be told from ordinary words; :class:`SecretRef` refuses them."""

# Multi-line secrets (PEM keys) are also scrubbed line by line, when a line is this long.
_MIN_LINE_LENGTH = 16

_SENSITIVE_WORDS = ("token", "password", "secret", "privatekey", "apikey", "passphrase",
                    "credential", "psk")
# Keys that name where a secret is (secretKeyRef.name, *SecretName), not what it is.
_REFERENCE_SUFFIXES = ("name", "secretname", "ref", "file", "path")

_lock = threading.Lock()
_values: set[str] = set()
# The registered values in groups, each with its pattern, largest group first, each group
# larger than the next: a new group merges with the groups after it that are no larger (as
# a binary counter carries), so registering n secrets one by one compiles O(n log n) of
# pattern in all and :func:`scrub` runs O(log n) patterns. Compiling the pattern of every
# value again on each register was 15% of a 50-region migration's apply samples, in its key
# reads (docs/benchmarks.md). Readers take the list without the lock: it is replaced, never
# changed.
_groups: list[tuple[frozenset[str], re.Pattern[str]]] = []
_logs_scrubbed = False


def register(value: str) -> str:
    """Remember *value* as a secret (and the forms it takes in JSON, URLs and base64);
    return it, so a resolver can register what it returns in one statement."""
    global _groups
    forms = _forms(value)
    with _lock:
        new = forms - _values
        if not new:
            return value
        _values.update(new)
        groups = list(_groups)
        group = frozenset(new)
        while groups and len(groups[-1][0]) <= len(group):
            group |= groups.pop()[0]
        groups.append((group, re.compile(pattern_of(group))))
        _groups = groups
    _scrub_logs()
    return value


def registered() -> frozenset[str]:
    """Every registered value and form (for Ansible's ``no_log_values``)."""
    with _lock:
        return frozenset(_values)


def scrub(text: str) -> str:
    """*text* with every registered secret replaced by ``(sensitive)``; where matches of
    different groups overlap, their union is replaced."""
    groups = _groups
    if not groups or not text:
        return text
    if len(groups) == 1:
        return groups[0][1].sub(SENSITIVE, text)
    spans = sorted(match.span() for _, pattern in groups for match in pattern.finditer(text))
    if not spans:
        return text
    pieces: list[str] = []
    shown = 0  # text before this index is done
    start, end = spans[0]
    for next_start, next_end in spans[1:]:
        if next_start < end:
            end = max(end, next_end)
            continue
        pieces += [text[shown:start], SENSITIVE]
        shown, start, end = end, next_start, next_end
    pieces += [text[shown:start], SENSITIVE, text[end:]]
    return "".join(pieces)


def pattern_of(values: Set[str]) -> str:
    """A regular expression matching the longest of *values* at any position, as a trie:
    Python's engine then tries one branch per character instead of every value in turn
    (bench/scrub.py: about 20 times faster than a plain alternation at 400 values)."""
    trie: dict[str, Any] = {}
    for value in values:
        node = trie
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        literal = ""
        while len(node) == 1 and "" not in node:  # a run without branches: one literal
            char, node = next(iter(node.items()))
            literal += re.escape(char)
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items())
                    if char]
        if not branches:
            return literal
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return literal + (f"(?:{body})?" if "" in node else body)

    return build(trie)


def _forms(value: str) -> set[str]:
    if len(value) < MIN_LENGTH:
        return set()
    forms = {
        value,
        json.dumps(value)[1:-1],
        quote(value, safe=""),
        base64.b64encode(value.encode()).decode(),
    }
    forms.update(line.strip() for line in value.splitlines()
                 if len(line.strip()) >= _MIN_LINE_LENGTH)
    return {form for form in forms if len(form) >= MIN_LENGTH}


def looks_sensitive(key: str) -> bool:
    """Whether a key's name says its value is a secret (``password``, ``apiKey``, ``psk``),
    not where one is (``secretKeyRef.name``, ``passwordSecretName``, ``tokenFile``)."""
    lowered = key.lower().replace("-", "").replace("_", "")
    return (any(word in lowered for word in _SENSITIVE_WORDS)
            and not lowered.endswith(_REFERENCE_SUFFIXES))


def mask(value: Any, key: str = "") -> Any:
    """*value* as it may be shown: strings under sensitive-looking keys, and the ``value`` of
    ``env: [{name: X_TOKEN, value: ...}]`` entries (the v2 chart's shape), become
    ``(sensitive)``."""
    if isinstance(value, Mapping):
        shown = {k: mask(v, str(k)) for k, v in value.items()}
        name = str(value.get("name", ""))
        if isinstance(value.get("value"), str) and value["value"] and looks_sensitive(name):
            shown["value"] = SENSITIVE
        return shown
    if isinstance(value, list | tuple):
        return [mask(v, key) for v in value]
    if isinstance(value, str) and value and looks_sensitive(key):
        return SENSITIVE
    return value


def register_masked(value: Any, key: str = "") -> None:
    """Register every string :func:`mask` would hide in *value* (Helm values typed into the
    inventory), so it is scrubbed wherever else it appears."""
    if isinstance(value, Mapping):
        name = str(value.get("name", ""))
        if isinstance(value.get("value"), str) and looks_sensitive(name):
            register(value["value"])
        for child_key, child in value.items():
            register_masked(child, str(child_key))
    elif isinstance(value, list | tuple):
        for child in value:
            register_masked(child, key)
    elif isinstance(value, str) and looks_sensitive(key):
        register(value)


class _ScrubbingStream(io.TextIOBase):
    """A text stream that scrubs what is written before passing it on."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        self.wrapped.flush()

    def isatty(self) -> bool:
        return self.wrapped.isatty()

    def fileno(self) -> int:
        return self.wrapped.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.wrapped, "encoding", None) or "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.wrapped, "errors", None)


@contextlib.contextmanager
def scrubbed_output() -> Iterator[None]:
    """Scrub everything written to ``sys.stdout`` and ``sys.stderr`` while inside: print,
    click.echo and rich's consoles all write there."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ScrubbingStream(saved[0]), _ScrubbingStream(saved[1])
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved


def _scrub_logs() -> None:
    """Make every log record scrub its message once a secret is known (handlers, pytest's
    caplog and Ansible's logging alike see the scrubbed text)."""
    global _logs_scrubbed
    with _lock:
        if _logs_scrubbed:
            return
        _logs_scrubbed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub_record(record)
        return record

    logging.setLogRecordFactory(factory)


def _scrub_record(record: logging.LogRecord) -> None:
    if not _groups:
        return
    with contextlib.suppress(Exception):  # a malformed record fails later, where it always did
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
