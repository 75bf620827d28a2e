"""Cold and no-op provisioning times: corral's roles next to a plain shell script.

    uv run python bench/provision.py

Creates two fresh Incus containers from inventory/ci.yaml's defaults: one provisioned
with ``vm.provision`` (every role, twice), one given the same packages by a shell
script (twice). Prints one table; deletes both containers.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral import output  # noqa: E402
from corral.hostdata import load_versions  # noqa: E402
from deploy.roles.base import BASE_PACKAGES  # noqa: E402
from tests.fixtures.incus import (  # noqa: E402
    corral_env,
    force_delete,
    run_invoke,
    unique_name,
    write_inventory,
)
from tests.fixtures.provisioned import FAKE_GH_TOKEN, FAKE_MODEL_KEY  # noqa: E402


def shell_script() -> str:
    """What a hand-written provisioning script does for the same package set."""
    versions = load_versions()
    packages = BASE_PACKAGES + ["unattended-upgrades", "gh", "nodejs", "npm", "python3-venv",
                                "python3-dev", "golang-go", "cargo", "rustc"]
    return "\n".join([
        "set -eu",
        "export DEBIAN_FRONTEND=noninteractive",
        "sudo -E apt-get update -q",
        f"sudo -E apt-get install -y -q --no-install-recommends {' '.join(packages)}",
        "sudo NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm install --global "
        f"--prefix /usr/local --no-audit --no-fund opencode-ai@{versions['opencode']['version']}",
        "[ -x /opt/bench-uv/bin/pip ] || sudo python3 -m venv /opt/bench-uv",
        "sudo PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/bench-uv/bin/pip install -q "
        f"uv=={versions['python']['uv_version']}",
    ])


def timed(argv: list[str], **kwargs) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, **kwargs)
    return time.monotonic() - start


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    roles_vm, script_vm = unique_name("roles-bench"), unique_name("roles-bench-sh")
    rows = []
    try:
        inventory = write_inventory(folder / "roles", roles_vm)
        env = {**corral_env(folder / "roles", inventory), "GH_TOKEN": FAKE_GH_TOKEN,
               "AZURE_OPENAI_API_KEY": FAKE_MODEL_KEY}
        run_invoke("vm.create", env=env)
        provision = ["uv", "run", "invoke", "vm.provision"]
        cold = timed(provision, cwd=ROOT, env=env)
        noop = timed(provision, cwd=ROOT, env=env)
        rows.append(["corral vm.provision (all roles)", f"{cold:.1f}", f"{noop:.1f}",
                     f"{noop / cold:.3f}"])

        script_inventory = write_inventory(folder / "script", script_vm)
        script_env = corral_env(folder / "script", script_inventory)
        run_invoke("vm.create", env=script_env)
        ssh = ["ssh", "-F", str(folder / "script" / "state" / "incus" / script_vm /
                                "ssh.config"), f"incus-{script_vm}"]
        command = "bash -c " + shlex.quote(shell_script())
        cold = timed([*ssh, command])
        again = timed([*ssh, command])
        rows.append(["plain shell script (same packages)", f"{cold:.1f}", f"{again:.1f}",
                     f"{again / cold:.3f}"])
    finally:
        for name, where in ((roles_vm, "roles"), (script_vm, "script")):
            inv = folder / where / "inventory.yaml"
            if inv.exists():
                run_invoke("vm.delete", "--yes", env=corral_env(folder / where, inv),
                           check=False)
            force_delete(name)
    output.say(output.table(["method", "cold s", "re-run s", "re-run / cold"], rows))


if __name__ == "__main__":
    main()
