"""The CPU allocator setting (superpos/cpu_allocator.py): chosen by environment, checked, applied once."""

import platform

import pytest

from superpos import cpu_allocator
from superpos.errors import ConfigError

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_bad_value_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(cpu_allocator.ENV, "jemalloc")
    with pytest.raises(ConfigError, match=r"'jemalloc' \(environment variable SUPERPOS_CPU_ALLOCATOR\); allowed: retain, system"):
        cpu_allocator.retain_freed_memory()


def test_system_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(cpu_allocator.ENV, "system")
    monkeypatch.setattr(cpu_allocator, "_applied", None)
    assert cpu_allocator.retain_freed_memory() is False
    assert cpu_allocator._applied is None  # mallopt was never called


@pytest.mark.skipif(not GLIBC, reason="mallopt settings exist in glibc only")
def test_retain_is_the_default_on_glibc(monkeypatch):
    monkeypatch.delenv(cpu_allocator.ENV, raising=False)
    assert cpu_allocator.retain_freed_memory() is True
