"""The Invoke entry: every task listed, bad input turned into one line and exit code 1."""

import os
import subprocess
import sys

from corral import paths


def invoke(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(paths.ROOT), *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd,
        check=False,
    )


def test_lists_every_task():
    listed = invoke("--list").stdout
    for name in ["vm.create", "vm.start", "vm.stop", "vm.delete", "vm.list", "vm.shell",
                 "vm.ssh-config", "vm.provision", "vm.verify", "vm.update", "host.setup",
                 "host.doctor", "host.schedule-update", "image.build"]:
        assert name in listed


def test_bad_inventory_gives_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "vms.yaml"
    bad.write_text("vms:\n  web: {memory: 8GB}\n")
    result = invoke("vm.list", env={"CORRAL_INVENTORY": str(bad)}, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "vms.yaml: vms.web.memory: '8GB' is not a size (use e.g. 8GiB)"
    ]


def test_unknown_vm_name_gives_one_line_and_exit_1(tmp_path):
    good = tmp_path / "vms.yaml"
    (tmp_path / "app").mkdir()
    good.write_text("vms:\n  web: {project: app}\n")
    result = invoke("vm.stop", "--name", "db", env={"CORRAL_INVENTORY": str(good)}, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "vms.yaml: no VM named 'db' (known: web)"
