"""The one exception tree of coder-migrate.

Every module raises one of these; library errors (httpx, kubernetes, helm, dnspython,
subprocess) are translated at the adapter that calls the library, with ``raise ... from``.
Only the CLI (``coder_migrate.cli``) and the Ansible modules turn them into exit codes or
``fail_json``. Messages never carry a token or key: adapters build them from method, path,
status and the server's own error text, and :func:`redact` is applied to anything quoted:
it scrubs every secret the toolkit resolved (:mod:`coder_migrate.sensitive`), whatever its
shape, then anything shaped like a credential it has never seen.

    CoderMigrateError
    ├── InventoryError ............ the inventory is malformed or breaks a rule
    ├── ConfigError ............... a setting outside the inventory (env var, file, flag)
    ├── SecretError ............... a secret reference cannot be resolved
    ├── LabError .................. the local lab cannot be built or run
    │   ├── ToolchainMissing
    │   ├── BuildFailed
    │   ├── PortBusy
    │   └── ClusterNotReady
    ├── ProviderError ............. an external system refused or failed
    │   ├── KubeError
    │   ├── HelmError
    │   ├── DnsError
    │   └── CoderAPIError ......... carries method, path, status, code
    │       ├── CoderAuthError .... 401 / 403 on a session or proxy token
    │       ├── CoderNotFound ..... 404
    │       ├── CoderConflict ..... 409
    │       ├── CoderUnsupported .. the primary is too old or unlicensed for the call
    │       └── CoderUnavailable .. transport errors, timeouts, 502/503/504 after retries
    ├── PlanError ................. a plan cannot be made or may not be applied
    │   ├── StalePlan
    │   ├── UnsafePlan
    │   └── LockHeld
    ├── ApplyError ................ a change failed while applying; carries what was done
    │   └── LockLost .............. the apply lock was taken over; apply stopped between changes
    └── ProxyError ................ the bundled proxy server cannot start or run
"""

from __future__ import annotations

import re

from coder_migrate.sensitive import SENSITIVE, scrub

__all__ = [
    "ApplyError",
    "BuildFailed",
    "ClusterNotReady",
    "CoderAPIError",
    "CoderAuthError",
    "CoderConflict",
    "CoderMigrateError",
    "CoderNotFound",
    "CoderUnavailable",
    "CoderUnsupported",
    "ConfigError",
    "DnsError",
    "HelmError",
    "InventoryError",
    "KubeError",
    "LabError",
    "LockHeld",
    "LockLost",
    "PlanError",
    "PortBusy",
    "ProviderError",
    "ProxyError",
    "SecretError",
    "StalePlan",
    "ToolchainMissing",
    "UnsafePlan",
    "redact",
]

# Shapes of credentials that must never be echoed: v2 proxy tokens (<uuid>:<64 hex>),
# "key=value" pairs whose key names a secret, long hex runs and random base64 runs.
_SECRET_PATTERNS = (
    re.compile(r"[0-9a-fA-F-]{36}:[0-9a-fA-F]{32,}"),
    re.compile(
        r"(?i)((?:token|secret|password|api[-_]?key|session)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
    ),
    re.compile(r"\b[0-9a-fA-F]{32,}\b"),
    # Random base64/base62 material: long, and mixing upper case, lower case and digits,
    # which file paths and names (lowercase words, '/' separated) do not.
    re.compile(r"(?<![A-Za-z0-9+_-])(?=[A-Za-z0-9+_-]*[A-Z])(?=[A-Za-z0-9+_-]*[a-z])"
               r"(?=[A-Za-z0-9+_-]*[0-9])[A-Za-z0-9+_-]{32,}={0,2}"),
)


def redact(text: str) -> str:
    """Replace every registered secret, and anything shaped like a credential, with
    ``(sensitive)``."""
    text = scrub(text)
    text = _SECRET_PATTERNS[0].sub(SENSITIVE, text)
    text = _SECRET_PATTERNS[1].sub(rf"\1{SENSITIVE}", text)
    text = _SECRET_PATTERNS[2].sub(SENSITIVE, text)
    return _SECRET_PATTERNS[3].sub(SENSITIVE, text)


