"""scripts/agent-vm.setup.sh as a file: clean shell that Lima can embed in its template."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from corral import render


def test_setup_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")

    result = subprocess.run([shellcheck, str(render.SETUP_SCRIPT)], capture_output=True,
                            text=True, check=False)

    assert result.returncode == 0, result.stdout


def test_setup_script_stops_at_the_first_error_and_shows_each_step():
    lines = render.SETUP_SCRIPT.read_text().splitlines()

    assert lines[0] == "#!/bin/bash"
    assert "set -eux -o pipefail" in lines


def test_setup_script_has_no_go_template_braces_lima_would_expand():
    assert "{{" not in render.SETUP_SCRIPT.read_text()
