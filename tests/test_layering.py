"""k8s_offline.py is layered: its sections (the `# ====` banner blocks) come
in data-flow order, and no function uses a module-level name that a later
section defines.  A reader can then read the file top to bottom.

The sections are the kernel, the profiles, what the install-mode slices
share, one slice per workflow (a section whose title starts with "Slice")
and the command line; a slice uses the sections before the slices, never
another slice."""

import ast
import io
import os
import tokenize

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "k8s_offline.py")
BANNER = "# " + "=" * 75


def section_starts(lines):
    """(first line number, title) of each section, in order."""
    starts = [(1, "(top)")]
    for number, line in enumerate(lines, 1):
        if (line.rstrip() == BANNER and number + 2 <= len(lines)
                and lines[number + 1].rstrip() == BANNER):
            starts.append((number, lines[number].lstrip("# ").strip()))
    return starts


def section_of(starts, lineno):
    index = 0
    for i, (first, _) in enumerate(starts):
        if first <= lineno:
            index = i
    return index


def defined_names(node):
    """The module-level names one top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    else:
        return []
    names = []
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name):
                names.append(sub.id)
    return names


def local_names(function):
    """Names a function binds itself (arguments and assignments)."""
    names = set()
    for node in ast.walk(function):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def layering_violations(source):
    """[(function, name, user section, defining section)] for every use of
    a name defined in a later section than the function using it."""
    tree = ast.parse(source)
    lines = source.splitlines()
    starts = section_starts(lines)
    home = {}
    for node in tree.body:
        for name in defined_names(node):
            home.setdefault(name, section_of(starts, node.lineno))
    found = []
    functions = [node for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.Lambda))]
    for function in functions:
        where = section_of(starts, function.lineno)
        mine = local_names(function)
        for node in ast.walk(function):
            if (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
                    and node.id not in mine and node.id in home
                    and home[node.id] > where):
                found.append((getattr(function, "name", "<lambda>"), node.id,
                              starts[where][1], starts[home[node.id]][1]))
    return sorted(set(found))


def slice_violations(source):
    """[(user, name, user section, defining section)] for every use, in a
    function or a top-level statement, of a name one slice defines from
    another slice (or from the kernel or the profiles, which come before
    every slice); only the command line may use every slice."""
    tree = ast.parse(source)
    starts = section_starts(source.splitlines())
    titles = [title for _, title in starts]
    home = {}
    for node in tree.body:
        for name in defined_names(node):
            home.setdefault(name, section_of(starts, node.lineno))
    found = []
    for statement in tree.body:
        where = section_of(starts, statement.lineno)
        if titles[where] == "Command line":
            continue
        user = (getattr(statement, "name", None)
                or ",".join(defined_names(statement)) or "<statement>")
        mine = local_names(statement)
        for node in ast.walk(statement):
            if (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
                    and node.id not in mine and node.id in home and home[node.id] != where
                    and titles[home[node.id]].startswith("Slice")):
                found.append((user, node.id, titles[where],
                              titles[home[node.id]]))
    return sorted(set(found))


def read_script():
    with open(SCRIPT) as handle:
        return handle.read()


def test_the_file_has_its_sections():
    starts = section_starts(read_script().splitlines())
    assert len(starts) >= 9, starts


def test_no_function_uses_a_name_from_a_later_section():
    assert layering_violations(read_script()) == []


def test_the_check_sees_a_forward_use():
    source = "\n".join([
        BANNER, "# First", BANNER, "def early():", "    return LATE", "",
        BANNER, "# Second", BANNER, "LATE = 1", ""])
    assert layering_violations(source) == [("early", "LATE", "First",
                                            "Second")]
    backwards = source.replace("return LATE", "return 2")
    assert layering_violations(backwards) == []


def test_the_file_has_a_kernel_profiles_slices_and_a_command_line():
    titles = [title for _, title in section_starts(read_script().splitlines())]
    kinds = [title.split(":")[0].split(" ")[0] for title in titles[1:]]
    assert kinds[0] == "Kernel" and kinds[-1] == "Command", titles
    first_profile, first_slice = kinds.index("Profiles"), kinds.index("Slice")
    assert set(kinds[:first_profile]) == {"Kernel"}, titles
    # Then the profiles, and what the install-mode slices share (their
    # node context uses the run's profile).
    assert set(kinds[first_profile:first_slice]) <= {"Profiles", "Shared"}
    assert kinds[first_profile:first_slice][0] == "Profiles", titles
    assert set(kinds[first_slice:-1]) == {"Slice"}, titles
    slices = [title.split(" (")[0] for title in titles if
              title.startswith("Slice")]
    for workflow in ("bundle", "install", "reset", "day two", "cluster"):
        assert "Slice " + workflow in slices, slices


def test_no_slice_uses_another_slice():
    assert slice_violations(read_script()) == []


def test_the_check_sees_one_slice_using_another():
    source = "\n".join([
        BANNER, "# Kernel: x", BANNER, "def util():", "    return 1", "",
        BANNER, "# Slice a", BANNER, "def a_step():", "    return b_step()",
        "A_TABLE = (b_step,)", "",
        BANNER, "# Slice b", BANNER, "def b_step():", "    return util()", "",
        BANNER, "# Command line", BANNER, "def main():",
        "    return a_step(), b_step()", ""])
    assert slice_violations(source) == [
        ("A_TABLE", "b_step", "Slice a", "Slice b"),
        ("a_step", "b_step", "Slice a", "Slice b")]
    alone = source.replace("return b_step()", "return util()").replace(
        "A_TABLE = (b_step,)", "A_TABLE = (a_step,)")
    assert slice_violations(alone) == []


def backslash_continuations(source):
    """Line numbers ending in a backslash outside a string literal."""
    inside = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and token.start[0] != token.end[0]:
            inside.update(range(token.start[0], token.end[0]))
    return [number for number, line in enumerate(source.splitlines(), 1)
            if line.endswith("\\") and number not in inside]


def test_lines_continue_in_parentheses_not_after_backslashes():
    assert backslash_continuations(read_script()) == []
    assert backslash_continuations("x = 1 + \\\n    2\n") == [1]
    assert backslash_continuations('x = """a\\\nb"""\n') == []


def test_the_header_lists_every_command_variable_and_hidden_flag():
    """The module docstring is the map of every knob: a command, an
    environment variable read or a hidden flag missing there fails."""
    import argparse
    import sys
    sys.path.insert(0, os.path.dirname(SCRIPT))
    import k8s_offline as ko
    header = ko.__doc__
    tree = ast.parse(read_script())
    variables = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get" and node.args
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "environ"):
            name = node.args[0]
            variables.add(name.value if isinstance(name, ast.Constant)
                          else getattr(ko, name.id))
    assert {"DOCKER_CONFIG", "XDG_CACHE_HOME", "SUDO_USER"} <= variables
    for name in variables:
        assert "\n  %s " % name in header, name
    commands, hidden = [], set()
    parsers = [("", ko.build_parser())]
    while parsers:
        prefix, parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    commands.append((prefix + " " + name).strip())
                    parsers.append(((prefix + " " + name).strip(), sub))
            elif action.help == argparse.SUPPRESS and action.option_strings:
                hidden.update(action.option_strings)
    assert "certs renew" in commands and hidden == {"--root",
                                                    "--containerd-address"}
    for command in commands:
        assert "\n    %s " % command in header, command
    for flag in hidden:
        assert "\n  %s " % flag in header, flag


RE_CALLS = ("compile", "match", "search", "fullmatch", "sub", "subn", "split",
            "findall", "finditer")


def dollar_anchored_patterns(source):
    """(line, pattern) of every regular expression given to the re module
    as a literal with a `$` anchor outside multi-line mode: `$` also
    matches before a trailing newline, so "name\\n" passes ^name$.  A
    whole value is checked with fullmatch (or \\Z) instead."""
    import re
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func,
                                                          ast.Attribute)
                and node.func.attr in RE_CALLS and isinstance(
                    node.func.value, ast.Name) and node.func.value.id == "re"
                and node.args):
            continue
        pattern = node.args[0]
        if not (isinstance(pattern, ast.Constant) and
                isinstance(pattern.value, str)):
            continue
        flags = ast.dump(node)
        multiline = ("MULTILINE" in flags or "attr='M'" in flags or
                     pattern.value.startswith("(?m"))
        if re.search(r"(?<!\\)\$", pattern.value) and not multiline:
            found.append((node.lineno, pattern.value))
    return found


def test_no_pattern_is_dollar_anchored():
    assert dollar_anchored_patterns(read_script()) == []


def test_the_dollar_check_sees_one():
    assert dollar_anchored_patterns('import re\nX = re.compile(r"^a$")\n') \
        == [(2, "^a$")]
    assert dollar_anchored_patterns(
        'import re\nre.search(r"^a$", t, re.M)\nre.compile(r"a\\Z")\n'
        're.match(r"\\$x", t)\n') == []
