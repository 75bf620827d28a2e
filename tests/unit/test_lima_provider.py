"""The Lima provider, driven against the stand-in limactl (tests/fakes/limactl)."""

from __future__ import annotations

import pytest

from corral import render
from corral.config import load_inventory
from corral.errors import ConfigError, HostError, ProviderError, ProviderMissing
from corral.providers import provider_for
from corral.providers.base import RUNNING, STOPPED
from corral.providers.lima import LimaProvider
from tests.fakes import lima as fake


@pytest.fixture
def lima(tmp_path, monkeypatch):
    return fake.install(tmp_path, monkeypatch)


@pytest.fixture
def vm(lima):
    return load_inventory().vms["agent"]


def test_auto_picks_lima_when_limactl_is_on_path(lima, tmp_path):
    (tmp_path / "auto.yaml").write_text("vms: {agent: {project: project}}\n")

    vm = load_inventory(tmp_path / "auto.yaml").vms["agent"]

    assert isinstance(provider_for(vm), LimaProvider)


def test_create_renders_the_definition_then_creates_and_starts_the_instance(lima, vm):
    created = LimaProvider().create(vm)

    definition = render.lima_file("agent")
    assert created is True
    assert definition == lima.root / "build" / "lima" / "agent.yaml"
    assert lima.calls() == [
        ["--tty=false", "list", "--json"],
        ["--tty=false", "create", "--name", "agent", str(definition)],
        ["--tty=false", "start", "agent"],
    ]
    assert lima.status("agent") == "Running"


def test_create_streams_lima_progress_to_the_user(lima, vm, capsys):
    LimaProvider().create(vm)

    assert "READY. Run `limactl shell agent` to open the shell." in capsys.readouterr().err


def test_create_starts_a_stopped_instance_instead_of_creating_it(lima, vm):
    provider = LimaProvider()
    provider.create(vm)
    provider.stop(vm)

    created = provider.create(vm)

    assert created is False
    assert lima.commands().count("create") == 1
    assert lima.status("agent") == "Running"


def test_machines_lists_only_instances_corral_created(lima, vm):
    mine = LimaProvider()
    mine.create(vm)
    (lima.root / "theirs.yaml").write_text("base: template:_images/debian-13\n")
    made = lima.limactl("create", "--name", "theirs", str(lima.root / "theirs.yaml"))
    assert made.returncode == 0, made.stderr

    names = [m.name for m in mine.machines()]

    assert names == ["agent"]


def test_refuses_to_adopt_an_instance_of_the_same_name_corral_did_not_create(lima, vm):
    (lima.root / "theirs.yaml").write_text("base: template:_images/debian-13\n")
    lima.limactl("create", "--name", "agent", str(lima.root / "theirs.yaml"))

    with pytest.raises(ProviderError, match="exists but corral did not create it"):
        LimaProvider().create(vm)

    assert "start" not in lima.commands()


def test_refuses_to_delete_or_describe_an_instance_corral_did_not_create(lima, vm):
    (lima.root / "theirs.yaml").write_text("base: template:_images/debian-13\n")
    lima.limactl("create", "--name", "agent", str(lima.root / "theirs.yaml"))

    with pytest.raises(ProviderError, match="exists but corral did not create it"):
        LimaProvider().machine("agent")
    with pytest.raises(ProviderError, match="exists but corral did not create it"):
        LimaProvider().delete(vm)

    assert "delete" not in lima.commands()
    assert lima.status("agent") == "Stopped"


def test_machine_reports_status_ssh_host_and_lima_ssh_config(lima, vm):
    provider = LimaProvider()
    provider.create(vm)

    machine = provider.machine("agent")
    provider.stop(vm)

    assert machine.status == RUNNING
    assert machine.ssh_host == "lima-agent"
    assert machine.ssh_config == lima.lima_home / "agent" / "ssh.config"
    assert machine.ssh_config.exists()
    assert provider.machine("agent").status == STOPPED


