"""Which torch device runs the networks.

``auto`` (the default) takes a CUDA GPU when torch sees one, then Apple's MPS, then the CPU. A named
device (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is used as asked, or refused with the reason when
this machine cannot run it. Embedders read ``LOOKALIKE_DEVICE`` when no device is passed; training
takes ``--device``
(see :class:`~lookalike.config.Settings`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookalike.errors import ModelError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def device_spec(spec: str | None = None) -> str:
    """The device a caller asked for: ``spec``, else ``$LOOKALIKE_DEVICE``, else ``auto``."""
    if spec is None:
        from lookalike.config import get_settings

        spec = get_settings().device
    return spec.strip().lower() or "auto"


def resolve_device(spec: str | None = None) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps`` -> a usable ``torch.device``.

    Raises :class:`~lookalike.errors.ModelError` naming the device and why it cannot be used.
    """
    import torch

    text = device_spec(spec)
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise ModelError(f"unknown device {text!r} (use {DEVICE_HELP})") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.version.cuda or "none"
            raise ModelError(
                f"device {text!r}: torch sees no CUDA GPU here (torch {torch.__version__}, CUDA build "
                f"{build}); "
                + ("set LOOKALIKE_DEVICE=cpu or auto" if spec is None else "use --device cpu or auto")
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelError(f"device {text!r}: this machine has {count} CUDA GPU(s), cuda:0..{count - 1}")
        return dev
    if dev.type == "mps":
        if not _mps_available(torch):
            raise ModelError(f"device {text!r}: Apple MPS is not available on this machine")
        return dev
    raise ModelError(f"unsupported device {text!r} (use {DEVICE_HELP})")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device a network's weights live on (CPU for a network without parameters)."""
    import torch

    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())
