"""Unattended security updates, limited to the distribution's security origins."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd

from deploy.roles import managed
from deploy.roles.common import RoleError, probe
from deploy.roles.managed import text_file

# The systemd timers that trigger apt's daily package-list update and upgrade.
TIMERS = ["apt-daily.timer", "apt-daily-upgrade.timer"]
AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
# Sorts after the package's own 50unattended-upgrades, so its #clear wins.
ORIGINS_CONF = "/etc/apt/apt.conf.d/52corral-unattended-upgrades"


def origins(distro_id: str, codename: str, policy: str = "security") -> list[str]:
    """Origins-Pattern entries for unattended-upgrades on ``distro_id`` ``codename``.

    + distro_id: ``debian`` or ``ubuntu`` (the ``ID`` of /etc/os-release)
    + codename: ``bookworm``, ``trixie``, ``noble``, ...
    + policy: ``security`` (default) or ``all`` to add the regular updates

    >>> origins("debian", "trixie")
    ['origin=Debian,codename=trixie-security,label=Debian-Security']
    """
    if distro_id == "debian":
        found = [f"origin=Debian,codename={codename}-security,label=Debian-Security"]
        if policy == "all":
            found += [f"origin=Debian,codename={codename},label=Debian",
                      f"origin=Debian,codename={codename}-updates,label=Debian"]
        return found
    if distro_id == "ubuntu":
        found = [f"origin=Ubuntu,archive={codename}-security",
                 f"origin=UbuntuESMApps,archive={codename}-apps-security",
                 f"origin=UbuntuESM,archive={codename}-infra-security"]
        if policy == "all":
            found += [f"origin=Ubuntu,archive={codename}",
                      f"origin=Ubuntu,archive={codename}-updates"]
        return found
    raise RoleError(f"{distro_id}: not Debian or Ubuntu; corral's roles support only those")


def origins_config(patterns: list[str], reboot_time: str = "") -> str:
    """The apt.conf file that replaces the package's origins with ``patterns``."""
    lines = ["// Managed by corral (deploy/roles/security.py): security origins only.",
             "#clear Unattended-Upgrade::Allowed-Origins;",
             "#clear Unattended-Upgrade::Origins-Pattern;",
             "Unattended-Upgrade::Origins-Pattern {"]
    lines += [f'    "{pattern}";' for pattern in patterns]
    lines.append("};")
    if reboot_time:
        lines += ['Unattended-Upgrade::Automatic-Reboot "true";',
                  f'Unattended-Upgrade::Automatic-Reboot-Time "{reboot_time}";']
    else:
        lines.append('Unattended-Upgrade::Automatic-Reboot "false";')
    return "\n".join(lines) + "\n"


AUTO_UPGRADES_CONFIG = (
    "// Managed by corral (deploy/roles/security.py).\n"
    'APT::Periodic::Update-Package-Lists "1";\n'
    'APT::Periodic::Unattended-Upgrade "1";\n'
)


def probed_paths(data: dict) -> dict[str, list[str]]:
    """The paths this role manages, for the probe."""
    return {"files": [AUTO_UPGRADES, ORIGINS_CONF]}


@deploy("security")
def security():
    """Ensure unattended-upgrades runs daily with the security origins only."""
    data = host.data.dict()
    guest = probe()

    managed.packages(name="Ensure unattended-upgrades is installed",
                 packages=["unattended-upgrades"])

    # Enable the daily run, then limit it to the security origins of this distribution.
    text_file(name="Ensure unattended-upgrades runs daily", path=AUTO_UPGRADES,
              content=AUTO_UPGRADES_CONFIG)
    patterns = origins(guest["distro_id"], guest["distro_codename"],
                       data.get("update_policy", "security"))
    text_file(name="Ensure unattended-upgrades takes only security updates", path=ORIGINS_CONF,
              content=origins_config(patterns, data.get("security_reboot_time") or ""))

    # The timers that run apt's daily update and unattended-upgrade: on, now and at boot.
    for timer in TIMERS:
        systemd.service(name=f"Ensure {timer} is enabled and running", service=timer,
                        running=True, enabled=True)
