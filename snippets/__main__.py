"""Command line for the snippet library: list, show, copy and run the modules.

    python -m snippets list                  every module, its summary and the page explaining it
    python -m snippets show NAME             print a module's source
    python -m snippets copy NAME DEST        copy a module and every snippet module it imports
    python -m snippets run NAME [ARGS...]    run a module's demo; ARGS go to the module's own command line

NAME is a dotted module (``attention.sdpa``), a bare module name (``sdpa``) or a topic slug
(``scaled-dot-product-attention``).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import runpy
import sys
from pathlib import Path

from snippets._catalog import ROOT, load_catalog

PACKAGE = ROOT / "snippets"


def all_modules() -> dict[str, Path]:
    """Public snippet modules, dotted relative to ``snippets`` → file path."""
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if any(part.startswith("_") for part in rel.parts):
            continue
        mods[".".join(rel.parts)] = path
    return mods


def summary(path: Path) -> str:
    """First line of a module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def resolve(name: str) -> list[str]:
    """Modules named by ``name``; exits with code 2 and suggestions when nothing matches."""
    mods = all_modules()
    if name.startswith("snippets."):
        name = name[len("snippets.") :]
    name = name.removesuffix(".py").replace("/", ".")
    if name in mods:
        return [name]
    by_base = [m for m in mods if m.rsplit(".", 1)[-1] == name]
    if by_base:
        return by_base
    topic = next((t for t in load_catalog().topics if t.slug == name), None)
    if topic and topic.snippets:
        return list(topic.snippets)
    candidates = sorted(set(mods) | {m.rsplit(".", 1)[-1] for m in mods} | {t.slug for t in load_catalog().topics})
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else " Run `python -m snippets list`."
    print(f"error: no snippet module or topic named {name!r}.{hint}", file=sys.stderr)
    raise SystemExit(2)


def snippet_imports(path: Path) -> list[tuple[ast.ImportFrom, str]]:
    """``from snippets.X import ...`` statements of a module, with the dotted target module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("snippets") for a in node.names):
            raise SystemExit(f"error: {path}: use `from snippets.x import y`, not `import snippets...`")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("snippets."):
            found.append((node, node.module[len("snippets.") :]))
    return found


def closure(modules: list[str]) -> list[str]:
    """The modules plus every snippet module they import, transitively (stable order)."""
    mods, order, todo = all_modules(), [], list(modules)
    while todo:
        m = todo.pop(0)
        if m in order:
            continue
        if m not in mods:
            raise SystemExit(f"error: snippet module {m!r} is imported but does not exist")
        order.append(m)
        todo.extend(dep for _, dep in snippet_imports(mods[m]))
    return order


def rewrite(path: Path) -> str:
    """Source of ``path`` with ``from snippets.a.b import x`` made local to the copy's folder."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for node, dep in sorted(snippet_imports(path), key=lambda p: -p[0].lineno):
        pad = " " * node.col_offset
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
        base = dep.rsplit(".", 1)[-1]
        block = (
            f"{pad}try:  # package-relative when copied into a package, flat when run as a script\n"
            f"{pad}    from .{base} import {names}\n"
            f"{pad}except ImportError:\n"
            f"{pad}    from {base} import {names}\n"
        )
        lines[node.lineno - 1 : node.end_lineno] = [block]
    rel = path.relative_to(ROOT).as_posix()
    header = f"# Copied from the deep-learning knowledge base: {rel}\n"
    return header + "".join(lines)


def cmd_list(_: argparse.Namespace) -> int:
    catalog = load_catalog()
    rows = []
    for mod, path in all_modules().items():
        pages = ", ".join(t.url("zh") for t in catalog.topics_for_module(mod)) or "-"
        rows.append((mod, summary(path), pages))
    width = max(len(r[0]) for r in rows)
    for mod, text, pages in rows:
        print(f"{mod:<{width}}  {text}\n{'':<{width}}  page: {pages}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    mods = all_modules()
    for m in resolve(args.name):
        print(mods[m].read_text(encoding="utf-8"), end="")
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    mods = all_modules()
    wanted = closure(resolve(args.name))
    dest = Path(args.dest)
    targets = {m: dest / f"{m.rsplit('.', 1)[-1]}.py" for m in wanted}
    clash = [str(p) for p in targets.values() if p.exists()]
    if clash and not args.force:
        print(f"error: refusing to overwrite {', '.join(clash)} (use --force)", file=sys.stderr)
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    for m, target in targets.items():
        target.write_text(rewrite(mods[m]), encoding="utf-8")
        print(f"copied snippets/{m.replace('.', '/')}.py -> {target}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    found = resolve(args.name)
    if len(found) > 1:
        print(f"error: {args.name!r} names several modules: {', '.join(found)}", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = [f"python -m snippets run {found[0]}", *args.args]
    try:
        runpy.run_module(f"snippets.{found[0]}", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snippets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every module, its summary and its page").set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="print a module's source")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("copy", help="copy a module and its snippet dependencies into DEST")
    p.add_argument("name")
    p.add_argument("dest")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_copy)
    p = sub.add_parser("run", help="run a module's demo (arguments after NAME go to the module)")
    p.add_argument("name")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the module as sys.argv[1:]")
    p.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