def test_ssh_config_honours_lima_home_and_defaults_to_dot_lima(lima, monkeypatch):
    provider = LimaProvider()
    monkeypatch.setenv("LIMA_HOME", "/srv/lima")
    assert provider.ssh_config("web") == fake.Path("/srv/lima/web/ssh.config")

    monkeypatch.delenv("LIMA_HOME")
    assert provider.ssh_config("web") == lima.home / ".lima" / "web" / "ssh.config"


def test_delete_removes_the_instance_and_its_rendered_definition(lima, vm):
    provider = LimaProvider()
    provider.create(vm)

    provider.delete(vm)

    assert lima.calls()[-1] == ["--tty=false", "delete", "-f", "agent"]
    assert lima.status("agent") is None
    assert not render.lima_file("agent").exists()


def test_shell_passes_the_guest_exit_status_through(lima, vm, monkeypatch):
    provider = LimaProvider()
    provider.create(vm)
    monkeypatch.setenv("FAKE_LIMACTL_SHELL_STATUS", "7")

    status = provider.shell(vm, ["bash", "-lc", "false"], workdir="/work/project")

    assert status == 7
    assert lima.calls()[-1] == ["shell", "--workdir", "/work/project", "agent",
                                "bash", "-lc", "false"]


def test_shell_runs_the_command_in_the_working_directory(lima, vm, capfd):
    provider = LimaProvider()
    provider.create(vm)

    status = provider.shell(vm, ["pwd"], workdir=str(lima.project))

    assert status == 0
    assert capfd.readouterr().out.strip() == str(lima.project)


def test_a_limactl_failure_becomes_one_line_with_lima_own_words(lima, vm, monkeypatch):
    monkeypatch.setenv("FAKE_LIMACTL_FAIL", "start")

    with pytest.raises(ProviderError) as caught:
        LimaProvider().create(vm)

    message = str(caught.value)
    assert message.startswith("starting agent: start failed: exiting")
    assert "level=fatal" not in message and "\n" not in message


def test_running_as_root_is_explained_in_one_line(lima, monkeypatch):
    monkeypatch.setenv("FAKE_LIMACTL_EUID", "0")
    monkeypatch.delenv("FAKE_LIMACTL_ALLOW_ROOT")

    with pytest.raises(HostError, match="^limactl refuses to run as root: run corral as your own"):
        LimaProvider().machines()


def test_missing_limactl_names_the_tool_and_how_to_install_it(lima, vm, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(ProviderMissing, match="^limactl not found on PATH: install Lima 2"):
        LimaProvider().create(vm)


def test_an_instance_lima_cannot_read_is_reported_not_adopted(lima, vm):
    folder = lima.lima_home / "agent"
    folder.mkdir(parents=True)
    (folder / "lima.yaml").write_text("mounts: [\n")
    (folder / "fake-status").write_text("Stopped\n")

    with pytest.raises(ProviderError) as caught:
        LimaProvider().create(vm)

    message = str(caught.value)
    assert message.startswith("agent: a Lima instance of that name exists but Lima cannot read")
    assert message.endswith("remove it: limactl delete -f agent)")
    assert "create" not in lima.commands()


@pytest.mark.parametrize("home", ["/home/dev.guest", "/home/dev.linux"])
def test_refuses_lima_guest_home_as_mount_point(tmp_path, monkeypatch, home):
    # Lima 2.1 renamed the guest home to USER.guest; USER.linux still reaches it.
    monkeypatch.setattr("corral.config._host_user", lambda: "dev")
    (tmp_path / "project").mkdir()
    (tmp_path / "vms.yaml").write_text(f"vms:\n  web: {{project: project, mount_point: {home}}}\n")

    with pytest.raises(ConfigError) as caught:
        load_inventory(tmp_path / "vms.yaml")

    assert f"vms.web.mount_point: '{home}' is the guest's home folder" in str(caught.value)
