"""vm.verify's runner: the pytest command per VM, reading its report, refusing absent VMs."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from testinfra.backend import parse_hostspec

from corral import verify
from corral.config import load_inventory
from corral.errors import CorralError, MachineNotFound
from corral.providers.base import Machine

SSH_CONFIG = Path("/state/incus/agent/ssh.config")


def machine(name="agent", status="running", ssh_config=SSH_CONFIG):
    return Machine(name, "incus", status, f"incus-{name}", ssh_config)


class FakeProvider:
    """A provider that knows a fixed set of machines and can do nothing else."""

    name = "incus"

    def __init__(self, machines):
        self.machines_by_name = {m.name: m for m in machines}

    def machine(self, name):
        return self.machines_by_name.get(name)


@pytest.fixture
def inventory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    path = tmp_path / "vms.yaml"
    path.write_text(f"defaults: {{project: {project}}}\nvms: {{agent: {{}}, web: {{}}}}\n")
    monkeypatch.setenv("CORRAL_STATE_DIR", str(tmp_path / "state"))
    return load_inventory(path)


@pytest.fixture
def machines(monkeypatch):
    """Make the VMs the provider reports: ``machines(machine(...), ...)``."""

    def install(*found):
        provider = FakeProvider(found)
        monkeypatch.setattr("corral.lifecycle.provider_for", lambda vm: provider)

    return install


def test_hostspec_reaches_the_alias_through_the_vms_own_ssh_config():
    host, options = parse_hostspec(verify.hostspec(machine()))

    assert host == "incus-agent"
    assert options == {"connection": "ssh", "ssh_config": str(SSH_CONFIG)}


def test_hostspec_survives_commas_and_spaces_in_the_ssh_config_path():
    odd = Path("/home/a b/state,1/ssh.config")

    spec = verify.hostspec(machine(ssh_config=odd))

    assert "," not in spec and " " not in spec
    assert parse_hostspec(spec)[1]["ssh_config"] == str(odd)


def test_hostspec_refuses_a_machine_without_ssh_config():
    with pytest.raises(CorralError, match="agent: the provider has no ssh.config"):
        verify.hostspec(machine(ssh_config=None))


def test_pytest_command_runs_the_suites_against_the_host_and_writes_junit(tmp_path):
    report = tmp_path / "agent.xml"

    argv = verify.pytest_argv("ssh://incus-agent?ssh_config=/x", report, "agent")

    assert argv[1:4] == ["-m", "pytest", str(verify.SUITES)]
    assert "--hosts=ssh://incus-agent?ssh_config=/x" in argv
    assert f"--junit-xml={report}" in argv
    assert "junit_suite_name=corral-verify-agent" in argv


def test_pytest_environment_names_the_vm_and_the_inventory(inventory, tmp_path):
    vm = inventory.vms["web"]

    env = verify.pytest_env(inventory, vm, cwd=tmp_path)

    assert env["CORRAL_VM"] == "web"
    assert env["CORRAL_INVENTORY"] == str(inventory.path.resolve())
    assert env["CORRAL_VERIFY_CWD"] == str(tmp_path.resolve())


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="corral-verify-agent" tests="4">
<testcase classname="tests.infra.test_tools"
          name="test_toolchain_runs_at_pinned_version[ssh://incus-agent-go]"/>
<testcase classname="tests.infra.test_credentials"
          name="test_credential_files_are_private[ssh://incus-agent]">
  <failure message="AssertionError: /home/corral/.config/gh/hosts.yml is mode 0o644&#10;
assert 420 == 384">trace</failure>
</testcase>
<testcase classname="tests.infra.test_isolation" name="test_x[ssh://incus-agent]">
  <error message="failed on setup with &quot;RuntimeError: ssh&quot;">trace</error>
</testcase>
<testcase classname="tests.infra.test_tools" name="test_go_keyring[ssh://incus-agent]">
  <skipped type="pytest.skip" message="gh comes from the distribution">x</skipped>
</testcase>
</testsuite></testsuites>
"""


def test_report_is_read_as_checks_named_by_suite_without_the_host(tmp_path):
    report = tmp_path / "agent.xml"
    report.write_text(JUNIT)

    result = verify.parse_junit(report, "agent", "ssh://incus-agent?ssh_config=/x")

    assert [(c.name, c.outcome) for c in result.checks] == [
        ("tools::test_toolchain_runs_at_pinned_version[go]", "passed"),
        ("credentials::test_credential_files_are_private", "failed"),
        ("isolation::test_x", "error"),
        ("tools::test_go_keyring", "skipped"),
    ]
    assert result.checks[1].message == "/home/corral/.config/gh/hosts.yml is mode 0o644"
    assert [c.name for c in result.failed] == [
        "credentials::test_credential_files_are_private", "isolation::test_x"]
    assert result.ran == 3


