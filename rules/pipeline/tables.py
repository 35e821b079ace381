"""The tables the pipeline steps read and write: a small mapping protocol.

The worker passes its Faust tables (changelogged, one per partition), the backtest plain
dicts. Both fit: the steps use only `get`, item assignment and deletion.
"""

from __future__ import annotations

from typing import Protocol


class Table(Protocol):
    """A str -> bytes table (a Faust table, a dict)."""

    def get(self, key: str, /) -> bytes | None: ...

    def __setitem__(self, key: str, value: bytes, /) -> None: ...

    def __delitem__(self, key: str, /) -> None: ...
