"""Shared test set-up: integration tests may skip on a laptop, never in CI."""

import os

import pytest

IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, reason: str) -> None:
    """Skip the calling test unless ``condition`` holds; in CI (CI=true) fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI but unavailable: {reason}")
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, an integration test that skipped (for whatever reason) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and item.get_closest_marker("integration"):
        report.outcome = "failed"
        report.longrepr = f"integration test skipped in CI: {report.longrepr}"

# Fixture modules, each owned by the part of corral it sets up.
pytest_plugins = ["tests.fixtures.incus", "tests.fixtures.provisioned"]
