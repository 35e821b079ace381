"""The routing config file: load it strictly, and reload it without a restart.

A bad file at start stops the process with a message naming the file and each failing field; a
bad file at reload is logged the same way and the running config stays (Alertmanager's rule).
Reload on SIGHUP, or when the file's modification time or size changes (polled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from services.notify.routing import NotifyConfig, Routing

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A routing config that cannot be used; the message names the file and the fields."""


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_config(text: str, source: str) -> Routing:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping with route and receivers")
    try:
        config = NotifyConfig.model_validate(document)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            message = err["msg"].removeprefix("Value error, ")
            where = _where(err["loc"])
            lines.append(f"{source}: {where}: {message}" if where else f"{source}: {message}")
        raise ConfigError("\n".join(lines)) from None
    return Routing.from_config(config)


def load_config(path: Path) -> Routing:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, str(path))


class ConfigHolder:
    """The routing in force. `reload()` swaps it only when the new file is valid."""

    def __init__(self, path: Path, on_change: Callable[[Routing], None] | None = None) -> None:
        self.path = path
        self.routing = load_config(path)
        self._stamp = self._file_stamp()
        self.on_change = on_change
        self.reloads = 0
        self.failed_reloads = 0

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    def reload(self) -> bool:
        """Load the file again; True when the new config is now in force."""
        self._stamp = self._file_stamp()
        try:
            routing = load_config(self.path)
        except ConfigError as exc:
            self.failed_reloads += 1
            log.error("routing config not reloaded; keeping the running one: %s", exc)
            return False
        self.routing = routing
        self.reloads += 1
        log.info("routing config reloaded from %s", self.path)
        if self.on_change is not None:
            self.on_change(routing)
        return True

    def changed_on_disk(self) -> bool:
        return self._file_stamp() != self._stamp

    async def watch(self, poll_s: float = 2.0) -> None:
        """Reload on SIGHUP and when the file changes, until cancelled."""
        loop = asyncio.get_running_loop()
        hup = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, hup.set)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hup.wait(), poll_s)
                if hup.is_set() or self.changed_on_disk():
                    hup.clear()
                    self.reload()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)
