"""Where a trial runs and how: the device, its description, memory format and autocast."""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from robustbench_opt.config import Recipe
from robustbench_opt.errors import UserError, unknown

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
Autocast = Callable[[], AbstractContextManager[object]]
# glibc mallopt parameters and the values `keep_cpu_heap` sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest on 64-bit machines
TRIM_THRESHOLD_BYTES = 256 * 2**20


def pick_device(requested: str | None) -> torch.device:
    """The device to train on: `requested`, or cuda, then mps, then cpu when None or "auto"."""
    if requested is None or requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    fix = "set device to auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise unknown("device", requested, DEVICE_CHOICES, fix, ("device",)) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise unknown("device", requested, DEVICE_CHOICES, fix, ("device",))
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise UserError(
                f"device {requested!r} is not available ({count} CUDA devices visible); "
                "set device to cpu, or to auto to pick automatically",
                ("device",),
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            f"device {requested!r} is not available on this machine; set device to cpu, "
            "or to auto to pick automatically",
            ("device",),
        )
    return device


def describe_device(device: torch.device) -> str:
    """`cuda:0 (NVIDIA H100 80GB HBM3)`, `cpu (x86_64, 2 threads)`, `mps`."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)


def use_channels_last(recipe: Recipe, device: torch.device) -> bool:
    """NHWC memory format as the recipe says; by default on for CUDA only, where it is faster
    and changes no result (a layout, not a different computation)."""
    return recipe.channels_last if recipe.channels_last is not None else device.type == "cuda"


def autocast(recipe: Recipe, device: torch.device) -> tuple[Autocast, str | None]:
    """bf16 autocast on CUDA when asked; elsewhere a no-op, with a note saying it was ignored."""
    if not recipe.amp_bf16:
        return nullcontext, None
    if device.type != "cuda":
        return nullcontext, f"amp_bf16 ignored on {device.type}: bf16 autocast is CUDA-only here"
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16), None


def keep_cpu_heap() -> bool:
    """Let glibc keep freed CPU tensors' memory for the next step; True where it applied.

    By default glibc maps each block over its (adaptive) mmap threshold afresh and gives freed
    heap tops back to the OS, so every training step of a pack on CPU page-faults its
    activations in again (measured: ~1,200 minor faults per packed simple_cnn step on digits,
    K = 6, 15% of the step). Here blocks up to 32 MiB come from the heap and up to 256 MiB of
    free heap top stays mapped: the process's resident memory stays at its peak instead.
    Process-wide and idempotent; a no-op on anything but glibc.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mmap = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return bool(mmap and trim)
