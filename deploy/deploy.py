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
for role in roles.selected(host.data.dict(), requested):
    roles.run(role)
