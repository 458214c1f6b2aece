"""Every YAML file we ship parses without duplicate keys.

YAML parsers (PyYAML, kustomize's) keep the last of two equal keys without a word: a second `components:`
in an overlay silently dropped the first (the prod detector lost its state volume that way).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.services import REPO

YAML_FILES = sorted(
    path
    for folder in ("kustomize", "manifests", "monitoring", ".github")
    for path in (REPO / folder).rglob("*.y*ml")
    if path.suffix in (".yaml", ".yml")
)


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice."""


def _no_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate key(s) {duplicates}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def test_there_are_yaml_files_to_check():
    assert len(YAML_FILES) > 20


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_file_has_no_duplicate_keys(path: Path):
    list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=StrictLoader))
