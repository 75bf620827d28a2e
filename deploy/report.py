"""What each operation did on each host, written as JSON when pyinfra exits."""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

from pyinfra.context import ctx_host, ctx_state

_installed: list[str] = []


def install(path: str | None) -> None:
    """Write the report to ``path`` when the pyinfra process exits (once per process)."""
    if not path or _installed:
        return
    _installed.append(path)
    state = ctx_state.get()
    atexit.register(write, state, Path(path))


def results(state) -> dict[str, dict]:
    """``{host: {"failed": bool, "ops": [{"name", "status", "error"}]}}`` from a State."""
    report = {}
    for host in state.inventory:
        ops = []
        for op_hash in host.op_hash_order:
            names = sorted(state.get_op_meta(op_hash).names)
            name = names[0] if names else op_hash
            meta = state.get_op_data_for_host(host, op_hash).operation_meta
            ops.append({"name": name, **_outcome(state, host, meta)})
        report[host.name] = {"failed": host in state.failed_hosts, "ops": ops}
    return report


def _outcome(state, host, meta) -> dict:
    if not meta.is_complete():
        with ctx_state.use(state), ctx_host.use(host):
            try:
                would = meta.will_change
            except Exception:  # noqa: BLE001 - a generator that fails cannot be predicted
                would = None
        return {"status": "not run", "would_change": would}
    if meta.did_error():
        lines = [line for line in meta.stderr_lines + meta.stdout_lines if line.strip()]
        return {"status": "failed", "error": lines[-1] if lines else "failed without a message"}
    return {"status": "changed" if meta.did_change() else "unchanged"}


def write(state, path: Path) -> None:
    """Write :func:`results` of ``state`` to ``path`` as JSON (mode 0600)."""
    path.write_text(json.dumps(results(state), indent=2))
    os.chmod(path, 0o600)
