"""How far a newcomer's eyes travel reading one command of k8s_offline.py.

    python3 tests/measure_path.py [FILE] [--handler cmd_master]
                                  [--until kubeadm,init] [--list]

The reader starts at main() and reads depth first, in source order: every
call of a module-level function or class, every method called through an
attribute when one class alone defines a method of that name, and every
module-level constant named, is a stop, opened the first time it is met
(a constant's value is read like a body; from the handler on, a function
it names is opened too: the handler's phase table leads to its phases,
while a table the command line reads for --help is read as data only).  main()'s `args.func(args)` leads to the command's handler
(--handler).  The walk ends at the list literal that starts with the
--until words (the argv of `kubeadm init`).

Printed: the stops, the reversals (the reader's direction through the file
changes between one move and the next) and the jumps longer than 1,000
lines, as `stops N reversals N long-jumps N`; --list prints the path.
"""

import argparse
import ast
import os
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "k8s_offline.py")
LONG_JUMP = 1000


class _Done(Exception):
    pass


def _in_source_order(node):
    """The nodes under node (not node itself), in reading order."""
    found = [sub for sub in ast.walk(node) if sub is not node
             and hasattr(sub, "lineno")]
    return sorted(found, key=lambda sub: (sub.lineno, sub.col_offset))


def _is_until(node, until):
    if not isinstance(node, (ast.List, ast.Tuple)):
        return False
    words = []
    for element in node.elts[:len(until)]:
        value = getattr(element, "value", getattr(element, "s", None))
        words.append(value)
    return words == list(until)


class Reader(object):
    def __init__(self, source, handler, until):
        self.tree = ast.parse(source)
        self.handler, self.until = handler, until
        self.definitions = {}     # module-level name -> node
        self.methods = {}         # method name -> [node]
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                self.definitions[node.name] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            self.definitions.setdefault(sub.id, node)
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        self.methods.setdefault(item.name, []).append(item)
        self.modules = set()      # imported names: os.path.isdir is no method
        for node in self.tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    self.modules.add((alias.asname or alias.name).split(".")[0])
        self.path = []            # (line, label)
        self.running = False      # in the handler: tables lead to functions
        self.seen = set()

    def visit(self, node, label):
        key = (id(node), isinstance(node, ast.Assign) and self.running
               and self.names_functions(node))
        if key in self.seen:
            return
        self.seen.add(key)
        self.path.append((node.lineno, label))
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    self.visit(item, label + ".__init__")
            return
        self.read(node)

    def names_functions(self, node):
        """A table naming module-level functions (reopened in the handler)."""
        return any(isinstance(sub, ast.Name) and isinstance(
            self.definitions.get(sub.id), ast.FunctionDef)
            for sub in ast.walk(node.value))

    def read(self, node):
        in_value = isinstance(node, ast.Assign) and self.running
        for sub in _in_source_order(node):
            if _is_until(sub, self.until):
                raise _Done()
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                target = self.definitions.get(sub.id)
                if target is None or target is node:
                    continue
                if (isinstance(target, ast.Assign) or in_value
                        or isinstance(sub.parent, ast.Call)
                        and sub.parent.func is sub):
                    self.visit(target, sub.id)
            elif (isinstance(sub, ast.Call)
                  and isinstance(sub.func, ast.Attribute)):
                if (sub.func.attr == "func" and isinstance(
                        sub.func.value, ast.Name)
                        and sub.func.value.id == "args"
                        and self.handler in self.definitions):
                    self.running = True
                    self.visit(self.definitions[self.handler], self.handler)
                    continue
                if (isinstance(sub.func.value, ast.Name)
                        and sub.func.value.id in self.modules):
                    continue
                candidates = self.methods.get(sub.func.attr, [])
                if len(candidates) == 1:
                    self.visit(candidates[0], "." + sub.func.attr)

    def walk(self):
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node
        try:
            self.visit(self.definitions["main"], "main")
        except _Done:
            return True
        return False


def measure(source, handler="cmd_master", until=("kubeadm", "init")):
    """(stops, reversals, long jumps, path, reached the end)."""
    reader = Reader(source, handler, until)
    reached = reader.walk()
    lines = [line for line, _ in reader.path]
    moves = [b - a for a, b in zip(lines, lines[1:]) if b != a]
    reversals = sum(1 for a, b in zip(moves, moves[1:]) if (a > 0) != (b > 0))
    jumps = sum(1 for move in moves if abs(move) > LONG_JUMP)
    return len(reader.path), reversals, jumps, reader.path, reached


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", default=SCRIPT)
    parser.add_argument("--handler", default="cmd_master")
    parser.add_argument("--until", default="kubeadm,init")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    with open(args.file) as handle:
        source = handle.read()
    stops, reversals, jumps, path, reached = measure(
        source, args.handler, tuple(args.until.split(",")))
    if args.list:
        previous = None
        for line, label in path:
            move = "" if previous is None else "%+d" % (line - previous)
            print("%6d %-8s %s" % (line, move, label))
            previous = line
    if not reached:
        sys.stderr.write("warning: the walk never reached %s\n" % args.until)
    print("stops %d reversals %d long-jumps %d" % (stops, reversals, jumps))
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
