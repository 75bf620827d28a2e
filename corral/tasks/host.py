"""The host.* tasks: prepare the host, check it, and schedule updates."""

from __future__ import annotations

from invoke import Exit, task

from corral.tasks import reported


@task(help={"provider": "lima or incus (default: the inventory's, else incus on Linux)"})
@reported
def setup(c, provider=None):
    """Install and start what the provider needs on this host (Incus: root, Debian/Ubuntu)."""
    from corral import hostsetup

    hostsetup.setup(provider)


@task
@reported
def doctor(c):
    """Check the host: provider tools, virtualization, disk, inventory, templates."""
    from corral import doctor as checks

    if not checks.run():
        raise Exit(code=1)


@task(name="schedule-update",
      help={"at": "time of day to run vm.update, HH:MM (default 04:00)",
            "remove": "remove the schedule instead"})
@reported
def schedule_update(c, at="04:00", remove=False):
    """Run vm.update every day on this host (systemd user timer, launchd agent or cron)."""
    from corral import schedule

    if remove:
        schedule.remove()
    else:
        schedule.install(at)
