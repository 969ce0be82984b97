"""bundle, certs renew and restore run through the phase runner as master,
join and reset do: a phase table each, its phases in --help, --dry-run."""

import os

import pytest

import install_support  # noqa: F401  (puts the repository on sys.path)
import k8s_offline as ko


def help_of(capsys, *argv):
    with pytest.raises(SystemExit):
        ko.build_parser().parse_args(list(argv) + ["--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("argv,workflow", [
    (("bundle",), "BUNDLE_PHASES"),
    (("certs", "renew"), "CERTS_RENEW_PHASES"),
    (("restore", "backup.tar.gz"), "RESTORE_PHASES"),
    (("master",), "MASTER_PHASES")])
def test_help_lists_the_phases_in_order(capsys, argv, workflow):
    text = help_of(capsys, *argv)
    listed = [line.split()[0] for line in
              text.split("phases, in order")[1].splitlines()[2:] if line.strip()]
    if argv == ("bundle",):
        listed = [line.split()[0] for line in
                  text.split("phases, in order")[1].splitlines()[1:]
                  if line.strip()]
    assert listed == [phase.name for phase in getattr(ko, workflow)]


def test_bundle_dry_run_names_every_phase_and_writes_nothing(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ko, "RegistryClient", None)   # no client is made
    output = str(tmp_path / "b.tar")
    assert ko.main(["bundle", "--dry-run", "--output", output,
                    "--cache-dir", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err
    ran = [line.split("]")[0][1:] for line in err.splitlines()
           if line.startswith("[") and "(dry run)" in line]
    assert ran == [phase.name for phase in ko.BUNDLE_PHASES]
    assert "would write %s" % output in err
    assert "dry run: nothing was changed" in err
    assert os.listdir(str(tmp_path)) == []


def test_bundle_refuses_a_bad_flag_before_any_phase(tmp_path, capsys):
    assert ko.main(["bundle", "--dry-run", "--jobs", "0",
                    "--output", str(tmp_path / "b.tar")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: bad --jobs 0: give a number from 1 to 64"


@pytest.mark.parametrize("argv,command", [
    (["certs", "renew", "phase"], "certs renew"),
    (["restore", "x.tar.gz", "phase"], "restore"),
    (["master", "phase"], "master")])
def test_phase_without_a_name_says_which_command(capsys, argv, command):
    assert ko.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: `%s phase` needs the name of a phase: see `%s "
                   "--help` for them" % (command, command))
