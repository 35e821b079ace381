"""The versions of faust-streaming, mode-streaming and aiokafka the hooks in this package were
tested on, and the start-up check that the installed ones are among them.

The hooks override and read private members (the package docstring lists them); a release may
rename or change any of them without notice, and the failure would come at the first batch,
the first rebalance or the first gap — or not at all, as records silently skipped. So the worker
refuses to start on a version not listed here. To upgrade: `make upgrade PKG=...`, run the
pipeline and time-model tests and the SIGKILL/takeover loops (docs/reliability.md), then add
the version here (a unit test keeps this list in step with uv.lock).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version

# distribution → versions the hooks were tested on (the locked one must be among them)
TESTED_VERSIONS: Mapping[str, tuple[str, ...]] = {
    "faust-streaming": ("0.15.3",),
    "mode-streaming": ("0.7.1",),
    "aiokafka": ("0.12.0",),
}


class UntestedVersionError(RuntimeError):
    """An installed faust-streaming, mode-streaming or aiokafka the hooks were not tested on."""


def _installed(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def check_versions(installed: Callable[[str], str | None] = _installed) -> dict[str, str]:
    """The installed version of each hooked distribution; `UntestedVersionError` naming every
    one that is missing or not a tested version, with the versions that were tested."""
    found: dict[str, str] = {}
    wrong: list[str] = []
    for distribution, tested in TESTED_VERSIONS.items():
        have = installed(distribution)
        if have is None or have not in tested:
            wrong.append(
                f"{distribution} {have or '(not installed)'} is installed, "
                f"the worker's Faust/aiokafka hooks (streams/faust_edge) were tested on "
                f"{', '.join(tested)}"
            )
        else:
            found[distribution] = have
    if wrong:
        raise UntestedVersionError(
            "; ".join(wrong) + ". Install the locked versions (`uv sync --locked`), or test the "
            "hooks on the new version and add it to streams/faust_edge/versions.py"
        )
    return found
