"""Node.js and npm: the distribution's packages, or NodeSource's repository for one major."""

from __future__ import annotations

from urllib.parse import urlparse

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt

from deploy.roles import managed
from deploy.roles.common import KEYRINGS, apt_source, pinned_apt_repository, probe
from deploy.roles.managed import text_file

KEYRING = f"{KEYRINGS}/nodesource.gpg"
LIST_FILE = "/etc/apt/sources.list.d/nodesource.list"
PIN_FILE = "/etc/apt/preferences.d/nodesource"


def repository_url(template: str, major: int) -> str:
    """NodeSource's repository for one major version.

    >>> repository_url("https://deb.example/node_{major}.x", 22)
    'https://deb.example/node_22.x'
    """
    return template.replace("{major}", str(major))


def pin_preferences(url: str) -> str:
    """apt preferences that make NodeSource's nodejs win over the distribution's."""
    return (f"# Managed by corral (deploy/roles/nodejs.py).\nPackage: nodejs\n"
            f"Pin: origin {urlparse(url).hostname}\nPin-Priority: 600\n")


def packages(source: str) -> list[str]:
    """The packages that bring node and npm (NodeSource's nodejs carries npm)."""
    return ["nodejs"] if source == "nodesource" else ["nodejs", "npm"]


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    return {"files": [LIST_FILE, PIN_FILE]}


@deploy("nodejs")
def nodejs():
    """Ensure Node.js and npm are installed from the chosen source."""
    data = host.data.dict()
    source = data.get("nodejs_source", "distro")
    if source == "nodesource":
        guest = probe()
        url = repository_url(data["nodejs_nodesource_url"], data["nodejs_major"])

        # NodeSource's repository for the pinned major, its key checked by fingerprint.
        changes = pinned_apt_repository(
            "NodeSource", key_url=data["nodejs_nodesource_key_url"],
            fingerprint=data["nodejs_nodesource_key_fingerprint"], keyring=KEYRING,
            list_file=LIST_FILE, present_keys=guest["keyring_nodesource"],
            source=apt_source(url, "nodistro", "main", KEYRING, guest["arch"]),
        )
        changes.append(text_file(name="Ensure NodeSource's nodejs is preferred", path=PIN_FILE,
                                 content=pin_preferences(url)))
        apt.update(name="Update the package lists for NodeSource",
                   _if=lambda: any(op.did_change() for op in changes))

    managed.packages(name="Ensure Node.js and npm are installed", packages=packages(source))
