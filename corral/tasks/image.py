"""The image.* tasks: local system images for the Incus provider."""

from __future__ import annotations

from invoke import task

from corral.tasks import reported


@task(help={"image": "debian-13 or debian-12", "rebuild": "build again even if present"})
@reported
def build(c, image="debian-13", rebuild=False):
    """Build a system image with debootstrap and import it into Incus as corral/IMAGE."""
    from corral import image as images

    images.build(image, rebuild=rebuild)
