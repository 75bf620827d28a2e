"""The tools vm.update keeps current, and where it learns their newest versions."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.update.guest import Guest, StepFailed, last_line
from corral.update.parsing import parse_npm_view


@dataclass(frozen=True)
class Tool:
    """A tool a role installs at a version vm.update keeps current."""

    name: str  # as shown in the report
    role: str  # the role that installs it
    key: str  # its version key in the role's section (``version``, ``uv_version``)
    applies: Callable[[dict[str, Any]], bool]
    # The installed version, from the roles' guest probe (None when not installed).
    installed: Callable[[dict[str, Any], str], str | None]
    # Whether ``track: latest`` can be followed (release tarballs need pinned sums).
    can_track: bool = True


def _rust_installed(facts: dict[str, Any], wanted: str) -> str | None:
    """The pinned toolchain when rustup has it, else the first one it has."""
    names = [t.split("-")[0] for t in facts.get("rust_toolchains") or []]
    return wanted if wanted in names else (names[0] if names else None)


TOOLS = (
    Tool("opencode-ai", "opencode", "version", lambda d: d.get("opencode_source") == "npm",
         lambda f, _: f.get("opencode_npm") or None),
    Tool("opencode", "opencode", "version", lambda d: d.get("opencode_source") == "release",
         lambda f, _: f.get("opencode_release") or None, can_track=False),
    Tool("uv", "python", "uv_version", lambda d: "python" in d["toolchains"],
         lambda f, _: f.get("uv") or None),
    Tool("go", "go", "version",
         lambda d: "go" in d["toolchains"] and d.get("go_source") == "official",
         lambda f, _: (f.get("go") or "").removeprefix("go") or None),
    Tool("rust", "rust", "toolchain",
         lambda d: "rust" in d["toolchains"] and d.get("rust_source") == "rustup",
         _rust_installed, can_track=False),
)


# Tools that come from a third-party apt repository: brought to the newest version there.
APT_TOOLS = (
    ("gh", lambda d: d.get("gh_source") == "github"),
    ("nodejs", lambda d: "node" in d["toolchains"] and d.get("nodejs_source") == "nodesource"),
)


def latest_npm(guest: Guest, package: str) -> str:
    """The version npm's ``latest`` tag points at, asked from inside the VM."""
    from deploy.roles.common import SYSTEM_CA_BUNDLE

    out = guest.run(f"NODE_EXTRA_CA_CERTS={SYSTEM_CA_BUNDLE} npm_config_update_notifier=false "
                    f"npm view {shlex.quote(package)}@latest version\n",
                    f"asking npm for the latest {package}", timeout=120)
    version = parse_npm_view(out)
    if not version:
        raise StepFailed(f"asking npm for the latest {package}", f"unexpected answer {out!r}")
    return version


def latest_pypi(package: str) -> str:
    """The newest release of ``package`` on the Python package index uv uses."""
    step = f"asking the package index for the latest {package}"
    try:
        result = subprocess.run(["uv", "pip", "compile", "--no-header", "--no-annotate",
                                 "--quiet", "-"], input=f"{package}\n", capture_output=True,
                                text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise StepFailed(step, str(err)) from None
    match = re.search(rf"^{re.escape(package)}==(\S+)", result.stdout, re.M)
    if result.returncode != 0 or not match:
        raise StepFailed(step, last_line(result.stderr))
    return match.group(1)


def newest_go_patch(pinned: str, releases: list[dict[str, Any]], arch: str
                    ) -> tuple[str, str]:
    """The newest stable release of the pinned Go line, and its sha256 for ``arch``.

    + pinned: the pinned version, ``1.26.7``
    + releases: go.dev/dl's ``?mode=json&include=all`` document
    + arch: ``amd64`` or ``arm64``
    """
    line = ".".join(pinned.split(".")[:2])
    best: tuple[tuple[int, ...], str, str] | None = None
    for release in releases:
        version = str(release.get("version", "")).removeprefix("go")
        if not release.get("stable") or not re.fullmatch(rf"{re.escape(line)}(\.\d+)?",
                                                         version):
            continue
        for item in release.get("files", []):
            if (item.get("os"), item.get("arch"), item.get("kind")) == ("linux", arch,
                                                                         "archive"):
                key = tuple(int(p) for p in version.split("."))
                if best is None or key > best[0]:
                    best = (key, version, item.get("sha256", ""))
    if best is None:
        raise StepFailed("finding the newest Go", f"no stable go{line}.x for linux-{arch}")
    return best[1], best[2]


def latest_go(url: str, pinned: str, arch: str) -> tuple[str, str]:
    """Ask the Go download site for the newest patch of the pinned line."""
    import urllib.request

    step = "finding the newest Go"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/?mode=json&include=all",  # noqa: S310
                                    timeout=60) as answer:
            releases = json.loads(answer.read())
    except (OSError, ValueError) as err:
        raise StepFailed(step, f"{url}: {err}") from None
    return newest_go_patch(pinned, releases, arch)

