"""host.doctor's checks, on a throwaway home with the stand-in limactl on PATH."""

from __future__ import annotations

import platform

import pytest

from corral import doctor
from tests.fakes import lima as fake

pytestmark = pytest.mark.skipif(platform.system() != "Linux",
                                reason="checks KVM; macOS asks sysctl instead")


@pytest.fixture
def lima(tmp_path, monkeypatch):
    world = fake.install(tmp_path, monkeypatch)
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    monkeypatch.setattr(doctor, "KVM_DEVICE", kvm)
    return world


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_a_healthy_lima_host_passes_every_check(lima, capsys):
    ok = doctor.run()

    lines = _lines(capsys)
    assert ok is True, lines
    assert not [line for line in lines if line.startswith("✗")]
    assert f"✓ inventory {lima.inventory} is valid (1 VM: agent)" in lines
    assert "✓ provider lima for agent" in lines
    assert "✓ limactl 2.2.0 (the inventory needs ≥ 2.0.0)" in lines
    assert f"✓ KVM available ({lima.root / 'kvm'})" in lines
    assert "✓ agent: Lima definition renders (template:_images/debian-13)" in lines
    assert any(line.startswith("✓ ") and "GiB free for" in line for line in lines)


def test_a_limactl_older_than_the_template_needs_fails_with_a_hint(lima, capsys, monkeypatch):
    lima.inventory.write_text(lima.inventory.read_text().replace("debian-13", "ubuntu-26.04"))
    monkeypatch.setenv("FAKE_LIMACTL_VERSION", "2.1.3")

    ok = doctor.run()

    lines = _lines(capsys)
    assert ok is False
    index = lines.index("✗ limactl 2.1.3 is older than 2.1.4, which the inventory needs")
    assert lines[index + 1].startswith("  → upgrade Lima")


def test_missing_kvm_fails_for_lima(lima, capsys, monkeypatch):
    monkeypatch.setattr(doctor, "KVM_DEVICE", lima.root / "no-kvm")

    assert doctor.run() is False
    assert any(line.startswith("✗ no KVM (") for line in _lines(capsys))


def test_an_invalid_inventory_fails_naming_the_file_and_the_problem(lima, capsys):
    lima.inventory.write_text("vms:\n  agent:\n    memory: 8GB\n")

    assert doctor.run() is False
    first = _lines(capsys)[0]
    assert first.startswith(f"✗ inventory {lima.inventory} is not valid: ")
    assert "vms.agent.memory: '8GB' is not a size" in first


def test_a_global_lima_mount_fails_because_it_would_share_more_than_the_project(
    lima, capsys
):
    config = lima.lima_home / "_config"
    config.mkdir(parents=True)
    (config / "default.yaml").write_text('mounts:\n- location: "~"\n')

    assert doctor.run() is False
    assert f"✗ {config / 'default.yaml'} adds mounts to every Lima instance (~)" in _lines(capsys)


def test_too_little_free_disk_fails_and_says_how_much_is_free(lima, capsys, monkeypatch):
    monkeypatch.setattr(doctor, "MIN_FREE_GIB", 10**9)

    assert doctor.run() is False
    line = next(line for line in _lines(capsys) if "GiB free for" in line)
    assert line.startswith("✗ only ")
    assert line.endswith("corral wants ≥ 1000000000 GiB")


def test_no_provider_tool_fails_with_how_to_install_it(lima, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(lima.root / "empty"))

    assert doctor.run() is False
    lines = _lines(capsys)
    index = next(i for i, line in enumerate(lines) if line.startswith("✗ agent: no provider"))
    assert "install Lima 2" in lines[index + 1]


def test_the_update_schedule_is_shown(lima, capsys):
    doctor.run()

    assert "· no update schedule" in _lines(capsys)


def test_host_doctor_task_exits_1_when_a_check_fails(lima):
    failing = lima.invoke("host.doctor", FAKE_LIMACTL_VERSION="1.2.0")

    assert failing.returncode == 1
    assert "✗ limactl 1.2.0 is older than 2.0.0" in failing.stdout
    assert "Traceback" not in failing.stderr


def test_a_definition_lima_would_refuse_fails_with_the_reason(lima, capsys):
    lima.inventory.write_text(lima.inventory.read_text() + "    port_forwards:\n"
                              "    - {guest: 22, host: 2222}\n")

    assert doctor.run() is False
    assert ("✗ agent: the Lima definition cannot be made: vms.agent.port_forwards.0: port 22 "
            "is Lima's own SSH forward (use ssh -F with the VM's ssh.config instead)"
            in _lines(capsys))
