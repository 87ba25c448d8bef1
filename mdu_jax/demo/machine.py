"""What a demo run ran on: library versions and the processor, recorded in ``summary.json`` so
that numbers from different machines can be told apart."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import jax


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The processor's name (``model name`` of /proc/cpuinfo on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict:
    """{python, jax, jaxlib, flax, optax, numpy, platform, cpu, cpu_count, backend, devices}."""
    return {"python": sys.version.split()[0], "jax": jax.__version__, "jaxlib": _version("jaxlib"),
            "flax": _version("flax"), "optax": _version("optax"), "numpy": _version("numpy"),
            "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
