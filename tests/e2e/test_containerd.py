"""Scenario "containerd": two fresh air-gapped nodes whose only runtime is containerd.

    make e2e SCENARIO=containerd  (or: python3 -m pytest -s tests/e2e/test_containerd.py)

Docker is stopped and masked on both nodes before anything runs; `master --cri containerd` and
`join --cri containerd` (by the join file; both --no-wait, to keep the lab within its time budget:
the seed scenario tests the tool's own wait) must bring both nodes to Ready, the pods must run with
the bundled pause image as their sandbox, pods on the two nodes must reach each other, and nothing
may be pulled.

crictl is the real cri-tools crictl, built from its module, but at v1.34.0 in the place of the
v1.16.1 the tool bundles for 1.16 (the Go module proxy here serves no older cri-tools): a STAND-IN
by version, labelled in the summary.
"""

import re
import time

import pytest

from . import cluster as c
from .conftest import TIMINGS
from .upstream import PAUSE_TAG

MASTER, WORKER = "ctrd1", "ctrd2"
PAUSE = "k8s.gcr.io/pause:" + PAUSE_TAG  # the bundled pause image, under kubeadm's default repository


@pytest.fixture(scope="module")
def nodes(lab, bundle):
    with c.scenario_nodes(lab, bundle["dir"], MASTER, WORKER, watch_images=False) as both:
        for n in both:
            n.exec(["systemctl", "disable", "--now", "docker.socket", "docker.service"])
            n.exec(["systemctl", "mask", "docker.socket", "docker.service"])
            n.exec(["systemctl", "is-active", "containerd"])
        yield both


def only_containerd(node):
    docker = node.exec(["systemctl", "is-active", "docker"], check=False).stdout.strip()
    assert docker != "active", "docker runs on %s: this scenario needs containerd alone" % node.name


def sandbox_images(node):
    """{sandbox container id: image} of every pod sandbox containerd runs."""
    text = node.sh_out(["ctr", "-n", "k8s.io", "containers", "ls",
                        'labels."io.cri-containerd.kind"==sandbox'], quiet=True)
    return {parts[0]: parts[1] for parts in (l.split() for l in text.splitlines()[1:]) if len(parts) >= 2}


def test_1_master_on_containerd(nodes, workdir, state):
    n1, _ = nodes
    p = c.tool_node(n1, ["master", "--cri", "containerd", "--apiserver-advertise-address", n1.ip(),
                         "--kubeadm-config-extra", c.EXTRA_FILE, "--no-wait"],
                    workdir, "containerd-master.log")
    assert p.returncode == 0, "master --cri containerd failed (see %s)" % (workdir / "containerd-master.log")
    TIMINGS["master --cri containerd --no-wait whole"] = c.total_seconds(p, "master")
    c.wait_nodes_ready(n1, [MASTER])
    only_containerd(n1)
    state["master"] = True


def test_1b_containerd_finds_the_installed_cni_plugins(nodes, state):
    """Debian's containerd config says /usr/lib/cni; the tool installs the plugins in /opt/cni/bin
    (found by this lab: no pod got a network, "failed to find plugin "flannel" in path")."""
    c.need(state, "master")
    n1, _ = nodes
    dump = n1.sh_out(["containerd", "config", "dump"], quiet=True)
    bin_dirs = re.findall(r'(?m)^\s*bin_dir\s*=\s*"([^"]*)"', dump)
    assert bin_dirs == ["/opt/cni/bin"], "containerd's CNI bin_dir is %s, the plugins are in /opt/cni/bin" % (
        bin_dirs)


def test_2_join_on_containerd(nodes, workdir, state):
    c.need(state, "master")
    n1, n2 = nodes
    c.copy_file(n1, c.MASTER_JOIN_FILE, n2, c.WORKER_JOIN_FILE, workdir)
    p = c.tool_node(n2, ["join", "--cri", "containerd", "--join-file", c.WORKER_JOIN_FILE, "--no-wait"],
                    workdir, "containerd-join.log")
    assert p.returncode == 0, "join --cri containerd failed (see %s)" % (workdir / "containerd-join.log")
    c.wait_nodes_ready(n1, [MASTER, WORKER])
    c.wait_system_pods_ready(n1, [MASTER, WORKER], ready=False)
    only_containerd(n2)
    state["joined"] = True


