"""The installed layout: the zoo's folder models/ installs as ppl_zoo, and nothing in the
project imports a bare top-level "models" package (it would collide with other projects')."""

import re
import tomllib
from pathlib import Path

import ppl_zoo

ROOT = Path(__file__).resolve().parents[1]


def _packages_on_disk(folder, name):
    return {
        ".".join([name, *init.parent.relative_to(ROOT / folder).parts])
        for init in (ROOT / folder).rglob("__init__.py")
    }


def test_package_list_matches_the_folders():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"ppl_zoo": "models"}
    on_disk = _packages_on_disk("ppl", "ppl") | _packages_on_disk("models", "ppl_zoo")
    assert set(setuptools["packages"]) == on_disk


def test_every_zoo_folder_is_registered():
    assert set(ppl_zoo.REGISTRY) == {p.parent.name for p in (ROOT / "models").glob("*/__init__.py")}


def _sources():
    yield ROOT / "README.md"
    for folder in ("ppl", "models", "tests", "benchmarks", "docs"):
        yield from (ROOT / folder).rglob("*.py")
        yield from (ROOT / folder).rglob("*.md")


def test_no_bare_models_import():
    pattern = re.compile(r"^\s*(from|import)\s+models\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in _sources() if pattern.search(p.read_text())]
    assert offenders == []
