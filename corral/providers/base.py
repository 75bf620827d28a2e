"""The interface every provider (Lima, Incus, ...) implements for the vm.* tasks."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from corral.config import VM
from corral.errors import ProviderMissing

# Machine states, the same words for every provider.
RUNNING = "running"
STOPPED = "stopped"
BROKEN = "broken"
CREATING = "creating"


@dataclass(frozen=True)
class Machine:
    """A machine as the provider sees it now."""

    name: str
    provider: str
    status: str
    #: The ``Host`` alias in ``ssh_config`` that reaches the machine (``lima-agent``).
    ssh_host: str
    #: An ssh_config file usable with ``ssh -F``, pyinfra and testinfra; None until created.
    ssh_config: Path | None


class Provider(ABC):
    """Creates and drives machines of one kind.

    Every method takes the validated :class:`~corral.config.VM`, so that a provider reads
    what it needs (image, cpus, mounts, ca_certs) from one place. Methods raise
    :class:`~corral.errors.ProviderError` with the tool's own words when it fails.
    """

    #: The name used in the inventory's ``provider`` key.
    name: ClassVar[str]
    #: The executable the provider drives.
    tool: ClassVar[str]
    #: How to install that executable, for the one-line error when it is missing.
    install_hint: ClassVar[str]

    @classmethod
    def available(cls) -> bool:
        """True when the provider's tool is on PATH."""
        return shutil.which(cls.tool) is not None

    def require(self) -> None:
        """Raise :class:`ProviderMissing` with the install hint unless the tool is present."""
        if not self.available():
            raise ProviderMissing(f"{self.tool} not found on PATH: {self.install_hint}")

    @abstractmethod
    def create(self, vm: VM) -> bool:
        """Create and start ``vm``; start it if it exists but is stopped.

        Returns True when a machine was created, False when one was already there.
        """

    @abstractmethod
    def start(self, vm: VM) -> None:
        """Start a stopped machine (nothing to do when it runs)."""

    @abstractmethod
    def stop(self, vm: VM) -> None:
        """Stop a running machine (nothing to do when it is stopped)."""

    @abstractmethod
    def delete(self, vm: VM) -> None:
        """Delete the machine and every file corral kept for it."""

    @abstractmethod
    def machines(self) -> list[Machine]:
        """The machines of this provider that corral created."""

    @abstractmethod
    def machine(self, name: str) -> Machine | None:
        """The machine named ``name``, or None when it does not exist.

        Raises :class:`~corral.errors.ProviderError` when a machine of that name exists
        but corral did not create it: corral never adopts, stops or deletes it.
        """

    @abstractmethod
    def shell(self, vm: VM, command: list[str] | None = None, workdir: str | None = None) -> int:
        """Open a login shell in the machine, or run ``command``; return its exit status."""

    @abstractmethod
    def ssh_host(self, name: str) -> str:
        """The ``Host`` alias that reaches machine ``name`` in its ssh.config."""

    @abstractmethod
    def ssh_config(self, name: str) -> Path:
        """The ssh.config file for machine ``name`` (it exists once the machine does)."""
