"""Python for agents: python3 with venv, and uv at a pinned version from the package index."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy

from deploy.roles import managed
from deploy.roles.common import SYSTEM_CA_BUNDLE, converge, probe
from deploy.roles.managed import symlink

UV_HOME = "/opt/corral/uv"


def uv_install_command(version: str) -> str:
    """Create uv's own virtualenv (once) and install uv ``version`` into it."""
    return (f"set -e; [ -x {UV_HOME}/bin/pip ] || python3 -m venv {UV_HOME}; "
            f"PIP_CERT={SYSTEM_CA_BUNDLE} PIP_DISABLE_PIP_VERSION_CHECK=1 "
            f"{UV_HOME}/bin/pip install --quiet uv=={shlex.quote(version)}")


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    return {"links": ["/usr/local/bin/uv", "/usr/local/bin/uvx"]}


@deploy("python")
def python():
    """Ensure python3, venv and uv at its pinned version."""
    data = host.data.dict()
    guest = probe()
    version = str(data["python_uv_version"])

    managed.packages(name="Ensure python3 and venv are installed",
                 packages=["python3", "python3-venv", "python3-dev"])
    converge(name=f"Ensure uv {version} is installed", commands=[uv_install_command(version)],
             done=guest["uv"] == version, state=f"uv {version}")
    for tool in ("uv", "uvx"):
        symlink(name=f"Ensure {tool} is on PATH", path=f"/usr/local/bin/{tool}",
                target=f"{UV_HOME}/bin/{tool}")
