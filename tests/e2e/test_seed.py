"""Scenario "seed": the seed's own flow, as its notes run it, on two air-gapped Docker nodes.

    make e2e SCENARIO=seed        (or: python3 -m pytest -s tests/e2e/test_seed.py)

node1: `master --apiserver-advertise-address <ip> --image-repository registry.aliyuncs.com/
google_containers --pod-network-cidr 10.244.0.0/16 --upload-certs` (plus the sandbox's kube-proxy
config), which waits for Ready itself; node2 joins fresh by the --apiserver/--token/
--discovery-token-ca-cert-hash flags master printed, is reset and joins again by the join file, is
removed with remove-node, reset and joins again by the join file.
Between them: pod traffic across the nodes by pod IP and through a ClusterIP Service, `status`,
and no image pull anywhere. Then a corrupt bundle is refused on a fresh node, and the image load
is timed against `docker load` on another fresh node.

The steps run in file order and hand results on through the module's `state`; a step whose
prerequisite failed fails too (it is never skipped).
"""

import os
import re
import shutil
import time

import pytest

from . import cluster as c
from .conftest import TIMINGS
from .upstream import PAUSE_TAG, SEED_IMAGE_REPOSITORY

MASTER, WORKER = "node1", "node2"
POD_CIDR = "10.244.0.0/16"


@pytest.fixture(scope="module")
def nodes(lab, bundle):
    with c.scenario_nodes(lab, bundle["dir"], MASTER, WORKER) as both:
        yield both


def seed_master_args(n1):
    """The seed's flags, exactly; --kubeadm-config-extra is the sandbox's (see README)."""
    return ["master", "--apiserver-advertise-address", n1.ip(),
            "--image-repository", SEED_IMAGE_REPOSITORY,
            "--pod-network-cidr", POD_CIDR, "--upload-certs",
            "--kubeadm-config-extra", c.EXTRA_FILE]


def join_flags(text):
    """The --apiserver/--token/--discovery-token-ca-cert-hash flags from the kubeadm join line
    that `master` and `token` print."""
    m = re.search(r"kubeadm join (\S+) --token (\S+) --discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})",
                  text)
    assert m, "no kubeadm join line printed:\n%s" % text[-3000:]
    return ["--apiserver", m.group(1), "--token", m.group(2), "--discovery-token-ca-cert-hash", m.group(3)]


def join_file_to_worker(n1, n2, workdir):
    c.copy_file(n1, c.MASTER_JOIN_FILE, n2, c.WORKER_JOIN_FILE, workdir)


def worker_back(n1, n2, what):
    """After a (re-)join: both nodes Ready, kube-system healthy on both, traffic both ways, no pull."""
    c.wait_nodes_ready(n1, [MASTER, WORKER])
    c.wait_system_pods_ready(n1, [MASTER, WORKER])
    c.check_pod_traffic(n1, MASTER, WORKER)
    c.delete_test_pods(n1)
    for n in (n1, n2):
        c.assert_no_pull(n)
    c.log("%s: both nodes Ready, pods talk across nodes, nothing pulled" % what)


# --------------------------------------------------------------------------- steps

