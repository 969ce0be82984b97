"""token: a fresh join file from a master, refused on a host that is none."""

import json

import install_support as sup
from install_support import ko, mode, run


def test_token_writes_fresh_join_file(host, bundle_dir, tmp_path, capsys):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "first.json")) == 0
    runner.calls[:] = []
    path = str(tmp_path / "fresh.json")
    assert ko.main(["token", "--root", root, "--bundle", bundle_dir,
                    "--join-file", path]) == 0
    info = json.load(open(path))
    assert info["certificate_key"] == sup.CERT_KEY
    assert mode(path) == 0o600
    assert runner.ran("kubeadm", "token", "create", "--print-join-command")
    assert runner.ran("kubeadm", "init", "phase", "upload-certs",
                      "--upload-certs")
    assert "--control-plane" in capsys.readouterr().out


def test_token_on_non_master_refuses(host, capsys):
    root, runner = host
    assert ko.main(["token", "--root", root]) == 2
    assert "not a master" in capsys.readouterr().err
