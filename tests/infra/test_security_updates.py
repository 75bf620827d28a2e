"""Security updates: unattended-upgrades installed, scheduled, and limited to security origins."""

from __future__ import annotations

import pytest

from deploy.roles.security import TIMERS, origins


def apt_config(host, key: str) -> dict[str, list[str]]:
    """``apt-config dump KEY`` as ``{name: [values]}`` (lists for ``Name::`` entries)."""
    dump = host.run("apt-config dump %s", key)
    assert dump.rc == 0, f"apt-config failed: {dump.stderr.strip()}"
    found: dict[str, list[str]] = {}
    for line in dump.stdout.splitlines():
        name, _, value = line.partition(" ")
        value = value.strip().removesuffix(";").strip('"')
        if name.endswith("::"):
            found.setdefault(name.removesuffix("::"), []).append(value)
        else:
            found.setdefault(name, [])
            if value:
                found[name].append(value)
    return found


def os_release(host) -> dict[str, str]:
    values = {}
    for line in host.file("/etc/os-release").content_string.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value.strip().strip('"')
    return values


def test_unattended_upgrades_is_installed(host):
    assert host.package("unattended-upgrades").is_installed


@pytest.mark.parametrize("timer", TIMERS)
def test_apt_timer_is_enabled_and_active(host, timer):
    # As root: without D-Bus (minimal images) only root reaches systemd.
    with host.sudo():
        enabled = host.run("systemctl is-enabled %s", timer).stdout.strip()
        active = host.run("systemctl is-active %s", timer).stdout.strip()

    assert enabled == "enabled", f"{timer} is {enabled or 'unknown'}, not enabled"
    assert active == "active", f"{timer} is {active or 'unknown'}, not active"


@pytest.mark.parametrize("setting", ["Update-Package-Lists", "Unattended-Upgrade"])
def test_apt_periodic_setting_runs_daily(host, setting):
    key = f"APT::Periodic::{setting}"

    values = apt_config(host, key).get(key, [])

    assert values == ["1"], f"{key} is {values[-1] if values else 'unset'}, expected 1 (daily)"


def test_updates_come_only_from_the_distributions_security_archive(host, data):
    release = os_release(host)
    policy = data["update_policy"]
    wanted = origins(release["ID"], release.get("VERSION_CODENAME", ""), policy)

    config = apt_config(host, "Unattended-Upgrade")
    patterns = config.get("Unattended-Upgrade::Origins-Pattern", [])
    allowed = config.get("Unattended-Upgrade::Allowed-Origins", [])

    assert not allowed, f"Allowed-Origins adds origins beyond the pattern: {allowed}"
    assert sorted(patterns) == sorted(wanted), f"origins are {patterns}, expected {wanted}"
    if policy == "security":
        not_security = [p for p in patterns if "security" not in p.lower()]
        assert not not_security, f"origins outside the security archive: {not_security}"
