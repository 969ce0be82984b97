"""Bad input: one clear error line, non-zero exit, the --root tree untouched."""

import os
import sys

import pytest

import install_support as sup
from install_support import ko


def make_host(tmp_path, monkeypatch, **facts):
    root = sup.make_root(str(tmp_path / "root"), **facts)
    runner = sup.install_fake(monkeypatch, root)
    return root, runner


def refused(capsys, root, before, argv, expected, runner=None, advice=True):
    """Run argv; assert one error line containing expected, exit 2, the
    tree unchanged and nothing written outside it (the folder holding the
    root, the real host); return the error line."""
    outside, real = sup.tree(os.path.dirname(root)), sup.real_state()
    code = ko.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "error: unexpected" not in err
    assert sup.tree(os.path.dirname(root)) == outside
    assert sup.real_state() == real
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert err.strip().splitlines()[-1] == errors[0]
    assert expected in errors[0], errors[0]
    if advice:      # "error: what is wrong: what to do"
        assert ": " in errors[0][len("error: "):]
    assert sup.snapshot(root) == before
    if runner is not None:
        changes = [a for a in runner.commands()
                   if a[0] not in ("docker", "ip", "iptables", "systemctl",
                                   "ctr", "kubectl")
                   or a[:2] in (["docker", "load"], ["docker", "tag"])]
        assert changes == [], changes
    return errors[0]


def master(root, bundle, *extra):
    return ["master", "--root", root, "--bundle", bundle, "--no-progress"] + \
        list(extra)


def test_not_root(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    monkeypatch.setattr(ko, "current_euid", lambda: 1000)
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle_dir),
            "must run as root: run it with sudo", runner)


def test_wrong_arch_bundle(tmp_path, monkeypatch, capsys):
    root, runner = make_host(tmp_path, monkeypatch)
    bundle = sup.make_bundle(str(tmp_path / "b"), arch="arm64")
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle),
            "the bundle is for arm64 but this host is amd64", runner)
    assert runner.calls == []


def test_corrupted_bundle(tmp_path, monkeypatch, capsys):
    root, runner = make_host(tmp_path, monkeypatch)
    bundle = sup.make_bundle(str(tmp_path / "b"))
    path = os.path.join(bundle, "bin", "kubectl")
    data = bytearray(open(path, "rb").read())
    data[3] ^= 1
    open(path, "wb").write(bytes(data))
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle),
            "bin/kubectl fails its sha256 check", runner)
    assert runner.calls == []


def test_corrupted_tar_bundle(tmp_path, monkeypatch, capsys):
    root, runner = make_host(tmp_path, monkeypatch)
    bundle = sup.make_bundle(str(tmp_path / "b"), as_tar=True)
    with open(bundle, "r+b") as handle:
        handle.truncate(os.path.getsize(bundle) // 2)
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle), "bundle", runner)


def test_swap_on(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch, swap=True)
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle_dir),
            "swap is on (/swapfile)", runner)


def test_swap_on_fixed_with_disable_swap(tmp_path, monkeypatch, capsys,
                                         bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch, swap=True)
    runner.expect("swapoff", "-a")
    assert ko.main(master(root, bundle_dir, "--disable-swap", "--no-wait",
                          "--skip-phases", "join-file")) == 0
    assert runner.ran("swapoff", "-a")
    fstab = open(os.path.join(root, "etc/fstab")).read()
    assert "#/swapfile none swap sw 0 0" in fstab
    assert "UUID=1 / ext4 defaults 0 1" in fstab.splitlines()


def test_port_in_use(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch, listening=(6443,))
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle_dir),
            "port 6443 is in use", runner)


def test_too_few_cpus(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch, cpus=1)
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle_dir),
            "at least 2 CPUs, this host has 1", runner)


def test_missing_required_tool(tmp_path, monkeypatch, capsys, bundle_dir):
    tools = tuple(t for t in sup.TOOLS if t != "nsenter")
    root, runner = make_host(tmp_path, monkeypatch, tools=tools)
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle_dir),
            "nsenter is missing", runner)


def test_missing_optional_tool_only_warns(tmp_path, monkeypatch, capsys,
                                          bundle_dir):
    tools = tuple(t for t in sup.TOOLS if t != "socat")
    root, runner = make_host(tmp_path, monkeypatch, tools=tools)
    assert ko.main(master(root, bundle_dir, "--no-wait", "--skip-phases",
                          "join-file")) == 0
    assert "warning: socat is missing" in capsys.readouterr().err


