"""Puts the stand-in limactl (tests/fakes/limactl) on PATH with a throwaway home and inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FAKES = Path(__file__).resolve().parent
ROOT = FAKES.parent.parent

INVENTORY = """\
defaults:
  provider: lima
  image: debian-13
  cpus: 2
  memory: 2GiB
  disk: 10GiB
vms:
  agent:
    project: project
"""


@dataclass
class FakeLima:
    """One test's world: a home folder, Lima's instance folder and an inventory.

    ``env`` is the environment the tests use for subprocesses; the same values are set
    in this process (through ``monkeypatch``) for tests that call corral directly.
    """

    root: Path
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return Path(self.env["HOME"])

    @property
    def lima_home(self) -> Path:
        return Path(self.env["LIMA_HOME"])

    @property
    def inventory(self) -> Path:
        return Path(self.env["CORRAL_INVENTORY"])

    @property
    def project(self) -> Path:
        return self.root / "project"

    def calls(self) -> list[list[str]]:
        """Each limactl invocation so far, as its argv (without ``limactl``)."""
        log = Path(self.env["FAKE_LIMACTL_LOG"])
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def commands(self) -> list[str]:
        """The limactl subcommand of each invocation, global flags left out."""
        return [next(a for a in argv if not a.startswith("--")) for argv in self.calls()]

    def status(self, name: str) -> str | None:
        """The stand-in's state of instance ``name`` (Running, Stopped), None when absent."""
        state = self.lima_home / name / "fake-status"
        return state.read_text().strip() if state.exists() else None

    def limactl(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """Run the stand-in directly (to set up a state corral did not make)."""
        return subprocess.run(["limactl", *args], env={**self.env, **env},
                              capture_output=True, text=True, check=False)

    def invoke(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """Run ``invoke ARGS`` from the checkout, as a user would (``uv run invoke``)."""
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT,
                              env={**self.env, **env}, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inventory: str = INVENTORY):
    """Set up the stand-in limactl and a throwaway home; return the :class:`FakeLima`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "limactl").symlink_to(FAKES / "limactl")
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "project").mkdir()
    inventory_file = tmp_path / "vms.yaml"
    inventory_file.write_text(inventory)
    # The virtualenv's python3 runs the stand-in (it needs PyYAML).
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    env = {
        **os.environ,
        "PATH": path,
        "HOME": str(home),
        "LIMA_HOME": str(home / ".lima"),
        "CORRAL_INVENTORY": str(inventory_file),
        "CORRAL_BUILD_DIR": str(tmp_path / "build"),
        "CORRAL_STATE_DIR": str(tmp_path / "state"),
        "CORRAL_CONFIG_DIR": str(tmp_path / "config"),
        "FAKE_LIMACTL_LOG": str(tmp_path / "limactl.log"),
        # Real limactl refuses root; the tests here run as root (see tests/fakes/limactl).
        "FAKE_LIMACTL_ALLOW_ROOT": "1",
    }
    for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "FAKE_LIMACTL_FAIL",
                "FAKE_LIMACTL_SHELL_STATUS", "FAKE_LIMACTL_VERSION", "FAKE_LIMACTL_EUID"):
        env.pop(key, None)
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path / "project")
    return FakeLima(root=tmp_path, env=env)