def test_3_pods_run_with_the_bundled_pause_image(nodes, state):
    c.need(state, "joined")
    n1, n2 = nodes
    c.check_pod_traffic(n1, MASTER, WORKER)
    for n in (n1, n2):
        dump = n.sh_out(["containerd", "config", "dump"], quiet=True)
        assert 'sandbox_image = "%s"' % PAUSE in dump, "containerd on %s is not configured with the " \
            "bundled pause image %s" % (n.name, PAUSE)
        sandboxes = sandbox_images(n)
        assert sandboxes, "no pod sandboxes on %s" % n.name
        wrong = {k: v for k, v in sandboxes.items() if v != PAUSE}
        assert not wrong, "pod sandboxes on %s run another image than the bundled %s: %s" % (
            n.name, PAUSE, wrong)
        c.assert_no_pull(n, cri="containerd")
    c.delete_test_pods(n1)


def test_4_image_load_against_ctr_import(lab, bundle, workdir):
    """On one fresh containerd node: the tool's image load from the bundle, then `ctr -n k8s.io
    images import` of an OCI archive of the very same images (`ctr images export` of what the tool
    loaded), then the tool's load again (same warm caches): issue 21's 1.1x goal."""
    prep = ["master", "--cri", "containerd", "--apiserver-advertise-address", None,
            "--skip-phases", "init,kubeconfig,network,wait,join-file"]
    ctr = ["ctr", "-n", "k8s.io"]
    try:
        n, = c.boot(lab, bundle["dir"], "ctrdbench")
        n.exec(["systemctl", "disable", "--now", "docker.socket", "docker.service"])
        n.exec(["systemctl", "mask", "docker.socket", "docker.service"])
        prep[4] = n.ip()
        p = c.tool_node(n, prep, workdir, "ctrd-bench-images-1.log")
        assert p.returncode == 0, "master --cri containerd up to its images phase failed"
        first = c.phase_seconds(p, "images")
        refs = n.sh_out(ctr + ["images", "ls", "-q"]).split()
        assert len(refs) >= 8, "the tool loaded only %s" % refs
        n.exec(ctr + ["images", "export", "/var/tmp/k8so-oci.tar"] + refs, timeout=600)
        size = int(n.sh_out(["stat", "-c", "%s", "/var/tmp/k8so-oci.tar"]))

        def drop_images():
            names = n.sh_out(ctr + ["images", "ls", "-q"]).split()
            if names:
                n.exec(ctr + ["images", "rm", "--sync"] + names)
            for _ in range(100):
                if not n.sh_out(ctr + ["content", "ls", "-q"]).strip():
                    return
                time.sleep(0.2)
            raise AssertionError("containerd kept content after images rm --sync")
        drop_images()
        t0 = time.monotonic()
        n.exec(ctr + ["images", "import", "/var/tmp/k8so-oci.tar"], timeout=600)
        ctr_import = time.monotonic() - t0
        n.exec(["rm", "-f", "/var/tmp/k8so-oci.tar"])
        drop_images()
        p = c.tool_node(n, prep, workdir, "ctrd-bench-images-2.log")
        assert p.returncode == 0, "master --cri containerd up to its images phase failed (second run)"
        second = c.phase_seconds(p, "images")
        # the CRI plugin adds a NAME@sha256 reference beside each name: count the names
        TIMINGS["containerd: image load from the bundle, fresh node (%d images)" % len(
            [r for r in refs if "@" not in r])] = first
        TIMINGS["containerd: image load from the bundle, after ctr import (same caches)"] = second
        TIMINGS["ctr -n k8s.io images import of an OCI archive of the same images (%d MiB)" % (
            size >> 20)] = round(ctr_import, 1)
        TIMINGS["bundle image load / ctr import (goal <= 1.1)"] = round(second / ctr_import, 2)
    finally:
        if "ctrdbench" in lab.nodes:
            lab.remove_node("ctrdbench")
