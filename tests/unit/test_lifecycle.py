"""The vm.* tasks end to end on the Lima provider, with the stand-in limactl on PATH."""

from __future__ import annotations

import json

import pytest
from invoke import Context

from corral import lifecycle, render
from corral.config import load_inventory
from corral.tasks import vm as vm_tasks
from tests.fakes import lima as fake


@pytest.fixture
def lima(tmp_path, monkeypatch):
    return fake.install(tmp_path, monkeypatch)


def _task(name: str, **kwargs) -> None:
    """Run a vm.* task in this process: quicker than a subprocess, for setting the scene."""
    getattr(vm_tasks, name)(Context(), **kwargs)


def _ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _failed(result, *, streamed=False):
    """A task that failed as corral promises: exit 1, one line, no traceback.

    + streamed: limactl's own progress (its log lines) came before corral's line
    """
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if streamed:
        assert all("level=" in line for line in lines[:-1]), result.stderr
    else:
        assert len(lines) == 1, result.stderr
    return lines[-1]


def test_vm_create_renders_creates_and_starts(lima):
    result = _ok(lima.invoke("vm.create"))

    definition = lima.root / "build" / "lima" / "agent.yaml"
    assert definition.exists()
    assert ["--tty=false", "create", "--name", "agent", str(definition)] in lima.calls()
    assert lima.status("agent") == "Running"
    assert "agent: creating on lima (debian-13, 2 CPUs, 2GiB)" in result.stdout
    assert (f"agent: running; ssh -F {lima.lima_home / 'agent' / 'ssh.config'} lima-agent"
            in result.stdout)
    # Lima's own progress reaches the user.
    assert "READY." in result.stderr


def test_vm_create_again_has_nothing_to_do(lima):
    _task("create")

    result = _ok(lima.invoke("vm.create"))

    assert "agent: already running on lima, nothing to do" in result.stdout
    assert lima.commands().count("create") == 1


def test_vm_create_starts_a_stopped_vm_and_says_so(lima):
    _task("create")
    _task("stop")

    result = _ok(lima.invoke("vm.create"))

    assert "agent: exists (stopped), starting it" in result.stdout
    assert lima.commands().count("create") == 1
    assert lima.status("agent") == "Running"


def test_vm_start_and_stop_say_nothing_to_do_when_already_there(lima):
    _task("create")

    assert "agent: already running, nothing to do" in _ok(lima.invoke("vm.start")).stdout
    assert "agent: stopped" in _ok(lima.invoke("vm.stop")).stdout
    assert lima.status("agent") == "Stopped"
    assert "agent: already stopped, nothing to do" in _ok(lima.invoke("vm.stop")).stdout
    assert "agent: running" in _ok(lima.invoke("vm.start")).stdout
    assert lima.status("agent") == "Running"


def test_vm_start_of_a_vm_never_created_says_how_to_create_it(lima):
    line = _failed(lima.invoke("vm.start"))

    assert line == "agent: no such VM on lima (create it: uv run invoke vm.create --name agent)"


def test_vm_delete_without_a_terminal_or_yes_refuses_politely(lima):
    _task("create")

    result = _ok(lima.invoke("vm.delete"))

    assert "(no terminal to ask; pass --yes)" in result.stdout
    assert "agent: kept" in result.stdout
    assert lima.status("agent") == "Running"


def test_vm_delete_with_yes_deletes_the_vm_and_its_definition(lima):
    _task("create")

    result = _ok(lima.invoke("vm.delete", "--yes"))

    assert "agent: deleted" in result.stdout
    assert lima.status("agent") is None
    assert not (lima.root / "build" / "lima" / "agent.yaml").exists()
    again = _ok(lima.invoke("vm.delete", "--yes"))
    assert "agent: does not exist, nothing to do" in again.stdout


def test_vm_delete_refuses_an_instance_corral_did_not_create_and_leaves_it_alone(lima):
    (lima.root / "theirs.yaml").write_text("base: template:_images/debian-13\n")
    lima.limactl("create", "--name", "agent", str(lima.root / "theirs.yaml"))

    line = _failed(lima.invoke("vm.delete", "--yes"))

    assert line.startswith("agent: a Lima instance of that name exists but corral did not")
    assert lima.status("agent") == "Stopped"
    assert "delete" not in lima.commands()


def test_vm_create_refuses_an_instance_of_the_same_name_it_did_not_create(lima):
    (lima.root / "theirs.yaml").write_text("base: template:_images/debian-13\n")
    lima.limactl("create", "--name", "agent", str(lima.root / "theirs.yaml"))

    line = _failed(lima.invoke("vm.create"))

    assert line.startswith("agent: a Lima instance of that name exists but corral did not")


