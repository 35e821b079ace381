"""The Faust/aiokafka hooks are kept in streams/faust_edge and guarded by version: the worker
refuses an untested faust-streaming, mode-streaming or aiokafka, and the guard's list follows
uv.lock."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from streams.faust_edge.versions import TESTED_VERSIONS, UntestedVersionError, check_versions

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"]}


def test_the_guard_lists_the_locked_version_of_every_hooked_distribution() -> None:
    locked = locked_versions()
    for distribution, tested in TESTED_VERSIONS.items():
        assert distribution in locked, f"{distribution} is not in uv.lock"
        assert locked[distribution] in tested, (
            f"uv.lock has {distribution} {locked[distribution]}, the guard lists {tested}: "
            "test the hooks on it and add it to streams/faust_edge/versions.py"
        )


def test_the_locked_versions_are_accepted() -> None:
    locked = locked_versions()
    found = check_versions(lambda distribution: locked[distribution])
    assert found == {d: locked[d] for d in TESTED_VERSIONS}


def test_the_installed_versions_are_the_locked_ones() -> None:
    assert check_versions() == {d: locked_versions()[d] for d in TESTED_VERSIONS}


@pytest.mark.parametrize("distribution", sorted(TESTED_VERSIONS))
def test_a_different_version_is_refused_naming_installed_and_tested(distribution: str) -> None:
    locked = locked_versions()

    def installed(name: str) -> str | None:
        return "99.0.0" if name == distribution else locked[name]

    with pytest.raises(UntestedVersionError) as refused:
        check_versions(installed)
    message = str(refused.value)
    assert f"{distribution} 99.0.0 is installed" in message
    assert f"tested on {locked[distribution]}" in message
    others = set(TESTED_VERSIONS) - {distribution}
    assert not any(f"{other} {locked[other]} is installed" in message for other in others)


def test_a_missing_distribution_is_refused() -> None:
    with pytest.raises(UntestedVersionError, match=r"aiokafka \(not installed\) is installed"):
        check_versions(lambda name: None if name == "aiokafka" else locked_versions()[name])


def test_the_worker_exits_before_connecting_when_a_version_is_untested(tmp_path: Path) -> None:
    """`skipwatch worker` on an untested aiokafka: exits at once with the message, without
    trying the broker (the bootstrap address is unreachable)."""
    script = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "m.version = lambda d: '0.11.0' if d == 'aiokafka' else real(d)\n"
        "import sys\n"
        "sys.argv = ['skipwatch', 'worker']\n"
        "from services.cli import main\n"
        "main()\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "SKIPWATCH_WORKER__DATA_DIR": str(tmp_path),
        "SKIPWATCH_WORKER__METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 1, done
    stderr = done.stderr.decode()
    assert re.search(r"aiokafka 0\.11\.0 is installed.*tested on 0\.12\.0", stderr), stderr


def test_no_private_faust_or_aiokafka_member_is_used_outside_the_edge() -> None:
    """Outside streams/faust_edge: no Faust/mode/aiokafka class subclassed but aiokafka's public
    rebalance listener, and no `._name` read on anything but the module's own objects."""
    private = re.compile(r"(?<![\w.])(?!self\b|cls\b|os\b)\w+(\.\w+)*\._[a-z]\w*")
    subclass = re.compile(r"^class \w+\((faust\.|mode\.|Consumer\)|Store\)|Worker\)|AIOKafka)")
    own = ("self.gw._",)  # the JT/T 808 gateway's connection calling its own gateway
    offenders = []
    for root in ("streams", "services", "rules"):
        for path in (REPO / root).rglob("*.py"):
            if "faust_edge" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if subclass.match(code) or (
                    private.search(code)
                    and "super()._" not in code
                    and not any(o in code for o in own)
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
