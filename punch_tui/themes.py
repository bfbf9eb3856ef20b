"""Themes as data: every `*.toml` in the themes directory becomes a Textual Theme.

A theme file has `name`, `dark`, a `[colors]` table with Textual's colour fields and an
optional `[variables]` table of Textual CSS variable overrides. A bad file is reported
and skipped; the built-in Textual themes stay available."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme

COLOR_FIELDS = ("primary", "secondary", "accent", "foreground", "background", "surface", "panel",
                "success", "warning", "error", "boost")
DEFAULT_THEME = "punch-dark"
ALIASES = {"dark": "punch-dark", "light": "punch-light", "high-contrast": "punch-high-contrast",
           "hc": "punch-high-contrast"}


class ThemeError(Exception):
    """A theme file cannot be used."""


def themes_dir(prefix: Path | None = None) -> Path:
    """`$PUNCH_THEMES_DIR`; else `themes/` next to the package (a source checkout or an
    editable install); else `<prefix>/share/punch/themes`, where a regular install puts it."""
    env = os.environ.get("PUNCH_THEMES_DIR")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parent.parent / "themes"
    installed = Path(prefix or sys.prefix) / "share" / "punch" / "themes"
    return beside if beside.is_dir() or not installed.is_dir() else installed


def parse_theme(data: dict[str, object], origin: str) -> Theme:
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ThemeError(f"{origin}: missing 'name'")
    colors = data.get("colors", {})
    if not isinstance(colors, dict) or "primary" not in colors:
        raise ThemeError(f"{origin}: [colors] needs at least 'primary'")
    kwargs: dict[str, Any] = {}
    for key, value in colors.items():
        if key not in COLOR_FIELDS:
            raise ThemeError(f"{origin}: unknown colour '{key}'")
        try:
            Color.parse(str(value))
        except ColorParseError:
            raise ThemeError(f"{origin}: '{key}' = {value!r} is not a colour") from None
        kwargs[key] = str(value)
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeError(f"{origin}: [variables] must be a table")
    return Theme(name=name, dark=bool(data.get("dark", True)),
                 variables={str(k): str(v) for k, v in variables.items()}, **kwargs)


def load_themes(directory: Path | None = None) -> tuple[list[Theme], list[str]]:
    """(themes, errors) from every *.toml in `directory`, sorted by file name."""
    directory = directory or themes_dir()
    themes: list[Theme] = []
    errors: list[str] = []
    if not directory.is_dir():
        return themes, [f"themes directory {directory} not found"]
    for path in sorted(directory.glob("*.toml")):
        try:
            with path.open("rb") as fh:
                themes.append(parse_theme(tomllib.load(fh), path.name))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            errors.append(f"{path.name}: {exc}")
        except ThemeError as exc:
            errors.append(str(exc))
    return themes, errors


def resolve_name(name: str) -> str:
    return ALIASES.get(name, name)
