"""The cluster checks section of k8s_offline.py: waiting until the cluster
is ready, status, the certificate check command, remove-node.  The day-two
sub-sections (certificates, etcd backup and restore) are
tests/daytwo/test_daytwo.py."""


import install_support as sup
from install_support import ko, run


def test_wait_reports_pending_pod_and_incomplete_bundle(host, bundle_dir,
                                                        capsys):
    root, runner = host
    runner.cluster.pods = [
        sup.pod_json("etcd-node-a"),
        sup.pod_json("kube-flannel-ds-x", "Pending", "ImagePullBackOff",
                     "quay.io/coreos/flannel:v0.11.0-amd64")]
    assert run(root, bundle_dir, "master", "--wait-timeout", "60") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the cluster was not ready after 60 s")
    assert "kube-flannel-ds-x" in last and "ImagePullBackOff" in last
    assert "bundle is incomplete" in last
    assert "waiting for:" in err
    # Bounded: the fake clock moved about 60 s, not more.
    assert 60 <= runner.clock["t"] - 1600000000.0 <= 60 + 2 * ko.WAIT_INTERVAL


def test_wait_succeeds_when_node_becomes_ready(host, bundle_dir, capsys):
    root, runner = host
    runner.cluster.node_ready = False
    calls = {"n": 0}
    original = runner.answer

    def answer(argv):
        if argv[0] == "kubectl" and "node" in argv:
            calls["n"] += 1
            runner.cluster.node_ready = calls["n"] >= 3
        return original(argv)
    runner.answer = answer
    assert run(root, bundle_dir, "master", "--wait-timeout", "120",
               "--skip-phases", "join-file") == 0
    err = capsys.readouterr().err
    assert "cni config uninitialized" in err
    assert ("is Ready, the control plane is healthy, flannel runs and CoreDNS "
            "answers") in err


def test_status_shows_nodes_pods_and_cert_warning(host, capsys):
    root, runner = host
    sup.write(root, ko.ADMIN_CONF, "x")
    runner.cluster.cert_output = (
        "CERTIFICATE                EXPIRES                  RESIDUAL TIME   "
        "EXTERNALLY MANAGED\n"
        "admin.conf                 Sep 20, 2020 10:00 UTC   364d            no\n"
        "apiserver                  Oct 01, 2020 10:00 UTC   364d            no\n")
    assert ko.main(["status", "--root", root]) == 0
    out, err = capsys.readouterr()
    assert "node-a" in out and "Ready" in out and "etcd-node-a" in out
    assert "admin.conf" in out
    assert "warning: cluster certificates expire in 6 days" in err
    assert runner.ran("kubeadm", "alpha", "certs", "check-expiration")


def test_cert_command_by_version():
    assert ko.cert_check_command("v1.16.0")[1] == "alpha"
    assert ko.cert_check_command("v1.20.2") == ["kubeadm", "certs",
                                                "check-expiration"]


def test_remove_node_drains_then_deletes(host, capsys):
    root, runner = host
    sup.write(root, ko.ADMIN_CONF, "x")
    kubectl = ("kubectl", "--kubeconfig", ko.ADMIN_CONF)
    runner.expect(*kubectl + ("drain", "node-b"))
    runner.expect(*kubectl + ("delete", "node", "node-b"))
    assert ko.main(["remove-node", "node-b", "--root", root]) == 0
    cmds = [" ".join(a) for a in runner.commands()]
    drain = [i for i, c in enumerate(cmds) if " drain node-b" in c]
    delete = [i for i, c in enumerate(cmds) if c.endswith("delete node node-b")]
    assert drain and delete and drain[0] < delete[0]
    assert ko.main(["remove-node", "node-z", "--root", root]) == 2
    assert "node node-z not found" in capsys.readouterr().err


def test_remove_node_of_a_gone_node_deletes_without_draining(host, capsys):
    """A node whose kubelet is gone cannot evict its pods: a drain would
    wait out its whole timeout (300 s in the lab), so the node is deleted."""
    root, runner = host
    sup.write(root, ko.ADMIN_CONF, "x")
    runner.cluster.node_ready = False
    runner.expect("kubectl", "--kubeconfig", ko.ADMIN_CONF, "delete", "node",
                  "node-b")
    assert ko.main(["remove-node", "node-b", "--root", root]) == 0
    cmds = [" ".join(a) for a in runner.commands()]
    assert not [c for c in cmds if " drain " in c]
    assert [c for c in cmds if c.endswith("delete node node-b")]
    assert "not Ready" in capsys.readouterr().err
