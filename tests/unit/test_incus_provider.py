"""The Incus provider's pure parts: ssh.config, known_hosts, and reading `incus list`."""

from __future__ import annotations

import json
import subprocess

import paramiko
import pytest

from corral.providers import incus
from corral.providers.base import BROKEN, RUNNING, STOPPED
from corral.providers.incus import IncusProvider, has_idmapped_mounts


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


def test_idmapped_mounts_are_read_from_the_daemons_kernel_features():
    def server(value):
        return {"environment": {"kernel_features": {"idmapped_mounts": value}}}

    assert has_idmapped_mounts(server("true"))
    assert not has_idmapped_mounts(server("false"))
    assert not has_idmapped_mounts({"environment": {}})
