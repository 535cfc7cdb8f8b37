"""What a manifest or a benchmark records about the machine: library versions, Python, platform, CPU."""

import platform
from importlib import metadata

from .runtime.cpu import cpu_info


def package_versions(names):
    """``{name: version or None}`` for installed distributions (``None`` when not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe(names):
    """Versions of ``names``, the Python version, the platform string and :func:`~e5onnx.runtime.cpu.cpu_info`."""
    return {"python": platform.python_version(), "platform": platform.platform(),
            "versions": package_versions(names), "cpu": cpu_info()}
