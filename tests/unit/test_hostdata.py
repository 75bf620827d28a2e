"""Host data: inventory keys, pins from versions.yaml, and the VM-wide keys roles read."""

import pytest

from corral.config import load_inventory
from corral.errors import ConfigError
from corral.hostdata import host_data, load_versions, pinned


def _vm(tmp_path, text):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    path = tmp_path / "vms.yaml"
    path.write_text(text.replace("PROJECT", str(project)))
    return next(iter(load_inventory(path).vms.values()))


def test_shipped_versions_pin_every_download():
    versions = load_versions()
    assert len(versions["gh"]["key_fingerprint"]) == 40
    assert len(versions["go"]["sha256"]["amd64"]) == 64
    assert len(versions["rust"]["rustup_sha256"]["arm64"]) == 64
    assert versions["opencode"]["version"] and versions["python"]["uv_version"]


def test_unset_keys_take_the_pinned_value(tmp_path):
    vm = _vm(tmp_path, "vms: {agent: {project: PROJECT}}\n")
    data = host_data(vm)
    versions = load_versions()
    assert data["go_version"] == versions["go"]["version"]
    assert data["gh_key_fingerprint"] == versions["gh"]["key_fingerprint"]
    assert data["opencode_release_sha256"] == versions["opencode"]["release_sha256"]


def test_inventory_keys_win_over_the_pins(tmp_path):
    vm = _vm(tmp_path, "vms: {agent: {project: PROJECT, go: {version: '1.0.0', "
                       "url: 'http://10.0.0.1:8080/go'}}}\n")
    data = host_data(vm)
    assert data["go_version"] == "1.0.0" and data["go_url"] == "http://10.0.0.1:8080/go"


def test_vm_wide_keys_are_there(tmp_path):
    vm = _vm(tmp_path, "vms: {agent: {project: PROJECT, toolchains: [go], "
                       "mount_point: /work/app}}\n")
    data = host_data(vm, versions={})
    assert data["agent_user"] == vm.login_user
    assert data["toolchains"] == ["go"]
    assert data["mount_point"] == "/work/app"
    assert data["update_policy"] == "security" and data["ca_certs"] == []


def test_agent_user_can_differ_from_the_login_user(tmp_path):
    vm = _vm(tmp_path, "vms: {agent: {project: PROJECT, agent_user: bot}}\n")
    data = host_data(vm, versions={})
    assert data["agent_user"] == "bot" and data["login_user"] == vm.login_user


def test_pins_flatten_like_role_data():
    assert pinned({"go": {"version": "1", "sha256": {"amd64": "x"}}}) == {
        "go_version": "1", "go_sha256": {"amd64": "x"}}


def test_refuses_a_versions_file_with_an_unknown_role(tmp_path):
    path = tmp_path / "versions.yaml"
    path.write_text("docker: {version: 1}\n")
    with pytest.raises(ConfigError, match="docker: not a role"):
        load_versions(path)


def test_names_a_missing_versions_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_versions(tmp_path / "versions.yaml")
