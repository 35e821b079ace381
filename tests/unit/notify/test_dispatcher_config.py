"""The dispatcher's view of the routing file (no Kafka: nothing here starts it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.notify.config import ConfigHolder
from services.notify.dispatcher import Dispatcher
from services.notify.ssrf import IPAddress, SsrfGuard
from services.settings import NotifySettings, Settings

pytestmark = pytest.mark.unit

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def no_dns(host: str, port: int) -> list[IPAddress]:
    raise OSError(f"{host}: NXDOMAIN")


def config(tmp_path: Path, internal: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(
        f"""
route: {{receiver: r}}
receivers:
- name: r
  webhook_configs:
  - {{url: "http://{internal}/hook", secret: "{SECRET}"}}
  - {{url: "http://127.0.0.1:9/hook", secret: "{SECRET}"}}
  wecom_configs: [{{url: "http://10.1.1.1/send?key=k"}}]
  dingtalk_configs: [{{url: "https://nowhere.invalid/robot/send?access_token=t"}}]
"""
    )
    return path


async def test_routing_file_destinations_are_checked_like_saved_endpoints(tmp_path: Path) -> None:
    settings = Settings(notify=NotifySettings(allow_list=["127.0.0.1"]))
    holder = ConfigHolder(config(tmp_path, "169.254.169.254"))
    dispatcher = Dispatcher(settings, config=holder)
    dispatcher.guard = SsrfGuard(dispatcher.guard.allow_list, no_dns)
    dispatcher.on_config_change(holder.routing)  # checks in the background
    await asyncio.gather(*dispatcher._background)
    flags = {k: v.disabled_reason for k, v in dispatcher.config_endpoints.items()}
    assert "cloud metadata" in (flags["cfg:r:webhook:0"] or "")
    assert flags["cfg:r:webhook:1"] is None  # allow-listed
    assert "private" in (flags["cfg:r:wecom:0"] or "")
    assert flags["cfg:r:dingtalk:0"] is None  # DNS failure: left to the connection-time check
    assert dispatcher._receiver("cfg:r:webhook:0") is None
    assert dispatcher._receiver("cfg:r:webhook:1") is not None
    # A reload that changes the URL clears the flag; one that keeps it keeps the flag.
    holder.path.write_text(holder.path.read_text().replace("169.254.169.254", "127.0.0.1:8"))
    assert holder.reload()
    dispatcher.on_config_change(holder.routing)
    assert dispatcher.config_endpoints["cfg:r:webhook:0"].disabled_reason is None
    assert dispatcher.config_endpoints["cfg:r:wecom:0"].disabled_reason is not None
    await asyncio.gather(*dispatcher._background)
    for client in dispatcher._clients.values():
        await client.aclose()
