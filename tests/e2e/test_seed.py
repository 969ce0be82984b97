"""Air-gap end-to-end: bundle from the lab's upstream, install on air-gapped node containers.

The steps run in file order and hand results on through the `state` fixture; a step whose
prerequisite failed fails too (it is never skipped). Run with:  python3 -m pytest -s tests/e2e
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from .common import K8S_VERSION, REPO_ROOT, log, run
from .selfcheck import KUBECTL

TOOL = REPO_ROOT / "k8s_offline.py"


def _tool_has_master():
    if not TOOL.exists():
        return False
    p = subprocess.run([sys.executable, str(TOOL), "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    return re.search(r"\bmaster\b", p.stdout) is not None


if not TOOL.exists():
    pytest.skip("k8s_offline.py is absent from the repository root", allow_module_level=True)
if not _tool_has_master():
    pytest.skip("k8s_offline.py has no `master` subcommand yet", allow_module_level=True)

POD_CIDR = "10.217.0.0/16"   # not flannel's default, so the test sees the flag travel
BUNDLE_TOP = "k8s-offline-%s-linux-amd64" % K8S_VERSION
USB = "/media/usb"
JOIN_FILE = "/root/k8so-lab-join"
EXTRA_FILE = "/root/k8so-lab-kubeadm-extra.yaml"
EXTRA_YAML = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 0
"""
CONTROL_PLANE = ["etcd-", "kube-apiserver-", "kube-controller-manager-", "kube-scheduler-"]
TIMEOUT_POD = 300


def need(state, *keys):
    missing = [k for k in keys if k not in state]
    if missing:
        pytest.fail("an earlier step failed, so this one cannot run (missing: %s)" % ", ".join(missing))


