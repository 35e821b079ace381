"""Severity policy: what a rule must read before it may page someone (checked at rule load).

A *critical* alert means "send someone now". Every way a critical condition can hold must carry
either

- **corroborated evidence**: at least two evidence families, one of them about the borrower
  (``payment`` or ``contact``) — the car's own signals (``vehicle``, ``tracker``) describe one
  object and do not corroborate each other; or
- a **hard tamper pattern**: tracker tamper evidence (a removal, tamper, antenna-cut or power-cut
  alarm, the wired tracker silent while the wireless one reports, or trackers silent/offline)
  together with the car at a risk place or away from its home region.

So vehicle-only or tracker-only evidence on a loan that is current and reachable is at most a
warning. "Every way it can hold" is made precise by putting the condition (``&&``-ed with the
escalation's ``when`` for an escalated severity) in disjunctive normal form: each conjunct is one
way; a conjunct's evidence is what its positive comparisons read. A negated term
(``!vehicle.at_usual_place``), a comparison that says "little or none" (``<``, ``<=``, ``== 0``,
``== false``, ``== ''``, ``!= 'x'``, ``>= 0``) and a ternary are no evidence; guards such as
``vehicle.known`` or ``device.has_wired`` belong to no family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rules.signals.catalog import ROOTS, SIGNALS

FAMILIES = ("payment", "contact", "vehicle", "tracker")
BORROWER_FAMILIES = frozenset({"payment", "contact"})
_ROOT_FAMILY = {
    "payment": "payment",
    "contact": "contact",
    "vehicle": "vehicle",
    "device": "tracker",
    "devices": "tracker",
}
# Signals that qualify a condition but are evidence of nothing.
GUARDS = frozenset(
    {
        "vehicle.known",
        "vehicle.has_home_region",
        "device.has_wired",
        "device.has_wireless",
        "contact.ever_reached",
        "contact.last_reached_at",
    }
)
# Hard tamper patterns: a tamper signal and a place signal in the same conjunct.
TAMPER_SIGNALS = frozenset(
    {
        "device.silent_for",
        "device.all_offline",
        "device.offline.wired",
        "device.offline.wireless",
        "device.offline_for.wired",
        "device.offline_for.wireless",
    }
)
TAMPER_ALARMS = ("removal", "tamper", "antenna_cut", "power_cut")  # device.alarms: must name one
AWAY_SIGNALS = frozenset({"vehicle.outside_home_region", "vehicle.outside_home_region_for"})
RISK_PLACE_SIGNALS = frozenset(
    {"vehicle.at_risk_place", "vehicle.risk_place_kind", "vehicle.risk_place_dwell"}
)

# signal -> evidence family (None: a guard)
FAMILY: dict[str, str | None] = {
    name: None if name in GUARDS else _ROOT_FAMILY[name.split(".", 1)[0]] for name in SIGNALS
}

_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_PATH = re.compile(r"(?<![\w.])(?:" + "|".join(ROOTS) + r")(?:\.[A-Za-z_]\w*)+")
# "Little or none" comparisons: not evidence that something happened.
_ZERO = r"(?:0+(?:\.0*)?(?![\d.])|duration\(\s*['\"]0+[a-z]*['\"]\s*\))"
_NEGATIVE = re.compile(
    r"<|==\s*(?:" + _ZERO + r"|false\b|''|\"\")"
    r"|!=\s*(?:'[^']+'|\"[^\"]+\")|>=\s*" + _ZERO
)
MAX_CONJUNCTS = 64


class PolicyError(ValueError):
    """The condition is too complex to analyse."""


@dataclass(frozen=True, slots=True)
class Way:
    """One conjunct of the DNF: one way the condition can hold, and what it proves."""

    text: str
    families: frozenset[str]
    tamper: bool  # a hard tamper pattern

    @property
    def corroborated(self) -> bool:
        return len(self.families) >= 2 and bool(self.families & BORROWER_FAMILIES)

    @property
    def allows_critical(self) -> bool:
        return self.corroborated or self.tamper

    def missing(self) -> str:
        """What this way lacks to be critical (empty when nothing)."""
        if self.allows_critical:
            return ""
        if not self.families & BORROWER_FAMILIES:
            return "payment or contact"
        others = [f for f in FAMILIES if f not in self.families]
        return " or ".join(others)


def _blank(source: str) -> str:
    return _STRING.sub(lambda m: " " * len(m.group(0)), source)


def _split(source: str, blank: str, op: str) -> list[tuple[str, str]]:
    """Split at depth-0 occurrences of ``op``; (source part, blanked part) pairs."""
    parts: list[tuple[str, str]] = []
    depth, start, i = 0, 0, 0
    while i < len(blank):
        ch = blank[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and blank.startswith(op, i):
            parts.append((source[start:i], blank[start:i]))
            start = i + len(op)
            i += len(op)
            continue
        i += 1
    parts.append((source[start:], blank[start:]))
    return parts


def _wrapped(blank: str) -> bool:
    """The whole expression is one parenthesised group."""
    if not (blank.startswith("(") and blank.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(blank):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(blank) - 1:
            return False
    return True


Term = tuple[str, bool]  # (leaf source, negated)


def _product(left: list[list[Term]], right: list[list[Term]]) -> list[list[Term]]:
    out = [a + b for a in left for b in right]
    if len(out) > MAX_CONJUNCTS:
        raise PolicyError(f"more than {MAX_CONJUNCTS} ways to hold: too complex to analyse")
    return out


def _dnf(source: str, blank: str, negated: bool) -> list[list[Term]]:
    # Trim by the source's whitespace (a blanked string is spaces in ``blank``, not whitespace).
    lead, end = len(source) - len(source.lstrip()), len(source.rstrip())
    source, blank = source[lead:end], blank[lead:end]
    if _wrapped(blank):
        return _dnf(source[1:-1], blank[1:-1], negated)
    for op, conjunction in (("||", False), ("&&", True)):
        parts = _split(source, blank, op)
        if len(parts) == 1:
            continue
        as_and = conjunction != negated  # De Morgan
        terms = [_dnf(s, b, negated) for s, b in parts]
        if not as_and:
            out = [way for t in terms for way in t]
            if len(out) > MAX_CONJUNCTS:
                raise PolicyError(f"more than {MAX_CONJUNCTS} ways to hold: too complex")
            return out
        result = terms[0]
        for t in terms[1:]:
            result = _product(result, t)
        return result
    if blank.startswith("!") and not blank.startswith("!="):
        return _dnf(source[1:], blank[1:], not negated)
    return [[(source, negated)]]


def _evidence(term: Term) -> tuple[set[str], set[str]]:
    """(families, pattern tags) a term proves."""
    source, negated = term
    blank = _blank(source)
    if negated or _NEGATIVE.search(source) or "?" in blank:
        return set(), set()
    families: set[str] = set()
    tags: set[str] = set()
    for match in _PATH.finditer(blank):
        name = _longest_signal(match.group(0))
        if name is None:
            continue
        family = FAMILY[name]
        if family is not None:
            families.add(family)
        if (
            name in TAMPER_SIGNALS
            or (name == "device.alarms" and any(a in source for a in TAMPER_ALARMS))
            # the wired tracker (car power, fixed) silent while the hidden one reports; a
            # wireless one going quiet is a battery as often as a cut
            or (name == "devices.silent_kind" and re.search(r"==\s*['\"]wired['\"]", source))
        ):
            tags.add("tamper")
        if name in AWAY_SIGNALS or name in RISK_PLACE_SIGNALS:
            tags.add("place")
    return families, tags


def _longest_signal(path: str) -> str | None:
    parts = path.split(".")
    for end in range(len(parts), 1, -1):
        name = ".".join(parts[:end])
        if name in SIGNALS:
            return name
    return None


def ways(*expressions: str) -> list[Way]:
    """The ways the conjunction of ``expressions`` can hold, each with its evidence."""
    result: list[list[Term]] = [[]]
    for expression in expressions:
        result = _product(result, _dnf(expression, _blank(expression), False))
    out: list[Way] = []
    for terms in result:
        families: set[str] = set()
        tags: set[str] = set()
        for term in terms:
            f, t = _evidence(term)
            families |= f
            tags |= t
        text = " && ".join(
            f"!({' '.join(src.split())})" if neg else " ".join(src.split()) for src, neg in terms
        )
        out.append(Way(text, frozenset(families), tamper={"tamper", "place"} <= tags))
    return out


def guaranteed_families(all_ways: list[Way]) -> tuple[str, ...]:
    """Families every way proves (what the rule's alert always rests on)."""
    if not all_ways:
        return ()
    common = frozenset.intersection(*(w.families for w in all_ways))
    return tuple(f for f in FAMILIES if f in common)


def violation(all_ways: list[Way]) -> str | None:
    """Why a critical with these ways breaks the policy, or None."""
    for way in all_ways:
        missing = way.missing()
        if missing:
            read = "+".join(f for f in FAMILIES if f in way.families) or "no evidence family"
            return (
                "a critical needs evidence from two families, one of them payment or contact, "
                "or a hard tamper pattern (tamper alarm or trackers silent, with the car at a "
                f"risk place or out of region); when `{way.text}` holds it reads only {read}: "
                f"missing family {missing}"
            )
    return None
