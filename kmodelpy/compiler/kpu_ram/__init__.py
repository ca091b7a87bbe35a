"""Fitting a model into the K210's 2 MiB KPU RAM (``--kpu-ram-overflow fit``, the default).

:mod:`.fit` is the LLIR pass ``fit_kpu_ram`` (placement, eviction of idle tensors, row bands, CPU as
the last resort), :mod:`.bands` the geometry of row bands, :mod:`.rewrite` the two LLIR rewrites.
"""
from .fit import KpuFit, Remedy, fit_kpu_ram

__all__ = ["KpuFit", "Remedy", "fit_kpu_ram"]