class CoderMigrateError(Exception):
    """Root of every error this project raises on purpose."""

    #: Process exit code the CLI uses for this class of error.
    exit_code = 1
    #: Whether the message is passed through :func:`redact`; off only for messages the
    #: project composes from values it has already made safe.
    redacts = True

    def __init__(self, message: str) -> None:
        super().__init__(redact(message) if self.redacts else message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InventoryError(CoderMigrateError):
    """One or more inventory rules are broken.

    Each problem names the file, the host or group, the key, what was expected and what
    was found, so that ``str(error)`` is one line per problem.
    """

    exit_code = 3
    redacts = False  # each problem redacts its own "found" part

    def __init__(self, problems: list[InventoryProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _one_line(text: str) -> str:
    """Escape control characters so a problem always prints as exactly one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class InventoryProblem:
    """A single broken rule, rendered as one line."""

    __slots__ = ("expected", "file", "found", "key", "owner")

    def __init__(self, *, file: str, owner: str, key: str, expected: str, found: str) -> None:
        self.file = _one_line(file)
        self.owner = _one_line(owner)
        self.key = _one_line(key)
        self.expected = _one_line(expected)
        self.found = _one_line(redact(found))

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.owner}: {self.key}: expected {self.expected}, found {self.found}"
        )

    def __repr__(self) -> str:
        return f"InventoryProblem({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InventoryProblem) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class ConfigError(CoderMigrateError):
    """A setting given outside the inventory (flag, environment, file) is invalid."""

    exit_code = 3


class SecretError(CoderMigrateError):
    """A secret reference (environment variable or file) cannot be resolved."""

    exit_code = 3


class LabError(CoderMigrateError):
    """The local lab cannot be built, started or stopped."""

    exit_code = 4


class ToolchainMissing(LabError):
    """A tool the lab needs (Go, a Debian package) is not installed."""


class BuildFailed(LabError):
    """Building a lab binary failed."""


class PortBusy(LabError):
    """A port the lab wants to listen on is already taken."""


class ClusterNotReady(LabError):
    """A lab cluster did not become ready in time."""


class ProviderError(CoderMigrateError):
    """An external system (Kubernetes, Helm, DNS, Coder) refused or failed."""

    exit_code = 5


class KubeError(ProviderError):
    """The Kubernetes API refused or failed."""


class HelmError(ProviderError):
    """The helm binary failed."""


class DnsError(ProviderError):
    """A DNS server or API refused or failed."""


class CoderAPIError(ProviderError):
    """The Coder API answered with an error, or could not be reached.

    Carries the request method and path (never the query string or headers) and,
    when the server answered, the HTTP status and the server's error code.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = None,
        code: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        where = f"{method} {path}".strip()
        status_text = f" ({status})" if status is not None else ""
        prefix = f"{where}{status_text}: " if where else ""
        super().__init__(f"{prefix}{message}")


class CoderAuthError(CoderAPIError):
    """The session or proxy token was refused (401/403)."""


class CoderNotFound(CoderAPIError):
    """The object does not exist (404)."""


class CoderConflict(CoderAPIError):
    """The object already exists (409)."""


class CoderUnsupported(CoderAPIError):
    """The primary's version or licence does not offer this call."""


class CoderUnavailable(CoderAPIError):
    """The primary could not be reached or kept failing after retries."""


class PlanError(CoderMigrateError):
    """A plan cannot be computed, or may not be applied as it is."""

    exit_code = 6


class StalePlan(PlanError):
    """The saved plan no longer matches what a fresh plan computes."""


class UnsafePlan(PlanError):
    """The plan deletes or changes more than allowed without ``--force``."""


class LockHeld(PlanError):
    """Another apply holds the lock."""


class ApplyError(CoderMigrateError):
    """A change failed during apply; ``done`` and ``not_done`` describe the wave."""

    exit_code = 7

    def __init__(
        self, message: str, *, done: list[str] | None = None, not_done: list[str] | None = None
    ) -> None:
        self.done = done or []
        self.not_done = not_done or []
        super().__init__(message)


class LockLost(ApplyError):
    """Another holder took the apply lock: apply stops before its next change."""


class ProxyError(CoderMigrateError):
    """The bundled proxy server cannot start or keep running."""

    exit_code = 8
