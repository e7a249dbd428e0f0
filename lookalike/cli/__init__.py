"""The `lookalike` command: a thin Typer layer over the library.

Every module in this package that defines ``register()`` or decorates commands on the
objects in :mod:`lookalike.cli.app` is imported here, so adding a command is adding a module.
Library errors, and files that cannot be read or written (``OSError``), become a one-line message on
stderr and a non-zero exit (``--debug`` shows the traceback).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from pydantic import ValidationError

from lookalike.cli.app import app, state
from lookalike.cli.options import os_error_message
from lookalike.errors import Interrupted, LookalikeError

__all__ = ["app", "main"]


def _load_commands() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "app" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_load_commands()


def main() -> None:
    try:
        app()
    except Interrupted as exc:  # Ctrl-C in a training run: it says where it stopped and what is saved
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(130)
    except LookalikeError as exc:
        if state["debug"]:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:  # a path that cannot be read or written: name it, no traceback
        if state["debug"]:
            raise
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except ValidationError as exc:
        if exc.title != "Settings" or state["debug"]:
            raise
        for err in exc.errors():  # a bad LOOKALIKE_* variable (or .env line): name it, no traceback
            name = "LOOKALIKE_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"error: setting {name}={err.get('input')!r}: {err['msg']}", file=sys.stderr)
        sys.exit(1)