def tool_host(args, timeout=1800):
    p = run([sys.executable, str(TOOL)] + args, check=False, capture=True, timeout=timeout)
    log("exit %d\n--- stdout (tail)\n%s\n--- stderr (tail)\n%s" % (
        p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    return p


def tool_node(node, args, workdir, logname, timeout=900):
    t0 = time.monotonic()
    p = node.exec(["python3", USB + "/k8s_offline.py"] + args, check=False, timeout=timeout)
    (workdir / logname).write_text("$ k8s_offline.py %s\nexit %d (%.0fs)\n--- stdout\n%s\n--- stderr\n%s" % (
        " ".join(args), p.returncode, time.monotonic() - t0, p.stdout, p.stderr))
    log("%s: k8s_offline.py %s -> exit %d in %.0fs (output in %s)" % (
        node.name, args[0], p.returncode, time.monotonic() - t0, workdir / logname))
    if p.returncode != 0:
        log("--- stdout (tail)\n%s\n--- stderr (tail)\n%s" % (p.stdout[-3000:], p.stderr[-3000:]))
    return p


def kubectl_json(node, *args):
    return json.loads(node.sh_out(KUBECTL + list(args) + ["-o", "json"], quiet=True))


def wait_for(what, fn, timeout):
    """Poll fn() until it returns a truthy value; fail with its last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(3)
    pytest.fail("timed out after %ds waiting for %s (last: %r)" % (timeout, what, last))


def running_pods(node):
    """{pod name: (phase, nodeName)} in kube-system."""
    pods = kubectl_json(node, "get", "pods", "-n", "kube-system")["items"]
    return {p["metadata"]["name"]: (p["status"].get("phase"), p["spec"].get("nodeName")) for p in pods}


def control_plane_running(node, with_proxy=True):
    names = CONTROL_PLANE + (["kube-proxy-"] if with_proxy else [])

    def check():
        pods = running_pods(node)
        ok = all(any(n.startswith(pre) and ph == "Running" for n, (ph, _) in pods.items())
                 for pre in names)
        return pods if ok else None
    return wait_for("%s Running" % ", ".join(names), check, TIMEOUT_POD)


def master_args(node):
    return ["master", "--bundle", USB, "--pod-network-cidr", POD_CIDR,
            "--apiserver-advertise-address", node.ip(), "--kubeadm-config-extra", EXTRA_FILE,
            "--join-file", JOIN_FILE, "--no-wait"]


def copy_join_file(src, dst, workdir):
    local = workdir / "join-file"
    if local.exists():
        local.unlink()
    run(["docker", "cp", "%s:%s" % (src.container, JOIN_FILE), str(local)])
    run(["docker", "cp", str(local), "%s:%s" % (dst.container, JOIN_FILE)])


def snapshot(node):
    """What a refused install must not change: files under /etc /usr /opt /var/lib /root
    (not the runtimes' own volumes), the kubelet dir, the images and the unit files."""
    listing = node.sh_out([
        "sh", "-c",
        "find /etc /usr /opt /var/lib /root -xdev "
        "\\( -path /var/lib/systemd -o -path /root/k8so-lab-kubeadm-extra.yaml \\) -prune -o "
        "-printf '%p %s %T@ %m %y\\n' | sort; "
        "echo ---; ls -la /var/lib/kubelet /var/lib/docker/image 2>&1; "
        "echo ---; docker images -a --no-trunc -q | sort; "
        "echo ---; systemctl list-unit-files --no-legend 'kube*' 2>&1; true"], quiet=True)
    return listing


# --------------------------------------------------------------------------- steps

def test_2_bundle_and_verify(upstream, workdir, state):
    # The lab must serve every image the tool will ask for; say so plainly if it drifts.
    p = tool_host(["images", "--kubernetes-version", K8S_VERSION], timeout=120)
    assert p.returncode == 0, "k8s_offline.py images failed"
    served = set(upstream.build.images())
    wanted = [l.strip() for l in p.stdout.splitlines() if l.strip()]
    unserved = [r for r in wanted if r.split("/", 1)[1] not in served]
    assert not unserved, "the lab's upstream does not serve %s (it serves %s): update tests/e2e/upstream.py" % (
        unserved, sorted(served))

    out_tar = workdir / ("%s.tar" % BUNDLE_TOP)
    args = (["bundle"] + upstream.bundle_args()
            + ["--output", str(out_tar), "--cache-dir", str(workdir / "bundle-cache"), "--no-progress"])
    t0 = time.monotonic()
    p = tool_host(args)
    log("bundle took %.0fs" % (time.monotonic() - t0))
    assert p.returncode == 0, "bundle failed:\n%s\n%s" % (p.stdout[-3000:], p.stderr[-3000:])
    assert out_tar.is_file(), "bundle did not write %s" % out_tar
    assert upstream.files.requests, "bundle fetched nothing from the lab file server"
    p = tool_host(["verify", str(out_tar)])
    assert p.returncode == 0, "verify refused a fresh bundle:\n%s\n%s" % (p.stdout, p.stderr)

    dest = workdir / "usb"
    with tarfile.open(str(out_tar), "r:*") as tar:
        tops = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        assert tops == {BUNDLE_TOP}, "bundle must hold one top directory %s, has %s" % (BUNDLE_TOP, tops)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(str(dest), filter="data")
        else:
            tar.extractall(str(dest))
    top = dest / BUNDLE_TOP
    for entry in ("k8s_offline.py", "bundle.json", "bin", "archives", "images", "manifests", "systemd"):
        assert (top / entry).exists(), "bundle lacks %s" % entry
    state["bundle_tar"] = out_tar
    state["bundle_dir"] = top


def test_3_nodes_boot_air_gapped(lab, state):
    need(state, "bundle_dir")
    t0 = time.monotonic()
    n1 = lab.add_node("node1", state["bundle_dir"])
    n2 = lab.add_node("node2", state["bundle_dir"])
    for n in (n1, n2):
        n.wait_booted()
    log("2 nodes booted in %.0fs" % (time.monotonic() - t0))
    for n in (n1, n2):
        routes = n.sh_out(["ip", "-4", "route", "show", "default"])
        assert routes == "", "%s has a route out: %s" % (n.name, routes)
        assert n.exec(["test", "-f", USB + "/k8s_offline.py"], check=False).returncode == 0
        ro = n.exec(["touch", USB + "/k8so-lab-write-test"], check=False)
        assert ro.returncode != 0, "the bundle must be mounted read-only"
        n.exec(["sh", "-c", "cat > %s" % EXTRA_FILE], input=EXTRA_YAML)
        n.start_event_watch()
    ping = n2.exec(["python3", "-c", "import socket,sys; s=socket.create_connection((sys.argv[1], 22), 2)",
                    n1.ip()], check=False)
    assert "unreachable" not in ping.stderr, "nodes cannot reach each other: %s" % ping.stderr
    state["n1"], state["n2"] = n1, n2


def test_4_master(lab, workdir, state):
    need(state, "n1")
    n1 = state["n1"]
    p = tool_node(n1, master_args(n1), workdir, "master-1.log")
    assert p.returncode == 0, "master failed (see %s)" % (workdir / "master-1.log")
    pods = control_plane_running(n1)
    log("control plane + kube-proxy Running: %s" % sorted(pods))

    ds = kubectl_json(n1, "get", "daemonsets", "-n", "kube-system")["items"]
    flannel = [d for d in ds if any("flannel" in c["image"] for c in
                                    d["spec"]["template"]["spec"]["containers"])]
    assert flannel, "no flannel DaemonSet in kube-system (have %s)" % [d["metadata"]["name"] for d in ds]
    cms = kubectl_json(n1, "get", "configmaps", "-n", "kube-system")["items"]
    netconf = [cm["data"]["net-conf.json"] for cm in cms if "net-conf.json" in (cm.get("data") or {})]
    assert netconf, "no flannel ConfigMap with net-conf.json"
    assert json.loads(netconf[0])["Network"] == POD_CIDR, netconf[0]

    assert_no_pull(n1)
    loads = [e for e in n1.image_events() if e.get("Action") in ("load", "import")]
    assert loads, "the Docker event watch on node1 saw no image load: the no-pull check would be vacuous"
    mode = n1.sh_out(["stat", "-c", "%a", JOIN_FILE])
    assert mode == "600", "join file %s has mode %s, want 600" % (JOIN_FILE, mode)
    state["master_done"] = True
    state["ca_sha"] = n1.sh_out(["sha256sum", "/etc/kubernetes/pki/ca.crt"]).split()[0]


def assert_no_pull(node):
    """No pull was attempted: no "pull" image event (a successful pull), no pull in dockerd's
    journal (a failed pull emits no event, only "Attempting next endpoint for pull ..." and a
    DNS timeout on the internal network), no kubelet "Pulling" event."""
    pulls = [e for e in node.image_events() if e.get("Action") == "pull"]
    assert not pulls, "Docker on %s pulled images: %s" % (node.name, pulls)
    dlog = node.sh_out(["journalctl", "--no-pager", "-u", "docker"], quiet=True)
    bad = [l for l in dlog.splitlines() if re.search(r"pull|registry-1|k8s\.gcr\.io/v2|quay\.io/v2", l, re.I)]
    assert not bad, "dockerd on %s tried to pull:\n%s" % (node.name, "\n".join(bad[:20]))
    if node.exec(["test", "-f", "/etc/kubernetes/admin.conf"], check=False).returncode == 0:
        events = kubectl_json(node, "get", "events", "-A")["items"]
        pulling = [e["message"] for e in events if e.get("reason") in ("Pulling", "ErrImagePull")]
        assert not pulling, "kubelet tried to pull: %s" % pulling


def joined(n1, n2, lab, workdir, logname):
    copy_join_file(n1, n2, workdir)
    p = tool_node(n2, ["join", "--join-file", JOIN_FILE, "--no-wait"], workdir, logname)
    assert p.returncode == 0, "join failed (see %s)" % (workdir / logname)

    def two_nodes_with_proxy():
        nodes = [n["metadata"]["name"] for n in kubectl_json(n1, "get", "nodes")["items"]]
        proxies = {node for name, (ph, node) in running_pods(n1).items()
                   if name.startswith("kube-proxy-") and ph == "Running"}
        return (len(nodes) == 2 and proxies == set(nodes)) and (nodes, proxies)
    nodes, proxies = wait_for("2 nodes registered, kube-proxy Running on both", two_nodes_with_proxy,
                              TIMEOUT_POD)

    def flannel_wants_two():
        for d in kubectl_json(n1, "get", "daemonsets", "-n", "kube-system")["items"]:
            if "flannel" in d["metadata"]["name"] and d["status"].get("desiredNumberScheduled") == 2:
                return d["metadata"]["name"]
    wait_for("the flannel DaemonSet to want 2 pods", flannel_wants_two, 120)
    assert_no_pull(n2)


def test_5_join(lab, workdir, state):
    need(state, "master_done")
    joined(state["n1"], state["n2"], lab, workdir, "join-1.log")
    state["join_done"] = True


def test_6a_master_again_is_safe(lab, workdir, state):
    need(state, "join_done")
    n1 = state["n1"]
    p = tool_node(n1, master_args(n1), workdir, "master-again.log")
    text = p.stdout + p.stderr
    assert "Traceback" not in text, "master again crashed:\n%s" % text[-3000:]
    if p.returncode != 0:
        assert re.search(r"already|exist|initiali[sz]ed|reset|running|in use", text, re.I), \
            "master again refused without a clear reason:\n%s" % text[-3000:]
    assert n1.sh_out(["sha256sum", "/etc/kubernetes/pki/ca.crt"]).split()[0] == state["ca_sha"], \
        "master again replaced the cluster CA"
    control_plane_running(n1)
    assert len(kubectl_json(n1, "get", "nodes")["items"]) == 2


def test_6b_corrupt_bundle_refused_on_fresh_node(lab, workdir, state):
    need(state, "bundle_dir")
    good = state["bundle_dir"]
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
    log("flipped one byte in %s" % victim)
    n3 = lab.add_node("node3", bad)
    try:
        n3.wait_booted()
        n3.exec(["sh", "-c", "cat > %s" % EXTRA_FILE], input=EXTRA_YAML)
        before = snapshot(n3)
        p = tool_node(n3, master_args(n3), workdir, "master-corrupt.log")
        after = snapshot(n3)
        assert p.returncode != 0, "master accepted a corrupt bundle"
        text = p.stdout + p.stderr
        assert "Traceback" not in text, text[-3000:]
        if before != after:
            import difflib
            diff = "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
            pytest.fail("master changed the node before refusing the corrupt bundle:\n%s" % diff[:5000])
    finally:
        lab.remove_node("node3")
        shutil.rmtree(str(bad.parent), ignore_errors=True)


def test_6c_reset_then_master_and_join_again(lab, workdir, state):
    need(state, "master_done")
    n1, n2 = state["n1"], state["n2"]
    for n in (n2, n1):
        p = tool_node(n, ["reset", "--yes"], workdir, "reset-%s.log" % n.name)
        assert p.returncode == 0, "reset --yes failed on %s" % n.name
    for n in (n1, n2):
        left = n.sh_out(["sh", "-c", "ls /etc/kubernetes/manifests 2>/dev/null; "
                         "docker ps -q --filter name=k8s_"], check=False)
        assert left == "", "reset left on %s: %s" % (n.name, left)
    n1.exec(["rm", "-f", JOIN_FILE])
    p = tool_node(n1, master_args(n1), workdir, "master-2.log")
    assert p.returncode == 0, "master after reset failed"
    control_plane_running(n1)
    joined(n1, n2, lab, workdir, "join-2.log")
