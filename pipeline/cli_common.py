"""What the command modules share: database options, opening the store, JSON output, quiet libraries."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_url",
        default=None,
        metavar="URL",
        help="Audit database URL (default: $GENGUARD_DB, else an SQLite file under $GENGUARD_HOME).",
    )(func)


def read_db_options(func: F) -> F:
    """--db and --read-only, for commands that only read the audit database."""
    func = click.option(
        "--read-only",
        "read_only",
        is_flag=True,
        help="Open the database read-only (an evidence copy; implied when the file is not writable).",
    )(func)
    return db_option(func)


def open_store(db_url: str | None) -> Any:
    from genguard.audit.store import AuditStore

    return AuditStore.open(db_url)


def open_reader(db_url: str | None, read_only: bool = False) -> Any:
    """The store for a command that only reads: read-only when asked, or when it cannot be written."""
    from genguard.audit.store import AuditStore

    return AuditStore.open(db_url, read_only=read_only, allow_read_only=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))


_OUTPUT = {"verbose": False}
_LIBRARIES = ("transformers", "diffusers", "accelerate", "huggingface_hub", "torch")


def configure_output(verbose: bool) -> None:
    """Without --verbose, third-party loading bars, advice and warnings stay off the CLI's output.

    Environment defaults are read when the libraries are imported (always later: commands import them
    lazily); loggers and warning filters cover what they print through Python itself. An explicit
    TRANSFORMERS_VERBOSITY / DIFFUSERS_VERBOSITY / HF_HUB_DISABLE_PROGRESS_BARS in the environment wins.
    """
    import logging
    import os
    import warnings

    _OUTPUT["verbose"] = verbose
    if verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
        return
    for variable, value in (
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("DIFFUSERS_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
    ):
        os.environ.setdefault(variable, value)
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
    if "transformers" in sys.modules or "diffusers" in sys.modules:
        quiet_model_libraries()


def quiet_model_libraries() -> None:
    """The CLI shows its own progress bar; the libraries' loading bars and advice are noise here
    (unless --verbose)."""
    if _OUTPUT["verbose"]:
        return
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
