"""The GitHub CLI: from GitHub's apt repository (keyring pinned by fingerprint) or the distro."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt

from deploy.roles import managed
from deploy.roles.common import KEYRINGS, apt_source, pinned_apt_repository, probe

KEYRING = f"{KEYRINGS}/githubcli-archive-keyring.gpg"
LIST_FILE = "/etc/apt/sources.list.d/github-cli.list"


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    return {"files": [LIST_FILE]}


@deploy("gh")
def gh():
    """Ensure the GitHub CLI is installed from the chosen source."""
    data = host.data.dict()
    if data.get("gh_source", "github") == "github":
        guest = probe()

        # GitHub's repository, trusted through a keyring holding only the pinned key.
        changes = pinned_apt_repository(
            "GitHub CLI", key_url=data["gh_key_url"], fingerprint=data["gh_key_fingerprint"],
            keyring=KEYRING, list_file=LIST_FILE, present_keys=guest["keyring_gh"],
            source=apt_source(data["gh_repo_url"], "stable", "main", KEYRING, guest["arch"]),
        )
        apt.update(name="Update the package lists for the GitHub CLI repository",
                   _if=lambda: any(op.did_change() for op in changes))

    managed.packages(name="Ensure the GitHub CLI is installed", packages=["gh"])
