"""Rule files: strict schema, CEL compiled and checked at load.

A rule file is YAML with one key, ``rules``, a list of rules. Unknown keys are rejected. Every
error names the file, the rule id and the field, e.g.
``rules/catalog/device.yaml: rule 'tracker-removed': condition: unknown variable 'vehicle.atrisk'``.

Besides syntax, loading checks what the engine relies on:
- every variable a condition reads is a documented signal (rules/signals/catalog.py);
- time-based signals are only compared with constants; those constants become *thresholds*, so
  the engine can compute when a comparison flips (``Engine.next_deadline``) and can memoise a
  condition's result on which side of each threshold its inputs are;
- the condition type-checks and yields a bool on sample states.
"""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import cel
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rules.events.alert import Severity
from rules.policy import PolicyError, guaranteed_families, violation, ways
from rules.signals.catalog import MAP_PARENTS, ROOTS, SIGNALS, Signal

CATALOG_DIR = Path(__file__).parent / "catalog"

RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class RuleLoadError(ValueError):
    """An invalid rule file. ``str()`` names file, rule and field."""

    def __init__(self, file: str, rule_id: str | None, field_name: str, message: str) -> None:
        self.file = file
        self.rule_id = rule_id
        self.field = field_name
        self.message = message
        where = f"rule {rule_id!r}: " if rule_id else ""
        super().__init__(f"{file}: {where}{field_name}: {message}")


# ---------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s|d)")
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def parse_duration(text: str, *, allow_days: bool = True) -> float:
    """Seconds in a duration like ``90s``, ``30m``, ``6h``, ``1h30m`` or (``for:`` only) ``3d``."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos or (match.group(2) == "d" and not allow_days):
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        units = "d, h, m, s, ms" if allow_days else "h, m, s, ms (CEL has no 'd': use 72h)"
        raise ValueError(f"{text!r} is not a duration (number + unit: {units})")
    return total


# ---------------------------------------------------------------------------- file schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationSpec(_Strict):
    when: Annotated[str, Field(min_length=1)]
    severity: Severity


class RuleSpec(_Strict):
    id: RuleId
    severity: Severity
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(min_length=1)]
    # The Chinese (zh-CN) title and description the dashboard shows; optional in the schema,
    # required of the shipped catalog by `skipwatch rules check` (see `missing_chinese`).
    title_zh: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    description_zh: Annotated[str, Field(min_length=1)] | None = None
    condition: Annotated[str, Field(min_length=1)]
    for_: Annotated[str, Field(alias="for")] = "0s"
    # Hysteresis on the way out: a firing alert whose condition stops holding resolves only once
    # it has not held for this long; holding again meanwhile continues the same episode.
    keep_firing_for: str = "0s"
    labels: dict[str, str] = Field(default_factory=dict)
    escalate: tuple[EscalationSpec, ...] = ()
    # A firing alert of this rule inhibits lower-severity alerts of the same loan.
    inhibits_lower: bool = True

    @field_validator("for_", "keep_firing_for")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class RuleFileSpec(_Strict):
    rules: tuple[RuleSpec, ...]


# ---------------------------------------------------------------------------- compiled rules


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled CEL expression and what it reads."""

    source: str
    program: cel.Program
    inputs: tuple[str, ...]  # signal names, sorted
    roots: tuple[str, ...]  # top-level variables (payment, vehicle, ...)
    thresholds: Mapping[str, tuple[float, ...]]  # signal -> constants it is compared with


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: Severity
    title: str
    description: str
    condition: Expression
    for_seconds: float
    labels: Mapping[str, str]
    escalations: tuple[tuple[Expression, Severity], ...]
    inhibits_lower: bool
    file: str
    # Every signal the condition and escalations read, and the memo-key layout over them.
    inputs: tuple[str, ...] = ()
    bucketed: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    # Evidence families (rules/policy.py) every way the condition can hold reads; and per
    # escalation, those of the condition && the escalation's `when`.
    evidence: tuple[str, ...] = ()
    escalation_evidence: tuple[tuple[str, ...], ...] = ()
    keep_seconds: float = 0.0  # keep_firing_for
    title_zh: str | None = None
    description_zh: str | None = None


