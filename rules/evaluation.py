"""Evaluation: alerts against ground truth, per severity level, per rule and per kind of loan.

Alert state changes become *episodes* (``EpisodeTracker``): an episode is one alert id from
FIRING to RESOLVED (or to the end of the run), with its severity phases (an escalation keeps
the alert id and starts a new phase). Closed episodes are folded into ``Evaluation`` at once, so
memory grows with loans × rules, never with the recording.

Definitions (for a level L, critical or warning; an episode "is at L" while a phase of
severity L lasts; T is a skip's labelled ``unreachable_at``; grace = 1 h):

- caught at T: the loan had an alert at L *firing at T* (started at or before T and not
  resolved by T). A warning that fired weeks earlier and resolved does not count.
- caught by T + grace: an alert at L was firing at some moment of [T, T + grace].
- lead time: T minus the start of the earliest L phase among the episodes that catch the loan
  by T + grace (negative when it only started after T); median and p10 (nearest rank, the
  short end) over the loans caught by T + grace.
- precision: loans with an alert at L starting at or before T + grace that are skips, over all
  loans with an alert at L. A skip alerted only later is in the denominator, not the numerator.
- false loans: non-skip loans with an alert at L (share: over non-skip loans).
- episodes per 1,000 loans per day: episodes with an L phase / (loans × days) × 1,000.
- flapping fingerprints (rule + loan): fingerprints with two or more episodes at L (fired,
  resolved, fired again), over fingerprints with one or more; the report lists them (rule,
  loan, kind, episodes), most episodes first.

Pure: no clock, no IO.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.events.alert import AlertEvent, AlertStatus, Severity
from rules.events.recording import Label

LEVELS: tuple[Severity, ...] = (Severity.CRITICAL, Severity.WARNING)
ALL_RULES = "(all rules)"
ALL_KINDS = "(all loans)"
UNLABELLED = "(unlabelled)"
GRACE_S = 3600.0
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Truth:
    """What one loan is: a skip (with the instant it became unreachable) or not, and its kind."""

    loan_id: str
    kind: str
    unreachable_at: float | None = None

    @property
    def is_skip(self) -> bool:
        return self.unreachable_at is not None

    @classmethod
    def from_label(cls, label: Label) -> Truth:
        at = label.unreachable_at
        kind = label.kind or ("skip" if at is not None else UNLABELLED)
        return cls(label.loan_id, kind, at.timestamp() if at is not None else None)


@dataclass(slots=True)
class Episode:
    """One alert id from FIRING to RESOLVED; ``end`` None: still firing when the run ended."""

    alert_id: str
    fingerprint: str
    rule_id: str
    loan_id: str
    phases: list[tuple[float, Severity]]  # (since, severity), in time order
    end: float | None = None

    def intervals(self, level: Severity) -> list[tuple[float, float]]:
        """The [start, end) spans this episode spent at ``level`` (end inf: never resolved)."""
        out: list[tuple[float, float]] = []
        stop = self.end if self.end is not None else math.inf
        for n, (since, severity) in enumerate(self.phases):
            if severity is not level:
                continue
            until = self.phases[n + 1][0] if n + 1 < len(self.phases) else stop
            if until > since or until == stop:
                out.append((since, max(since, until)))
        return out


class EpisodeTracker:
    """AlertEvents in (in the order the engine produced them), closed episodes out."""

    def __init__(self, on_close: Callable[[Episode], None]) -> None:
        self.on_close = on_close
        self.open: dict[str, Episode] = {}
        self.orphan_resolves = 0  # a RESOLVED for an episode never seen firing

    def feed(self, alert: AlertEvent) -> None:
        fp = alert.fingerprint
        episode = self.open.get(fp)
        instant = alert.updated_at.timestamp()
        if alert.status is AlertStatus.FIRING:
            if episode is not None and episode.alert_id == alert.alert_id:
                if episode.phases[-1][1] is not alert.severity:
                    episode.phases.append((instant, alert.severity))
                return
            if episode is not None:  # a new episode without a resolve: the old one ended here
                episode.end = instant
                self.on_close(episode)
            self.open[fp] = Episode(
                alert.alert_id,
                fp,
                alert.rule_id,
                alert.loan_id,
                [(alert.started_at.timestamp(), alert.severity)],
            )
        elif alert.status is AlertStatus.RESOLVED:
            if episode is None or episode.alert_id != alert.alert_id:
                self.orphan_resolves += 1
                return
            episode.end = instant
            del self.open[fp]
            self.on_close(episode)
        # acknowledged / silenced are operator states, not episode boundaries

    def finish(self) -> None:
        """End of the run: episodes still open stay open (end None)."""
        for episode in self.open.values():
            self.on_close(episode)
        self.open.clear()


@dataclass(slots=True)
class _Hit:
    """One loan's alerts at one level from one rule (or all rules)."""

    first: float  # earliest start of a phase at the level
    lead_at: float | None = None  # lead (s) of the earliest episode firing at T
    lead_grace: float | None = None  # ... firing at some moment of [T, T + grace]


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


