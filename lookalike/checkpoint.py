"""One-file model checkpoints shared by every trained model (metric and VAE).

A checkpoint is a ``torch.save`` of a plain dict::

    {"format": "lookalike-checkpoint", "version": 1,
     "kind": "metric" | "vae" | ...,      # which embedder family loads it
     "arch": {...},                       # everything needed to rebuild the network
     "preprocess": {...},                 # input size, channels, normalisation
     "recipe": {...},                     # the training settings and the command line
     "metrics": {...},                    # final validation numbers
     "state_dict": {...}}                 # the weights

It loads with ``weights_only=True``: only tensors and plain Python values, never code. Saved with
``half=True``, the float32 tensors of ``state_dict`` are stored as float16 (``"weights_dtype":
"float16"``), half their size; :func:`load_checkpoint` turns them back into float32. Tensors in
``extra`` (a localizer, whose boxes move with rounding) stay as they are.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

from lookalike.errors import ModelError

FORMAT = "lookalike-checkpoint"
VERSION = 1


def save_checkpoint(
    path: str | Path,
    *,
    kind: str,
    state_dict: dict,
    arch: dict,
    preprocess: dict,
    recipe: dict | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
    half: bool = False,
) -> Path:
    import torch

    def store(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu().contiguous()
        return t.half() if half and t.dtype == torch.float32 else t

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "arch": arch,
        "preprocess": preprocess,
        "recipe": recipe or {},
        "metrics": metrics or {},
        "state_dict": {k: store(v) for k, v in state_dict.items()},
    }
    if half:
        payload["weights_dtype"] = "float16"
    if extra:
        payload["extra"] = extra
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves half a checkpoint
    return path


def load_checkpoint(path: str | Path, *, kind: str | None = None) -> dict:
    import torch

    path = Path(path)
    if path.is_dir():
        raise ModelError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch's own text advises weights_only=False: never
        raise ModelError(f"{path} is not a lookalike checkpoint ({unreadable_reason(path, exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path} is not a lookalike checkpoint")
    if payload.get("version", 0) > VERSION:
        raise ModelError(f"{path} was written by a newer lookalike (format {payload['version']})")
    if kind is not None and payload.get("kind") != kind:
        raise ModelError(f"{path} is a {payload.get('kind')!r} checkpoint, not {kind!r}")
    if payload.get("weights_dtype") == "float16":
        payload["state_dict"] = {
            k: v.float() if v.dtype == torch.float16 else v for k, v in payload["state_dict"].items()
        }
    return payload


def unreadable_reason(path: str | Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a few words. Never suggests loading
    with ``weights_only=False``: a file that needs it may run code, and lookalike files never do."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return exc.strerror or str(exc)
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as err:
        return err.strerror or str(err)
    if not head:
        return "an empty file"
    if head == b"PK" and not zipfile.is_zipfile(path):
        return "a damaged or truncated file"
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # neither torch's zip nor a pickle
        kind = _file_kind(path)
        return f"not a PyTorch file{f': {kind}' if kind else ''}"
    text = str(exc)
    if "inline_container" in text or "PytorchStreamReader" in text:
        return "a zip archive that PyTorch did not write" if zipfile.is_zipfile(path) else "a damaged file"
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds Python objects ({found.group(1)}), not only weights, and is not loaded"
    if "weights only load failed" in text.lower() or "weightsunpickler" in text.lower():
        return "it holds more than tensors and plain values, and is not loaded"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"unreadable: {first[:120]}"


def _file_kind(path: Path) -> str | None:
    """``a JPEG image`` when Pillow recognises the file, else None."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            return f"a {img.format} image"
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is just "not a PyTorch file"
        return None