def test_warnings_for_selinux_firewalld_nftables(tmp_path, monkeypatch, capsys,
                                                 bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch, selinux="1")
    sup.write(root, "/usr/bin/firewall-cmd", "#!/bin/sh\n", 0o755)
    runner.cluster.firewalld = "active"
    runner.cluster.iptables = "iptables v1.8.7 (nf_tables)"
    runner.expect("update-alternatives", "--set")
    assert ko.main(master(root, bundle_dir, "--no-wait", "--skip-phases",
                          "join-file")) == 0
    err = capsys.readouterr().err
    assert "warning: SELinux is enforcing" in err
    assert "warning: firewalld is active" in err
    assert "--iptables-legacy" in err
    assert "kube-proxy of Kubernetes v1.16.0 does not support" in err
    assert not runner.ran("update-alternatives")
    assert ko.main(master(root, bundle_dir, "--no-wait", "--iptables-legacy",
                          "--skip-phases", "join-file")) == 0
    assert runner.ran("update-alternatives", "--set", "iptables",
                      "/usr/sbin/iptables-legacy")


def test_nftables_warning_only_where_kube_proxy_cannot_detect_it(
        tmp_path, monkeypatch, capsys):
    """kube-proxy's image detects the iptables backend from 1.17 (#82966);
    the lab runs v1.20.2 on nftables nodes with pod traffic across them."""
    root, runner = make_host(tmp_path, monkeypatch)
    runner.cluster.iptables = "iptables v1.8.7 (nf_tables)"
    bundle = sup.make_bundle(str(tmp_path / "b"), version="v1.20.2")
    assert ko.main(master(root, bundle, "--no-wait", "--skip-phases",
                          "join-file")) == 0
    assert "nftables backend" not in capsys.readouterr().err


