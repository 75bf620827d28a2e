"""Provisioning a real Incus container: converge, converge again with no change, use it."""

import re

import pytest

from tests.fixtures.incus import corral_env, run_invoke, ssh_run, write_inventory
from tests.fixtures.provisioned import FAKE_GH_TOKEN, FAKE_MODEL_KEY

pytestmark = pytest.mark.integration


def _summary_row(stdout: str, vm: str) -> list[str]:
    rows = [line.split() for line in stdout.splitlines() if line.split()[:1] == [vm]]
    assert rows, f"no summary row for {vm} in:\n{stdout[-2000:]}"
    return rows[-1]


def test_second_provision_changes_nothing(provisioned_vm):
    result = run_invoke("vm.provision", "--name", provisioned_vm.name, "--check",
                        env=provisioned_vm.env)
    name, changed, unchanged, failed = _summary_row(result.stdout, provisioned_vm.name)
    assert (changed, failed) == ("0", "0"), result.stdout[-3000:]
    assert int(unchanged) > 20
    assert "second run changed nothing" in result.stdout


@pytest.mark.parametrize("command, expected", [
    ("gh --version", r"^gh version \d"),
    ("opencode --version", r"\d+\.\d+\.\d+"),
    ("uv --version", r"^uv \d"),
    ("node --version", r"^v\d+"),
    ("go version", r"^go version go\d"),
    ("cargo --version", r"^cargo \d"),
])
def test_tools_answer_in_a_non_interactive_shell(provisioned_vm, command, expected):
    result = ssh_run(provisioned_vm.ssh_config, provisioned_vm.ssh_host, command)
    assert re.search(expected, result.stdout.strip(), re.MULTILINE), result.stdout


def test_opencode_is_the_pinned_version(provisioned_vm):
    from corral.hostdata import load_versions

    result = ssh_run(provisioned_vm.ssh_config, provisioned_vm.ssh_host, "opencode --version")
    assert result.stdout.strip() == str(load_versions()["opencode"]["version"])


def test_secrets_reach_the_agent_privately(provisioned_vm):
    result = ssh_run(provisioned_vm.ssh_config, provisioned_vm.ssh_host,
                     "stat -c '%a %U' ~/.config/corral/secrets.env; "
                     "test \"$GH_TOKEN\" = " + FAKE_GH_TOKEN + " && echo token-set")
    mode_owner, marker = result.stdout.split("\n")[:2]
    assert mode_owner.split()[0] == "600"
    assert marker == "token-set"


def test_provisioning_output_never_shows_a_secret(provisioned_vm):
    result = run_invoke("vm.provision", "--name", provisioned_vm.name, "--roles",
                        "credentials", env={**provisioned_vm.env, "CORRAL_DEBUG": "1"})
    combined = result.stdout + result.stderr
    assert FAKE_GH_TOKEN not in combined and FAKE_MODEL_KEY not in combined


def test_shell_blocks_are_not_repeated(provisioned_vm):
    result = ssh_run(provisioned_vm.ssh_config, provisioned_vm.ssh_host,
                     "grep -c 'BEGIN CORRAL MANAGED BLOCK' ~/.bashrc")
    assert result.stdout.strip() == "1"


def test_unattended_upgrades_take_only_security_updates(provisioned_vm):
    result = ssh_run(provisioned_vm.ssh_config, provisioned_vm.ssh_host,
                     "apt-config dump Unattended-Upgrade::Origins-Pattern "
                     "Unattended-Upgrade::Allowed-Origins")
    origins = [line for line in result.stdout.splitlines() if "origin=" in line]
    assert origins and all("-security" in line for line in origins), result.stdout


def test_a_vm_that_does_not_exist_gets_one_clear_line(incus, tmp_path):
    inventory = write_inventory(tmp_path, "roles-absent")
    result = run_invoke("vm.provision", env=corral_env(tmp_path, inventory), check=False)
    assert result.returncode == 1
    assert "roles-absent: no such VM" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_a_classic_token_is_refused_before_anything_runs(provisioned_vm):
    env = {**provisioned_vm.env, "GH_TOKEN": "ghp_" + "a" * 36}
    result = run_invoke("vm.provision", "--name", provisioned_vm.name, env=env, check=False)
    assert result.returncode == 1
    assert "classic token" in result.stderr and "ghp_aaaa" not in result.stderr
    assert "Starting operation" not in result.stdout
