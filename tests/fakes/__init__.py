"""The stand-in limactl and the helpers that put it on PATH."""
