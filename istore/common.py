"""What the commands of ``istore`` share: the ``--data`` option, the settings a command
runs with, ``--filter NAME=VALUE`` parsing."""

from __future__ import annotations

from typing import Any

import click

from service.settings import Settings

data_option = click.option(
    "--data", "data", default=None, help="Data root (default: $ISTORE_DATA or ./data)."
)


def settings_for(**overrides: Any) -> Settings:
    """The settings (environment), with the options given on the command line."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def filter_options(filters: tuple[str, ...]) -> dict[str, list[str]]:
    """``--filter NAME=VALUE`` options (repeatable) → {name: [values]}."""
    parsed: dict[str, list[str]] = {}
    for item in filters:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--filter")
        parsed.setdefault(name, []).append(value)
    return parsed
