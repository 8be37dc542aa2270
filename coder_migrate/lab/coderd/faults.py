"""Fault injection rules (off by default): latency, 5xx, dropped connections, builds."""

from __future__ import annotations

import uuid

from coder_migrate.lab.coderd.config import FaultRule

__all__ = ["Faults"]

_REQUEST_KINDS = ("latency", "status", "drop")
_BUILD_KINDS = ("stuck_build", "fail_build")


class Faults:
    """The active rules; a rule with a ``count`` is used up after that many matches."""

    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self._rules: list[FaultRule] = []
        for rule in rules or []:
            self.add(rule)

    def add(self, rule: FaultRule) -> FaultRule:
        rule = rule.model_copy(update={"id": rule.id or uuid.uuid4().hex[:12]})
        self._rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules.clear()

    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def _use(self, rule: FaultRule) -> FaultRule:
        if rule.count is not None:
            index = self._rules.index(rule)
            if rule.count <= 1:
                del self._rules[index]
            else:
                self._rules[index] = rule.model_copy(update={"count": rule.count - 1})
        return rule

    def for_request(self, method: str, path: str) -> list[FaultRule]:
        """The request faults that apply now (each use counts); ``/emulator/`` is exempt."""
        if path.startswith("/emulator/"):
            return []
        matched = [
            r
            for r in self._rules
            if r.kind in _REQUEST_KINDS
            and path.startswith(r.path)
            and (not r.method or r.method.upper() == method.upper())
        ]
        return [self._use(r) for r in matched]

    def for_build(self, workspace_id: str, workspace_name: str) -> str | None:
        """``stuck_build`` / ``fail_build`` for this workspace's next build, if any."""
        for rule in self._rules:
            if rule.kind in _BUILD_KINDS and rule.workspace in ("", workspace_id, workspace_name):
                return self._use(rule).kind
        return None
