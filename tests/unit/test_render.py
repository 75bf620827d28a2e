"""The Lima definition corral renders for each VM (templates/lima/agent.yaml.j2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from corral import paths, render
from corral.config import load_inventory
from corral.errors import ConfigError
from tests.fakes.lima import FAKES

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def _vm(tmp_path: Path, body: str = "", name: str = "agent"):
    """The VM ``name`` of an inventory whose ``vms.NAME`` entry is ``body`` (YAML)."""
    (tmp_path / "project").mkdir(exist_ok=True)
    entry = "\n".join(f"    {line}" for line in body.splitlines())
    (tmp_path / "vms.yaml").write_text(f"vms:\n  {name}:\n    project: project\n{entry}\n")
    return load_inventory(tmp_path / "vms.yaml").vms[name]


def _rendered(tmp_path: Path, body: str = "") -> dict:
    vm = _vm(tmp_path, body)
    return yaml.safe_load(render.render(vm))


def test_default_inventory_renders_a_definition_sharing_only_the_project(tmp_path):
    inventory = load_inventory(paths.DEFAULT_INVENTORY, cwd=tmp_path)
    vm = inventory.vms["agent"]
    text = render.render(vm)
    lima = yaml.safe_load(text)

    assert lima["base"] == ["template:_images/debian-13"]
    settings = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("_default/mounts" in line for line in settings)
    assert lima["mounts"] == [
        {"location": str(tmp_path), "mountPoint": f"/work/{tmp_path.name}", "writable": True}
    ]
    assert not any(m["location"].startswith("~") for m in lima["mounts"])
    assert lima["ssh"]["forwardAgent"] is False
    assert lima["ssh"]["loadDotSSHPubKeys"] is False
    assert lima["containerd"] == {"system": False, "user": False}
    assert lima["minimumLimaVersion"] == "2.0.0"
    assert lima["cpus"] == 4 and lima["memory"] == "8GiB" and lima["disk"] == "40GiB"
    assert lima["provision"] == [{"mode": "system", "file": str(render.SETUP_SCRIPT)}]
    [probe] = lima["probes"]
    assert probe["mode"] == "readiness"
    assert probe["script"].startswith("#!/bin/bash\n")
    assert "/run/corral/agent-vm.setup.done" in probe["script"]
    assert "limactl shell agent bash -l < scripts/agent-vm.setup.sh" in probe["hint"]
    assert lima["param"] == {"corral": "0.1.0", "corral_vm": "agent"}


def test_lima_go_template_expressions_come_out_of_jinja_untouched(tmp_path):
    lima = _rendered(tmp_path)

    [probe] = lima["probes"]
    assert "corral {{.Param.corral}}: " in probe["script"]
    assert "${PARAM_corral_vm:-}" in probe["script"]


def test_setup_script_exists_and_is_what_the_provision_step_names(tmp_path):
    lima = _rendered(tmp_path)

    script = Path(lima["provision"][0]["file"])
    assert script == paths.ROOT / "scripts" / "agent-vm.setup.sh"
    assert script.read_text().startswith("#!/bin/bash\n")


@pytest.mark.parametrize(("image", "base", "minimum"), [
    ("debian-12", "template:_images/debian-12", "2.0.0"),
    ("debian-13", "template:_images/debian-13", "2.0.0"),
    ("ubuntu-24.04", "template:_images/ubuntu-24.04", "2.0.0"),
    ("ubuntu-26.04", "template:_images/ubuntu-26.04", "2.1.4"),
])
def test_each_image_uses_lima_image_only_base_and_its_minimum_version(
    tmp_path, image, base, minimum
):
    lima = _rendered(tmp_path, f"image: {image}")

    assert lima["base"] == [base]
    assert lima["minimumLimaVersion"] == minimum


def test_readonly_mount_is_not_writable(tmp_path):
    lima = _rendered(tmp_path, "mount: readonly\nmount_point: /srv/code")

    assert lima["mounts"] == [
        {"location": str(tmp_path / "project"), "mountPoint": "/srv/code", "writable": False}
    ]


def test_mount_none_shares_nothing(tmp_path):
    lima = _rendered(tmp_path, "mount: none")

    assert lima["mounts"] == []


def test_port_forwards_come_before_the_rule_ignoring_every_other_port(tmp_path):
    lima = _rendered(tmp_path, "port_forwards:\n"
                               "- {guest: 8080, host: 18080}\n"
                               "- {guest: 5432, host: 15432, host_ip: 0.0.0.0}")

    assert lima["portForwards"] == [
        {"guestPort": 8080, "hostPort": 18080, "hostIP": "127.0.0.1"},
        {"guestPort": 5432, "hostPort": 15432, "hostIP": "0.0.0.0"},
        {"guestIP": "0.0.0.0", "proto": "any", "ignore": True},
    ]


@pytest.mark.parametrize("forward", ["{guest: 22, host: 2222}", "{guest: 8022, host: 22}"])
def test_refuses_a_port_forward_of_port_22_which_lima_keeps_for_ssh(tmp_path, forward):
    vm = _vm(tmp_path, f"port_forwards:\n- {{guest: 8080, host: 18080}}\n- {forward}")

    with pytest.raises(ConfigError) as caught:
        render.render(vm)

    assert str(caught.value) == ("vms.agent.port_forwards.1: port 22 is Lima's own SSH forward "
                                 "(use ssh -F with the VM's ssh.config instead)")


def test_ca_certs_are_listed_as_files_lima_hands_to_cloud_init(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "a.crt").write_text(PEM)
    (certs / "b.crt").write_text(PEM)

    lima = _rendered(tmp_path, "ca_certs: [certs/*.crt]")

    assert lima["caCerts"] == {
        "removeDefaults": False,
        "files": [str(certs / "a.crt"), str(certs / "b.crt")],
    }


def test_without_ca_certs_there_is_no_ca_certs_section(tmp_path):
    assert "caCerts" not in _rendered(tmp_path)


def test_odd_characters_in_the_project_path_stay_one_yaml_string(tmp_path):
    odd = tmp_path / "it's \"odd\": #1 [a, b] {x} & *y"
    odd.mkdir()
    (tmp_path / "vms.yaml").write_text(f"vms:\n  agent:\n    project: {json.dumps(str(odd))}\n"
                                       "    mount_point: /work/odd\n")
    inventory = load_inventory(tmp_path / "vms.yaml")

    lima = yaml.safe_load(render.render(inventory.vms["agent"]))

    assert lima["mounts"][0]["location"] == str(odd)


def test_refuses_a_project_path_lima_would_read_as_a_go_template(tmp_path):
    odd = tmp_path / "{{.Home}}"
    odd.mkdir()
    (tmp_path / "vms.yaml").write_text(f"vms:\n  agent:\n    project: {json.dumps(str(odd))}\n"
                                       "    mount_point: /work/odd\n")
    vm = load_inventory(tmp_path / "vms.yaml").vms["agent"]

    with pytest.raises(ConfigError) as caught:
        render.render(vm)

    assert str(caught.value) == (
        f"vms.agent.project: {str(odd)!r} contains '{{{{', which Lima reads as a template "
        "expression (rename the folder)"
    )


def test_write_puts_the_file_in_the_build_folder_and_leaves_an_unchanged_one_alone(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CORRAL_BUILD_DIR", str(tmp_path / "build"))
    vm = _vm(tmp_path)

    written = render.write(vm)
    os.utime(written, (1, 1))
    again = render.write(vm)

    assert written == tmp_path / "build" / "lima" / "agent.yaml"
    assert again == written
    assert written.stat().st_mtime == 1
    assert yaml.safe_load(written.read_text())["param"]["corral_vm"] == "agent"
    assert [p.name for p in written.parent.iterdir()] == ["agent.yaml"]


def test_write_reports_an_unwritable_build_folder_in_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CORRAL_BUILD_DIR", str(blocker))
    vm = _vm(tmp_path)

    with pytest.raises(ConfigError) as caught:
        render.write(vm)

    assert len(str(caught.value).splitlines()) == 1
    assert "CORRAL_BUILD_DIR" in str(caught.value)


def _real_limactl() -> str | None:
    """limactl on PATH, unless it is the stand-in."""
    found = shutil.which("limactl")
    if found and Path(found).resolve() != (FAKES / "limactl").resolve():
        return found
    return None


@pytest.mark.parametrize("body", [
    "", "image: debian-12\nmount: readonly", "image: ubuntu-24.04\nmount: none",
    "image: ubuntu-26.04\nport_forwards: [{guest: 8080, host: 18080}]",
])
def test_limactl_validate_accepts_every_rendered_definition(tmp_path, monkeypatch, body):
    limactl = _real_limactl()
    if limactl is None:
        pytest.skip("Lima is not installed here (limactl not on PATH)")
    if os.geteuid() == 0:
        pytest.skip("limactl refuses to run as root")
    monkeypatch.setenv("CORRAL_BUILD_DIR", str(tmp_path / "build"))
    vm = _vm(tmp_path, body)

    result = subprocess.run([limactl, "validate", str(render.write(vm))],
                            capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr
