"""Benchmark of the Incus lifecycle: image build, create-to-SSH, stop, start, delete.

Run as root on a host prepared by ``host.setup --provider incus``:

    uv run python bench/lifecycle.py --runs 3

Each row is the median (and the spread) of ``--runs`` runs. Image builds go to a
separate alias and cache folder, so the shared ``corral/debian-13`` is never replaced.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from corral import image, lifecycle, output  # noqa: E402
from corral.config import load_inventory  # noqa: E402
from corral.providers.incus import IncusProvider  # noqa: E402

BENCH_ALIAS = "corral-bench/debian-13"
CI_INVENTORY = Path(__file__).resolve().parent.parent / "inventory" / "ci.yaml"


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes, its own output swallowed."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        action()
    return time.perf_counter() - started


def bench_images(runs: int, workdir: Path) -> dict[str, list[float]]:
    """Cold builds (empty package cache), cached rebuilds, and reuse of a present image."""
    rows: dict[str, list[float]] = {"image build, cold (downloads)": [],
                                    "image build, cached packages": [],
                                    "image build, already imported": []}
    try:
        for run in range(runs):
            cold = workdir / f"cache-cold-{run}"
            rows["image build, cold (downloads)"].append(timed(
                lambda c=cold: image.build("debian-13", rebuild=True, name=BENCH_ALIAS,
                                           cache_dir=c)))
        warm = workdir / "cache-cold-0"
        for _ in range(runs):
            rows["image build, cached packages"].append(timed(
                lambda: image.build("debian-13", rebuild=True, name=BENCH_ALIAS,
                                    cache_dir=warm)))
        for _ in range(runs):
            rows["image build, already imported"].append(timed(
                lambda: image.build("debian-13", name=BENCH_ALIAS, cache_dir=warm)))
    finally:
        subprocess.run(["incus", "image", "delete", BENCH_ALIAS], capture_output=True,
                       check=False)
    return rows


def bench_machines(runs: int, workdir: Path) -> dict[str, list[float]]:
    """create (until ``ssh true`` answers), stop, start (until SSH answers), delete."""
    rows: dict[str, list[float]] = {"create to SSH-ready": [], "stop": [],
                                    "start to SSH-ready": [], "delete": []}
    os.environ["CORRAL_CONFIG_DIR"] = str(workdir / "config")
    os.environ["CORRAL_STATE_DIR"] = str(workdir / "state")
    provider = IncusProvider()
    for run in range(runs):
        name = f"bench-{secrets.token_hex(3)}"
        project = workdir / f"project-{run}"
        project.mkdir()
        inventory = workdir / f"inventory-{run}.yaml"
        defaults = yaml.safe_load(CI_INVENTORY.read_text())["defaults"]
        inventory.write_text(yaml.safe_dump({"defaults": defaults,
                                             "vms": {name: {"project": str(project)}}}))
        vm = load_inventory(inventory).vms[name]

        def ssh_ready(vm=vm) -> None:
            subprocess.run(["ssh", "-F", str(provider.ssh_config(vm.name)),
                            provider.ssh_host(vm.name), "true"], check=True)

        try:
            rows["create to SSH-ready"].append(
                timed(lambda vm=vm, ready=ssh_ready: (lifecycle.create(vm), ready())))
            rows["stop"].append(timed(lambda vm=vm: lifecycle.stop(vm)))
            rows["start to SSH-ready"].append(
                timed(lambda vm=vm, ready=ssh_ready: (lifecycle.start(vm), ready())))
            rows["delete"].append(timed(lambda vm=vm: lifecycle.delete(vm)))
        finally:
            subprocess.run(["incus", "delete", "--force", name], capture_output=True,
                           check=False)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    parser.add_argument("--skip-images", action="store_true",
                        help="only the container lifecycle, no image builds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="corral-bench-") as scratch:
        workdir = Path(scratch)
        rows = {} if args.skip_images else bench_images(args.runs, workdir)
        rows.update(bench_machines(args.runs, workdir))

    output.say(f"Incus lifecycle, median of {args.runs} runs (seconds)")
    output.say(output.table(
        ["step", "median", "min", "max"],
        [[step, f"{statistics.median(times):.1f}", f"{min(times):.1f}", f"{max(times):.1f}"]
         for step, times in rows.items()],
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
