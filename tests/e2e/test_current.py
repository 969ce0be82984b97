"""Scenario "current" (issue 19): the newest Kubernetes the Go module proxy serves, v1.37.2, with
containerd 2.x, on two air-gapped nodes of this cgroup v1 machine.

    make e2e SCENARIO=current     (or: python3 -m pytest -s tests/e2e/test_current.py)

Its own upstream (current.py: every part built here from its Go module, served as registry.k8s.io,
ghcr.io, dl.k8s.io and github.com serve them) and its own bundle: `bundle --kubernetes-version
v1.37.2 --with-containerd` plus only the lab's mirror flags. Two nodes with the lab node's packages
but no container runtime, on an --internal network with no route out:
- on this cgroup v1 host `master` without --allow-cgroup-v1 refuses in one line naming the flag,
  before the host changes;
- `master --allow-cgroup-v1` and `join --allow-cgroup-v1` (by the join file), each waiting
  itself; both nodes Ready,
  every kube-system and kube-flannel pod Running;
- the runtime is the bundled containerd 2.3.4 and runc (same bytes), the tool's config is version 3,
  the effective config pins the bundled pause image (pinned_images.sandbox) and every pod sandbox
  runs it;
- pods on the two nodes reach each other, a ClusterIP Service and its name through CoreDNS;
- nothing is pulled; every bundled image carries the label io.cri-containerd.pinned=pinned;
- `certs check` and `backup` work.

The steps run in file order and hand results on through the module's `state`; a step whose
prerequisite failed fails too (it is never skipped).
"""

import hashlib
import json
import re
import tarfile
import time

import pytest

from . import cluster as c
from . import current, netbuild
from .common import log
from .conftest import _SUMMARY, TIMINGS, tool_host

MASTER, WORKER = "cur1", "cur2"
CGROUP_FLAG = "--allow-cgroup-v1"
FLANNEL_NAMESPACE = "kube-flannel"
PINNED = "io.cri-containerd.pinned=pinned"
CERT_ROW_RE = re.compile(r"(?m)^(\S+(?: -> \S+)?) +(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC +(-?\d+)")
PHASE_RE = re.compile(r"\[([a-z-]+)\] done in ([0-9.]+) s")


@pytest.fixture(scope="module")
def state():
    return {}


@pytest.fixture(scope="module")
def current_upstream(workdir):
    t0 = time.monotonic()
    build = current.prepare()
    log("current upstream ready in %.0fs" % (time.monotonic() - t0))
    _SUMMARY.extend(current.real_and_stand_ins(build))
    up = current.Upstream(build, logdir=workdir)
    try:
        up.start()
        log(up.describe())
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def current_bundle(tool, current_upstream, workdir):
    """`bundle --kubernetes-version v1.37.2 --with-containerd` (mirror flags only), verified and
    extracted like a USB stick."""
    up = current_upstream
    # A patch release newer than the release table (v1.37.2): only `bundle` may run its kubeadm
    # for the image list, `images` refuses in one line (contract-19); a listed one it names.
    p = tool_host(["images", "--kubernetes-version", current.VERSION, "--extra-image",
                   current.up.TEST_IMAGE], timeout=300)
    text = (p.stdout + p.stderr).strip()
    if p.returncode == 0:
        wanted = [l.strip() for l in p.stdout.splitlines() if l.strip()]
    else:
        assert len(text.splitlines()) == 1 and "bundle" in text and "Traceback" not in text, \
            "k8s_offline.py images --kubernetes-version %s failed:\n%s" % (current.VERSION, text[-2000:])
        wanted = None
    out_tar = workdir / "current-bundle.tar"
    args = (["bundle"] + up.bundle_args() + ["--with-containerd", "--output", str(out_tar),
                                             "--cache-dir", str(workdir / "bundle-cache-current"),
                                             "--no-progress"])
    t0 = time.monotonic()
    p = tool_host(args)
    TIMINGS["current: bundle --kubernetes-version %s --with-containerd" % current.VERSION] = round(
        time.monotonic() - t0, 1)
    assert p.returncode == 0, "bundle failed:\n%s\n%s" % (p.stdout[-3000:], p.stderr[-3000:])
    assert up.files.requests, "bundle fetched nothing from the lab file server"
    p = tool_host(["verify", str(out_tar)])
    assert p.returncode == 0, "verify refused the current bundle:\n%s\n%s" % (p.stdout, p.stderr)
    dest = workdir / "usb-current"
    with tarfile.open(str(out_tar), "r:*") as tar:
        tops = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        assert len(tops) == 1, "the bundle must hold one top directory, has %s" % sorted(tops)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(str(dest), filter="data")
        else:
            tar.extractall(str(dest))
    top = dest / tops.pop()
    meta = json.loads((top / "bundle.json").read_text())
    assert meta.get("kubernetes_version") == current.VERSION, meta.get("kubernetes_version")
    refs = sorted(i["ref"] for i in meta["images"])
    assert wanted is None or set(refs) == set(wanted), \
        "bundle.json's images %s are not the ones `images` named %s" % (refs, wanted)
    assert set(refs) == set(up.build.refs()), "the bundle's images %s are not the ones the lab " \
        "serves for %s (%s): update tests/e2e/current.py" % (refs, current.VERSION, up.build.refs())
    pause = [i["ref"] for i in meta["images"] if i.get("name") == "pause"]
    assert pause == ["%s/pause:%s" % (current.K8S_REGISTRY, up.build.tags["pause"])], pause
    versions = meta.get("versions", {})
    assert versions.get("containerd") == up.build.names["containerd"], versions
    assert versions.get("runc") == up.build.names["runc"], versions
    log("current bundle: %s, images %s" % (out_tar, refs))
    return {"tar": out_tar, "dir": top, "meta": meta, "refs": refs, "pause": pause[0],
            "names": up.build.names}


