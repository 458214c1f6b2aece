"""A registered model version's serving artefact on local disk, for the commands that read one."""

from __future__ import annotations

from pathlib import Path


def registered_artefact(version: str | None) -> Path:
    """The exported artefact of a registered version (champion by default), exported on first use.

    Raises `churn_model.registry.RegistryError` for an unknown version or alias.
    """
    from churn_model.pipeline import export_version
    from churn_model.registry import Registry
    from churn_model.settings import get_settings

    settings = get_settings()
    if version is not None and version.isdigit():
        # Registered versions are immutable: an already exported, checksum-verified copy is that version.
        exported = settings.models_dir / version
        if (exported / "manifest.json").is_file():
            return exported
    registry = Registry(settings)
    info = registry.resolve(version)
    directory = registry.settings.models_dir / info.version
    if not (directory / "manifest.json").is_file():
        export_version(registry, info.version, directory)
    return directory
