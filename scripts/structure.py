"""Figures for issue 22 ("Fewer, deeper modules"), before and after: run from the repo root.

    python3 scripts/structure.py [--dot FILE]

Counts lines and modules of novita_async without the emulator and the testing kit; draws the
import graph (module-level, function-level and TYPE_CHECKING imports, each kind marked) and
reports every circle (strongly connected component) of each layer; counts the
isinstance(..., ObjectOutput | LocalOutput) branches, the _cli modules importing private
modules, and the signatures taking argparse.Namespace. Standard library only.
"""

import ast
import collections
import pathlib
import re
import sys

ROOT = pathlib.Path("novita_async")
SKIP = ("emulator",)


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODS = modules()
COUNTED = {
    m: p for m, p in MODS.items() if not any(s in p.parts for s in SKIP) and p.name != "testing.py"
}


def targets(mod: str, path: pathlib.Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODS]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + (node.module.split(".") if node.module else []))
    else:
        target = node.module or ""
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODS]
    found = subs if len(subs) == len(node.names) else [target, *subs]
    return [t for t in found if t in MODS]


def graph() -> dict[str, dict[str, set[str]]]:
    layers: dict[str, dict[str, set[str]]] = {
        k: collections.defaultdict(set) for k in ("module", "function", "typing")
    }
    for mod, path in COUNTED.items():
        tree = ast.parse(path.read_text())
        typing, inner = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing.update(id(s) for s in ast.walk(node))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                inner.update(id(s) for s in ast.walk(node) if s is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                kind = (
                    "typing"
                    if id(node) in typing
                    else "function"
                    if id(node) in inner
                    else "module"
                )
                for t in targets(mod, path, node):
                    if t != mod and t in COUNTED:
                        layers[kind][mod].add(t)
    return layers


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in COUNTED:
        if v not in index:
            visit(v)
    return out


def main() -> None:
    lines = {m: p.read_text().count("\n") for m, p in COUNTED.items()}
    print(f"lines (novita_async without emulator/ and testing.py): {sum(lines.values())}")
    print(f"modules: {len(COUNTED)}")
    for pkg in ("novita_async.batch", "novita_async._cli"):
        inside = [m for m in COUNTED if m.startswith(pkg + ".")]
        total = sum(lines[m] for m in inside) + lines[pkg]
        print(f"  {pkg}: {len(inside)} modules (+ __init__), {total} lines")
    layers = graph()
    merged: dict[str, set[str]] = collections.defaultdict(set)
    for kind in ("module", "function", "typing"):
        for k, v in layers[kind].items():
            merged[k] |= v
        print(f"circles through {kind}-level imports (cumulative): {circles(merged)}")
    pat = re.compile(r"isinstance\([^)]*(ObjectOutput|LocalOutput)")
    hits = [
        f"{p}:{i}"
        for p in COUNTED.values()
        for i, text in enumerate(p.read_text().splitlines(), 1)
        if pat.search(text)
    ]
    print(f"isinstance output branches: {len(hits)}: {hits}")
    cli = {
        m: p
        for m, p in COUNTED.items()
        if m == "novita_async._cli" or m.startswith("novita_async._cli.")
    }
    private_batch, private_any = [], []
    for m in cli:
        ts = set().union(*(layers[k].get(m, set()) for k in layers))
        if any(re.search(r"\.batch\._", t) for t in ts):
            private_batch.append(m)
        if any(
            re.search(r"novita_async\._(?!cli)", t) or re.search(r"\.batch\._", t) for t in ts
        ) or re.search(r"from \.\. import [^\n]*\b_\w", cli[m].read_text()):
            private_any.append(m)
    print(f"_cli modules importing private batch modules: {sorted(private_batch)}")
    print(f"_cli modules importing any private module: {len(private_any)} of {len(cli)}")
    ns = [
        f"{p}:{i}"
        for p in cli.values()
        for i, text in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"def .*argparse\.Namespace", text) or re.search(r"\(cls, ns: argparse", text)
    ]
    print(f"signatures with argparse.Namespace: {len(ns)}")
    if "--dot" in sys.argv:
        out = pathlib.Path(sys.argv[sys.argv.index("--dot") + 1])
        style = {"module": "", "function": " [style=dashed]", "typing": " [style=dotted]"}
        rows = [
            f'  "{a}" -> "{b}"{style[k]};'
            for k, g in layers.items()
            for a, bs in g.items()
            for b in bs
        ]
        out.write_text(
            "digraph novita_async {\n  rankdir=LR;\n" + "\n".join(sorted(rows)) + "\n}\n"
        )
        print(f"graph written to {out} (render: dot -Tsvg)")


if __name__ == "__main__":
    main()
