"""The import directions of docs/developer/map.md: each layer of ppl imports only from
the layers below it, and the zoo imports only ppl's public modules."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lower number: lower layer (imports nothing above it)
LAYERS = {
    "ppl._util": 1,
    "ppl._numpyro": 1,
    "ppl.parallel": 1,
    "ppl.adev": 2,
    "ppl.gen": 3,
    "ppl.vi": 4,
    "ppl.comparison": 5,
    "ppl": 6,
    "ppl.objectives": 6,
    "ppl.cli": 7,
    "ppl.quickstart": 7,
    "ppl.demo": 7,
}


def _unit(module: str) -> str:
    """The layer's name of a ppl module (its first two dotted parts)."""
    return ".".join(module.split(".")[:2])


def _imports(path: Path) -> list[str]:
    """The absolute module names ``path`` imports, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_ppl_module_has_a_layer():
    units = {_unit(_module_of(p)) for p in (ROOT / "ppl").rglob("*.py")}
    assert units == set(LAYERS)


def test_ppl_imports_point_down():
    wrong = []
    for path in (ROOT / "ppl").rglob("*.py"):
        source = _unit(_module_of(path))
        for name in _imports(path):
            if name.split(".")[0] != "ppl":
                continue
            target = _unit(name)
            if target != source and LAYERS[target] >= LAYERS[source]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == [], wrong


def test_zoo_uses_public_ppl_only():
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "models").rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] == "ppl" and any(part.startswith("_") for part in name.split("."))
    ]
    assert wrong == []