def test_existing_cluster_not_ours(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    sup.write(root, ko.ADMIN_CONF, "x")
    before = sup.snapshot(root)
    line = refused(capsys, root, before, master(root, bundle_dir),
                   "existing cluster was found on this host", runner)
    assert "run `k8s_offline.py reset` first" in line


@pytest.mark.parametrize("pod,service,expected", [
    ("10.96.0.0/16", "10.96.0.0/12", "overlaps --service-cidr"),
    ("10.244.0.0/33", "10.96.0.0/12", "bad --pod-network-cidr"),
    ("10.244.0.1/16", "10.96.0.0/12", "bad --pod-network-cidr"),
    ("10.244.0.0/16", "nonsense", "bad --service-cidr"),
])
def test_bad_cidrs(tmp_path, monkeypatch, capsys, bundle_dir, pod, service,
                   expected):
    root, runner = make_host(tmp_path, monkeypatch)
    before = sup.snapshot(root)
    refused(capsys, root, before, master(
        root, bundle_dir, "--pod-network-cidr", pod, "--service-cidr",
        service), expected, runner)
    assert runner.calls == []


def test_cidr_overlapping_host_network(tmp_path, monkeypatch, capsys,
                                       bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    before = sup.snapshot(root)
    refused(capsys, root, before, master(
        root, bundle_dir, "--pod-network-cidr", "192.168.0.0/16"),
        "overlaps the host network 192.168.50.0/24 on eth0", runner)


def test_no_runtime(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    runner.cluster.docker_running = False
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle_dir),
            "no container runtime", runner)


def test_no_runtime_but_bundled_docker_is_installed(tmp_path, monkeypatch,
                                                    capsys):
    root, runner = make_host(tmp_path, monkeypatch)
    bundle = sup.make_bundle(str(tmp_path / "b"), with_docker=True)
    runner.cluster.docker_running = False
    original = runner.answer

    def answer(argv):
        if argv[:3] == ["systemctl", "enable", "--now"]:
            runner.cluster.docker_running = True
        return original(argv)
    runner.answer = answer
    assert ko.main(master(root, bundle, "--no-wait", "--skip-phases",
                          "join-file")) == 0
    assert os.access(os.path.join(root, "usr/bin/dockerd"), os.X_OK)
    assert os.path.exists(os.path.join(root, "etc/systemd/system/"
                                             "docker.service"))
    assert runner.ran("systemctl", "enable", "--now", "docker")


def test_unknown_cri(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    before = sup.snapshot(root)
    with pytest.raises(SystemExit) as exc:
        ko.main(master(root, bundle_dir, "--cri", "podman"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: argument --cri: invalid choice: 'podman'")
    assert sup.snapshot(root) == before


def test_unknown_skip_phase(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle_dir, "--skip-phases",
                                         "verify,bogus"),
            "unknown phase bogus in --skip-phases", runner)


def test_bad_extra_config(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    extra = tmp_path / "extra.yaml"
    extra.write_text("apiVersion: kubeadm.k8s.io/v1beta2\n"
                     "kind: ClusterConfiguration\n")
    before = sup.snapshot(root)
    refused(capsys, root, before, master(root, bundle_dir,
                                         "--kubeadm-config-extra", str(extra)),
            "ClusterConfiguration in", runner)
    refused(capsys, root, before, master(root, bundle_dir,
                                         "--kubeadm-config-extra",
                                         str(tmp_path / "missing.yaml")),
            "cannot read --kubeadm-config-extra", runner)


def test_no_bundle(tmp_path, monkeypatch, capsys):
    root, runner = make_host(tmp_path, monkeypatch)
    before = sup.snapshot(root)
    refused(capsys, root, before, ["master", "--root", root, "--bundle",
                                   str(tmp_path / "nothing")],
            "does not exist", runner, advice=False)   # the reader's message


# -- join -------------------------------------------------------------------

def join(root, bundle, *extra):
    return ["join", "--root", root, "--bundle", bundle, "--no-progress",
            "--no-wait"] + list(extra)




def test_missing_join_file(tmp_path, monkeypatch, capsys):
    root, runner = make_host(tmp_path, monkeypatch)
    bundle = sup.make_bundle(str(tmp_path / "b"))
    before = sup.snapshot(root)
    refused(capsys, root, before, join(root, bundle), "no join file at", runner)
    assert runner.calls == []


@pytest.mark.parametrize("changes,expected", [
    ({"token": "ABC.def"}, "bad token 'ABC.def'"),
    ({"discovery_token_ca_cert_hash": "sha256:xyz"}, "bad CA hash"),
    ({"api_server_endpoint": "no-port"}, "bad API server endpoint"),
    ({"kubernetes_version": "v1.17.0"}, "is for kubernetes version v1.17.0"),
    ({"arch": "arm64"}, "is for arch arm64 but the bundle is amd64"),
    ({"token_expires": 1600000000 - 60}, "the join token in"),
])
def test_bad_join_file(tmp_path, monkeypatch, capsys, bundle_dir, changes,
                       expected):
    root, runner = make_host(tmp_path, monkeypatch)
    path = sup.write_join_file(tmp_path, **changes)
    before = sup.snapshot(root)
    line = refused(capsys, root, before, join(root, bundle_dir, "--join-file",
                                              path), expected, runner)
    assert runner.calls == []
    if "expired" in line:
        assert "k8s_offline.py token" in line


def test_join_file_not_json(tmp_path, monkeypatch, capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    path = str(tmp_path / "join.json")
    open(path, "w").write("{not json")
    before = sup.snapshot(root)
    refused(capsys, root, before, join(root, bundle_dir, "--join-file", path),
            "is not valid JSON", runner)


@pytest.mark.parametrize("argv,expected", [
    (["--token", "abc"], "go together"),
    (["--apiserver", "10.0.0.1:6443", "--token", "abc",
      "--discovery-token-ca-cert-hash", sup.CA_HASH], "bad token 'abc'"),
    (["--apiserver", "10.0.0.1:6443", "--token", sup.TOKEN,
      "--discovery-token-ca-cert-hash", "md5:00"], "bad CA hash 'md5:00'"),
])
def test_bad_join_flags(tmp_path, monkeypatch, capsys, bundle_dir, argv,
                        expected):
    root, runner = make_host(tmp_path, monkeypatch)
    before = sup.snapshot(root)
    refused(capsys, root, before, join(root, bundle_dir, *argv), expected,
            runner)


def test_control_plane_join_needs_live_certificate_key(tmp_path, monkeypatch,
                                                       capsys, bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    before = sup.snapshot(root)
    path = sup.write_join_file(tmp_path)
    refused(capsys, root, before, join(root, bundle_dir, "--join-file", path,
                                       "--control-plane"),
            "needs a certificate key", runner)
    path = sup.write_join_file(tmp_path, certificate_key=sup.CERT_KEY,
                     certificate_key_expires=1600000000 - 1)
    line = refused(capsys, root, before, join(
        root, bundle_dir, "--join-file", path, "--control-plane"),
        "the certificate key in", runner)
    assert "run `k8s_offline.py token` on the master" in line


def test_join_host_named_like_master(tmp_path, monkeypatch, capsys,
                                     bundle_dir):
    root, runner = make_host(tmp_path, monkeypatch)
    path = sup.write_join_file(tmp_path, control_plane_nodes=["node-a"])
    before = sup.snapshot(root)
    refused(capsys, root, before, join(root, bundle_dir, "--join-file", path),
            "node names must be unique", runner)


# -- reset ------------------------------------------------------------------

def test_reset_without_yes_and_no_terminal(tmp_path, monkeypatch, capsys):
    root, runner = make_host(tmp_path, monkeypatch)
    sup.write(root, ko.ADMIN_CONF, "x")
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    before = sup.snapshot(root)
    refused(capsys, root, before, ["reset", "--root", root],
            "needs confirmation: rerun with --yes", runner)
    assert runner.calls == []


def test_reset_not_root(tmp_path, monkeypatch, capsys):
    root, runner = make_host(tmp_path, monkeypatch)
    monkeypatch.setattr(ko, "current_euid", lambda: 1000)
    before = sup.snapshot(root)
    refused(capsys, root, before, ["reset", "--root", root, "--yes"],
            "must run as root", runner)
