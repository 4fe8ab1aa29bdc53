"""Phase B of issue 22: point every import at the module that defines the name, then delete the
re-export shims the merges left behind.

    python3 scripts/rename_imports.py [--delete] [paths...]

A shim is a module of ``novita_async`` (not a package ``__init__``) whose body is only a
docstring, ``from __future__`` and ``from ... import ...`` lines and an ``__all__``. Every
``from <shim> import a, b as c`` in the given paths (default: novita_async tests benchmarks
examples scripts _novita_async_pytest.py) is rewritten to import each name from where it is
defined (shims of shims followed); relative imports stay relative. Prints what it cannot rewrite
(``from . import _shim``, ``import novita_async._shim``, the shim's name in a string). Standard
library only.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path("novita_async")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def absolute(mod: str, path: pathlib.Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + (node.module.split(".") if node.module else []))


def is_shim(tree: ast.Module) -> bool:
    found = False
    for i, stmt in enumerate(tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.ImportFrom):
            found |= stmt.module != "__future__"
            continue
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if all(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                continue
        return False
    return found


def shims() -> dict[str, dict[str, tuple[str, str]]]:
    """shim module -> {exported name: (defining module, name there)}."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for path in ROOT.rglob("*.py"):
        if path.name == "__init__.py" or not path.name.startswith("_"):
            continue  # a public module is kept even when it only re-exports
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not is_shim(tree):
            continue
        mod = module_name(path)
        names: dict[str, tuple[str, str]] = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__":
                source = absolute(mod, path, stmt)
                for alias in stmt.names:
                    names[alias.asname or alias.name] = (source, alias.name)
        found[mod] = names
    # Shims of shims: follow each name to where it is defined.
    for names in found.values():
        for key, (source, name) in list(names.items()):
            seen = 0
            while source in found and name in found[source] and seen < 10:
                source, name = found[source][name]
                seen += 1
            names[key] = (source, name)
    return found


def relative(from_mod: str, from_path: pathlib.Path, target: str) -> str:
    package = from_mod.split(".") if from_path.name == "__init__.py" else from_mod.split(".")[:-1]
    parts = target.split(".")
    common = 0
    while common < min(len(package), len(parts)) and package[common] == parts[common]:
        common += 1
    if common == 0:
        return target
    dots = "." * (len(package) - common + 1)
    return dots + ".".join(parts[common:])


def rewrite(path: pathlib.Path, table: dict[str, dict[str, tuple[str, str]]]) -> list[str]:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    inside = ROOT in path.parents
    mod = module_name(path) if inside else ""
    lines = text.splitlines(keepends=True)
    problems: list[str] = []
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in table:
                    problems.append(f"{path}:{node.lineno}: import {alias.name}")
            continue
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            continue
        source = absolute(mod, path, node) if (inside or not node.level) else ""
        for alias in node.names:  # from . import _shim
            if f"{source}.{alias.name}" in table:
                problems.append(f"{path}:{node.lineno}: from {source} import {alias.name}")
        if source not in table:
            continue
        groups: dict[str, list[str]] = {}
        for alias in node.names:
            if alias.name not in table[source]:
                problems.append(f"{path}:{node.lineno}: {alias.name} not in shim {source}")
                groups.setdefault(source, []).append(alias.name)
                continue
            target, name = table[source][alias.name]
            local = alias.asname or alias.name
            groups.setdefault(target, []).append(name if local == name else f"{name} as {local}")
        indent = lines[node.lineno - 1][: node.col_offset]
        new = "".join(
            f"{indent if i else ''}from {relative(mod, path, t) if (inside and node.level) else t}"
            f" import {', '.join(names)}\n"
            for i, (t, names) in enumerate(groups.items())
        )
        edits.append((node.lineno, node.end_lineno or node.lineno, indent + new.lstrip(" ")))
    for start, end, new in sorted(edits, reverse=True):
        lines[start - 1 : end] = [new]
    if edits:
        path.write_text("".join(lines), encoding="utf-8")
    for name in table:
        if f"{name}\n" in text or f"{name} " in text.replace(f"{name} import", ""):
            problems.append(f"{path}: mentions {name} outside an import")
    return problems


def main(argv: list[str]) -> int:
    delete = "--delete" in argv
    paths = [a for a in argv if not a.startswith("--")] or [
        "novita_async", "tests", "benchmarks", "examples", "scripts", "_novita_async_pytest.py",
    ]  # fmt: skip
    table = shims()
    print("shims:", ", ".join(sorted(table)) or "none")
    files = [f for p in map(pathlib.Path, paths) for f in ([p] if p.is_file() else p.rglob("*.py"))]
    shim_files = {ROOT.joinpath(*m.split(".")[1:]).with_suffix(".py") for m in table}
    problems = [x for f in files if f not in shim_files for x in rewrite(f, table)]
    for problem in problems:
        print("CHECK", problem)
    if delete:
        subprocess.run(["git", "rm", "-qf", *map(str, sorted(shim_files))], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
