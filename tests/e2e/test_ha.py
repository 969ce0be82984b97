"""Scenario "ha": a second control plane, on two fresh air-gapped Docker nodes.

    make e2e SCENARIO=ha          (or: python3 -m pytest -s tests/e2e/test_ha.py)

cp1: `master --control-plane-endpoint <cp1 ip>:6443 --upload-certs`; cp2: `join --control-plane` with
the join file (its certificate key comes from there); both --no-wait, to keep the lab within its
time budget (the seed scenario tests the tool's own wait). Both control planes' static pods must be
Running, etcd must list two started members, and pods on the two reach each other, a Service by
its ClusterIP and by its name (CoreDNS).
"""

import pytest

from . import cluster as c
from .conftest import TIMINGS

CP1, CP2 = "cp1", "cp2"
#: LAB ONLY: in this sandbox the kubelet of a joining control plane may not know its
#: ephemeral-storage capacity yet when kubeadm writes the etcd manifest a few seconds after the
#: kubelet starts; it then rejects the etcd static pod for good ("Failed to admit pod etcd-cp2 ...
#: ephemeral-storage") and the first control plane loses etcd quorum. A kubelet restart admits
#: it. This watcher restarts the kubelet once, only if etcd is not running 15 s after its manifest
#: appeared, and says so in its log (the test prints it).
ETCD_WATCH = ("nohup sh -c 'for i in $(seq 1 600); do [ -f /etc/kubernetes/manifests/etcd.yaml ] && break; "
              "sleep 1; done; sleep 15; if docker ps --format {{.Names}} | grep -q ^k8s_etcd_; then "
              "echo etcd running: no restart; else echo etcd not admitted: restarting the kubelet; "
              "systemctl restart kubelet; fi' >/var/log/k8so-lab-etcd-watch.log 2>&1 &")


@pytest.fixture(scope="module")
def nodes(lab, bundle):
    with c.scenario_nodes(lab, bundle["dir"], CP1, CP2) as both:
        yield both


def test_1_first_master_with_an_endpoint(nodes, workdir, state):
    n1, _ = nodes
    p = c.tool_node(n1, ["master", "--apiserver-advertise-address", n1.ip(),
                         "--control-plane-endpoint", "%s:6443" % n1.ip(), "--upload-certs",
                         "--kubeadm-config-extra", c.EXTRA_FILE, "--no-wait"], workdir, "ha-master.log")
    assert p.returncode == 0, "master --control-plane-endpoint failed (see %s)" % (workdir / "ha-master.log")
    c.wait_nodes_ready(n1, [CP1])
    state["master"] = True


def test_2_second_control_plane_joins(nodes, workdir, state):
    c.need(state, "master")
    n1, n2 = nodes
    c.copy_file(n1, c.MASTER_JOIN_FILE, n2, c.WORKER_JOIN_FILE, workdir)
    n2.exec(["sh", "-c", ETCD_WATCH])
    p = c.tool_node(n2, ["join", "--control-plane", "--join-file", c.WORKER_JOIN_FILE,
                         "--apiserver-advertise-address", n2.ip(), "--no-wait"], workdir, "ha-join.log")
    c.log("lab etcd watch on %s: %s" % (CP2, n2.sh_out(["cat", "/var/log/k8so-lab-etcd-watch.log"],
                                                       check=False)))
    assert p.returncode == 0, "join --control-plane failed (see %s)" % (workdir / "ha-join.log")
    TIMINGS["join --control-plane --no-wait whole"] = c.total_seconds(p, "join")
    c.wait_nodes_ready(n1, [CP1, CP2])

    def both_control_planes():
        ps = c.pods(n1)
        want = [pre + node for pre in c.CONTROL_PLANE for node in (CP1, CP2)]
        missing = [w for w in want if w not in ps or ps[w]["status"].get("phase") != "Running"]
        return not missing and want
    running = c.wait_for("the static pods of both control planes Running",
                         both_control_planes, c.TIMEOUT_POD)
    c.log("control-plane pods: %s" % running)
    # the second control plane answers the API itself, with the admin.conf the tool set up there
    assert CP1 in c.nodes_ready(n2) and CP2 in c.nodes_ready(n2)
    state["joined"] = True


def test_3_etcd_has_two_members(nodes, state):
    c.need(state, "joined")
    n1, n2 = nodes
    # etcdctl 3.3 speaks the v2 API unless told (the image is busybox-based, as upstream's)
    argv = ["exec", "-n", "kube-system", "etcd-" + CP1, "--", "env", "ETCDCTL_API=3", "etcdctl",
            "--endpoints", "https://127.0.0.1:2379", "--cacert", "/etc/kubernetes/pki/etcd/ca.crt",
            "--cert", "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
            "--key", "/etc/kubernetes/pki/etcd/healthcheck-client.key", "member", "list", "-w", "simple"]
    members = c.kubectl(n1, *argv).stdout.strip().splitlines()
    c.log("etcd members:\n%s" % "\n".join(members))
    assert len(members) == 2, "etcd has %d members, want 2: %s" % (len(members), members)
    assert all(", started, " in m for m in members), "an etcd member is not started: %s" % members
    names = sorted(m.split(", ")[2] for m in members)
    assert names == [CP1, CP2], "etcd members are %s" % names
    for n in (n1, n2):
        c.assert_no_pull(n)
    state["etcd"] = True


def test_4_pods_and_dns_across_the_control_planes(nodes, state):
    """Pod traffic and the cluster DNS (CoreDNS) between the two control planes."""
    c.need(state, "joined")
    n1, _ = nodes
    c.wait_system_pods_ready(n1, [CP1, CP2])
    c.check_pod_traffic(n1, CP1, CP2)
    c.delete_test_pods(n1)
