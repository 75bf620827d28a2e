"""vm.verify on a real Incus container: passes when provisioned, names each thing broken.

The sequence follows Molecule's: verify the provisioned container, break it in four ways,
verify again (it must fail and name exactly the checks concerned), provision to repair,
verify again.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from corral.verify import parse_junit
from tests.fixtures.incus import run_invoke, ssh_run

pytestmark = pytest.mark.integration

GH_AUTH = "credentials::test_gh_auth_status_succeeds_with_the_provisioned_token"

# What each way of breaking the container must make fail, and nothing else.
BROKEN = {
    "secrets file made 0644": {"credentials::test_secrets_file_is_private_to_the_agent"},
    "gh removed": {"tools::test_gh_runs_for_the_agent",
                   "tools::test_gh_comes_from_the_configured_source"},
    "apt-daily-upgrade.timer disabled": {
        "security_updates::test_apt_timer_is_enabled_and_active[apt-daily-upgrade.timer]"},
    "a folder of the host's home mounted": {
        "isolation::test_only_the_project_folder_is_shared_with_the_vm",
        "isolation::test_no_part_of_the_host_home_is_mounted"},
}
EXTRA_DEVICE = "corral-verify-extra"


def verify(vm, report: Path, env: dict | None = None):
    """``vm.verify --name VM --junit-xml REPORT``: its result and the checks it ran."""
    result = run_invoke("vm.verify", "--name", vm.name, "--junit-xml", str(report),
                        env=env or vm.env, check=False)
    assert report.exists(), f"no JUnit report:\n{result.stdout[-2000:]}\n{result.stderr}"
    return result, parse_junit(report, vm.name, f"ssh://{vm.ssh_host}")


def failed(checks) -> set[str]:
    return {c.name for c in checks.failed}


def expected_when_healthy(vm) -> set[str]:
    """The checks a healthy container still fails here: none, unless GitHub is reachable.

    The fixture's GitHub token is fake. Where the VM reaches GitHub, gh auth status rightly
    refuses it; where it does not (corral's CI), the check skips and says why.
    """
    reach = ssh_run(vm.ssh_config, vm.ssh_host,
                    "curl -sS -o /dev/null --max-time 15 https://api.github.com/", check=False)
    return {GH_AUTH} if reach.returncode == 0 else set()


@contextlib.contextmanager
def host_ssh_agent(folder: Path):
    """An SSH agent on the host, so that forwarding it would show in the guest."""
    started = subprocess.run(["ssh-agent", "-s", "-a", str(folder / "agent.sock")],
                             capture_output=True, text=True, check=True)
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", started.stdout).group(1))
    try:
        yield str(folder / "agent.sock")
    finally:
        os.kill(pid, signal.SIGTERM)


def test_verify_passes_on_a_provisioned_container(provisioned_vm, tmp_path):
    vm = provisioned_vm
    healthy = expected_when_healthy(vm)

    with host_ssh_agent(tmp_path) as agent:
        result, checks = verify(vm, tmp_path / "verify.xml", {**vm.env, "SSH_AUTH_SOCK": agent})

    assert failed(checks) == healthy, result.stdout[-3000:]
    assert result.returncode == (1 if healthy else 0), result.stderr
    if not healthy:
        assert f"✓ {vm.name}: all {checks.ran} checks passed" in result.stdout
    outcomes = {c.name: c for c in checks.checks}
    # Each suite ran, and the checks of the provisioned secrets really ran.
    assert {name.split("::")[0] for name in outcomes} == {
        "tools", "security_updates", "credentials", "isolation"}
    for name in ("credentials::test_secrets_file_is_private_to_the_agent",
                 "credentials::test_secrets_file_holds_exactly_the_hosts_secrets",
                 "credentials::test_agent_shells_get_the_hosts_secrets",
                 "isolation::test_no_ssh_agent_is_forwarded[login]"):
        assert outcomes[name].outcome == "passed", outcomes[name]
    if GH_AUTH not in healthy:
        assert outcomes[GH_AUTH].outcome == "skipped"
        assert "GitHub's API is unreachable" in outcomes[GH_AUTH].message
    # The suites never show a secret, whatever they found.
    report = (tmp_path / "verify.xml").read_text()
    for value in vm.secrets.values():
        assert value not in result.stdout + result.stderr + report


def test_verify_names_exactly_what_was_broken_and_passes_once_repaired(provisioned_vm,
                                                                       tmp_path):
    vm = provisioned_vm
    healthy = expected_when_healthy(vm)
    extra = Path.home() / f".corral-verify-{secrets.token_hex(3)}"
    extra.mkdir()
    repaired = False
    try:
        # Break the container in four ways.
        ssh_run(vm.ssh_config, vm.ssh_host, "chmod 0644 ~/.config/corral/secrets.env")
        ssh_run(vm.ssh_config, vm.ssh_host,
                "sudo DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq gh")
        ssh_run(vm.ssh_config, vm.ssh_host,
                "sudo systemctl disable --now apt-daily-upgrade.timer")
        subprocess.run(["incus", "config", "device", "add", vm.name, EXTRA_DEVICE, "disk",
                        f"source={extra}", "path=/mnt/extra", "shift=true"],
                       check=True, capture_output=True)

        result, checks = verify(vm, tmp_path / "broken.xml")

        wanted = set().union(*BROKEN.values())
        assert result.returncode == 1
        assert failed(checks) - healthy == wanted
        assert f"{vm.name}: {len(failed(checks))} check(s) failed:" in result.stderr
        for name in wanted:
            assert name in result.stderr

        # vm.provision repairs what the roles own: the file's mode, gh, the timer.
        run_invoke("vm.provision", "--name", vm.name, env=vm.env)
        repaired = True
        result, checks = verify(vm, tmp_path / "provisioned.xml")

        assert failed(checks) - healthy == BROKEN["a folder of the host's home mounted"]

        # The extra mount is not the roles' to repair (it is the provider's configuration,
        # made by hand here): remove it as its owner would, then all is well again.
        subprocess.run(["incus", "config", "device", "remove", vm.name, EXTRA_DEVICE],
                       check=True, capture_output=True)
        result, checks = verify(vm, tmp_path / "repaired.xml")

        assert failed(checks) == healthy, result.stdout[-3000:]
    finally:
        # Leave the shared container as the other tests expect it.
        subprocess.run(["incus", "config", "device", "remove", vm.name, EXTRA_DEVICE],
                       capture_output=True, check=False)
        if not repaired:
            run_invoke("vm.provision", "--name", vm.name, env=vm.env, check=False)
        extra.rmdir()


def test_verify_detects_a_forwarded_ssh_agent_and_a_private_key(provisioned_vm, tmp_path):
    vm = provisioned_vm
    healthy = expected_when_healthy(vm)
    config = vm.ssh_config.read_text()
    assert "ForwardAgent no" in config
    try:
        # What a careless set-up would do: forward the host's agent, copy a key in.
        vm.ssh_config.write_text(config.replace("ForwardAgent no", "ForwardAgent yes"))
        ssh_run(vm.ssh_config, vm.ssh_host,
                "ssh-keygen -q -t ed25519 -N '' -C copied -f ~/.ssh/id_copied")
        with host_ssh_agent(tmp_path) as agent:
            result, checks = verify(vm, tmp_path / "exposed.xml",
                                    {**vm.env, "SSH_AUTH_SOCK": agent})

        assert result.returncode == 1
        assert failed(checks) - healthy == {
            "isolation::test_no_ssh_agent_is_forwarded[non-login]",
            "isolation::test_no_ssh_agent_is_forwarded[login]",
            "isolation::test_no_private_key_is_in_the_guests_ssh_folders"}
    finally:
        vm.ssh_config.write_text(config)
        ssh_run(vm.ssh_config, vm.ssh_host, "rm -f ~/.ssh/id_copied ~/.ssh/id_copied.pub",
                check=False)


def test_verify_refuses_a_configured_vm_that_was_never_created(provisioned_vm, tmp_path):
    document = yaml.safe_load(provisioned_vm.inventory.read_text())
    document["vms"]["verify-absent"] = dict(document["vms"][provisioned_vm.name])
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(document))

    result = run_invoke("vm.verify", "--name", "verify-absent", check=False,
                        env={**provisioned_vm.env, "CORRAL_INVENTORY": str(inventory)})

    assert result.returncode == 1
    assert "verify-absent: no such VM on incus (create it" in result.stderr
    assert "Traceback" not in result.stderr
