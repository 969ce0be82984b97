"""Rules of the file's layout that an ast or a call record can check: install
mode never reads bundle-mode data; versions are compared only where the
profiles are made."""

import ast

import pytest

import install_support  # noqa: F401  (puts the repository on sys.path)
import k8s_offline as ko


def test_install_mode_never_reads_the_release_table(monkeypatch, capsys):
    """bundle/releases.json is bundle-mode data: building the command line
    for master leaves it unread; `bundle --help` reads it for its list."""
    calls = []
    real = ko.release_table

    def recording():
        calls.append(1)
        return real()

    monkeypatch.setattr(ko, "release_table", recording)
    parser = ko.build_parser()
    args = parser.parse_args(["master", "--dry-run"])
    assert args.func is ko.cmd_master and calls == []
    with pytest.raises(SystemExit):
        parser.parse_args(["bundle", "--help"])
    assert len(calls) == 1
    assert "any release from v1.16.0" in " ".join(capsys.readouterr().out
                                                  .split())


# -- names say the truth ------------------------------------------------------

SCRIPT = ko.__file__


def module_tree():
    with open(SCRIPT) as handle:
        return ast.parse(handle.read())


def functions(tree):
    """Module-level functions and methods, by name."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found.append(node)
        elif isinstance(node, ast.ClassDef):
            found.extend(item for item in node.body
                         if isinstance(item, ast.FunctionDef))
    return found


def own_nodes(function):
    """The nodes of function's body, not of functions defined inside it."""
    todo, found = list(function.body), []
    while todo:
        node = todo.pop()
        found.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return found


def verb_contracts(tree):
    """[(function, what is wrong)]: check_* yields Problems, valid_* returns
    the checked value, require_* returns nothing (it raises or passes)."""
    wrong = []
    for function in functions(tree):
        name = function.name.lstrip("_")
        nodes = own_nodes(function)
        yields = any(isinstance(node, (ast.Yield, ast.YieldFrom))
                     for node in nodes)
        values = [node for node in nodes if isinstance(node, ast.Return)
                  and node.value is not None]
        if name.startswith("check_") and not yields:
            wrong.append((function.name, "check_ yields no Problem"))
        if name.startswith("valid_") and (yields or not values):
            wrong.append((function.name, "valid_ returns no value"))
        if name.startswith("require_") and (yields or values):
            wrong.append((function.name, "require_ returns a value"))
    return wrong


def test_each_check_verb_has_one_contract():
    assert verb_contracts(module_tree()) == []
    sample = ast.parse("def check_a():\n    return 1\n"
                       "def valid_b(x):\n    raise ValueError(x)\n"
                       "def require_c(x):\n    return x\n"
                       "def check_d():\n    yield 1\n")
    assert verb_contracts(sample) == [
        ("check_a", "check_ yields no Problem"),
        ("valid_b", "valid_ returns no value"),
        ("require_c", "require_ returns a value")]


def unused_names(tree):
    """Module-level names nothing in the file reads."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
    defined = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.append(node.name)
        elif isinstance(node, ast.Assign):
            defined.extend(sub.id for target in node.targets
                           for sub in ast.walk(target)
                           if isinstance(sub, ast.Name))
    return [name for name in defined if name not in used]


def test_no_module_level_name_is_left_unused():
    assert unused_names(module_tree()) == []
    assert unused_names(ast.parse("A = 1\ndef f():\n    return A\n")) == ["f"]


def test_the_64_hex_grammar_is_written_once():
    texts = [node for node in ast.walk(module_tree())
             if isinstance(node, ast.Str) and "{64}" in node.s]
    assert len(texts) == 1 and ko.SHA256_HEX_RE.pattern == "[0-9a-f]{64}"


# -- versions are compared in the profiles alone ------------------------------

VERSION_NAMES = ("version", "minor", "major", "patch", "since")


def is_version_operand(node):
    """A version, as code compares one: parse_version(...) (or a slice of
    it), a tuple of numbers, or a name or attribute saying version/minor."""
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Call):
        return getattr(node.func, "id", None) == "parse_version"
    if isinstance(node, ast.Tuple):
        return bool(node.elts) and all(isinstance(element, ast.Num)
                                       for element in node.elts)
    name = getattr(node, "id", None) or getattr(node, "attr", None) or ""
    return any(word in name.split("_") for word in VERSION_NAMES)


def version_comparisons(source):
    """[(function, line)] of every <, <=, >, >= between versions outside
    the Profiles section (profile() and the release table)."""
    import test_layering
    tree = ast.parse(source)
    starts = test_layering.section_starts(source.splitlines())
    found = []
    for statement in tree.body:
        title = starts[test_layering.section_of(starts, statement.lineno)][1]
        if title.startswith("Profiles"):
            continue
        for node in ast.walk(statement):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left] + node.comparators
            for op, left, right in zip(node.ops, operands, operands[1:]):
                if (isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE))
                        and (is_version_operand(left)
                             or is_version_operand(right))):
                    found.append((getattr(statement, "name", "?"),
                                  node.lineno))
    return found


def test_versions_are_compared_only_in_the_profiles():
    with open(SCRIPT) as handle:
        assert version_comparisons(handle.read()) == []
    import test_layering
    banner = test_layering.BANNER
    sample = "\n".join([
        banner, "# Profiles: x", banner,
        "def profile(version):", "    return parse_version(version) < (1, 17)",
        banner, "# Slice install", banner,
        "def phase(ctx):", "    minor = 3", "    return minor >= 20", "",
        "def fine(ctx):", "    return len(ctx.nodes) > 3", ""])
    assert version_comparisons(sample) == [("phase", 11)]


# -- a built context is read-only: phases record what they find ---------------

def is_context_name(node):
    """ctx, or a name ending _ctx: what the file calls a command's context."""
    return isinstance(node, ast.Name) and (node.id == "ctx" or
                                           node.id.endswith("_ctx"))


def context_writes(tree):
    """[(function, line)] of every `ctx.X = ...` (or +=, or setattr(ctx, ..))
    anywhere: a context sets its own fields in its __init__ (as self.X), and
    phases write what they learn into ctx.found.X."""
    found = []
    for statement in tree.body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign):
                targets = [node.target]
            elif (isinstance(node, ast.Call) and
                  getattr(node.func, "id", None) == "setattr" and node.args):
                targets = [ast.Attribute(value=node.args[0], attr="?")]
            else:
                continue
            while targets:
                target = targets.pop()
                if isinstance(target, (ast.Tuple, ast.List)):
                    targets.extend(target.elts)
                elif (isinstance(target, ast.Attribute) and
                      is_context_name(target.value)):
                    found.append((getattr(statement, "name", "?"),
                                  node.lineno))
    return found


def test_nothing_sets_a_field_of_a_built_context():
    assert context_writes(module_tree()) == []
    sample = ast.parse("\n".join([
        "class C(Context):", "    def __init__(self):", "        self.a = 1",
        "def phase(ctx):", "    ctx.found.a = 1", "    ctx.a = 2",
        "def other(ctx):", "    ctx.a, b = 1, 2", "    setattr(ctx, 'a', 3)",
        "def ssl(context):", "    context.verify_mode = 0",
        "def join(join_ctx):", "    join_ctx.n += 1", ""]))
    assert context_writes(sample) == [("phase", 6), ("other", 8),
                                      ("other", 9), ("join", 13)]
