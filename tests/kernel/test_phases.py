"""Phases as data: each workflow's --help lists its phases, `COMMAND phase
NAME` runs one, run_if leaves a phase out where it does not apply, and
--skip-phases exists only where there are phases."""

import os

import pytest

import install_support as sup
from install_support import ko, ran_phases, run


def help_text(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        ko.main(list(argv) + ["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command, workflow", [
    (("master",), "MASTER_PHASES"), (("join",), "JOIN_PHASES"),
    (("reset",), "RESET_PHASES"), (("certs", "renew"), "CERTS_RENEW_PHASES"),
    (("restore", "f.tar.gz"), "RESTORE_PHASES")])
def test_help_lists_the_phases_in_order(capsys, command, workflow):
    text = help_text(capsys, *command)
    listing = text.split("phases, in order")[1].splitlines()[2:]
    phases = getattr(ko, workflow)
    assert [line.split()[0] for line in listing if line.strip()] == [
        phase.name for phase in phases]
    for phase, line in zip(phases, listing):
        assert line.split(None, 1)[1] == phase.short
    assert "--skip-phases" in text


@pytest.mark.parametrize("argv", [
    ["token"], ["status"], ["remove-node", "n1"], ["certs", "check"],
    ["backup"]])
def test_commands_without_phases_have_no_skip_phases(capsys, argv):
    assert "--skip-phases" not in help_text(capsys, *argv)
    with pytest.raises(SystemExit) as exit_info:
        ko.main(argv + ["--skip-phases", "x"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --skip-phases" in capsys.readouterr().err


def test_master_phase_runs_that_phase_after_the_safety_phases(
        host, bundle_dir, capsys):
    root, runner = host
    assert run(root, bundle_dir, "master", "phase", "install") == 0
    err = capsys.readouterr().err
    assert ran_phases(err) == ["verify", "preflight", "install"]
    assert os.path.exists(os.path.join(root, "usr/bin/kubeadm"))
    assert not os.path.exists(os.path.join(root, ko.MODULES_FILE.lstrip("/")))
    assert not runner.ran("kubeadm", "init")


def test_master_phase_init_after_the_others_completes_the_run(
        host, bundle_dir, capsys, tmp_path):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--skip-phases",
               "init,kubeconfig,network,join-file") == 0
    assert not runner.ran("kubeadm", "init")
    capsys.readouterr()
    assert run(root, bundle_dir, "master", "phase", "init", "--no-wait") == 0
    assert ran_phases(capsys.readouterr().err) == ["verify", "preflight",
                                                   "init"]
    assert runner.ran("kubeadm", "init", "--config", ko.INIT_CONFIG)


@pytest.mark.parametrize("argv, message", [
    (["phase"], "`master phase` needs the name of a phase"),
    (["phase", "bogus"], "invalid choice: 'bogus'"),
    (["phases", "init"], "invalid choice: 'phases'"),
])
def test_master_phase_needs_a_known_name(host, bundle_dir, capsys, argv,
                                         message):
    root, runner = host
    before = sup.snapshot(root)
    try:
        code = run(root, bundle_dir, "master", *argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert sup.snapshot(root) == before
    assert runner.calls == []


def test_worker_join_leaves_out_kubeconfig(host, bundle_dir, tmp_path,
                                           capsys):
    root, runner = host
    path = sup.write_join_file(tmp_path, image_repository="k8s.gcr.io",
                               control_plane_nodes=["master-1"])
    assert run(root, bundle_dir, "join", "--join-file", path,
               "--no-wait") == 0
    assert ran_phases(capsys.readouterr().err)[-2:] == ["join", "wait"]
    assert not os.path.exists(os.path.join(root, "root/.kube/config"))


def test_reset_phase_runs_one_phase(host, bundle_dir, tmp_path, capsys):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "j.json")) == 0
    capsys.readouterr()
    runner.calls[:] = []
    assert ko.main(["reset", "--root", root, "--yes", "phase", "files"]) == 0
    assert ran_phases(capsys.readouterr().err) == ["files"]
    assert not os.path.exists(os.path.join(root, "etc/kubernetes"))
    assert not runner.ran("kubeadm", "reset")


def test_a_phase_setting_a_context_field_fails(host, bundle_dir):
    """A built context is read-only: a phase records what it learns in
    ctx.found, a record of named fields; ctx.X = ... is a programming error
    that names the field, and so is a field the record does not name."""
    root, runner = host
    args = ko.build_parser().parse_args(
        ["master", "--root", root, "--bundle", bundle_dir, "--dry-run"])
    ctx = ko.NodeContext(args, "master")

    def learns(ctx):
        """learns the cgroup driver"""
        ctx.cgroup_driver = "systemd"
    with pytest.raises(AttributeError) as raised:
        ko.run_phases(ctx, (ko.Phase("learn", "learns", learns),))
    assert str(raised.value) == (
        "NodeContext.cgroup_driver is set after the context was built: the "
        "context is read-only; record it in ctx.found")
    ctx.found.cgroup_driver = "systemd"
    assert ctx.found.cgroup_driver == "systemd"
    with pytest.raises(AttributeError):
        ctx.found.cgroup_drivr = "systemd"
    with pytest.raises(AttributeError):
        ctx.node_name = "other"
    ctx.close()
