"""The documentation tells the truth about the repository: short front page, no dead links, no stale
setting names, and a configuration reference generated from the code that cannot hide a secret or skip an
undocumented field."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
CONFIGURATION_PAGE = DOCS / "reference" / "configuration.md"
HOOK = DOCS / "hooks" / "settings_reference.py"
README_MAX_LINES = 250

# README.md, CONTRIBUTING.md (the site's development page) and every page of the site.
PAGES = sorted([README, REPO / "CONTRIBUTING.md", *DOCS.rglob("*.md")])

FENCED_BLOCK = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
VARIABLE = re.compile(r"CHURNOPS_[A-Z0-9_]+")
# Variables the docs may name that no settings class reads: the artefact pin `churnops rollout` writes into
# the predictor container, read by the predictor image's stdlib entrypoint (no ChurnOps code in that image).
# The transformer's pin is a setting (TransformerSettings.artefact_sha256). (The load generator's options
# are LOCUST_* variables: locust reads them itself, by its own convention.)
READ_OUTSIDE_SETTINGS = frozenset({"CHURNOPS_PREDICTOR_ARTEFACT_SHA256"})


def _load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_reference", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as MkDocs loads hooks; dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


hook = _load_hook()


def _relative_link_targets(page: Path) -> list[str]:
    """Link and image targets outside code, without external URLs and same-page anchors."""
    text = INLINE_CODE.sub("", FENCED_BLOCK.sub("", page.read_text(encoding="utf-8")))
    targets = [match["target"] for match in LINK.finditer(text)]
    return [target for target in targets if not SCHEME.match(target) and not target.startswith("#")]


def _documented_settings_classes() -> list[type[BaseSettings]]:
    """The classes the configuration reference names in its markers: the same list the build renders."""
    found = re.findall(r"<!--\s*settings:\s*([\w.]+):(\w+)\s*-->", CONFIGURATION_PAGE.read_text("utf-8"))
    return [getattr(importlib.import_module(module), name) for module, name in found]


def _known_variables() -> tuple[set[str], set[str]]:
    variables: set[str] = set()
    prefixes: set[str] = set()
    for cls in _documented_settings_classes():
        prefix = cls.model_config["env_prefix"]
        prefixes.add(prefix.upper())
        variables.update(f"{prefix}{name}".upper() for name in cls.model_fields)
    return variables, prefixes


def test_readme_fits_on_a_screen() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail into docs/"
    )


def test_readme_links_into_the_docs_site() -> None:
    targets = _relative_link_targets(README)
    assert any(target.startswith("docs/") for target in targets), "README.md links to no page under docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_point_at_files_that_exist(page: Path) -> None:
    missing = []
    for target in _relative_link_targets(page):
        path = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (REPO / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
        if not resolved.exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(REPO)} links to files that do not exist: {missing}"


def test_every_churnops_variable_in_the_docs_is_a_real_setting() -> None:
    variables, prefixes = _known_variables()
    stale = {
        f"{page.relative_to(REPO)}: {name}"
        for page in PAGES
        for name in VARIABLE.findall(page.read_text(encoding="utf-8"))
        if name not in variables and name not in prefixes and name not in READ_OUTSIDE_SETTINGS
    }
    assert not stale, f"names that no settings class reads (renamed or removed?): {sorted(stale)}"


def test_configuration_reference_covers_one_class_per_component_with_distinct_prefixes() -> None:
    classes = _documented_settings_classes()
    prefixes = [cls.model_config.get("env_prefix", "") for cls in classes]
    assert len(classes) >= 6, f"the reference documents only {[cls.__name__ for cls in classes]}"
    assert all(issubclass(cls, BaseSettings) for cls in classes)
    assert all(re.fullmatch(r"CHURNOPS_[A-Z]+_", prefix) for prefix in prefixes), prefixes
    assert len(set(prefixes)) == len(prefixes), f"two classes share a prefix: {prefixes}"


def test_every_docs_image_is_shown_on_a_page() -> None:
    shown = {(page.parent / target).resolve() for page in PAGES for target in _relative_link_targets(page)}
    images = sorted((DOCS / "images").glob("*.png"))
    assert images, "docs/images holds no picture"
    unshown = [image.name for image in images if image.resolve() not in shown]
    assert not unshown, f"pictures no page shows: {unshown}"


class DemoSettings(BaseSettings):
    """A settings class shaped like the project's, for the reference generator."""

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_DEMO_", extra="ignore")

    port: int = Field(default=8095, description="where the demo listens")
    home: Path = Field(default=Path(".churnops"), description="local state | spill files")
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://user:s3cr3t@db/churn"), description="a secret with a default"
    )
    webhook_url: SecretStr | None = Field(default=None, description="a secret without a default")


class UndescribedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHURNOPS_DEMO_", extra="ignore")

    described: int = Field(default=1, description="fine")
    forgotten: int = 2
    also_forgotten: str = "x"


def test_reference_names_each_variable_from_the_class_prefix() -> None:
    table = hook.table(DemoSettings)
    assert "`CHURNOPS_DEMO_PORT`" in table
    assert "`CHURNOPS_DEMO_HOME`" in table
    assert "`8095`" in table
    assert "where the demo listens" in table
    assert "local state \\| spill files" in table  # a pipe in a description does not split the row


def test_reference_never_shows_a_secret_value() -> None:
    rows = {row.field: row for row in hook.settings(DemoSettings)}
    assert rows["database_url"].default == "*hidden*"
    assert rows["webhook_url"].default == "*unset*"
    assert "s3cr3t" not in hook.table(DemoSettings)


def test_reference_build_fails_on_a_setting_without_description() -> None:
    with pytest.raises(hook.SettingsReferenceError, match="forgotten, also_forgotten"):
        hook.table(UndescribedSettings)


def test_reference_marker_becomes_the_table_of_the_named_class() -> None:
    page = "# Settings\n\n<!-- settings: tests.test_docs:DemoSettings -->\n\nafter\n"
    rendered = hook.render(page)
    assert "<!--" not in rendered
    assert "`CHURNOPS_DEMO_DATABASE_URL`" in rendered
    assert rendered.endswith("after\n")


def test_reference_marker_naming_a_missing_class_fails_the_build() -> None:
    with pytest.raises(hook.SettingsReferenceError, match="NoSuchSettings"):
        hook.render("<!-- settings: tests.test_docs:NoSuchSettings -->")
