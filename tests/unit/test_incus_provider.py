"""The Incus provider's pure parts: ssh.config, known_hosts, and reading `incus list`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import paramiko
import pytest

from corral.errors import ProviderError
from corral.providers import incus
from corral.providers.base import BROKEN, RUNNING, STOPPED
from corral.providers.incus import IncusProvider


def _entry(name: str, status: str = "Running", managed: bool = True) -> dict:
    config = {"image.os": "debian"}
    if managed:
        config[incus.MARK] = "true"
    return {"name": name, "status": status, "type": "container", "config": config}


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "state"


def test_ssh_config_has_lima_shape_with_strict_host_key_checking(tmp_path):
    text = incus.ssh_config_text("agent", "10.77.0.5", "corral", tmp_path / "id_ed25519",
                                 tmp_path / "known_hosts")

    lines = [line.strip() for line in text.splitlines()]
    assert "Host incus-agent" in lines
    assert "HostName 10.77.0.5" in lines
    assert "User corral" in lines
    assert f'IdentityFile "{tmp_path / "id_ed25519"}"' in lines
    assert f'UserKnownHostsFile "{tmp_path / "known_hosts"}"' in lines
    assert "StrictHostKeyChecking yes" in lines
    assert "IdentitiesOnly yes" in lines
    assert "ForwardAgent no" in lines


def test_ssh_config_is_read_the_same_way_by_paramiko(tmp_path):
    text = incus.ssh_config_text("agent", "10.77.0.5", "alice", tmp_path / "key",
                                 tmp_path / "known_hosts")

    found = paramiko.SSHConfig.from_text(text).lookup("incus-agent")

    assert found["hostname"] == "10.77.0.5"
    assert found["user"] == "alice"
    assert found["identityfile"] == [str(tmp_path / "key")]
    assert found["stricthostkeychecking"] == "yes"
    assert found["userknownhostsfile"] == str(tmp_path / "known_hosts")


def test_ssh_config_is_accepted_by_openssh(tmp_path):
    config = tmp_path / "ssh.config"
    config.write_text(incus.ssh_config_text("agent", "10.77.0.5", "alice", tmp_path / "key",
                                            tmp_path / "known_hosts"))

    shown = subprocess.run(["ssh", "-G", "-F", str(config), "incus-agent"],
                           capture_output=True, text=True, check=True).stdout

    assert "hostname 10.77.0.5" in shown.splitlines()
    assert "stricthostkeychecking true" in shown.splitlines()
    assert "forwardagent no" in shown.splitlines()


def test_known_hosts_lists_every_host_key_under_alias_and_address():
    keys = ("ssh-ed25519 AAAAC3Nza root@agent\n"
            "ecdsa-sha2-nistp256 AAAAE2Vj root@agent\n\n")

    text = incus.known_hosts_text("agent", "10.77.0.5", keys)

    assert text.splitlines() == [
        "incus-agent,10.77.0.5 ssh-ed25519 AAAAC3Nza",
        "incus-agent,10.77.0.5 ecdsa-sha2-nistp256 AAAAE2Vj",
    ]


def test_parse_instances_keeps_only_containers_corral_marked(state):
    text = json.dumps([_entry("agent"), _entry("theirs", managed=False),
                       _entry("old", status="Stopped")])

    machines, foreign = incus.parse_instances(text)

    assert [(m.name, m.status) for m in machines] == [("agent", RUNNING), ("old", STOPPED)]
    assert foreign == {"theirs"}
    assert machines[0].ssh_host == "incus-agent"


def test_parse_instances_reports_an_unknown_status_as_broken(state):
    machines, _ = incus.parse_instances(json.dumps([_entry("agent", status="Exploded")]))

    assert machines[0].status == BROKEN


def test_parse_instances_gives_the_ssh_config_once_it_is_written(state):
    before, _ = incus.parse_instances(json.dumps([_entry("agent")]))
    folder = state / "incus" / "agent"
    folder.mkdir(parents=True)
    (folder / "ssh.config").write_text("Host incus-agent\n")

    after, _ = incus.parse_instances(json.dumps([_entry("agent")]))

    assert before[0].ssh_config is None
    assert after[0].ssh_config == folder / "ssh.config"


def test_ipv4_address_takes_the_global_inet_address_of_eth0():
    state = {"network": {
        "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]},
        "eth0": {"addresses": [
            {"family": "inet6", "address": "fe80::1", "scope": "link"},
            {"family": "inet", "address": "10.77.0.9", "scope": "global"},
        ]},
    }}

    assert incus.ipv4_address(state) == "10.77.0.9"
    assert incus.ipv4_address({"network": {"eth0": {"addresses": []}}}) is None
    assert incus.ipv4_address({"network": None}) is None


@pytest.mark.parametrize(("owner", "expected"), [(0, 1000), (33, 1000), (1000, 1000),
                                                 (1234, 1234)])
def test_guest_uid_is_the_project_owner_unless_a_system_user(owner, expected):
    assert incus.guest_uid(owner) == expected


def test_corral_files_live_in_the_state_folder(state):
    provider = IncusProvider()

    assert provider.ssh_config("agent") == state / "incus" / "agent" / "ssh.config"
    assert provider.ssh_host("agent") == "incus-agent"
    assert incus.key_path() == state.parent / "config" / "ssh" / "id_ed25519"


def _fake_incus(tmp_path: Path, monkeypatch, script: str) -> None:
    """Put an ``incus`` stand-in on PATH that runs ``script`` (sh) with the arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "incus"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_a_container_corral_did_not_create_is_refused(tmp_path, monkeypatch, state):
    listing = json.dumps([_entry("agent", managed=False)])
    _fake_incus(tmp_path, monkeypatch, f"echo '{listing}'\n")

    with pytest.raises(ProviderError, match="corral did not create it"):
        IncusProvider().machine("agent")


def test_a_daemon_that_does_not_answer_gives_the_host_setup_hint(tmp_path, monkeypatch, state):
    _fake_incus(tmp_path, monkeypatch,
                "echo \"Error: The incus daemon doesn't appear to be started "
                "(socket path: /nowhere)\" >&2\nexit 1\n")

    with pytest.raises(ProviderError, match="does not answer.*host.setup --provider incus"):
        IncusProvider().machines()


def test_sharing_the_project_is_refused_without_idmapped_mounts(tmp_path, monkeypatch, state):
    from corral.config import load_inventory

    (tmp_path / "project").mkdir()
    (tmp_path / "vms.yaml").write_text("vms: {agent: {provider: incus, project: project}}\n")
    vm = load_inventory(tmp_path / "vms.yaml").vms["agent"]
    server = json.dumps({"environment": {"kernel_features": {"idmapped_mounts": "false"}}})
    _fake_incus(tmp_path, monkeypatch, f"""echo "$*" >> {tmp_path}/calls
case "$*" in
  "list --format json") echo '[]' ;;
  "image alias list --format json") echo '[{{"name": "corral/debian-13"}}]' ;;
  "query /1.0") echo '{server}' ;;
  *) exit 1 ;;
esac
""")

    with pytest.raises(ProviderError, match="no idmapped mounts.*mount: none"):
        IncusProvider().create(vm)
    assert not any(c.startswith("init") for c in (tmp_path / "calls").read_text().splitlines())
