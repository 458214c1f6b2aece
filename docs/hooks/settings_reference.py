"""MkDocs hook: the configuration reference, generated from the pydantic-settings classes themselves.

A page names a class with a marker, `<!-- settings: package.module:ClassName -->`, and the build replaces
the marker with a table of the class's fields: the environment variable (the class's
`model_config["env_prefix"]` plus the field name, upper-cased), the type, the default and the field's
`description`. The list of classes lives in the page, the facts in the code, so the reference cannot fall
behind either. A field without a description fails the build (listing every such field at once): a
setting nobody explained is a setting nobody can use.

Secrets (`SecretStr`, `SecretBytes`) never show their default: the table says *unset* or *hidden*.
"""

from __future__ import annotations

import enum
import importlib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from mkdocs.exceptions import PluginError
from pydantic import AliasChoices, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

MARKER = re.compile(r"<!--\s*settings:\s*(?P<module>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_]\w*)\s*-->")
SECRET_TYPES = (SecretStr, SecretBytes)


class SettingsReferenceError(PluginError):
    """The reference cannot be generated truthfully: a class is missing, or a field has no description."""


@dataclass(frozen=True)
class Setting:
    """One row of the reference."""

    variable: str
    field: str
    type: str
    default: str
    description: str


def markers(markdown: str) -> list[tuple[str, str]]:
    """(module, class name) of every settings marker in a page, in page order."""
    return [(match["module"], match["name"]) for match in MARKER.finditer(markdown)]


def load_class(module: str, name: str) -> type[BaseSettings]:
    """The settings class a marker names; a marker naming anything else fails the build."""
    try:
        candidate = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise SettingsReferenceError(f"settings marker {module}:{name}: {error}") from error
    if not (isinstance(candidate, type) and issubclass(candidate, BaseSettings)):
        raise SettingsReferenceError(f"settings marker {module}:{name} is not a pydantic-settings class")
    return candidate


def env_prefix(cls: type[BaseSettings]) -> str:
    """The class's own prefix (`CHURNOPS_<COMPONENT>_`), read from its configuration, never assumed."""
    prefix = cls.model_config.get("env_prefix") or ""
    if not prefix:
        raise SettingsReferenceError(f"{cls.__module__}.{cls.__qualname__} has no env_prefix")
    return prefix


def variable_names(cls: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment variables pydantic-settings reads for a field: its alias(es), else prefix + name."""
    alias = field.validation_alias if field.validation_alias is not None else field.alias
    if alias is None:
        return [f"{env_prefix(cls)}{name}".upper()]
    if isinstance(alias, str):
        return [alias.upper()]
    if isinstance(alias, AliasChoices) and all(isinstance(choice, str) for choice in alias.choices):
        return [str(choice).upper() for choice in alias.choices]
    raise SettingsReferenceError(f"{cls.__qualname__}.{name}: alias {alias!r} has no single variable name")


def settings(cls: type[BaseSettings]) -> list[Setting]:
    """Every field of the class as a reference row; fails listing every field that lacks a description."""
    undescribed = [name for name, field in cls.model_fields.items() if not (field.description or "").strip()]
    if undescribed:
        where = f"{cls.__module__}.{cls.__qualname__}"
        raise SettingsReferenceError(
            f"{where}: {len(undescribed)} field(s) without a description, so the configuration reference "
            f"would be incomplete: {', '.join(undescribed)} (add Field(description=...))"
        )
    return [
        Setting(
            variable=" / ".join(variable_names(cls, name, field)),
            field=name,
            type=type_name(field.annotation),
            default=default_text(field),
            description=" ".join((field.description or "").split()),
        )
        for name, field in cls.model_fields.items()
    ]


def type_name(annotation: Any) -> str:
    """A short, readable spelling of a field type: `Path | None`, `"open" | "closed"`, `list[str]`."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f'"{value}"' if isinstance(value, str) else repr(value) for value in arguments)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(argument) for argument in arguments)
    if origin is typing.Annotated:
        return type_name(arguments[0])
    if origin is not None:
        inner = ", ".join(type_name(argument) for argument in arguments)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    candidates = (annotation, *typing.get_args(annotation))
    return any(isinstance(c, type) and issubclass(c, SECRET_TYPES) for c in candidates) or isinstance(
        field.default, SECRET_TYPES
    )


def default_text(field: FieldInfo) -> str:
    """The default as the table shows it; a secret's value never leaves the class."""
    if field.is_required():
        return "*required*"
    default = field.get_default(call_default_factory=True, validated_data={})
    if _is_secret(field):
        return "*unset*" if default is None else "*hidden*"
    if default is None:
        return "*unset*"
    if isinstance(default, bool):
        text = str(default).lower()
    elif isinstance(default, enum.Enum):
        text = str(default.value)
    elif isinstance(default, PurePath):
        text = str(default)
    elif isinstance(default, str):
        text = default if default else '""'
    else:
        text = repr(default)
    return _code(text)


def _code(text: str) -> str:
    """An inline code span that survives backticks in the text (pipes are safe inside code in tables)."""
    fence = "``" if "`" in text else "`"
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def table(cls: type[BaseSettings]) -> str:
    """The Markdown that replaces a marker: which class and prefix, then one row per field."""
    header = (
        f"Read by `{cls.__module__}.{cls.__qualname__}` from variables starting with "
        f"`{env_prefix(cls)}`.\n\n"
        "| variable | type | default | description |\n|---|---|---|---|\n"
    )
    rows = [
        f"| {_code(row.variable)} | {_code(row.type)} | {row.default} | {row.description.replace('|', chr(92) + '|')} |"
        for row in settings(cls)
    ]
    return header + "\n".join(rows) + "\n"


def render(markdown: str) -> str:
    """Every marker of a page replaced by its table; a page without markers comes back unchanged.

    Every marker is tried before failing, so one build names every class and field that needs work.
    """
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        try:
            return table(load_class(match["module"], match["name"]))
        except SettingsReferenceError as error:
            problems.append(str(error))
            return match[0]

    rendered = MARKER.sub(replace, markdown)
    if problems:
        raise SettingsReferenceError("\n".join(problems))
    return rendered


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: runs on each page's Markdown before it is converted."""
    return render(markdown)
