"""The house's rules, read from the product code's syntax trees (nothing is imported or run).

- One namespace: product code imports the four packages as `genguard.<package>`, never top-level.
- Layers: guard never imports audit or pipeline; audit never imports pipeline; nothing imports bench or tests.
- No import cycle among the pipeline's modules.
- No reach into another module's private names: `from m import _name` across modules, or `obj._attr`
  on anything but `self` / `cls`, except the documented exceptions in ALLOWED_PRIVATE.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("guard", "audit", "pipeline", "policies")
LAYER = {"policies": 0, "guard": 1, "audit": 2, "pipeline": 3}

# (module, the private name it may use) with why; each entry is a documented exception.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {
    ("genguard.pipeline.accel", "_AttentionBackendRegistry"): "diffusers has no public query of the backends",
    ("genguard.pipeline.families", "_pack_latents"): "Flux's latent packing, diffusers' own helper",
    ("genguard.pipeline.inversion", "_pack_latents"): "Flux's latent packing, diffusers' own helper",
    ("genguard.pipeline.inversion", "_get_add_time_ids"): "SDXL's time ids, diffusers' own helper",
}
# Names that start with an underscore but are another library's public API.
PUBLIC_ELSEWHERE = {"_mapping"}  # SQLAlchemy's Row._mapping


def product_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # alembic's files, run by alembic
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(p for p in parts if p != "__init__")
            modules[f"genguard.{name}"] = path
    return modules


MODULES = product_modules()


def imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, imported module, names taken) for every import, relative ones resolved."""
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: -node.level]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base, tuple(alias.name for alias in node.names)))
    return found


def test_product_code_imports_only_the_genguard_namespace() -> None:
    wrong = []
    for module, path in MODULES.items():
        for line, target, _ in imported_modules(ast.parse(path.read_text()), module):
            top = target.split(".")[0]
            if top in (*PACKAGES, "bench", "tests"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_layers_import_one_way_and_never_bench_or_tests() -> None:
    wrong = []
    for module, path in MODULES.items():
        layer = LAYER[module.split(".")[1]]
        for line, target, _ in imported_modules(ast.parse(path.read_text()), module):
            parts = target.split(".")
            if parts[0] != "genguard" or len(parts) < 2:
                continue
            if parts[1] in ("bench", "tests"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
            elif parts[1] in LAYER and LAYER[parts[1]] > layer:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} (a layer above)")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_in_the_pipeline() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        if not module.startswith("genguard.pipeline"):
            continue
        for _, target, names in imported_modules(ast.parse(path.read_text()), module):
            candidates = [target, *(f"{target}.{n}" for n in names)]
            graph[module].update(c for c in candidates if c in MODULES and c.startswith("genguard.pipeline"))
        graph[module].discard(module)
    # packages' __init__ modules are imported by their children's loading, not a cycle of code
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def private_uses(module: str, tree: ast.AST) -> list[tuple[int, str]]:
    """Private names taken from elsewhere. A package's private module (`from pkg import _internal`)
    may be used by the modules of that package: it is the package's internals, not another module's."""
    package = module.rsplit(".", 1)[0]
    uses: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    same_package = node.level == 1 or (node.module or "") == package
                    if same_package and f"{package}.{alias.name}" in MODULES:
                        continue
                    uses.append((node.lineno, alias.name))
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in PUBLIC_ELSEWHERE:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            uses.append((node.lineno, name))
    return uses


def defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines itself (functions, classes, assignments, attributes of its own classes)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_no_module_reaches_into_another_modules_private_names() -> None:
    wrong = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        own = defined_names(tree)
        for line, name in private_uses(module, tree):
            if name in own or (module, name) in ALLOWED_PRIVATE:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line} uses {name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("code", ["from x import _hidden", "store._engine.connect()"])
def test_the_private_name_check_sees_both_forms(code: str) -> None:
    assert private_uses("genguard.pipeline.example", ast.parse(code))
