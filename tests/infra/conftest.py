"""What the suites expect of one VM: its inventory entry, read exactly as the roles read it.

``uv run invoke vm.verify`` runs these suites with ``CORRAL_INVENTORY`` and ``CORRAL_VM``
set and ``--hosts`` pointing at the VM; they are not part of ``uv run pytest``.
"""

from __future__ import annotations

import pytest

from corral import secrets as host_secrets
from corral.config import VM
from tests.infra.guest import target


def pytest_configure(config):
    """Refuse to run without a VM to check, before collecting anything."""
    target()


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
def secrets(vm, data) -> dict[str, str]:
    """The secrets the host hands to this VM now (environment, then secrets.env).

    The suites compare hashes of them with the guest's files; the values never leave the
    host and never appear in a test's output.
    """
    names = [host_secrets.GITHUB_TOKEN_ENV, data["credentials_model_key_env"]]
    return host_secrets.read(names, project=vm.project)


@pytest.fixture(scope="module", autouse=True)
def _reachable(host):
    """Stop the whole run with one line when the VM cannot be reached over SSH."""
    try:
        host.run("true")
    except RuntimeError as err:
        reason = str(err).splitlines()[0] if str(err) else "ssh failed"
        pytest.exit(f"cannot reach the VM over SSH: {reason}", returncode=3)
