"""Device selection shared by the backends. Imports torch lazily, and only to ask for CUDA."""

from __future__ import annotations


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_info() -> tuple[str, float] | None:
    """(name, memory in GiB) of the first CUDA GPU, or None; raises if torch is broken."""
    import torch

    if not torch.cuda.is_available():
        return None
    return (torch.cuda.get_device_name(0),
            torch.cuda.get_device_properties(0).total_memory / 2**30)


def pick_device(setting: str) -> str:
    """``auto`` → cuda when a GPU is usable, else cpu; ``cuda`` without a GPU is an error."""
    if setting == "auto":
        return "cuda" if cuda_available() else "cpu"
    if setting == "cuda" and not cuda_available():
        raise RuntimeError("device is set to 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'")
    return setting
