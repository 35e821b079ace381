"""Signals: how each event family updates the loan state, and the state variables derived from it.

Each module has ``apply_*`` (event -> state, returning what changed) and ``derive`` (state at an
instant -> flat ``{"family.name": value}``, durations in seconds) plus ``deadlines`` (instants at
which a time-based variable crosses a threshold).
"""