FLAPPING_LISTED = 100  # flapping fingerprints listed per level in the report


def p10(values: list[float]) -> float:
    """The 10th percentile, nearest rank (an observed value, the short end)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.1 * len(ordered)) - 1)]


@dataclass
class Evaluation:
    """Folds closed episodes into per-level, per-rule, per-kind figures (see module doc)."""

    truth: Mapping[str, Truth]
    grace_s: float = GRACE_S
    tz: dt.tzinfo = dt.UTC  # for the per-day alert volume
    # (level, rule or ALL) -> loan -> hit
    _hits: dict[tuple[Severity, str], dict[str, _Hit]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    # (level, fingerprint) -> episodes at the level
    _fingerprint_episodes: Counter[tuple[Severity, str]] = field(default_factory=Counter)
    # fp -> (rule, kind, loan)
    _fingerprints: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # (level, rule or ALL, kind) -> episodes
    _episodes: Counter[tuple[Severity, str, str]] = field(default_factory=Counter)
    # (level, date) -> episodes started that day (all rules)
    daily: Counter[tuple[Severity, str]] = field(default_factory=Counter)
    rules_seen: set[str] = field(default_factory=set)
    _flaps: tuple[tuple[int, int], dict[tuple[Severity, str, str], tuple[int, int]]] | None = None

    def kind_of(self, loan_id: str) -> str:
        truth = self.truth.get(loan_id)
        return truth.kind if truth is not None else UNLABELLED

    def add(self, episode: Episode) -> None:
        truth = self.truth.get(episode.loan_id)
        kind = truth.kind if truth is not None else UNLABELLED
        label = truth.unreachable_at if truth is not None else None
        self.rules_seen.add(episode.rule_id)
        self._fingerprints[episode.fingerprint] = (episode.rule_id, kind, episode.loan_id)
        for level in LEVELS:
            spans = episode.intervals(level)
            if not spans:
                continue
            first = spans[0][0]
            lead_at = lead_grace = None
            if label is not None:
                if any(s <= label < e for s, e in spans):
                    lead_at = label - first
                if any(s <= label + self.grace_s and e > label for s, e in spans):
                    lead_grace = label - first
            self._fingerprint_episodes[level, episode.fingerprint] += 1
            day = dt.datetime.fromtimestamp(first, self.tz).date().isoformat()
            self.daily[level, day] += 1
            for key in (episode.rule_id, ALL_RULES):
                self._episodes[level, key, kind] += 1
                hits = self._hits[level, key]
                hit = hits.get(episode.loan_id)
                if hit is None:
                    hits[episode.loan_id] = _Hit(first, lead_at, lead_grace)
                else:
                    hit.first = min(hit.first, first)
                    hit.lead_at = _max(hit.lead_at, lead_at)
                    hit.lead_grace = _max(hit.lead_grace, lead_grace)

    # ------------------------------------------------------------------ figures

    def metrics(
        self, level: Severity, rule: str, loans: Iterable[str], days: float, kind: str = ALL_KINDS
    ) -> dict[str, Any]:
        """The figures of one level and rule (or ALL_RULES) over ``loans`` (of ``kind``)."""
        loan_set = set(loans)
        hits = self._hits.get((level, rule), {})
        truth = self.truth
        skips = [x for x in loan_set if x in truth and truth[x].is_skip]
        good = len(loan_set) - len(skips)
        alerted = [x for x in loan_set if x in hits]
        true_alerted = caught_at = 0
        leads: list[float] = []
        false_loans = 0
        for loan in alerted:
            t = truth.get(loan)
            hit = hits[loan]
            if t is None or t.unreachable_at is None:
                false_loans += 1
                continue
            if hit.first <= t.unreachable_at + self.grace_s:
                true_alerted += 1
            if hit.lead_at is not None:
                caught_at += 1
            if hit.lead_grace is not None:
                leads.append(hit.lead_grace / 3600.0)
        if kind == ALL_KINDS:
            episodes = sum(
                n for (lv, r, _), n in self._episodes.items() if lv is level and r == rule
            )
        else:
            episodes = self._episodes[level, rule, kind]
        fingerprints = flapping = 0
        for (lv, r, k), (count, flaps) in self._flap_index().items():
            if lv is level and r == rule and kind in (ALL_KINDS, k):
                fingerprints += count
                flapping += flaps
        loan_days = len(loan_set) * days
        return {
            "loans": len(loan_set),
            "skips": len(skips),
            "loans_alerted": len(alerted),
            "true_alerted": true_alerted,
            "precision": _ratio(true_alerted, len(alerted)),
            "caught_at_label": caught_at,
            "caught_by_label_1h": len(leads),
            "recall_at_label": _ratio(caught_at, len(skips)),
            "recall_by_label_1h": _ratio(len(leads), len(skips)),
            "lead_h_median": round(statistics.median(leads), 1) if leads else None,
            "lead_h_p10": round(p10(leads), 1) if leads else None,
            "false_loans": false_loans,
            "false_loan_share": _ratio(false_loans, good),
            "episodes": episodes,
            "episodes_per_1000_loan_days": round(1000 * episodes / loan_days, 2)
            if loan_days > 0
            else None,
            "fingerprints": fingerprints,
            "flapping_fingerprints": flapping,
            "flap_share": _ratio(flapping, fingerprints),
        }

    def _flap_index(self) -> dict[tuple[Severity, str, str], tuple[int, int]]:
        """(level, rule or ALL_RULES, kind) -> (fingerprints, flapping ones); rebuilt only when
        episodes were added since."""
        size = len(self._fingerprint_episodes), sum(self._fingerprint_episodes.values())
        if self._flaps is not None and self._flaps[0] == size:
            return self._flaps[1]
        index: dict[tuple[Severity, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for (level, fp), n in self._fingerprint_episodes.items():
            rule, kind, _ = self._fingerprints[fp]
            for key in (rule, ALL_RULES):
                entry = index[level, key, kind]
                entry[0] += 1
                entry[1] += n >= 2
        frozen = {k: (v[0], v[1]) for k, v in index.items()}
        self._flaps = (size, frozen)
        return frozen

    def flapping(self, level: Severity, limit: int = FLAPPING_LISTED) -> list[dict[str, Any]]:
        """The fingerprints with two or more episodes at ``level``, most episodes first (then
        by rule and loan), at most ``limit``: where to look when the flap share is high."""
        rows = [
            (n, *self._fingerprints[fp])
            for (lv, fp), n in self._fingerprint_episodes.items()
            if lv is level and n >= 2
        ]
        rows.sort(key=lambda row: (-row[0], row[1], row[3]))
        return [
            {"rule": rule, "loan_id": loan, "kind": kind, "episodes": n}
            for n, rule, kind, loan in rows[:limit]
        ]

    def leads(self, level: Severity, kind: str | None = None) -> list[float]:
        """Lead times (hours) of the skips caught by T + grace at ``level`` (any rule)."""
        return [
            hit.lead_grace / 3600.0
            for loan, hit in self._hits.get((level, ALL_RULES), {}).items()
            if hit.lead_grace is not None and (kind is None or self.kind_of(loan) == kind)
        ]

    def outcome(self, loan_id: str) -> str:
        """How the alerts treated one loan, for the confusion table: for a skip `caught`
        (critical firing by T + grace), `late` (a critical only later), `warned` (warnings
        only), `missed`; for a good loan `critical`, `warned`, `quiet`."""
        truth = self.truth.get(loan_id)
        crit = self._hits.get((Severity.CRITICAL, ALL_RULES), {}).get(loan_id)
        warn = self._hits.get((Severity.WARNING, ALL_RULES), {}).get(loan_id)
        if truth is not None and truth.is_skip:
            if crit is not None and crit.lead_grace is not None:
                return "caught"
            if crit is not None:
                return "late"
            return "warned" if warn is not None else "missed"
        if crit is not None:
            return "critical"
        return "warned" if warn is not None else "quiet"

    def report(self, loans: Iterable[str], days: float) -> dict[str, Any]:
        """Every figure: per level, overall, per rule, per kind (and per rule per kind)."""
        loan_list = sorted(set(loans))
        by_kind: dict[str, list[str]] = defaultdict(list)
        for loan in loan_list:
            by_kind[self.kind_of(loan)].append(loan)
        present = set(loan_list)
        skip_kinds = sorted(
            {t.kind for t in self.truth.values() if t.is_skip and t.loan_id in present}
        )
        rules = sorted(self.rules_seen)
        levels: dict[str, Any] = {}
        for level in LEVELS:
            levels[level.value] = {
                "overall": self.metrics(level, ALL_RULES, loan_list, days),
                "rules": {r: self.metrics(level, r, loan_list, days) for r in rules},
                "kinds": {
                    k: self.metrics(level, ALL_RULES, members, days, k)
                    for k, members in sorted(by_kind.items())
                },
                "flapping": self.flapping(level),
                "rules_by_kind": {
                    r: {
                        k: self.metrics(level, r, members, days, k)
                        for k, members in sorted(by_kind.items())
                        if (level, r, k) in self._episodes
                    }
                    for r in rules
                },
            }
        confusion: dict[str, Counter[str]] = defaultdict(Counter)
        for kind, members in by_kind.items():
            for loan in members:
                confusion[kind][self.outcome(loan)] += 1
        return {
            "loans": len(loan_list),
            "skips": sum(1 for x in loan_list if x in self.truth and self.truth[x].is_skip),
            "days": round(days, 3),
            "grace_h": self.grace_s / 3600.0,
            "skip_kinds": skip_kinds,
            "levels": levels,
            "confusion": {k: dict(v) for k, v in sorted(confusion.items())},
        }


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None
