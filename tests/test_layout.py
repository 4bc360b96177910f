"""The package's architecture, checked from its source (AST, no import): no import cycle among its modules
(imports inside functions included), imports that run one way (tools, report, bench -> run -> method ->
building blocks), and the size limits (no function over 60 lines, no module over 500, outside bench.py)."""

import ast
from pathlib import Path

import pytest

import ablate

PACKAGE = Path(ablate.__file__).parent
MAX_FUNCTION, MAX_MODULE = 60, 500
EXEMPT = {"ablate.bench"}  # the benchmark: long measurement scripts, by the developers' guide
# Import layers, lowest first: a module imports only modules of its own layer or a lower one.
LAYERS = ("block", "method", "run", "tools", "entry")


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py below ``root`` (a package directory)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (module level or inside a function)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:  # ``from . import dist`` names a module, ``from .x import f`` a member of one
                deps.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    return {d for d in deps if d in known and d != name}


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {m: imports(m, f, known) for m, f in known.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def layer(module: str) -> str:
    parts = module.split(".")
    sub = parts[1] if len(parts) > 1 else ""
    if sub == "__main__":
        return "entry"
    if sub in ("tools", "report", "bench"):
        return "tools"
    return {"run": "run", "method": "method"}.get(sub, "block")


def upward(g: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer into a higher one."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in g.items() for d in deps
                  if rank[layer(d)] > rank[layer(m)])


def long_functions(path: Path) -> list[str]:
    """Functions (methods and nested ones too) longer than MAX_FUNCTION lines, def line to last line."""
    return [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION]


def test_no_import_cycle():
    assert find_cycle(graph(PACKAGE)) is None


def test_imports_run_one_way():
    assert upward(graph(PACKAGE)) == []


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "ablate"


def test_the_checks_see_function_level_imports_and_upward_ones(tmp_path):
    """The checks themselves can fail: a cycle closed by an import inside a function, and a building block that
    imports the run machinery."""
    root = _fake_package(tmp_path, {
        "ablate/__init__.py": "", "ablate/run/__init__.py": "",
        "ablate/losses.py": "def f():\n    from .run import loop\n",
        "ablate/run/loop.py": "from ..losses import f\nfrom . import step\n",
        "ablate/run/step.py": "import ablate.losses\n",
    })
    g = graph(root)
    assert g["ablate.run.loop"] == {"ablate.losses", "ablate.run.step"}
    assert find_cycle(g) in (["ablate.losses", "ablate.run.loop", "ablate.losses"],
                             ["ablate.losses", "ablate.run.loop", "ablate.run.step", "ablate.losses"])
    assert upward(g) == ["ablate.losses (block) imports ablate.run.loop (run)"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_long_functions_are_found(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def short():\n    pass\n\n\ndef long():\n" + "    x = 1\n" * MAX_FUNCTION)
    assert long_functions(f) == [f"m.py:5 long ({MAX_FUNCTION + 1} lines)"]


def _sized_modules():
    for name, path in modules(PACKAGE).items():
        if name in EXEMPT:
            continue
        yield pytest.param(name, path, id=name)


@pytest.mark.parametrize("name, path", list(_sized_modules()))
def test_module_and_function_sizes(name, path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE, f"{name} has {lines} lines (at most {MAX_MODULE})"
    assert long_functions(path) == [], f"{name}: functions over {MAX_FUNCTION} lines"
