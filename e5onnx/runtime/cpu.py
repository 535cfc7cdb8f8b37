"""What this process may use of the CPU: usable core count and instruction-set flags."""

import math
import os
import platform
from pathlib import Path

#: Flags that decide which kernels and variants are fast on a CPU (x86 names from /proc/cpuinfo).
RELEVANT_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "sve", "i8mm", "bf16",
)


def _cgroup_cpu_limit(root="/sys/fs/cgroup"):
    """CPU quota of this process's cgroup in cores (float), or ``None`` when unlimited or unknown."""
    root = Path(root)
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus():
    """Number of CPUs this process may run on: the affinity mask, capped by a cgroup CPU quota.

    Returns:
        int >= 1. A fractional quota is rounded up (1.5 cores -> 2).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return max(1, n)


def cpu_info():
    """Describe this CPU for a manifest: ``{"machine", "model", "flags"}``.

    ``flags`` is the sorted subset of :data:`RELEVANT_FLAGS` the CPU reports (Linux ``/proc/cpuinfo``;
    elsewhere empty).
    """
    model, flags = platform.processor() or "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {
        "machine": platform.machine(),
        "model": model,
        "flags": sorted(f for f in RELEVANT_FLAGS if f in flags),
    }


#: CPU kinds, fastest INT8 path first. Two CPUs of one kind run the same onnxruntime (MLAS) INT8 kernels.
CPU_KINDS = ("amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "arm64_dot", "arm64", "other")


def cpu_kind(info=None):
    """The kind of CPU for variant choice: one of :data:`CPU_KINDS`.

    Args:
        info: a :func:`cpu_info` dict (default: this CPU's).

    Returns:
        ``"amx"`` (AMX-INT8 tiles), ``"avx512_vnni"``, ``"avx_vnni"`` (VNNI: int8 dot products without
        16-bit saturation), ``"avx512"`` / ``"avx2"`` (x86 without VNNI: u8×s8 products saturate in 16 bits,
        so INT8 weights need ``reduce_range``), ``"arm64_dot"`` (ARMv8.2 ``asimddp``), ``"arm64"`` or ``"other"``.
    """
    info = cpu_info() if info is None else info
    flags, machine = set(info.get("flags", ())), str(info.get("machine", "")).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64_dot" if "asimddp" in flags else "arm64"
    for kind, needed in (("amx", "amx_int8"), ("avx512_vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni"),
                         ("avx512", "avx512bw"), ("avx2", "avx2")):
        if needed in flags:
            return kind
    return "other"


def int8_saturates(kind):
    """True on CPU kinds whose u8×s8 INT8 kernels add pairs of products in 16 bits (x86 without VNNI).

    There onnxruntime recommends ``reduce_range`` (7-bit weights) so that 2 × 255 × 63 fits in int16
    (onnxruntime quantization docs, "When and why do I need to try U8U8?" / reduce_range).
    """
    return kind in ("avx512", "avx2", "other")
