"""vm.provision's own logic: reading pyinfra's report, the summary, the refusals."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from corral import paths, provision
from corral.config import load_inventory
from corral.errors import ConfigError, MachineNotFound

REPORT = {
    "incus-agent": {"failed": False, "ops": [
        {"name": "base | Ensure packages", "status": "changed"},
        {"name": "gh | Ensure gh", "status": "unchanged"},
    ]},
    "incus-web": {"failed": True, "ops": [
        {"name": "base | Ensure packages", "status": "changed"},
        {"name": "go | Ensure Go 1.26.7", "status": "failed",
         "error": "corral: https://go.test has sha256 abc, expected the pinned def"},
        {"name": "shell | Ensure PATH", "status": "not run", "would_change": True},
    ]},
}
ALIASES = {"incus-agent": "agent", "incus-web": "web", "incus-db": "db"}


def test_report_becomes_one_outcome_per_vm():
    agent, web, db = provision.outcomes_from_report(REPORT, ALIASES)
    assert agent.changed == ["base | Ensure packages"] and agent.unchanged == ["gh | Ensure gh"]
    assert web.failed == [("go | Ensure Go 1.26.7", REPORT["incus-web"]["ops"][1]["error"])]
    assert db.host_failed and not db.changed


def test_dry_run_counts_what_would_change():
    web = provision.outcomes_from_report(REPORT, {"incus-web": "web"}, dry=True)[0]
    assert "shell | Ensure PATH" in web.changed


def test_summary_has_one_row_per_vm():
    table = provision.summary(provision.outcomes_from_report(REPORT, ALIASES))
    lines = table.splitlines()
    assert lines[0].split() == ["vm", "changed", "unchanged", "failed"]
    assert lines[1].split() == ["agent", "1", "1", "0"]
    assert lines[2].split() == ["web", "1", "1", "1"]
    assert lines[3].split() == ["db", "0", "0", "1"]


def test_failure_lines_name_the_vm_and_the_operation():
    lines = provision.failure_lines(provision.outcomes_from_report(REPORT, ALIASES))
    assert lines[0].startswith("web: operation 'go | Ensure Go 1.26.7' failed: corral: ")
    assert lines[1] == "db: pyinfra could not run on this VM (see its output above)"


def test_a_second_run_that_changes_something_is_named():
    again = provision.outcomes_from_report(REPORT, {"incus-agent": "agent"})
    assert provision.idempotence_lines(again) == [
        "agent: not idempotent: operation 'base | Ensure packages' changed again on the "
        "second run"]


@pytest.fixture
def inventory(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    path = tmp_path / "vms.yaml"
    path.write_text(f"defaults: {{provider: incus, project: {project}}}\n"
                    "vms: {agent: {toolchains: [go], go: {sha256: {amd64: ''}}}}\n")
    return load_inventory(path)


def test_refuses_an_unknown_role_before_touching_a_vm(inventory):
    with pytest.raises(ConfigError, match="--roles: docker: no such role"):
        provision.run(inventory, None, roles=["docker"])


def test_a_missing_vm_gets_one_clear_line(inventory, monkeypatch):
    def missing(vm, running=False):
        raise MachineNotFound(f"{vm.name}: no such VM on incus")

    monkeypatch.setattr(provision.lifecycle, "require", missing)
    with pytest.raises(MachineNotFound, match="agent: no such VM"):
        provision.run(inventory, "agent")


def test_a_missing_pin_stops_the_run_before_pyinfra(inventory, monkeypatch):
    monkeypatch.setattr(provision.lifecycle, "require", lambda vm, running=False: None)
    monkeypatch.setattr(provision, "_pyinfra", lambda *a, **k: pytest.fail("pyinfra ran"))
    with pytest.raises(ConfigError, match="agent: go.sha256: no sha256 pinned"):
        provision.run(inventory, None, roles=["go"], dry=True)


def _inventory_module():
    spec = importlib.util.spec_from_file_location("inventory_under_test",
                                                  paths.ROOT / "inventory" / "inventory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pyinfra_host_reaches_the_vm_through_its_ssh_config(inventory):
    module = _inventory_module()
    vm = inventory.vms["agent"]
    name, data = module.pyinfra_host(vm, Path("/s/ssh.config"), "incus-agent", "corral")
    assert name == "incus-agent"
    assert data["ssh_config_file"] == "/s/ssh.config"
    assert data["_sudo"] is True and data["agent_user"] == vm.agent


def test_roles_run_without_sudo_when_the_ssh_user_is_root(inventory):
    module = _inventory_module()
    _, data = module.pyinfra_host(inventory.vms["agent"], Path("/s"), "h", "root")
    assert data["_sudo"] is False


def test_importing_the_inventory_file_builds_no_hosts():
    assert not hasattr(_inventory_module(), "vms")


class _FakeProvider:
    def ssh_host(self, name):
        return f"incus-{name}"


def _fake_pyinfra(monkeypatch, code, report, last="--> pyinfra error: go.sha256.arm64"):
    import json as jsonlib

    def stream(argv, env, secrets):
        Path(env["CORRAL_REPORT"]).write_text(jsonlib.dumps(report))
        return code, last

    monkeypatch.setattr(provision, "provider_for", lambda vm: _FakeProvider())
    monkeypatch.setattr(provision, "_stream", stream)


def test_pyinfra_failing_outside_any_operation_is_a_failure(inventory, monkeypatch):
    _fake_pyinfra(monkeypatch, 1, {"incus-agent": {"failed": False, "ops": []}})
    with pytest.raises(provision.ProvisionFailed, match=r"pyinfra failed \(exit 1\): .*arm64"):
        provision._pyinfra(inventory, list(inventory.vms.values()), None, dry=False,
                           secrets=[])


def test_a_clean_pyinfra_run_gives_the_outcomes(inventory, monkeypatch):
    _fake_pyinfra(monkeypatch, 0, {"incus-agent": {"failed": False, "ops": [
        {"name": "base | x", "status": "unchanged"}]}})
    (outcome,) = provision._pyinfra(inventory, list(inventory.vms.values()), None, dry=False,
                                    secrets=[])
    assert outcome.vm == "agent" and outcome.unchanged == ["base | x"]


def test_pyinfra_output_is_shown_with_secrets_masked(capsys):
    code, last = provision._stream(
        [sys.executable, "-c", "print('token github_pat_SECRET here')"], dict(os.environ),
        ["github_pat_SECRET"])
    assert code == 0 and last == "token *** here"
    assert "SECRET" not in capsys.readouterr().out