def test_vm_list_shows_a_table_and_json(lima):
    assert "agent  lima      absent" in _ok(lima.invoke("vm.list")).stdout
    _task("create")

    table = _ok(lima.invoke("vm.list")).stdout.splitlines()
    rows = json.loads(_ok(lima.invoke("vm.list", "--json")).stdout)

    assert table[0].split() == ["name", "provider", "status", "image", "project"]
    assert table[1].split() == ["agent", "lima", "running", "debian-13", str(lima.project)]
    assert rows == [{
        "name": "agent",
        "provider": "lima",
        "status": "running",
        "image": "debian-13",
        "project": str(lima.project),
        "mount_point": "/work/project",
        "ssh_host": "lima-agent",
        "ssh_config": str(lima.lima_home / "agent" / "ssh.config"),
    }]


def test_vm_shell_command_passes_the_guest_exit_status_through(lima):
    _task("create")

    result = lima.invoke("vm.shell", "--command", "exit 3", "--workdir", str(lima.project))

    assert result.returncode == 3
    assert lima.calls()[-1] == ["shell", "--workdir", str(lima.project), "agent",
                                "bash", "-lc", "exit 3"]


def test_vm_shell_starts_in_the_project_mount_point_by_default(lima):
    _task("create")

    result = lima.invoke("vm.shell", "--command", "true", FAKE_LIMACTL_SHELL_STATUS="0")

    assert result.returncode == 0
    assert lima.calls()[-1][:3] == ["shell", "--workdir", "/work/project"]


def test_vm_shell_on_a_stopped_vm_says_how_to_start_it(lima):
    _task("create")
    _task("stop")

    line = _failed(lima.invoke("vm.shell", "--command", "true"))

    assert line == "agent: VM is stopped (start it: uv run invoke vm.start --name agent)"


def test_vm_ssh_config_includes_lima_ssh_configs_once_with_a_backup(lima):
    ssh_config = lima.home / ".ssh" / "config"
    ssh_config.parent.mkdir(mode=0o700)
    ssh_config.write_text("Host example\n  User me\n")

    first = _ok(lima.invoke("vm.ssh-config"))
    second = _ok(lima.invoke("vm.ssh-config"))

    text = ssh_config.read_text()
    assert text.startswith(f"{lifecycle.INCLUDE_MARK}\nInclude ~/.lima/*/ssh.config\n\n")
    assert text.count("Include ~/.lima/*/ssh.config") == 1
    assert text.endswith("Host example\n  User me\n")
    assert (lima.home / ".ssh" / "config.corral.bak").read_text() == "Host example\n  User me\n"
    assert "added 'Include ~/.lima/*/ssh.config'" in first.stdout
    assert "nothing to do" in second.stdout


def test_a_limactl_failure_surfaces_as_one_line_and_exit_1(lima):
    line = _failed(lima.invoke("vm.create", FAKE_LIMACTL_FAIL="start"), streamed=True)

    assert line.startswith("starting agent: start failed: exiting, status=")
    assert line.endswith("(hint: see `ha.stderr.log`)")


def test_running_as_root_is_one_clear_line(lima):
    env = {k: v for k, v in lima.env.items() if k != "FAKE_LIMACTL_ALLOW_ROOT"}
    lima.env = {**env, "FAKE_LIMACTL_EUID": "0"}

    line = _failed(lima.invoke("vm.create"))

    assert line == ("limactl refuses to run as root: run corral as your own user, "
                    "without sudo")


def test_without_limactl_vm_create_names_the_missing_tool(lima):
    line = _failed(lima.invoke("vm.create", PATH=str(lima.root / "empty")))

    assert line.startswith("limactl not found on PATH: install Lima 2 (https://lima-vm.io/")


def test_without_limactl_and_incus_auto_says_what_to_install(lima):
    lima.inventory.write_text("vms:\n  agent:\n    project: project\n")

    line = _failed(lima.invoke("vm.create", PATH=str(lima.root / "empty")))

    assert line.startswith("neither limactl nor incus found on PATH: install Lima")
    assert "host.setup --provider incus" in line


def test_lifecycle_create_in_process_uses_the_rendered_file(lima, capsys):
    vm = load_inventory().vms["agent"]

    lifecycle.create(vm)

    assert render.lima_file("agent").read_text() == render.render(vm)
    assert "agent: running" in capsys.readouterr().out
