"""Providers: the kinds of machine corral can create, and how one is chosen for a VM."""

from __future__ import annotations

from corral.config import VM
from corral.errors import ProviderMissing
from corral.providers.base import Machine, Provider

__all__ = ["Machine", "Provider", "provider_class", "provider_for"]


def _registry() -> dict[str, type[Provider]]:
    from corral.providers.incus import IncusProvider
    from corral.providers.lima import LimaProvider

    return {"lima": LimaProvider, "incus": IncusProvider}


def provider_class(name: str) -> type[Provider]:
    """The provider class registered as ``name`` (``lima``, ``incus``)."""
    return _registry()[name]


def provider_for(vm: VM) -> Provider:
    """The provider that creates ``vm``: its ``provider`` key, or the first one available.

    ``auto`` picks Lima when ``limactl`` is on PATH, else Incus when ``incus`` is.
    """
    registry = _registry()
    choice = vm.settings.provider
    if choice != "auto":
        provider = registry[choice]()
        provider.require()
        return provider
    for name in ("lima", "incus"):
        if registry[name].available():
            return registry[name]()
    raise ProviderMissing(
        "neither limactl nor incus found on PATH: install Lima "
        "(https://lima-vm.io/docs/installation/) or, on Linux, run "
        "'sudo uv run invoke host.setup --provider incus'"
    )
