"""The packages an agent's shell needs, non-interactive apt, and the CAs it must trust."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from deploy.roles import managed
from deploy.roles.common import converge, probe
from deploy.roles.managed import file_matches, symlink, text_file

# Packages every agent VM gets; base_extra_packages adds to them.
BASE_PACKAGES = [
    "bash-completion", "build-essential", "ca-certificates", "curl", "fd-find", "file",
    "git", "gnupg", "jq", "less", "make", "openssh-client", "pkg-config", "procps",
    "python3", "ripgrep", "sudo", "unzip", "xz-utils", "zip",
]
# Seconds a cached package list stays fresh before the next run updates it.
APT_CACHE_TIME = 3600

APT_CONF = "/etc/apt/apt.conf.d/90corral"
NEEDRESTART_CONF = "/etc/needrestart/conf.d/90-corral.conf"
CA_DIR = "/usr/local/share/ca-certificates"
FD_LINK = "/usr/local/bin/fd"
APT_STAMP = "/var/lib/apt/periodic/update-success-stamp"


def apt_config(lock_timeout: int) -> str:
    """corral's apt settings: wait for the dpkg lock, never ask, keep changed configs."""
    return (
        "// Managed by corral (deploy/roles/base.py).\n"
        f'DPkg::Lock::Timeout "{lock_timeout}";\n'
        'APT::Get::Assume-Yes "true";\n'
        'Dpkg::Options { "--force-confdef"; "--force-confold"; };\n'
    )


def needrestart_config() -> str:
    """needrestart in automatic mode: restart services without asking."""
    return "# Managed by corral (deploy/roles/base.py).\n$nrconf{restart} = 'a';\n"


def packages(extra: list[str]) -> list[str]:
    """The base packages plus ``base_extra_packages``, each once, in a stable order."""
    return sorted(set(BASE_PACKAGES) | set(extra))


def ca_cert_name(path: str) -> str:
    """The name a host CA file gets in the guest (update-ca-certificates wants .crt)."""
    return "corral-" + Path(path).stem + ".crt"


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    certs = [f"{CA_DIR}/{ca_cert_name(c)}" for c in data.get("ca_certs") or []]
    return {"files": [APT_CONF, NEEDRESTART_CONF, *certs], "links": [FD_LINK]}


@deploy("base")
def base():
    """Ensure apt never asks, the listed CAs are trusted and the base packages are there."""
    data = host.data.dict()
    guest = probe()

    # The agent may run as its own user, without sudo: create it when it is missing.
    if not guest["agent_home"]:
        user = data["agent_user"]
        server.user(name=f"Ensure the agent's user {user} exists", user=user,
                    home=f"/home/{user}", shell="/bin/bash", create_home=True)
        guest["agent_home"] = f"/home/{user}"

    # Make apt wait for a busy dpkg lock and never stop to ask.
    text_file(name="Ensure apt waits for the dpkg lock and never asks", path=APT_CONF,
              content=apt_config(data.get("base_apt_lock_timeout", 300)))
    if guest["needrestart"]:
        text_file(name="Ensure needrestart restarts services without asking",
                  path=NEEDRESTART_CONF, content=needrestart_config())

    # Trust the CAs the inventory lists (e.g. a TLS-inspecting proxy) before any download.
    certs = {f"{CA_DIR}/{ca_cert_name(c)}": Path(c).read_text() for c in data.get("ca_certs") or []}
    for dest, content in certs.items():
        text_file(name=f"Ensure CA {Path(dest).name} is trusted", path=dest, content=content)
    if certs:
        converge(name="Ensure the CA bundle includes them", commands=["update-ca-certificates"],
                 done=all(file_matches(guest, dest, content) for dest, content in certs.items()),
                 state="CA bundle")

    # Refresh the package lists when they are older than an hour, then install.
    age = guest["apt_age"]
    converge(name="Ensure the package lists are fresh",
             commands=["apt-get update",
                       f"mkdir -p {Path(APT_STAMP).parent} && touch {APT_STAMP}"],
             done=age.isdigit() and int(age) < APT_CACHE_TIME, state="package lists fresh")
    managed.packages(name="Ensure the base packages are installed",
                 packages=packages(data.get("base_extra_packages") or []))

    # Debian names fd's binary fdfind; agents call it fd.
    symlink(name="Ensure fd is on PATH as fd", path=FD_LINK, target="/usr/bin/fdfind")
