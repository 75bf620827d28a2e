"""What the suites expect of one VM: its inventory entry, read exactly as the roles read it.

``uv run invoke vm.verify`` runs these suites with ``CORRAL_INVENTORY`` and ``CORRAL_VM``
set and ``--hosts`` pointing at the VM; they are not part of ``uv run pytest``.
"""

from __future__ import annotations

import os

import pytest

from corral import secrets as host_secrets
from corral.config import VM, inventory_path
from tests.infra.guest import target

# Without a VM to check (``uv run pytest tests/``), the suites are left out.
collect_ignore_glob = [] if os.environ.get("CORRAL_VM") else ["test_*.py"]


def pytest_report_header(config):
    if not os.environ.get("CORRAL_VM"):
        return "tests/infra: left out, CORRAL_VM is not set (run 'uv run invoke vm.verify')"
    vm, _ = target()
    return f"tests/infra: checking VM {vm.name} of {inventory_path()}"


@pytest.fixture(scope="session")
def vm() -> VM:
    """The VM under test, from the inventory vm.verify names in the environment."""
    return target()[0]


@pytest.fixture(scope="session")
def data() -> dict:
    """The host data the roles received for this VM (pins filled in from versions.yaml)."""
    return target()[1]


@pytest.fixture(scope="session")
def login_user(data) -> str:
    return data["login_user"]


@pytest.fixture(scope="session")
def agent_user(data) -> str:
    return data["agent_user"]


@pytest.fixture(scope="session")
def secrets(data) -> dict[str, str]:
    """The secrets the credentials role hands to this VM now (environment, secrets.env).

    The suites compare hashes of them with the guest's files; the values never leave the
    host and never appear in a test's output.
    """
    return host_secrets.for_vm(data)


@pytest.fixture(scope="module", autouse=True)
def _reachable(host):
    """Stop the whole run with one line when the VM cannot be reached over SSH."""
    try:
        host.run("true")
    except RuntimeError as err:
        # testinfra raises with the failed ssh command's result: keep ssh's own words.
        said = getattr(err.args[0], "stderr", "") if err.args else ""
        lines = [line.strip() for line in (said or str(err)).splitlines() if line.strip()]
        pytest.exit(f"cannot reach the VM over SSH: {lines[-1] if lines else 'ssh failed'}",
                    returncode=3)
