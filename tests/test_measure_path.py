"""tests/measure_path.py counts what it says it counts."""

import measure_path


def test_the_walk_counts_stops_reversals_and_long_jumps():
    filler = "\n" * 1200
    source = "\n".join([
        "def main():",                       # 1
        "    far()",
        "    args.func(args)",
        "def handler():",                    # 4
        "    near()",
        "    return TABLE",
        "def near():",                       # 7
        "    pass",
        "TABLE = (step,)",                   # 9
        "def step():",                       # 10
        "    return ['kubeadm', 'init']",
        "def never():",
        "    pass",
        filler,
        "def far():",
        "    pass", ""])
    stops, reversals, jumps, path, reached = measure_path.measure(
        source, handler="handler")
    assert reached
    assert [label for _, label in path] == ["main", "far", "handler", "near",
                                            "TABLE", "step"]
    # main 1 -> far 1215 (down, long) -> handler 4 (up, long) -> near 7 ->
    # TABLE 9 -> step 10: two reversals, two long jumps.
    assert (stops, reversals, jumps) == (6, 2, 2)


def test_the_master_path_reaches_kubeadm_init():
    with open(measure_path.SCRIPT) as handle:
        assert measure_path.measure(handle.read())[4]
