"""rate.machine: the CPU's name and flags from /proc/cpuinfo, and what follows from them."""

import pytest
import torch

import rate.machine as machine
from rate.cli.records import machine_info
from rate.core import dropout

EPYC = ("processor\t: 0", "vendor_id\t: AuthenticAMD", "model name\t: AMD EPYC 9B14",
        "flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni", "", "processor\t: 1", "model name\t: other")
XEON = ("vendor_id\t: GenuineIntel", "model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
        "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile")


def as_cpuinfo(monkeypatch, lines):
    monkeypatch.setattr(machine, "_cpuinfo_lines", lambda: tuple(lines))


def test_the_first_processors_fields_name_the_cpu_and_its_bf16_instructions(monkeypatch):
    as_cpuinfo(monkeypatch, EPYC)
    assert machine.cpuinfo_field("model name") == "AMD EPYC 9B14"  # (not the second processor's)
    assert machine.cpuinfo_field("no such field") == ""
    assert machine.cpu_name() == "AMD EPYC 9B14 (avx512_bf16)"
    assert machine.cpu_vendor() == "AuthenticAMD"
    assert machine_info("cpu")["machine"].endswith(" AMD EPYC 9B14 (avx512_bf16)")
    as_cpuinfo(monkeypatch, XEON)
    assert machine.bf16_flags() == ["avx512_bf16", "amx_bf16"]
    assert machine.cpu_name().endswith("@ 2.70GHz (avx512_bf16, amx_bf16)")


def test_without_cpuinfo_the_platform_module_names_the_cpu(monkeypatch):
    as_cpuinfo(monkeypatch, ())
    monkeypatch.setattr(machine.platform, "processor", lambda: "arm")
    assert machine.cpu_name() == "arm" and machine.cpu_vendor() == "arm" and machine.bf16_flags() == []


def test_a_missing_cpuinfo_file_reads_as_no_fields(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "Path", lambda _: tmp_path / "absent")
    machine._cpuinfo_lines.cache_clear()
    try:
        assert machine.cpuinfo_field("model name") == ""
    finally:
        machine._cpuinfo_lines.cache_clear()


@pytest.mark.parametrize("lines, mkl, cheaper", [(XEON, True, False), (XEON, False, True), (EPYC, True, True)])
def test_the_cheaper_dropout_mask_is_drawn_unless_torch_hands_the_draw_to_mkl(monkeypatch, lines, mkl, cheaper):
    """ATen gives the CPU Bernoulli draw to MKL on Intel CPUs in an MKL build; elsewhere it draws
    element by element, which the cheaper mask replaces."""
    as_cpuinfo(monkeypatch, lines)
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: mkl)
    assert dropout._torch_draws_one_at_a_time() is cheaper