@pytest.fixture(scope="module")
def current_image():
    return current.ensure_node_image()


@pytest.fixture(scope="module")
def nodes(lab, current_bundle, current_image):
    with c.scenario_nodes(lab, current_bundle["dir"], MASTER, WORKER, watch_images=False,
                          image=current_image, docker=False) as both:
        yield both


#: The phase that runs kubeadm, and issue 21's goal for the rest of the command.
PHASE_KUBEADM = {"master": "init", "join": "join"}
GOAL_OVER_KUBEADM = {"master": 30, "join": 15}


def phases(proc, prefix):
    """Every "[phase] done in N s" of the tool's log into TIMINGS, and the whole command."""
    text = proc.stdout + proc.stderr
    for name, secs in PHASE_RE.findall(text):
        TIMINGS["current: %s phase %s" % (prefix, name)] = float(secs)
    if proc.wall is not None:
        TIMINGS["current: %s whole (start to exit, on the node)" % prefix] = proc.wall
        kubeadm = PHASE_KUBEADM[prefix]
        TIMINGS["current: %s minus kubeadm %s (goal <= %d s)" % (prefix, kubeadm, GOAL_OVER_KUBEADM[prefix])] = round(
            proc.wall - float(dict(PHASE_RE.findall(text))[kubeadm]), 1)