def test_1_master_with_the_seeds_flags(nodes, workdir, state):
    n1, _ = nodes
    p = c.tool_node(n1, seed_master_args(n1), workdir, "master-1.log", timed=True)
    assert p.returncode == 0, "master failed (see %s)" % (workdir / "master-1.log")
    whole, init = p.wall, c.phase_seconds(p, "init")
    assert whole and init and c.total_seconds(p, "master"), "master's output lacks its phase timings"
    TIMINGS["master whole (start to exit, on the node)"] = whole
    TIMINGS["master: its own 'finished in' (verify .. join-file)"] = c.total_seconds(p, "master")
    TIMINGS["kubeadm init alone (master's init phase)"] = init
    TIMINGS["master minus kubeadm init (goal <= 30 s)"] = round(whole - init, 1)
    for phase in ("verify", "images", "network", "wait"):
        TIMINGS["master phase %s" % phase] = c.phase_seconds(p, phase)
    lag = [l for l in p.stderr.splitlines() if "the kubelet still reports" in l]
    TIMINGS["master: static pods not Ready by the kubelet at its return (health passed)"] = (
        lag[0].split("reports", 1)[1].split(" not Ready")[0].strip() if lag else "none")
    dns_lag = [l for l in p.stderr.splitlines() if "CoreDNS answers at its pod" in l]
    TIMINGS["master: CoreDNS answered at its pod before the kubelet's Ready (not waited for)"] = (
        "yes" if dns_lag else "no")

    # master waited for Ready itself: no polling here
    assert c.nodes_ready(n1) == {MASTER: True}, "master returned before %s was Ready" % MASTER
    init_log = n1.sh_out(["cat", "/var/log/kubeadm-init.log"], check=False)
    assert "initialized successfully" in init_log, "kubeadm-init.log: %s" % init_log[-2000:]
    # the seed's own checks, with the kubeconfig the tool set up for root
    for argv in (["kubectl", "get", "pods", "--all-namespaces"], ["kubectl", "get", "node"]):
        r = n1.exec(argv, check=False)
        assert r.returncode == 0, "%s failed: %s" % (" ".join(argv), r.stderr)
        c.log("$ %s\n%s" % (" ".join(argv), r.stdout))
    assert re.search(r"(?m)^%s\s+Ready\s" % MASTER, n1.sh_out(["kubectl", "get", "node"]))

    manifest = n1.sh_out(["cat", "/etc/kubernetes/manifests/kube-apiserver.yaml"])
    assert SEED_IMAGE_REPOSITORY + "/kube-apiserver:" in manifest, "static pods do not use %s" % \
        SEED_IMAGE_REPOSITORY
    cms = c.kubectl_json(n1, "get", "configmaps", "-n", "kube-system")["items"]
    netconf = [cm["data"]["net-conf.json"] for cm in cms if "net-conf.json" in (cm.get("data") or {})]
    assert netconf and '"Network": "%s"' % POD_CIDR in netconf[0], netconf
    mode = n1.sh_out(["stat", "-c", "%a", c.MASTER_JOIN_FILE])
    assert mode == "600", "join file %s has mode %s, want 600" % (c.MASTER_JOIN_FILE, mode)

    c.assert_no_pull(n1)
    loads = [e for e in n1.image_events() if e.get("Action") in ("load", "import")]
    assert loads, "the Docker event watch on node1 saw no image load: the no-pull check would be vacuous"
    state["master_done"] = True
    state["join_flags"] = join_flags(p.stdout)
    state["ca_sha"] = n1.sh_out(["sha256sum", "/etc/kubernetes/pki/ca.crt"]).split()[0]