def missing_chinese(rule: Rule) -> list[str]:
    """The Chinese fields (``title_zh``, ``description_zh``) a rule lacks."""
    return [name for name in ("title_zh", "description_zh") if not getattr(rule, name)]


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    # Union over rules: signal -> sorted constants it is compared with (drives deadlines).
    thresholds: Mapping[str, tuple[float, ...]]

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> RuleSet:
        rules = tuple(rules)
        merged: dict[str, set[float]] = {}
        for rule in rules:
            for name, values in rule.bucketed.items():
                merged.setdefault(name, set()).update(values)
        return cls(rules, {k: tuple(sorted(v)) for k, v in merged.items()})

    def __len__(self) -> int:
        return len(self.rules)

    def by_id(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def bucket(value: float, thresholds: tuple[float, ...]) -> tuple[int, int]:
    """Which side of each threshold ``value`` is on (distinguishing equality): every comparison
    of ``value`` with one of these constants has the same result within a bucket."""
    return (bisect_left(thresholds, value), bisect_right(thresholds, value))


# ---------------------------------------------------------------------------- analysis

_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_PATH = re.compile(r"(?<![\w.])(" + "|".join(ROOTS) + r")((?:\.[A-Za-z_]\w*)+)")
_MACRO_VAR = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")
_LITERAL = r"(duration\(\s*(?:'[^']*'|\"[^\"]*\")\s*\)|-?\d+(?:\.\d+)?)"
_OPERATOR = r"(<=|>=|<|>|==|!=)"


def _blank_strings(source: str) -> str:
    return _STRING.sub(lambda m: " " * len(m.group(0)), source)


def _literal_value(literal: str) -> float:
    if literal.startswith("duration"):
        inner = literal[literal.index("(") + 1 : literal.rindex(")")].strip()[1:-1]
        return parse_duration(inner, allow_days=False)
    return float(literal)


def _signal_for(path: str) -> tuple[Signal | None, str]:
    """The longest catalogued prefix of a dotted path, and what follows it."""
    parts = path.split(".")
    for end in range(len(parts), 1, -1):
        name = ".".join(parts[:end])
        if name in SIGNALS:
            return SIGNALS[name], ".".join(parts[end:])
        if name in MAP_PARENTS:
            return None, name
    return None, ""


def compile_expression(source: str, fail: Any) -> Expression:
    """Compile and analyse one CEL expression; ``fail(message)`` builds the error to raise."""
    try:
        program = cel.compile(source)
    except Exception as exc:  # the extension raises ValueError; keep any parse failure
        raise fail(f"does not compile: {exc}") from None
    blanked = _blank_strings(source)
    bound = set(_MACRO_VAR.findall(blanked))
    roots = [v for v in program.variables() if v not in bound]
    for root in roots:
        if root not in ROOTS:
            raise fail(f"unknown variable {root!r} (variables: {', '.join(ROOTS)})")
    inputs: set[str] = set()
    for match in _PATH.finditer(blanked):
        path = match.group(1) + match.group(2)
        signal, rest = _signal_for(path)
        if signal is None:
            if rest in MAP_PARENTS:
                raise fail(f"{rest!r} is a map: name a key, e.g. {rest}.wired")
            raise fail(f"unknown variable {path!r} (see docs/rules.md for the state variables)")
        if rest and not blanked[match.end() :].lstrip().startswith("("):
            raise fail(f"{signal.name!r} has no field {rest!r}")
        inputs.add(signal.name)
    for root in roots:
        if not any(name.startswith(root + ".") for name in inputs):
            raise fail(f"{root!r} used as a whole; read one of its fields (e.g. {root}.<name>)")
    thresholds: dict[str, tuple[float, ...]] = {}
    for name in sorted(inputs):
        signal = SIGNALS[name]
        if signal.type not in ("int", "double", "duration"):
            continue
        constants = _compared_constants(source, blanked, name)
        if constants is None:
            if signal.time_based:
                example = f"{name} >= " + ("duration('24h')" if signal.type == "duration" else "3")
                raise fail(
                    f"time-based {name!r} may only be compared with a constant (e.g. {example}) "
                    "so the engine knows when the comparison changes"
                )
            continue
        thresholds[name] = tuple(sorted(set(constants)))
    return Expression(
        source=source,
        program=program,
        inputs=tuple(sorted(inputs)),
        roots=tuple(sorted(set(roots))),
        thresholds=thresholds,
    )


def _compared_constants(source: str, blanked: str, name: str) -> list[float] | None:
    """The constants ``name`` is compared with, or None if it is used any other way."""
    escaped = re.escape(name)
    occurrences = len(re.findall(rf"(?<![\w.]){escaped}(?![\w.])", blanked))
    forward = re.compile(rf"(?<![\w.]){escaped}\s*{_OPERATOR}\s*{_LITERAL}")
    backward = re.compile(rf"{_LITERAL}\s*{_OPERATOR}\s*(?<![\w.]){escaped}(?![\w.])")
    arithmetic = set("+-*/%")
    constants: list[float] = []
    for pattern, literal_group in ((forward, 2), (backward, 1)):
        for match in pattern.finditer(source):
            before = source[: match.start()].rstrip()[-1:]
            after = source[match.end() :].lstrip()[:1]
            if before in arithmetic or after in arithmetic or after == ".":
                return None
            constants.append(_literal_value(match.group(literal_group)))
    return constants if len(constants) == occurrences else None


def _samples() -> list[dict[str, dict[str, Any]]]:
    """Two states for type-checking: everything 'on' and everything 'off'."""
    on: dict[str, Any] = {
        "bool": True,
        "int": 5,
        "double": 5.0,
        "duration": dt.timedelta(days=5),
        "string": "second_pledge_lot",
        "list": ["power_cut", "removal"],
        "timestamp": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    }
    off: dict[str, Any] = {**on, "bool": False, "int": 0, "double": 0.0, "string": ""}
    off.update(duration=dt.timedelta(0), list=[])
    return [nest({n: values[s.type] for n, s in SIGNALS.items()}) for values in (on, off)]


def nest(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"a.b": 1, "a.c.d": 2} -> {"a": {"b": 1, "c": {"d": 2}}} (the CEL activation)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        parts = name.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


_SAMPLES = _samples()


def _type_check(expression: Expression, fail: Any) -> None:
    for sample in _SAMPLES:
        activation = {root: sample[root] for root in expression.roots}
        try:
            result = expression.program.execute(activation)
        except Exception as exc:  # CEL type errors surface as TypeError/RuntimeError/KeyError
            raise fail(f"does not evaluate: {exc}") from None
        if not isinstance(result, bool):
            raise fail(f"must be a bool expression, got {type(result).__name__}")


def compile_rule(spec: RuleSpec, file: str) -> Rule:
    def failer(field_name: str) -> Any:
        return lambda message: RuleLoadError(file, spec.id, field_name, message)

    condition = compile_expression(spec.condition, failer("condition"))
    _type_check(condition, failer("condition"))
    escalations = []
    for n, step in enumerate(spec.escalate):
        fail = failer(f"escalate[{n}].when")
        expression = compile_expression(step.when, fail)
        _type_check(expression, fail)
        if step.severity.rank <= spec.severity.rank:
            raise RuleLoadError(
                file, spec.id, f"escalate[{n}].severity", "must be above the rule's severity"
            )
        escalations.append((expression, step.severity))
    evidence, escalation_evidence = _check_policy(spec, file)
    inputs = set(condition.inputs)
    merged: dict[str, set[float]] = {k: set(v) for k, v in condition.thresholds.items()}
    for expression, _ in escalations:
        inputs.update(expression.inputs)
        for k, v in expression.thresholds.items():
            merged.setdefault(k, set()).update(v)
    # A numeric signal is bucketed only if every expression of the rule compares it with
    # constants; otherwise its raw value goes into the memo key.
    numeric = {n for n in inputs if SIGNALS[n].type in ("int", "double", "duration")}
    everywhere = {
        n
        for n in numeric
        if all(
            n in e.thresholds or n not in e.inputs
            for e in (condition, *(x for x, _ in escalations))
        )
    }
    return Rule(
        id=spec.id,
        severity=spec.severity,
        title=spec.title,
        description=spec.description.strip(),
        condition=condition,
        for_seconds=parse_duration(spec.for_),
        labels=dict(spec.labels),
        escalations=tuple(escalations),
        inhibits_lower=spec.inhibits_lower,
        file=file,
        inputs=tuple(sorted(inputs)),
        bucketed={n: tuple(sorted(merged[n])) for n in sorted(everywhere)},
        evidence=evidence,
        escalation_evidence=escalation_evidence,
        keep_seconds=parse_duration(spec.keep_firing_for),
        title_zh=spec.title_zh.strip() if spec.title_zh else None,
        description_zh=spec.description_zh.strip() if spec.description_zh else None,
    )


def _check_policy(spec: RuleSpec, file: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """The severity policy (rules/policy.py) at the base severity and at each escalation;
    returns the evidence families of the condition and of each escalated condition."""
    try:
        base = ways(spec.condition)
        escalated = [ways(spec.condition, step.when) for step in spec.escalate]
    except PolicyError as exc:
        raise RuleLoadError(file, spec.id, "condition", str(exc)) from None
    if spec.severity is Severity.CRITICAL:
        problem = violation(base)
        if problem:
            raise RuleLoadError(file, spec.id, "severity", problem)
    for n, (step, step_ways) in enumerate(zip(spec.escalate, escalated, strict=True)):
        if step.severity is Severity.CRITICAL:
            problem = violation(step_ways)
            if problem:
                raise RuleLoadError(file, spec.id, f"escalate[{n}].severity", problem)
    return guaranteed_families(base), tuple(guaranteed_families(w) for w in escalated)


def load_rule_file(path: Path) -> list[Rule]:
    file = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RuleLoadError(file, None, "(yaml)", str(exc).replace("\n", " ")) from None
    try:
        spec = RuleFileSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = list(err["loc"])
        rule_id = None
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            raw_rules = data.get("rules") if isinstance(data, dict) else None
            if isinstance(raw_rules, list) and loc[1] < len(raw_rules):
                raw = raw_rules[loc[1]]
                rule_id = str(raw.get("id")) if isinstance(raw, dict) and raw.get("id") else None
                rule_id = rule_id or f"#{loc[1]}"
            loc = loc[2:]
        field_name = ".".join(str(p) for p in loc) or "(file)"
        raise RuleLoadError(file, rule_id, field_name, err["msg"]) from None
    return [compile_rule(rule, file) for rule in spec.rules]


def load_rules(directory: Path | None = None) -> RuleSet:
    """Every ``*.yaml`` rule file in ``directory`` (default: the shipped catalog)."""
    directory = directory or CATALOG_DIR
    if not directory.is_dir():
        raise RuleLoadError(str(directory), None, "(directory)", "not a directory")
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        raise RuleLoadError(str(directory), None, "(directory)", "no *.yaml rule files")
    for path in files:
        for rule in load_rule_file(path):
            if rule.id in seen:
                raise RuleLoadError(
                    str(path), rule.id, "id", f"duplicate id (also in {seen[rule.id]})"
                )
            seen[rule.id] = str(path)
            rules.append(rule)
    return RuleSet.of(rules)
