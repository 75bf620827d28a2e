"""vm.update on a real container: a stale package and a stale OpenCode brought current."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

# Packages known to have had a newer version in Debian 13's security (or updates) suite
# than in its release suite, tried in order; the first one that still has is used.
# zstd: a compression CLI agents use, whose fix (1.5.7+dfsg-1+deb13u1) came through
# trixie-security, with dependencies that every corral VM already has. The others are
# small and dependency-free, for when a point release folds zstd's fix into trixie.
CANDIDATES = ("zstd", "krb5-locales", "xmltooling-schemas")

pytestmark = pytest.mark.integration

RELEASED = "/run/corral-test-released"
HOLD_LOCK = f"""\
import fcntl, time
lock = open("/var/lib/apt/lists/lock", "w")
fcntl.lockf(lock, fcntl.LOCK_EX)
time.sleep(30)
open("{RELEASED}", "w").close()
"""


def guest(vm, ssh_run, command: str, check: bool = True) -> str:
    return ssh_run(vm.ssh_config, vm.ssh_host, command, check=check).stdout


def stale_package(vm, ssh_run) -> tuple[str, str, str, str]:
    """A package whose release-suite version is older than its security/updates one.

    Returns name, old version, new version and the suite the new one comes from.
    """
    guest(vm, ssh_run, "sudo -n apt-get -q update >/dev/null")
    codename = guest(vm, ssh_run, ". /etc/os-release; echo $VERSION_CODENAME").strip()
    for name in CANDIDATES:
        # Lines: "zstd | 1.5.7+dfsg-1+deb13u1 | http://... trixie-security/main amd64 Packages"
        rows = [[part.strip() for part in line.split("|")]
                for line in guest(vm, ssh_run, f"apt-cache madison {name}").splitlines()]
        suites = {row[1]: row[2].split()[1].split("/")[0] for row in rows if len(row) == 3}
        old = [v for v, suite in suites.items() if suite == codename]
        new = [v for v, suite in suites.items()
               if suite in (f"{codename}-security", f"{codename}-updates")]
        if not old or not new:
            continue
        newer = guest(vm, ssh_run, f"dpkg --compare-versions {old[0]} lt {new[0]} && echo yes",
                      check=False).strip()
        if newer == "yes":
            return name, old[0], new[0], suites[new[0]]
    pytest.fail(f"none of {', '.join(CANDIDATES)} has a newer version in {codename}-security "
                f"or -updates any more: add a package that has to CANDIDATES")


def older_opencode(vm, ssh_run) -> tuple[str, str]:
    """The release of opencode-ai before npm's ``latest``, and ``latest`` itself."""
    npm = "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm"
    latest = guest(vm, ssh_run, f"{npm} view opencode-ai@latest version").strip()
    versions = json.loads(guest(vm, ssh_run, f"{npm} view opencode-ai versions --json"))
    stable = [v for v in versions if re.fullmatch(r"\d+\.\d+\.\d+", v)]
    return stable[stable.index(latest) - 1], latest


def run_update(run_invoke, vm, env) -> tuple[int, dict]:
    result = run_invoke("vm.update", "--name", vm.name, "--json", env=env, check=False)
    assert result.returncode in (0, 3), result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def tracking_env(provisioned_vm, tmp_path):
    """The provisioned VM's environment, its inventory changed to track OpenCode's latest."""
    document = yaml.safe_load(provisioned_vm.inventory.read_text())
    entry = document["vms"][provisioned_vm.name]
    entry["opencode"] = {**(entry.get("opencode") or {}), "track": "latest"}
    inventory = tmp_path / "tracking.yaml"
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))
    return {**provisioned_vm.env, "CORRAL_INVENTORY": str(inventory)}, document


def test_update_brings_a_stale_package_and_opencode_current_then_has_nothing_to_do(
        provisioned_vm, tracking_env, run_invoke, ssh_run):
    vm = provisioned_vm
    env, document = tracking_env
    package, old, new, suite = stale_package(vm, ssh_run)
    if suite.endswith("-updates"):
        # Only a security update is applied under the default policy.
        document["vms"][vm.name]["update_policy"] = "all"
        Path(env["CORRAL_INVENTORY"]).write_text(yaml.safe_dump(document, sort_keys=False))
    opencode_old, opencode_latest = older_opencode(vm, ssh_run)

    # Make both stale: the package from the release suite, OpenCode one release back.
    guest(vm, ssh_run, f"sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                       f"--allow-downgrades {package}={old}")
    guest(vm, ssh_run, "sudo -n env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt "
                       "npm install --global --prefix /usr/local --no-audit --no-fund "
                       f"opencode-ai@{opencode_old}")
    try:
        code, report = run_update(run_invoke, vm, env)

        entry = report["vms"][0]
        assert entry["name"] == vm.name and entry["status"] == "updated", entry
        changes = {c["name"]: c for c in entry["upgraded"]}
        assert changes[package]["old"] == old
        assert changes[package]["new"] == new
        assert changes[package]["reason"] == ("security" if suite.endswith("-security")
                                              else "updates")
        assert changes["opencode-ai"] == {"name": "opencode-ai", "kind": "tool",
                                          "old": opencode_old, "new": opencode_latest,
                                          "reason": "latest"}
        assert code == report["exit_code"] == (3 if entry["reboot_required"] else 0)
        installed = guest(vm, ssh_run, f"dpkg-query -W -f='${{Version}}' {package}")
        assert installed == new

        # A second run finds everything current.
        code, again = run_update(run_invoke, vm, env)

        entry = again["vms"][0]
        assert entry["status"] == "current", entry
        assert entry["upgraded"] == [] and entry["installed"] == [] and entry["removed"] == []
        assert {"name": "opencode-ai", "version": opencode_latest,
                "reason": "latest"} in entry["current"]
    finally:
        # Leave OpenCode at its pin for the suites that share this VM.
        run_invoke("vm.provision", "--name", vm.name, "--roles", "opencode",
                   env=vm.env, check=False)


def test_update_waits_for_an_apt_that_holds_the_package_lists(provisioned_vm, run_invoke,
                                                               ssh_run):
    vm = provisioned_vm
    # An agent's apt-get update, stood in for by a process that holds apt's lists lock
    # for 30 seconds, then notes that it let go.
    guest(vm, ssh_run, f"sudo -n rm -f {RELEASED}; sudo -n tee /run/corral-hold-lock.py "
                       f">/dev/null <<'EOF'\n{HOLD_LOCK}EOF")
    guest(vm, ssh_run, "sudo -n sh -c 'nohup python3 /run/corral-hold-lock.py "
                       ">/dev/null 2>&1 &'")
    time.sleep(1)
    busy = guest(vm, ssh_run, "sudo -n apt-get -q update 2>&1", check=False)
    assert "Could not get lock /var/lib/apt/lists/lock" in busy

    code, report = run_update(run_invoke, vm, vm.env)

    assert report["vms"][0]["status"] in ("current", "updated"), report
    assert report["vms"][0]["failed_step"] is None
    # vm.update could only finish once the lock was free: it waited rather than failed.
    assert guest(vm, ssh_run, f"test -e {RELEASED} && echo released",
                 check=False).strip() == "released"
