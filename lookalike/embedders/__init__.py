"""Embedders: ``load_embedder(name)`` returns an :class:`Embedder`.

A name is ``family`` or ``family:argument`` (``pixels``, ``trained:model.pt``, ``vae:vae.pt``,
``torchvision:resnet50``). The family is the module ``lookalike.embedders.<family>``, which
provides ``load(argument, device) -> Embedder``: adding a family is adding one module. Networks run
on ``device`` (default ``$LOOKALIKE_DEVICE``, else ``auto``: a CUDA GPU when there is one).
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

from lookalike.embedders.base import Embedder, l2_normalise
from lookalike.errors import ModelError

__all__ = [
    "Embedder",
    "l2_normalise",
    "load_embedder",
    "canonical_model_name",
    "default_model_path",
    "ALIASES",
]

#: the shipped default model (see BENCHMARKS.md for the command that trains it)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "default.pt"

ALIASES = {"default": f"trained:{DEFAULT_CHECKPOINT}"}
#: families whose argument is a file path (others take one after ``@``: ``torchvision:NAME@FILE``)
PATH_FAMILIES = ("trained", "vae")

_cache: dict[tuple[str, str], Embedder] = {}
_lock = threading.Lock()


def default_model_path() -> Path:
    return DEFAULT_CHECKPOINT


def resolve_name(name: str) -> str:
    if name == "default" and not DEFAULT_CHECKPOINT.exists():
        return "pixels"
    return ALIASES.get(name, name)


def canonical_model_name(name: str) -> str:
    """``name`` with a relative file path in it made absolute (``trained:runs/m.pt`` ->
    ``trained:/home/me/runs/m.pt``, also after ``@`` as in ``torchvision:resnet50@weights.pth``), so
    that a catalog records a name that loads from any directory and two spellings of one file are
    one model. Names without an existing relative file pass through unchanged."""
    family, sep, arg = name.partition(":")
    if not sep or not arg:
        return name
    if family in PATH_FAMILIES:  # the whole argument is the file
        head, at, tail = "", "", arg
    else:  # NAME@FILE, split where the family's loader splits it: torchvision:resnet50 is no file
        head, at, tail = arg.partition("@")
        if not at:
            return name
    path = Path(tail).expanduser()
    if path.is_absolute() or not path.is_file():
        return name
    return f"{family}:{head}{at}{path.resolve()}"


def _fingerprint(full_name: str, arg: str) -> str:
    """Identifies the weights behind a name: a checkpoint file's sha256, else the name itself."""
    import hashlib

    path = Path(arg.split("@")[-1]) if arg else None
    if path is not None and path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return "sha256:" + digest.hexdigest()[:16]
    return full_name


def load_embedder(name: str = "default", *, cache: bool = True, device: str | None = None) -> Embedder:
    """Load an embedder by name, once per process and device (models load lazily, behind a lock).

    ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (see :mod:`lookalike.devices`).
    """
    from lookalike.devices import device_spec

    full = resolve_name(name)
    asked = device  # None: the setting's (errors then name LOOKALIKE_DEVICE, not --device)
    device = device_spec(device)
    family, _, arg = full.partition(":")
    if not family.isidentifier() or family.startswith("_") or family == "base":
        raise ModelError(f"unknown model {name!r}")
    with _lock:
        if cache and (full, device) in _cache:
            return _cache[(full, device)]
        try:
            module = importlib.import_module(f"lookalike.embedders.{family}")
        except ModuleNotFoundError as exc:
            if exc.name == f"lookalike.embedders.{family}":
                raise ModelError(
                    f"unknown model {name!r}: no embedder family {family!r} "
                    "(try pixels, default, trained:PATH, vae:PATH, torchvision:NAME)"
                ) from None
            raise
        embedder = module.load(arg, device=asked)
        if name == "default":
            embedder.name = "default"
        embedder.fingerprint = _fingerprint(full, arg)
        if cache:
            _cache[(full, device)] = embedder
        return embedder