def test_reports_of_several_vms_merge_into_one_junit_file(tmp_path):
    first, second = tmp_path / "a.xml", tmp_path / "b.xml"
    first.write_text(JUNIT)
    second.write_text(JUNIT.replace("corral-verify-agent", "corral-verify-web"))
    merged = tmp_path / "out" / "verify.xml"

    verify.merge_junit([first, second], merged)

    suites = [s.get("name") for s in ET.parse(merged).getroot()]
    assert suites == ["corral-verify-agent", "corral-verify-web"]


def test_refuses_a_vm_that_was_never_created(inventory, machines):
    machines(machine("agent"))

    with pytest.raises(MachineNotFound, match=r"web: no such VM on incus \(create it"):
        verify.run(inventory, "web")


def test_refuses_a_stopped_vm_before_running_any_suite(inventory, machines, monkeypatch):
    machines(machine("agent"), machine("web", status="stopped"))
    monkeypatch.setattr(verify, "_run_one", lambda *a: pytest.fail("suites ran"))

    with pytest.raises(MachineNotFound, match=r"web: VM is stopped \(start it"):
        verify.run(inventory, None)


def test_unreachable_vm_stops_the_suites_with_one_line(inventory, machines, tmp_path):
    # The real suites, against an address where nothing listens (loopback, port 1).
    config = tmp_path / "ssh.config"
    config.write_text("Host incus-agent\n  HostName 127.0.0.1\n  Port 1\n"
                      "  UserKnownHostsFile /dev/null\n  BatchMode yes\n")
    machines(machine("agent", ssh_config=config))

    with pytest.raises(CorralError) as err:
        verify.run(inventory, "agent")

    assert str(err.value).startswith("agent: the suites did not run (cannot reach the VM "
                                     "over SSH: ssh: connect to host 127.0.0.1 port 1: "
                                     "Connection refused; see ")


# The tests below run real pytest on a small stand-in suite against the local machine:
# everything of vm.verify but the VM.

STAND_IN_SUITE = '''
import pytest

@pytest.mark.parametrize("tool", ["go", "rust"])
def test_toolchain_runs(host, tool):
    assert host.run("true").rc == 0

def test_marker_file_exists(host):
    assert host.file(MARKER).exists, f"{MARKER} is missing"

def test_vm_is_named_in_the_environment(host):
    import os
    assert os.environ["CORRAL_VM"] in ("agent", "web")
'''


@pytest.fixture
def stand_in(tmp_path, monkeypatch, machines):
    """A suite folder whose marker check passes while ``marker`` exists."""
    suites = tmp_path / "suites"
    suites.mkdir()
    marker = tmp_path / "marker"
    (suites / "test_stand_in.py").write_text(f"MARKER = {str(marker)!r}\n" + STAND_IN_SUITE)
    monkeypatch.setattr(verify, "SUITES", suites)
    monkeypatch.setattr(verify, "hostspec", lambda m: "local://")
    machines(machine("agent"), machine("web"))
    return marker


def test_passing_vm_prints_one_line_and_writes_the_junit_report(inventory, stand_in,
                                                                 tmp_path, capsys):
    stand_in.touch()
    report = tmp_path / "reports" / "verify.xml"

    verify.run(inventory, "agent", junit_xml=report)

    out = capsys.readouterr().out
    assert "✓ agent: all 4 checks passed" in out
    assert "corral-verify-agent" in report.read_text()


def test_failing_check_fails_the_run_naming_the_vm_and_the_check(inventory, stand_in,
                                                                 capsys):
    with pytest.raises(CorralError) as err:
        verify.run(inventory, None)

    lines = str(err.value).splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == ["agent", "web"]
    assert "1 check(s) failed: stand_in::test_marker_file_exists " in lines[0]
    out = capsys.readouterr().out
    assert "✗ agent: 1 of 4 checks failed" in out
    assert f"✗ stand_in::test_marker_file_exists: {stand_in} is missing" in out


def test_unwritable_junit_path_is_one_line_naming_it(inventory, stand_in, tmp_path):
    stand_in.touch()
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    with pytest.raises(CorralError, match=r"a-file/verify.xml: cannot write the JUnit report"):
        verify.run(inventory, "agent", junit_xml=blocker / "verify.xml")


def test_suites_that_cannot_run_are_reported_with_pytests_last_words(inventory, stand_in,
                                                                      monkeypatch):
    monkeypatch.setattr(verify, "hostspec", lambda m: "nosuchbackend://x")

    with pytest.raises(CorralError, match=r"agent: the suites did not run \(.*nosuchbackend"):
        verify.run(inventory, "agent")


@pytest.mark.parametrize(("name", "expected"), [
    ("t[ssh://incus-agent]", "t"),
    ("t[ssh://incus-agent-go]", "t[go]"),
    ("t[go-ssh://incus-agent]", "t[go]"),
    ("t", "t"),
])
def test_host_parameter_is_left_out_of_check_names(name, expected):
    assert verify._without_host(name, verify._host_id("ssh://incus-agent?ssh_config=/x")) \
        == expected
