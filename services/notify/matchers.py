"""Label matchers, as Alertmanager writes them: `name="value"`, `name!=v`, `name=~"re"`, `name!~re`.

Regular expressions are anchored at both ends; a missing label matches as the empty string.
Shared by routes, inhibition rules and silences. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Op = Literal["=", "!=", "=~", "!~"]
OPS: tuple[Op, ...] = ("=~", "!~", "!=", "=")  # longest first, for parsing
_LABEL = r"[A-Za-z_][A-Za-z0-9_./-]*"
_SYNTAX = re.compile(rf"^\s*({_LABEL})\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, op: Op, value: str) -> Matcher:
        if not re.fullmatch(_LABEL, name):
            raise ValueError(f"invalid label name {name!r}")
        if op not in OPS:
            raise ValueError(f"invalid matcher operator {op!r} (one of = != =~ !~)")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"^(?:{value})$")
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return cls(name, op, value, regex)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """`severity="critical"`, `team=~"coll.*"`, `rule!=seed` (quotes optional)."""
        inner = text.strip()
        if inner.startswith("{") and inner.endswith("}"):
            inner = inner[1:-1]  # Alertmanager also accepts '{name="value"}'
        found = _SYNTAX.match(inner)
        if found is None:
            raise ValueError(f"invalid matcher {text!r}: expected name, one of = != =~ !~, value")
        name, op, value = found.group(1), found.group(2), found.group(3)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif '"' in value:
            raise ValueError(f"invalid matcher {text!r}: unbalanced quotes")
        return cls.create(name, op, value)  # type: ignore[arg-type]  # op is one of OPS

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.match(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
