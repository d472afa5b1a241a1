"""The CPU this process runs on, as Linux's /proc/cpuinfo describes it (elsewhere what the
platform module says): what results pages name their machine by, and what decides which CPU kernel
pays (bf16 instructions, the vendor whose Bernoulli kernel torch hands to MKL)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # the instructions that make bf16 matmuls native


@functools.cache
def _cpuinfo_lines() -> tuple[str, ...]:
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:  # (not Linux, or no procfs)
        return ()


def cpuinfo_field(name: str) -> str:
    """The first processor's ``name`` field of /proc/cpuinfo ("model name", "vendor_id",
    "flags"); "" where the file or the field is missing."""
    for line in _cpuinfo_lines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def bf16_flags() -> list[str]:
    """Which of :data:`BF16_FLAGS` the CPU reports."""
    flags = cpuinfo_field("flags").split()
    return [flag for flag in BF16_FLAGS if flag in flags]


def cpu_vendor() -> str:
    """The vendor id ("GenuineIntel", "AuthenticAMD"); else platform.processor()."""
    return cpuinfo_field("vendor_id") or platform.processor()


def cpu_name() -> str:
    """The CPU's model name, with its bf16 instructions where it has them (they decide bf16 and
    matmul speed): "AMD EPYC 9B14 (avx512_bf16)"; else platform.processor()."""
    name = cpuinfo_field("model name") or platform.processor()
    flags = bf16_flags()
    return f"{name} ({', '.join(flags)})" if flags else name