def test_2_join_by_flags(nodes, workdir, state):
    """A fresh worker joins by the flags `master` printed: its images must get the names the
    cluster uses (the seed's repository), or its kubelet would try to pull the pause image."""
    c.need(state, "master_done")
    n1, n2 = nodes
    p = c.tool_node(n2, ["join"] + state["join_flags"], workdir, "join-1-flags.log", timed=True)
    assert p.returncode == 0, "join by flags failed (see %s)" % (workdir / "join-1-flags.log")
    TIMINGS["join whole (worker, waits for Ready; start to exit, on the node)"] = p.wall
    TIMINGS["join phase join (kubeadm join)"] = c.phase_seconds(p, "join")
    TIMINGS["join minus kubeadm join (goal <= 15 s)"] = round(p.wall - c.phase_seconds(p, "join"), 1)
    images = n2.sh_out(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"]).split()
    assert SEED_IMAGE_REPOSITORY + "/pause:" + PAUSE_TAG in images, \
        "join by flags did not load the images under the cluster's repository %s: %s" % (
            SEED_IMAGE_REPOSITORY, images)
    c.wait_nodes_ready(n1, [MASTER, WORKER])
    pods = c.wait_system_pods_ready(n1, [MASTER, WORKER])
    c.log("kube-system: %s" % pods)
    for n in (n1, n2):
        c.assert_no_pull(n)
    state["joined"] = True


def test_3_pod_traffic_across_nodes(nodes, state):
    c.need(state, "joined")
    n1, n2 = nodes
    c.check_pod_traffic(n1, MASTER, WORKER)
    for n in (n1, n2):
        c.assert_no_pull(n)
    c.delete_test_pods(n1)
    state["traffic"] = True


def test_4_status(nodes, workdir, state):
    c.need(state, "joined")
    n1, _ = nodes
    p = c.tool_node(n1, ["status"], workdir, "status.log")
    assert p.returncode == 0, p.stderr
    for name in (MASTER, WORKER):
        assert re.search(r"(?m)^%s\s+Ready\s" % name, p.stdout), "status does not show %s Ready:\n%s" % (
            name, p.stdout)
    assert re.search(r"certificates: the first to expire is \S+, on .* \(\d+ days left\)", p.stdout), \
        "status does not show the certificates' expiry:\n%s" % p.stdout


def test_5_master_again_is_safe(nodes, workdir, state):
    c.need(state, "joined")
    n1, _ = nodes
    p = c.tool_node(n1, seed_master_args(n1), workdir, "master-again.log")
    text = p.stdout + p.stderr
    assert "Traceback" not in text, "master again crashed:\n%s" % text[-3000:]
    if p.returncode != 0:
        assert re.search(r"already|exist|initiali[sz]ed|reset|running|in use", text, re.I), \
            "master again refused without a clear reason:\n%s" % text[-3000:]
    assert n1.sh_out(["sha256sum", "/etc/kubernetes/pki/ca.crt"]).split()[0] == state["ca_sha"], \
        "master again replaced the cluster CA"
    c.wait_nodes_ready(n1, [MASTER, WORKER], timeout=60)


def test_6_reset_worker_then_join_again_by_the_join_file(nodes, workdir, state):
    c.need(state, "joined")
    n1, n2 = nodes
    p = c.tool_node(n2, ["reset", "--yes"], workdir, "reset-worker.log")
    assert p.returncode == 0, "reset --yes failed on the worker"
    left = n2.sh_out(["sh", "-c", "ls /etc/kubernetes/manifests 2>/dev/null; docker ps -q --filter name=k8s_"],
                     check=False)
    assert left == "", "reset left on %s: %s" % (WORKER, left)
    join_file_to_worker(n1, n2, workdir)
    args = ["join", "--join-file", c.WORKER_JOIN_FILE]
    # at once, as the seed did: reset reported the old Node NotReady (before, it stayed Ready for
    # about 40 s: kubeadm from 1.18 refused the name, 1.16's wait took the old Ready for the new)
    reset_log = (workdir / "reset-worker.log").read_text()
    assert "reported NotReady" in reset_log, "reset did not report %s NotReady:\n%s" % (
        WORKER, reset_log[-2000:])
    p = c.tool_node(n2, args, workdir, "join-2.log", timed=True)
    assert p.returncode == 0, "join right after reset failed (see %s)" % (workdir / "join-2.log")
    TIMINGS["join right after reset whole (start to exit, on the node)"] = p.wall
    TIMINGS["join right after reset: kubeadm join alone"] = c.phase_seconds(p, "join")
    TIMINGS["join right after reset minus kubeadm join (goal <= 15 s)"] = round(
        p.wall - c.phase_seconds(p, "join"), 1)
    worker_back(n1, n2, "re-join by the join file after reset")
    state["rejoined"] = True


def test_7_remove_node_then_join_again(nodes, workdir, state):
    c.need(state, "joined")
    n1, n2 = nodes
    p = c.tool_node(n1, ["remove-node", WORKER], workdir, "remove-node.log")
    assert p.returncode == 0, "remove-node failed"
    assert WORKER not in c.nodes_ready(n1), "remove-node left %s in the cluster" % WORKER
    p = c.tool_node(n2, ["reset", "--yes"], workdir, "reset-removed.log")
    assert p.returncode == 0, "reset --yes failed on the removed worker"
    join_file_to_worker(n1, n2, workdir)
    p = c.tool_node(n2, ["join", "--join-file", c.WORKER_JOIN_FILE], workdir, "join-3.log")
    assert p.returncode == 0, "join after remove-node failed (see %s)" % (workdir / "join-3.log")
    worker_back(n1, n2, "re-join after remove-node")


def test_8_corrupt_bundle_refused_on_fresh_node(lab, bundle, workdir, state):
    good = bundle["dir"]
    bad = workdir / "usb-corrupt" / good.name
    if bad.parent.exists():
        shutil.rmtree(str(bad.parent))
    # the bundle holds only regular files and dirs written by the tool: copytree is safe here
    shutil.copytree(str(good), str(bad), symlinks=True)
    victim = max((p for p in (bad / "images").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(str(victim), "r+b") as f:
        f.seek(victim.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))
    c.log("flipped one byte in %s" % victim)
    try:
        n3, = c.boot(lab, bad, "node3")
        before = snapshot(n3)
        p = c.tool_node(n3, seed_master_args(n3), workdir, "master-corrupt.log")
        after = snapshot(n3)
        assert p.returncode != 0, "master accepted a corrupt bundle"
        text = p.stdout + p.stderr
        assert "Traceback" not in text, text[-3000:]
        if before != after:
            import difflib
            diff = "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
            pytest.fail("master changed the node before refusing the corrupt bundle:\n%s" % diff[:5000])
    finally:
        if "node3" in lab.nodes:
            lab.remove_node("node3")
        shutil.rmtree(str(bad.parent), ignore_errors=True)


def snapshot(node):
    """What a refused install must not change: files under /etc /usr /opt /var/lib /root
    (not the runtimes' own volumes), the kubelet dir, the images and the unit files."""
    return node.sh_out([
        "sh", "-c",
        "find /etc /usr /opt /var/lib /root -xdev "
        "\\( -path /var/lib/systemd -o -path %s \\) -prune -o "
        "-printf '%%p %%s %%T@ %%m %%y\\n' | sort; "
        "echo ---; ls -la /var/lib/kubelet /var/lib/docker/image 2>&1; "
        "echo ---; docker images -a --no-trunc -q | sort; "
        "echo ---; systemctl list-unit-files --no-legend 'kube*' 2>&1; true" % c.EXTRA_FILE], quiet=True)


def test_9_image_load_against_docker_load(lab, bundle, workdir):
    """On one fresh node: the tool's image load from the bundle, then `docker load -i` of a
    `docker save` archive of the very same images, then the tool's load again (same warm caches)."""
    prep = ["master", "--apiserver-advertise-address", None, "--image-repository", SEED_IMAGE_REPOSITORY,
            "--skip-phases", "init,kubeconfig,network,wait,join-file"]
    try:
        n, = c.boot(lab, bundle["dir"], "bench")
        prep[2] = n.ip()
        p = c.tool_node(n, prep, workdir, "bench-images-1.log")
        assert p.returncode == 0, "master up to its images phase failed"
        first = c.phase_seconds(p, "images")
        refs = [l for l in n.sh_out(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"]).split()
                if not l.endswith(":<none>")]
        assert len(refs) >= 8, "the tool loaded only %s" % refs
        n.exec(["docker", "save", "-o", "/var/tmp/k8so-bench.tar"] + refs, timeout=600)
        size = int(n.sh_out(["stat", "-c", "%s", "/var/tmp/k8so-bench.tar"]))

        def drop_images():
            ids = n.sh_out(["docker", "images", "-q"]).split()
            n.exec(["docker", "rmi", "-f"] + sorted(set(ids)))
            assert n.sh_out(["docker", "images", "-q"]) == "", "images left after rmi"
        drop_images()
        t0 = time.monotonic()
        n.exec(["docker", "load", "-i", "/var/tmp/k8so-bench.tar"], timeout=600)
        docker_load = time.monotonic() - t0
        n.exec(["rm", "-f", "/var/tmp/k8so-bench.tar"])
        drop_images()
        p = c.tool_node(n, prep, workdir, "bench-images-2.log")
        assert p.returncode == 0, "master up to its images phase failed (second run)"
        second = c.phase_seconds(p, "images")
        TIMINGS["image load from the bundle, fresh node (%d images)" % len(refs)] = first
        TIMINGS["image load from the bundle, after docker load (same caches)"] = second
        TIMINGS["docker load -i of docker save of the same images (%d MiB)" % (size >> 20)] = \
            round(docker_load, 1)
        TIMINGS["bundle image load / docker load (goal <= 1.1)"] = round(second / docker_load, 2)
    finally:
        if "bench" in lab.nodes:
            lab.remove_node("bench")
