"""The suite is grouped like k8s_offline.py: a test file lives in the folder
of the section it tests (tests/kernel/, tests/profiles/, one folder per
slice), or is one of the few files in tests/ itself that span the whole file
or the suite.  The lab (tests/e2e/) has its own layout."""

import os

from test_layering import SCRIPT, section_starts

TESTS = os.path.dirname(os.path.abspath(__file__))

# folder -> the start of its section's banner title, in the file's order
SECTION_FOLDERS = [
    ("kernel", "Kernel:"),
    ("profiles", "Profiles:"),
    ("bundle", "Slice bundle"),
    ("install", "Slice install"),
    ("reset", "Slice reset"),
    ("daytwo", "Slice day two"),
    ("cluster", "Slice cluster"),
]

# What spans the file or the suite: its layout rules, the suite's own
# helpers, the command line's bad-input table, hostile sticks, every workflow.
SUITE_WIDE = {
    "test_bad_input.py", "test_fake_host.py", "test_fixtures.py",
    "test_hostile_stick.py", "test_layering.py", "test_layout_rules.py",
    "test_measure_path.py", "test_suite_layout.py", "test_workflows.py",
}

# Folders of tests/ that hold no unit tests of a section.
NOT_SECTIONS = {"e2e", "fixtures", "golden", "bench", "__pycache__"}


def suite_test_files():
    """Every test_*.py below tests/ but the lab's, relative to tests/."""
    found = []
    for folder, dirs, files in os.walk(TESTS):
        rel = os.path.relpath(folder, TESTS)
        if rel.split(os.sep)[0] in NOT_SECTIONS:
            dirs[:] = []
            continue
        found += [os.path.normpath(os.path.join(rel, name)) for name in files
                  if name.startswith("test_") and name.endswith(".py")]
    return sorted(found)


def misplaced(paths):
    """The paths (relative to tests/) that are in no section folder and are
    not a suite-wide file."""
    folders = {folder for folder, _ in SECTION_FOLDERS}
    bad = []
    for path in paths:
        parts = path.split(os.sep)
        if len(parts) == 1 and parts[0] in SUITE_WIDE:
            continue
        if len(parts) == 2 and parts[0] in folders:
            continue
        bad.append(path)
    return bad


def test_every_test_file_is_in_its_sections_folder_or_suite_wide():
    paths = suite_test_files()
    assert len(paths) > 40, paths
    assert misplaced(paths) == [], (
        "put each test file in the folder of the section of k8s_offline.py it tests "
        "(%s), or add it to SUITE_WIDE if it spans the file"
        % ", ".join("tests/%s/" % f for f, _ in SECTION_FOLDERS))


def test_the_check_can_fail():
    assert misplaced(["test_install_wait.py", os.path.join("shared", "test_x.py"),
                      os.path.join("install", "deep", "test_y.py"),
                      os.path.join("install", "test_install_wait.py"),
                      "test_layering.py"]) == [
        "test_install_wait.py", os.path.join("shared", "test_x.py"),
        os.path.join("install", "deep", "test_y.py")]


def test_each_folder_names_a_section_in_the_files_order():
    """The folders follow the sections: a section renamed or reordered in
    k8s_offline.py shows here."""
    with open(SCRIPT) as handle:
        titles = [title for _, title in section_starts(handle.read().splitlines())]
    first = []
    for folder, prefix in SECTION_FOLDERS:
        where = [i for i, title in enumerate(titles) if title.startswith(prefix)]
        assert where, "no section of k8s_offline.py is %r (tests/%s/)" % (prefix, folder)
        first.append(where[0])
    assert first == sorted(first), list(zip(SECTION_FOLDERS, first))


def test_every_suite_wide_file_and_section_folder_exists():
    for name in SUITE_WIDE:
        assert os.path.isfile(os.path.join(TESTS, name)), name
    for folder, _ in SECTION_FOLDERS:
        assert os.path.isdir(os.path.join(TESTS, folder)), folder


def test_test_file_names_are_unique_across_folders():
    """pytest imports a test file without __init__.py by its base name: two
    files of one name in two folders would not both be collected."""
    names = [os.path.basename(path) for path in suite_test_files()]
    assert sorted(set(names)) == sorted(names), [n for n in names if names.count(n) > 1]
