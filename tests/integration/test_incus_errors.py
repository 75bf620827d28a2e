"""Bad input on the Incus provider: one clear line, exit 1, nothing made or removed."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fixtures.incus import (
    IMAGE_ALIAS,
    corral_env,
    force_delete,
    run_invoke,
    unique_name,
    write_inventory,
)

pytestmark = pytest.mark.integration


def _exists(name: str) -> bool:
    listed = subprocess.run(["incus", "list", name, "--format", "json"], capture_output=True,
                            text=True, check=True).stdout
    return any(entry["name"] == name for entry in json.loads(listed))


def _refused(result: subprocess.CompletedProcess) -> str:
    """The one error line of a task that refused; fails on a traceback or a zero exit."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unknown_image_alias_is_refused_with_a_hint(incus, tmp_path):
    name = unique_name()
    inventory = write_inventory(tmp_path, name, image="ubuntu-24.04")

    line = _refused(run_invoke("vm.create", "--name", name,
                               env=corral_env(tmp_path, inventory), check=False))

    assert "no image corral/ubuntu-24.04" in line
    assert "image.build makes Debian images only" in line
    assert not _exists(name)
    assert not (tmp_path / "state" / "incus" / name).exists()


def test_unreachable_daemon_is_reported_with_the_host_setup_hint(incus, tmp_path):
    name = unique_name()
    inventory = write_inventory(tmp_path, name)
    env = corral_env(tmp_path, inventory)
    env["INCUS_SOCKET"] = str(tmp_path / "no-such.socket")

    for task in ("vm.create", "vm.list"):
        line = _refused(run_invoke(task, env=env, check=False))

        assert "the Incus daemon does not answer" in line
        assert "host.setup --provider incus" in line
    assert not _exists(name)


def test_container_corral_did_not_create_is_never_adopted_or_touched(incus, tmp_path):
    name = unique_name()
    subprocess.run(["incus", "init", IMAGE_ALIAS, name], capture_output=True, check=True)
    try:
        env = corral_env(tmp_path, write_inventory(tmp_path, name))

        for task in (["vm.create"], ["vm.start"], ["vm.stop"], ["vm.delete", "--yes"]):
            line = _refused(run_invoke(*task, "--name", name, env=env, check=False))

            assert f"{name}: an Incus container of that name exists but corral did not " \
                   "create it" in line
        shown = json.loads(subprocess.run(["incus", "query", f"/1.0/instances/{name}"],
                                          capture_output=True, text=True, check=True).stdout)
        assert shown["status"] == "Stopped"
        assert "user.corral.managed" not in shown["config"]
        assert not (tmp_path / "state" / "incus" / name).exists()
    finally:
        force_delete(name)


def test_image_build_refuses_an_image_it_cannot_build(incus, tmp_path):
    env = corral_env(tmp_path, tmp_path / "unused.yaml")

    line = _refused(run_invoke("image.build", "--image", "ubuntu-24.04", env=env, check=False))

    assert "'ubuntu-24.04' cannot be built here (choose one of: debian-13, debian-12)" in line


def test_image_build_reuses_the_imported_image(incus, tmp_path):
    env = corral_env(tmp_path, tmp_path / "unused.yaml")

    result = run_invoke("image.build", "--image", "debian-13", env=env)

    assert f"image {IMAGE_ALIAS} present, nothing to do" in result.stdout


def test_host_setup_a_second_time_has_nothing_to_do(incus, tmp_path):
    env = corral_env(tmp_path, tmp_path / "unused.yaml")

    result = run_invoke("host.setup", "--provider", "incus", env=env)

    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 5
    assert all(line.endswith("nothing to do") for line in lines), result.stdout


def test_host_setup_refuses_an_unknown_provider(tmp_path):
    env = corral_env(tmp_path, tmp_path / "unused.yaml")

    line = _refused(run_invoke("host.setup", "--provider", "docker", env=env, check=False))

    assert "'docker' is not one of: lima, incus" in line