def check_runtime_is_the_bundled_one(node, bundle):
    """containerd runs, and containerd, its shim, ctr and runc are the bytes the stick carried."""
    assert node.sh_out(["systemctl", "is-active", "containerd"], check=False) == "active", \
        "containerd is not running on %s" % node.name
    names = bundle["names"]
    tgz = next(bundle["dir"].rglob(names["containerd_tgz"]), None)
    assert tgz is not None, "the bundle lacks %s" % names["containerd_tgz"]
    want = {}
    with tarfile.open(str(tgz), "r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                want[m.name.rsplit("/", 1)[-1]] = hashlib.sha256(tar.extractfile(m).read()).hexdigest()
    runc = next(bundle["dir"].rglob("runc.%s" % current.ARCH), None)
    assert runc is not None, "the bundle lacks runc.%s" % current.ARCH
    want["runc"] = hashlib.sha256(runc.read_bytes()).hexdigest()
    for binary in current.CONTAINERD_BINARIES + ["runc"]:
        path = node.sh_out(["sh", "-c", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
                            "command -v %s" % binary], check=False)
        assert path, "%s has no %s" % (node.name, binary)
        have = node.sh_out(["sha256sum", path]).split()[0]
        assert have == want[binary], "%s on %s (%s) is not the bundled one" % (binary, node.name, path)
    ver = node.sh_out(["containerd", "--version"])
    assert " v%s" % names["containerd"] in ver, ver


def sandbox_images(node):
    """{sandbox container id: image} of every pod sandbox containerd runs."""
    text = node.sh_out(["ctr", "-n", "k8s.io", "containers", "ls",
                        'labels."io.cri-containerd.kind"==sandbox'], quiet=True)
    return {parts[0]: parts[1] for parts in (l.split() for l in text.splitlines()[1:]) if len(parts) >= 2}


def image_labels(node):
    """{image ref: labels text} of every image in containerd's k8s.io namespace."""
    text = node.sh_out(["ctr", "-n", "k8s.io", "images", "ls"], quiet=True)
    lines = text.splitlines()
    found = {}
    for line in lines[1:]:
        parts = line.split()
        if parts:
            found[parts[0]] = parts[-1]
    return found


def master_args(n1, *extra):
    return ["master", "--apiserver-advertise-address", n1.ip(), "--kubeadm-config-extra",
            c.EXTRA_FILE] + list(extra)


# --------------------------------------------------------------------------- steps

def test_0_nodes_without_a_runtime_on_cgroup_v1(nodes, state):
    for n in nodes:
        found = n.sh_out(["sh", "-c", "for c in docker dockerd containerd ctr runc; do command -v $c; "
                          "done; true"], quiet=True)
        assert found == "", "the node %s already has a runtime: %s" % (n.name, found.split())
        fs = n.sh_out(["stat", "-fc", "%T", "/sys/fs/cgroup"])
        assert fs == "tmpfs", "%s is not on cgroup v1 (/sys/fs/cgroup is %s): this scenario proves " \
            "the cgroup v1 flag" % (n.name, fs)
    state["bare"] = True


def test_1_master_refuses_cgroup_v1_without_the_flag(nodes, workdir, state):
    c.need(state, "bare")
    n1, _ = nodes
    p = c.tool_node(n1, master_args(n1, "--no-wait"), workdir, "current-master-no-flag.log")
    text = p.stdout + p.stderr
    assert p.returncode != 0, "master on a cgroup v1 host went ahead without %s" % CGROUP_FLAG
    assert "Traceback" not in text, text[-3000:]
    assert CGROUP_FLAG in text and re.search(r"(?i)cgroup v1", text), \
        "the refusal does not name cgroup v1 and %s:\n%s" % (CGROUP_FLAG, text[-3000:])
    left = n1.sh_out(["sh", "-c", "ls -d /etc/kubernetes/admin.conf /etc/kubernetes/manifests/* "
                      "/usr/local/bin/* /usr/local/sbin/* /etc/containerd /var/lib/kubelet/config.yaml "
                      "2>/dev/null; true"], quiet=True)
    assert left == "", "master changed the host before refusing: %s" % left.split()


def test_2_master(nodes, current_bundle, workdir, state):
    c.need(state, "bare")
    n1, _ = nodes
    # master waits itself for a Ready node and Running system pods (its wait phase, on 1.37 with
    # flannel in kube-flannel)
    p = c.tool_node(n1, master_args(n1, CGROUP_FLAG), workdir, "current-master.log", timed=True)
    assert p.returncode == 0, "master %s failed (see %s)" % (CGROUP_FLAG, workdir / "current-master.log")
    phases(p, "master")
    check_runtime_is_the_bundled_one(n1, current_bundle)
    assert c.nodes_ready(n1).get(MASTER), "master returned before %s was Ready" % MASTER
    state["master"] = True


def test_3_join(nodes, current_bundle, workdir, state):
    c.need(state, "master")
    n1, n2 = nodes
    c.copy_file(n1, c.MASTER_JOIN_FILE, n2, c.WORKER_JOIN_FILE, workdir)
    p = c.tool_node(n2, ["join", CGROUP_FLAG, "--join-file", c.WORKER_JOIN_FILE],
                    workdir, "current-join.log", timed=True)
    assert p.returncode == 0, "join %s failed (see %s)" % (CGROUP_FLAG, workdir / "current-join.log")
    phases(p, "join")
    check_runtime_is_the_bundled_one(n2, current_bundle)
    c.wait_nodes_ready(n1, [MASTER, WORKER])
    c.wait_system_pods_ready(n1, [MASTER, WORKER], flannel_namespace=FLANNEL_NAMESPACE)
    versions = {n["metadata"]["name"]: n["status"]["nodeInfo"] for n in
                c.kubectl_json(n1, "get", "nodes")["items"]}
    for name, info in versions.items():
        assert info["kubeletVersion"] == current.VERSION, (name, info)
        assert info["containerRuntimeVersion"].replace("://v", "://") == "containerd://%s" % (
            current_bundle["names"]["containerd"]), (name, info)
    state["joined"] = True


def test_4_pod_traffic_dns_pause_and_no_pull(nodes, current_bundle, state):
    c.need(state, "joined")
    n1, n2 = nodes
    c.check_pod_traffic(n1, MASTER, WORKER)
    pause = current_bundle["pause"]
    for n in (n1, n2):
        # the tool writes config version 3 (containerd 2.x); `config dump` prints the effective
        # config migrated to the newest version (4 for containerd 2.3)
        written = n.sh_out(["cat", "/etc/containerd/config.toml"], quiet=True)
        assert re.search(r"(?m)^version = 3\s*$", written), "the containerd config on %s is not " \
            "version 3:\n%s" % (n.name, written[:500])
        dump = n.sh_out(["containerd", "config", "dump"], quiet=True)
        assert re.search(r"(?m)^\s*sandbox = ['\"]%s['\"]" % re.escape(pause), dump), \
            "containerd on %s does not pin the bundled pause image %s as its sandbox" % (n.name, pause)
        sandboxes = sandbox_images(n)
        assert sandboxes, "no pod sandboxes on %s" % n.name
        wrong = {k: v for k, v in sandboxes.items() if v != pause}
        assert not wrong, "pod sandboxes on %s run another image than the bundled %s: %s" % (
            n.name, pause, wrong)
        c.assert_no_pull(n, cri="containerd")
    c.delete_test_pods(n1)
    state["traffic"] = True


def test_5_every_bundled_image_is_pinned(nodes, current_bundle, state):
    """Issue 19 item 9: the kubelet's image GC must not remove what an air-gapped node cannot pull
    back. Every bundled image a node loaded (the master: all; a worker: its role's and the extras)
    carries io.cri-containerd.pinned=pinned."""
    c.need(state, "joined")
    worker_names = netbuild.tool_module().WORKER_IMAGE_NAMES
    images = current_bundle["meta"]["images"]
    want = {MASTER: sorted(i["ref"] for i in images),
            WORKER: sorted(i["ref"] for i in images if i["name"] in worker_names or i.get("extra"))}
    assert current_bundle["pause"] in want[WORKER], want
    for n in nodes:
        labels = image_labels(n)
        missing = [r for r in want[n.name] if r not in labels]
        assert not missing, "%s lacks bundled images %s (it has %s)" % (n.name, missing, sorted(labels))
        unpinned = {r: labels[r] for r in want[n.name] if PINNED not in labels[r].split(",")}
        assert not unpinned, "bundled images on %s without %s: %s" % (n.name, PINNED, unpinned)
        log("%s: %d bundled images, each labelled %s" % (n.name, len(want[n.name]), PINNED))


def test_6_certs_check_and_backup(nodes, workdir, state):
    c.need(state, "joined")
    n1, _ = nodes
    p = c.tool_node(n1, ["certs", "check"], workdir, "current-certs-check.log", timeout=120)
    assert p.returncode == 0, "certs check failed (see %s)" % (workdir / "current-certs-check.log")
    rows = {m.group(1): int(m.group(3)) for m in CERT_ROW_RE.finditer(p.stdout)}
    assert rows, "certs check printed no certificate:\n%s" % p.stdout
    assert all(days > 300 for days in rows.values()), "fresh certificates expire soon: %s" % rows
    t0 = time.monotonic()
    p = c.tool_node(n1, ["backup"], workdir, "current-backup.log", timeout=600)
    TIMINGS["current: backup, wall (s)"] = round(time.monotonic() - t0, 1)
    assert p.returncode == 0, "backup failed (see %s)" % (workdir / "current-backup.log")
    m = re.search(r"(?m)^backup (\S+)$", p.stdout)
    assert m, "backup did not print where it wrote the backup:\n%s" % p.stdout
    listing = n1.sh_out(["tar", "-tzf", m.group(1)], quiet=True)
    assert re.search(r"(?m)snapshot|\.db$", listing), "the backup holds no etcd snapshot:\n%s" % listing
    assert "pki/ca.key" in listing or "ca.key" in listing, "the backup holds no CA key:\n%s" % listing
