#!/usr/bin/env python3
"""No C files call each other in a loop: a file's calls go down the layers,
or sideways to a file that does not call back (README, Layout).

Reads the C sources as text: a function defined (not static) in one file and
called by name in another is an edge; every strongly connected set of two or
more files is a loop, printed with the calls that make it.  Calls through a
pointer (`proxy->admin_on_packet(...)`) are not edges: that is how a lower
part reaches a higher one on purpose.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRS = ["common", "config", "cli", "proxy", "cutover/db", "cutover/loop", "replicator"]


def sources():
    for d in DIRS:
        path = os.path.join(ROOT, d)
        for name in sorted(os.listdir(path)):
            if name.endswith(".c"):
                yield os.path.join(d, name)


def main():
    text, defined = {}, {}
    for f in sources():
        with open(os.path.join(ROOT, f), encoding="utf-8") as fh:
            s = fh.read()
        text[f] = re.sub(r"/\*.*?\*/", "", s, flags=re.S)
        for m in re.finditer(r"^([a-z_][a-z0-9_]*)\(", s, re.M):
            line_before = s[s.rfind("\n", 0, m.start() - 1) + 1:m.start() - 1]
            if "static" not in line_before:
                defined.setdefault(m.group(1), set()).add(f)
    edges = {}
    for f, body in text.items():
        for name in set(re.findall(r"(?<![>.])\b([a-z_][a-z0-9_]*)\s*\(", body)):
            for g in defined.get(name, ()):
                if g != f:
                    edges.setdefault(f, {}).setdefault(g, set()).add(name)
    # Tarjan's strongly connected components.
    index, low, stack, on_stack, loops = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    sys.setrecursionlimit(10000)
    for f in text:
        if f not in index:
            visit(f)
    for component in loops:
        print("files calling each other in a loop: " + " ".join(component))
        for a in component:
            for b in component:
                if b in edges.get(a, {}):
                    print(f"    {a} -> {b}: {', '.join(sorted(edges[a][b]))}")
    return 1 if loops else 0


if __name__ == "__main__":
    sys.exit(main())
