"""corral's Invoke entry point: `uv run invoke --list` shows every task."""

from invoke import Collection

from corral.tasks import host, image, vm

namespace = Collection(
    Collection.from_module(vm, name="vm"),
    Collection.from_module(host, name="host"),
    Collection.from_module(image, name="image"),
)
