"""Rules of the file's layout that an ast or a call record can check: install
mode never reads bundle-mode data; versions are compared only where the
profiles are made."""

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
