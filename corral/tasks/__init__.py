"""Invoke tasks: thin wrappers that turn corral's library calls into commands and exit codes."""

from __future__ import annotations

import functools
import logging
import os

from invoke import Exit

from corral.config import Inventory, load_inventory
from corral.errors import CorralError


def reported(func):
    """Run a task body, turning any :class:`CorralError` into one line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        logging.basicConfig(
            level=logging.DEBUG if os.environ.get("CORRAL_DEBUG") else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        try:
            return func(*args, **kwargs)
        except CorralError as err:
            raise Exit(str(err), code=err.exit_code) from None

    return wrapper


def inventory() -> Inventory:
    """The inventory in use (``$CORRAL_INVENTORY`` or inventory/vms.yaml), validated."""
    return load_inventory()
