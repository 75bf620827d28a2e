"""corral's deploy: the roles each VM gets, in order (see deploy/roles/__init__.py).

    uv run pyinfra inventory/inventory.py deploy/deploy.py

``CORRAL_ROLES`` (comma-separated) limits the roles; ``CORRAL_REPORT`` names a file
that receives what each operation did, as JSON, when pyinfra exits.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pyinfra import host  # noqa: E402

from deploy import report, roles  # noqa: E402

report.install(os.environ.get("CORRAL_REPORT"))
requested = [r for r in os.environ.get("CORRAL_ROLES", "").split(",") if r] or None
chosen = roles.selected(host.data.dict(), requested)
# pyinfra tells operations apart by their call stack's line numbers: host.loop adds the
# role's place in ROLE_NAMES, so VMs that get different roles still agree on the order.
for role in host.loop(roles.ROLE_NAMES):
    if role in chosen:
        roles.run(role)
