"""Lima VMs on macOS and Linux, driven through limactl with corral's rendered template."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from corral import process, render
from corral.config import VM
from corral.errors import HostError, ProviderError
from corral.providers.base import BROKEN, CREATING, RUNNING, STOPPED, Machine, Provider

log = logging.getLogger(__name__)

# Lima's instance states (`limactl list --json`, field `status`) in corral's words.
_STATES = {
    "Running": RUNNING,
    "Stopped": STOPPED,
    "Broken": BROKEN,
    "Installing": CREATING,
    "Uninitialized": CREATING,
}

#: The `param` key whose presence marks an instance as created by corral.
MARK = "corral"

_ROOT_REFUSAL = "must not run as the root user"


def lima_home() -> Path:
    """Lima's instance folder: ``$LIMA_HOME``, else ``~/.lima``."""
    explicit = os.environ.get("LIMA_HOME")
    return Path(explicit) if explicit else Path.home() / ".lima"


class LimaProvider(Provider):
    """Lima instances created from ``templates/lima/agent.yaml.j2``.

    corral touches only instances whose ``param.corral`` is set (the rendered template sets
    it), so an instance you made yourself with the same name is never adopted or deleted.
    """

    name = "lima"
    tool = "limactl"
    install_hint = ("install Lima 2 (https://lima-vm.io/docs/installation/, "
                    "e.g. 'brew install lima')")

    def create(self, vm: VM) -> bool:
        """Render ``vm``'s Lima definition, then create and start the instance.

        + vm: a validated VM of the inventory

        An instance that exists is started instead (nothing to do when it runs). Lima's
        progress (image download, boot, provisioning) streams to the terminal.
        """
        entry = self._entry(vm.name)
        if entry and not self._is_ours(entry):
            raise self._foreign(entry)
        if entry:
            if self._machine(entry).status != RUNNING:
                self.start(vm)
            return False

        # Render the definition, then let Lima create the instance from it.
        definition = render.write(vm)
        self._stream(["create", "--name", vm.name, str(definition)],
                     what=f"creating {vm.name}")
        self._stream(["start", vm.name], what=f"starting {vm.name}")
        return True

    def start(self, vm: VM) -> None:
        """Start ``vm``'s instance, streaming Lima's progress until it reports READY."""
        self._stream(["start", vm.name], what=f"starting {vm.name}")

    def stop(self, vm: VM) -> None:
        """Stop ``vm``'s instance."""
        self._limactl(["stop", vm.name], what=f"stopping {vm.name}")

    def delete(self, vm: VM) -> None:
        """Delete ``vm``'s instance (running or not) and its rendered definition."""
        entry = self._entry(vm.name)
        if entry is None:
            return
        if not self._is_ours(entry):
            raise self._foreign(entry)
        self._limactl(["delete", "-f", vm.name], what=f"deleting {vm.name}")
        render.lima_file(vm.name).unlink(missing_ok=True)

    def machines(self) -> list[Machine]:
        """corral's instances, from ``limactl list --json`` (one JSON object a line)."""
        return [self._machine(entry) for entry in self._instances() if self._is_ours(entry)]

    def machine(self, name: str) -> Machine | None:
        """The instance ``name`` if corral created it; refuse one corral did not create."""
        entry = self._entry(name)
        if entry is None:
            return None
        if not self._is_ours(entry):
            raise self._foreign(entry)
        return self._machine(entry)

    def shell(self, vm: VM, command: list[str] | None = None, workdir: str | None = None) -> int:
        """Run ``command`` (or a login shell) in the guest; return the guest's exit status.

        + vm: a running VM
        + command: argv to run, e.g. ``["bash", "-lc", "make test"]``; None for a shell
        + workdir: guest folder to start in (``limactl shell --workdir``)
        """
        argv = [self.tool, "shell"]
        if workdir:
            argv += ["--workdir", workdir]
        argv += [vm.name, *(command or [])]
        log.debug("running %s", shlex.join(argv))
        try:
            return subprocess.run(argv, check=False).returncode
        except FileNotFoundError:
            self.require()
            raise

    def ssh_host(self, name: str) -> str:
        """Lima's ``Host`` alias for instance ``name``: ``lima-NAME``."""
        return f"lima-{name}"

    def ssh_config(self, name: str) -> Path:
        """Lima's own ssh.config of instance ``name`` (``$LIMA_HOME/NAME/ssh.config``)."""
        return lima_home() / name / "ssh.config"

    # Talking to limactl.

    def _instances(self) -> list[dict]:
        result = self._limactl(["list", "--json"], what="listing Lima instances")
        instances = []
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            try:
                instances.append(json.loads(line))
            except json.JSONDecodeError:
                raise ProviderError(f"limactl list --json: unexpected output {line[:80]!r} "
                                    "(is limactl older than Lima 2.0?)") from None
        return instances

    def _entry(self, name: str) -> dict | None:
        """Lima's listing of instance ``name``, whoever created it; None when absent."""
        return next((e for e in self._instances() if e.get("name") == name), None)

    @staticmethod
    def _is_ours(entry: dict) -> bool:
        param = entry.get("param") or (entry.get("config") or {}).get("param") or {}
        return MARK in param

    def _machine(self, entry: dict) -> Machine:
        name = entry["name"]
        ssh_config = entry.get("sshConfigFile") or self.ssh_config(name)
        return Machine(
            name=name,
            provider=self.name,
            status=_STATES.get(entry.get("status", ""), BROKEN),
            ssh_host=entry.get("hostname") or self.ssh_host(name),
            ssh_config=Path(ssh_config),
        )

    @staticmethod
    def _foreign(entry: dict) -> ProviderError:
        """The error for an instance that exists but that corral did not create.

        An instance whose lima.yaml Lima cannot read shows no ``param``: say so instead.
        """
        name = entry.get("name")
        if "config" not in entry and entry.get("errors"):
            return ProviderError(
                f"{name}: a Lima instance of that name exists but Lima cannot read it "
                f"({entry['errors'][0]}; remove it: limactl delete -f {name})"
            )
        return ProviderError(
            f"{name}: a Lima instance of that name exists but corral did not create it "
            f"(rename the VM in the inventory, or remove it: limactl delete {name})"
        )

    def _limactl(self, args: list[str], *, what: str) -> subprocess.CompletedProcess:
        """Run ``limactl ARGS`` and capture its output; errors become one line."""
        self.require()
        try:
            return process.run([self.tool, "--tty=false", *args], what=what)
        except ProviderError as err:
            raise self._explain(err) from None

    def _stream(self, args: list[str], *, what: str) -> None:
        """Run ``limactl ARGS`` with its output going to the user as it comes.

        Lima logs its progress on stderr; each line is passed on at once and the last one
        is kept for the error when limactl fails.
        """
        self.require()
        argv = [self.tool, "--tty=false", *args]
        log.debug("running %s", shlex.join(argv))
        with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
            lines = []
            for line in proc.stderr:
                sys.stderr.write(line)
                sys.stderr.flush()
                lines.append(line)
                del lines[:-20]
        if proc.returncode != 0:
            raise self._explain(ProviderError(f"{what}: {process.last_line(''.join(lines))}"))

    @staticmethod
    def _explain(err: ProviderError) -> Exception:
        if _ROOT_REFUSAL in str(err):
            return HostError("limactl refuses to run as root: run corral as your own user, "
                             "without sudo")
        return err
