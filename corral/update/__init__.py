"""vm.update: security updates now, tools to their pinned or tracked versions, and a report."""

from corral.update.task import run

__all__ = ["run"]
