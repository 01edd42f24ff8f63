"""What the CPU offers for reduced precision: its flags, and the INT8 and BF16 dot-product units they name.

These units decide the INT8/BF16 speed-ups (and whether INT8 kernels without VNNI can saturate), and the machines
this project runs on differ from run to run, so the bench reports them and the OpenVINO INT8 export records them.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

#: /proc/cpuinfo flag -> unit name; INT8 dot products (u8 x s8 with 32-bit accumulation) and BF16 ones
INT8_UNITS = {"avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8", "asimddp": "Arm dotprod"}
BF16_UNITS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "bf16": "Arm BF16"}


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask; else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@functools.cache
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """(CPU model name, its flags) from ``/proc/cpuinfo`` (Linux); (``platform.processor()``, empty) elsewhere."""
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = frozenset(value.split())
    except OSError:
        pass
    return name, flags


def units(table: dict[str, str], flags: frozenset[str] | None = None) -> list[str]:
    """Names of the units of ``table`` (:data:`INT8_UNITS` or :data:`BF16_UNITS`) the CPU has (``flags``: this
    machine's by default)."""
    have = cpu_model_and_flags()[1] if flags is None else flags
    return [name for flag, name in table.items() if flag in have]


def has_int8_dot_product(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU has a VNNI/AMX-class INT8 unit: without one, x86 u8 x s8 kernels (``vpmaddubsw``) saturate
    their 16-bit intermediate sums and 8-bit weights can overflow (OpenVINO's "saturation issue" note; NNCF's
    ``OverflowFix`` keeps 7-bit weights for such CPUs)."""
    return bool(units(INT8_UNITS, flags))
