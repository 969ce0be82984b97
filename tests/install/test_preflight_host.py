"""Preflight follows the bundle's kubeadm (what it refuses is an error, what
it warns about a warning, before the host changes), and the firewalld and
SELinux fixes behind --open-firewall and --selinux-permissive."""

import os

import pytest

import install_support as sup
from install_support import ko

MASTER_RULES = ["6443/tcp", "2379-2380/tcp", "10250/tcp", "10251/tcp",
                "10252/tcp", "8472/udp"]
WORKER_RULES = ["10250/tcp", "30000-32767/tcp", "8472/udp"]


def master(root, bundle, *extra):
    return ["master", "--root", root, "--bundle", bundle, "--no-progress",
            "--no-wait", "--skip-phases", "join-file"] + list(extra)


def without(*names):
    return tuple(t for t in sup.TOOLS if t not in names)


@pytest.mark.parametrize("version,fatal", [("v1.16.0", False), ("v1.17.3", False),
                                           ("v1.18.0", True), ("v1.20.15", True)])
def test_conntrack_is_an_error_from_kubeadm_1_18(version, fatal, tmp_path,
                                                 monkeypatch, capsys):
    root = sup.make_root(str(tmp_path / "root"), tools=without("conntrack"))
    runner = sup.install_fake(monkeypatch, root)
    bundle = sup.make_bundle(str(tmp_path / "b"), version=version)
    before = sup.snapshot(root)
    code = ko.main(master(root, bundle))
    err = capsys.readouterr().err
    if fatal:
        assert code == 2
        assert err.strip().splitlines()[-1] == (
            "error: conntrack is missing: kubeadm %s refuses to run without it "
            "(kube-proxy needs it); install the conntrack package" % version)
        assert sup.snapshot(root) == before
        assert not runner.ran("modprobe") and not runner.ran("sysctl")
    else:
        assert code == 0, err
        assert "warning: conntrack is missing" in err


@pytest.mark.parametrize("tool,words", [
    ("socat", "`kubectl port-forward` needs it"),
    ("touch", "kubeadm warns without it"),
    ("ebtables", "kubeadm warns without it"),
    ("ethtool", "kubeadm warns without it"),
    ("tc", "kubeadm warns without it")])
def test_what_kubeadm_warns_about_is_a_warning(tool, words, tmp_path, monkeypatch,
                                               capsys):
    root = sup.make_root(str(tmp_path / "root"), tools=without(tool))
    sup.install_fake(monkeypatch, root)
    bundle = sup.make_bundle(str(tmp_path / "b"), version="v1.18.0")
    assert ko.main(master(root, bundle)) == 0
    err = capsys.readouterr().err
    line = [l for l in err.splitlines() if l.startswith("warning: %s is missing"
                                                         % tool)]
    assert line and words in line[0], err


def _firewalld(root, runner):
    sup.write(root, "/usr/bin/firewall-cmd", "#!/bin/sh\n", 0o755)
    runner.cluster.firewalld = "active"


def test_firewalld_and_selinux_warnings_name_udp_8472_and_the_flags(
        tmp_path, monkeypatch, capsys):
    root = sup.make_root(str(tmp_path / "root"), selinux="1")
    runner = sup.install_fake(monkeypatch, root)
    _firewalld(root, runner)
    bundle = sup.make_bundle(str(tmp_path / "b"))
    assert ko.main(master(root, bundle)) == 0
    err = capsys.readouterr().err
    firewall = [l for l in err.splitlines() if "firewalld is active" in l][0]
    assert "8472/udp" in firewall and "--open-firewall" in firewall
    for rule in MASTER_RULES:
        assert rule in firewall
    selinux = [l for l in err.splitlines() if "SELinux is enforcing" in l][0]
    assert "--selinux-permissive" in selinux
    assert not runner.ran("firewall-cmd") and not runner.ran("setenforce")


@pytest.mark.parametrize("command", ["master", "join"])
def test_open_firewall_opens_exactly_the_roles_ports(command, tmp_path,
                                                     monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    _firewalld(root, runner)
    runner.expect("firewall-cmd", "--permanent")
    runner.expect("firewall-cmd", "--reload")
    bundle = sup.make_bundle(str(tmp_path / "b"))
    if command == "master":
        argv = master(root, bundle, "--open-firewall")
        rules = MASTER_RULES
    else:
        argv = ["join", "--root", root, "--bundle", bundle, "--no-progress",
                "--no-wait", "--open-firewall", "--join-file",
                sup.write_join_file(tmp_path)]
        rules = WORKER_RULES
    assert ko.main(argv) == 0
    calls = runner.ran("firewall-cmd")
    assert calls == [["firewall-cmd", "--permanent", "--add-port=" + rule]
                     for rule in rules] + [["firewall-cmd", "--reload"]]
    # Opened before kubeadm runs.
    flat = [" ".join(a) for a in runner.commands()]
    assert flat.index("firewall-cmd --reload") < [
        i for i, c in enumerate(flat) if c.startswith("kubeadm ")][0]


SELINUX_CONFIG = """\
# This file controls the state of SELinux on the system.
SELINUX=enforcing
# SELINUXTYPE= can take one of three values:
SELINUXTYPE=targeted
"""


def test_selinux_permissive_now_and_at_boot(tmp_path, monkeypatch, capsys):
    root = sup.make_root(str(tmp_path / "root"), selinux="1")
    runner = sup.install_fake(monkeypatch, root)
    runner.expect("setenforce", "0")
    sup.write(root, "/etc/selinux/config", SELINUX_CONFIG)
    bundle = sup.make_bundle(str(tmp_path / "b"))
    assert ko.main(master(root, bundle, "--selinux-permissive")) == 0
    assert runner.ran("setenforce", "0")
    with open(os.path.join(root, "etc/selinux/config")) as handle:
        text = handle.read()
    assert text == SELINUX_CONFIG.replace("SELINUX=enforcing", "SELINUX=permissive")
    assert "SELinux is enforcing" not in capsys.readouterr().err
    # Nothing left to change: the file stays, setenforce is not run again.
    sup.write(root, "/sys/fs/selinux/enforce", "0")
    runner.calls[:] = []
    assert ko.main(master(root, bundle, "--selinux-permissive")) == 0
    assert not runner.ran("setenforce")


def test_selinux_config_line_is_rewritten_not_pasted():
    text = 'SELINUX="enforcing"  # set by the installer\nSELINUXTYPE=targeted\n'
    assert ko.selinux_config_permissive(text) == \
        "SELINUX=permissive\nSELINUXTYPE=targeted\n"
    assert ko.selinux_config_permissive("SELINUX=disabled\n") == \
        "SELINUX=disabled\n"
    assert ko.selinux_config_permissive("SELINUXTYPE=targeted\n") == \
        "SELINUXTYPE=targeted\nSELINUX=permissive\n"
