"""Scenario "cluster": `cluster up` over ssh from node1, with a kubespray-style inventory.

    make e2e SCENARIO=cluster     (or: python3 -m pytest -s tests/e2e/test_cluster.py)

Three air-gapped nodes. Only node1 holds the bundle: the .tar alone, read-only at /media/usb.
Every node runs sshd with host keys of its own (made at boot, as a real host makes them) and has a
user `deploy` with a sudo password (sudo group); node1's deploy has an ed25519 key that every
node's deploy authorizes, and a known_hosts of the keys read from each node with docker exec (no
ssh-keyscan, no trust on first use). On node1, deploy takes k8s_offline.py out of the tar and runs
`cluster up -i inventory.ini` (groups [kube_control_plane], [kube_node], [etcd]; host vars
ansible_host, ip, ansible_user, ansible_become) with the sudo password from a 0600 file.

1. `cluster up`: three nodes Ready, every kube-system pod ready, nothing pulled anywhere.
2. Pod traffic across the nodes by pod IP, through a ClusterIP Service and by its name (CoreDNS).
3. `cluster up` again changes nothing on any host: every file under /etc /usr /opt /var/lib /root
   /home (path, size, mtime, mode) but what the cluster changes by itself while it runs (etcd's
   data, the kubelet's pod and IPAM records), the images and the running containers.
4. `cluster remove` of both workers; `cluster up` again, and node3's sshd is stopped with its
   sessions while its `kubeadm join` runs: one line names node3, exit 1, node2 is Ready. sshd
   back, `cluster up` once more finishes node3 (its half-done join is reset first): three Ready,
   pod traffic between the workers.
"""

import os
import re
import shlex
import shutil
import subprocess
import time

import pytest

from . import cluster as c
from . import nodes as nodes_mod
from .common import log
from .conftest import BUNDLE_TOP, TIMINGS
from .upstream import SEED_IMAGE_REPOSITORY

NODES = ("node1", "node2", "node3")
USER = "deploy"
HOME = "/home/" + USER
#: deploy's sudo password (spaces in it on purpose); it must never show in any output or log
PASSWORD = "k8so lab sudo 20"
PASSWORD_FILE = HOME + "/.become-password"
INVENTORY = HOME + "/inventory.ini"
EXTRA = HOME + "/k8so-lab-kubeadm-extra.yaml"
LOG_DIR = HOME + "/cluster-logs"
TOOL = HOME + "/" + BUNDLE_TOP + "/k8s_offline.py"
TAR = "%s/%s.tar" % (c.USB, BUNDLE_TOP)
POD_CIDR = "10.244.0.0/16"
PHASES = ("preflight", "copy", "verify", "master", "control-planes", "workers", "wait")
#: What a second `cluster up` must leave as it is: files (path size mtime mode type) but those the
#: running cluster changes by itself (etcd's data, the kubelet's pod sandbox and IPAM records,
#: systemd's own state), kubectl's discovery cache (any kubectl read refreshes it) and cluster's
#: own per-run log on node1; the images; the running containers.
SNAPSHOT = ("find /etc /usr /opt /var/lib /root /home -xdev \\( -path /var/lib/systemd -o "
            "-path /var/lib/etcd -o -path /var/lib/cni -o -path /var/lib/dockershim -o "
            "-path '*/.kube/cache' -o -path %s "
            "\\) -prune -o -printf '%%p %%s %%T@ %%m %%y\\n' | sort; echo ---; "
            "docker images -a --no-trunc -q | sort; echo ---; "
            "docker ps -q --no-trunc | sort" % LOG_DIR)


@pytest.fixture(scope="module")
def nodes(lab, bundle, workdir):
    """node1 with the bundle .tar alone, node2 and node3 with nothing; sshd, deploy, keys."""
    usb = workdir / "usb-cluster"
    usb.mkdir()
    try:
        os.link(str(bundle["tar"]), str(usb / bundle["tar"].name))
    except OSError:
        shutil.copyfile(str(bundle["tar"]), str(usb / bundle["tar"].name))
    try:
        t0 = time.monotonic()
        booted = [lab.add_node(NODES[0], str(usb))] + [lab.add_node(n) for n in NODES[1:]]
        for n in booted:
            n.wait_booted()
        log("%d nodes booted in %.0fs" % (len(booted), time.monotonic() - t0))
        for n in booted:
            routes = n.ip_cmd("-4", "route", "show", "default")
            assert routes == "default via %s dev eth0" % nodes_mod.dead_gateway(n), \
                "%s has a route out: %r" % (n.name, routes)
        for n in booted[1:]:
            there = n.sh_out(["sh", "-c", "ls -A /media/usb; find / -xdev -name k8s_offline.py "
                              "-o -name '%s*' 2>/dev/null; true" % BUNDLE_TOP], quiet=True)
            assert there == "", "%s holds a bundle before cluster copies it: %s" % (n.name, there)
        setup_ssh(booted, workdir)
        c.start_event_watch(booted)
        yield booted
    finally:
        if NODES[0] in lab.nodes:
            save_cluster_logs(lab.nodes[NODES[0]], workdir, "final", check=False)
        for name in NODES:
            if name in lab.nodes:
                lab.remove_node(name)
        shutil.rmtree(str(usb), ignore_errors=True)


def as_deploy(node, argv, timeout=300, check=True):
    """argv as deploy in a login shell (its HOME, its ~/.ssh) on node."""
    return node.exec(["runuser", "-l", USER, "-c", " ".join(shlex.quote(a) for a in argv)],
                     check=check, timeout=timeout)


def setup_ssh(nodes, workdir):
    """sshd with the node's own host keys, a sudo user, node1's key and known_hosts."""
    n1 = nodes[0]
    known = []
    for n in nodes:
        keys = nodes_mod.ssh_on(n)
        assert keys, "%s has no ssh host key" % n.name
        known += ["%s %s" % (n.ip(), key) for key in keys]
        n.exec(["useradd", "--create-home", "--shell", "/bin/sh", "--groups", "sudo", USER])
        n.exec(["chpasswd"], input="%s:%s\n" % (USER, PASSWORD))
        n.exec(["install", "-d", "-m", "0700", "-o", USER, "-g", USER, HOME + "/.ssh"])
    as_deploy(n1, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", HOME + "/.ssh/id_ed25519"])
    public = n1.sh_out(["cat", HOME + "/.ssh/id_ed25519.pub"])
    for n in nodes:
        n.exec(["sh", "-c", "cat > %s/.ssh/authorized_keys && chown %s: %s/.ssh/authorized_keys && "
                "chmod 600 %s/.ssh/authorized_keys" % (HOME, USER, HOME, HOME)], input=public + "\n")
    write_as_deploy(n1, HOME + "/.ssh/known_hosts", "\n".join(known) + "\n", "644")
    write_as_deploy(n1, PASSWORD_FILE, PASSWORD + "\n", "600")
    write_as_deploy(n1, EXTRA, c.EXTRA_YAML, "644")
    inventory = inventory_text(nodes)
    write_as_deploy(n1, INVENTORY, inventory, "644")
    (workdir / "cluster-inventory.ini").write_text(inventory)
    log("cluster inventory:\n%s" % inventory)
    for n in nodes:   # the key and known_hosts work, sudo asks for the password
        p = as_deploy(n1, ["ssh", "-o", "BatchMode=yes", n.ip(), "sudo", "-n", "true"], check=False)
        assert "password is required" in p.stderr, "ssh deploy@%s: %r" % (n.name, p.stderr)
    # the tool from the tar, as a user takes it out
    as_deploy(n1, ["tar", "-xf", TAR, "-C", HOME, "--occurrence", BUNDLE_TOP + "/k8s_offline.py"])


def write_as_deploy(node, path, text, mode):
    node.exec(["sh", "-c", "cat > %s && chown %s: %s && chmod %s %s" % (path, USER, path, mode, path)],
              input=text)


def inventory_text(nodes):
    """kubespray's inventory.ini shape."""
    lines = ["# kubespray-style inventory of the k8s-offline lab", "[all]"]
    for n in nodes:
        lines.append("%s ansible_host=%s ip=%s ansible_user=%s ansible_become=true"
                     % (n.name, n.ip(), n.ip(), USER))
    lines += ["", "[kube_control_plane]", NODES[0], "", "[etcd]", NODES[0], "",
              "[kube_node]"] + list(NODES[1:]) + [
        "", "[calico_rr]", "", "[k8s_cluster:children]", "kube_control_plane", "kube_node", ""]
    return "\n".join(lines)


def up_argv(*extra):
    return ["python3", TOOL, "cluster", "up", "-i", INVENTORY, "--bundle", TAR,
            "--become-password-file", PASSWORD_FILE, "--image-repository", SEED_IMAGE_REPOSITORY,
            "--pod-network-cidr", POD_CIDR, "--kubeadm-config-extra", EXTRA, "--log-dir", LOG_DIR,
            "--no-progress"] + list(extra)


def record(p, workdir, logname, t0):
    (workdir / logname).write_text("exit %d (%.0fs)\n--- stdout\n%s\n--- stderr\n%s" % (
        p.returncode, time.monotonic() - t0, p.stdout, p.stderr))
    log("node1: cluster -> exit %d in %.0fs (output in %s)" % (
        p.returncode, time.monotonic() - t0, workdir / logname))
    if p.returncode != 0:
        log("--- stdout (tail)\n%s\n--- stderr (tail)\n%s" % (p.stdout[-3000:], p.stderr[-3000:]))
    text = p.stdout + p.stderr
    assert PASSWORD not in text, "the sudo password is in cluster's output"
    assert "Traceback" not in text, text[-3000:]


def cluster(n1, argv, workdir, logname, timeout=1800):
    t0 = time.monotonic()
    p = as_deploy(n1, argv, timeout=timeout, check=False)
    record(p, workdir, logname, t0)
    return p


def save_cluster_logs(n1, workdir, tag, check=True):
    """cluster's per-host logs from node1 (never holding the password: asserted)."""
    dest = workdir / ("cluster-logs-%s" % tag)
    if dest.exists():
        shutil.rmtree(str(dest))
    subprocess.run(["docker", "cp", "%s:%s" % (n1.container, LOG_DIR), str(dest)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = "".join(f.read_text(errors="replace") for f in sorted(dest.glob("*.log"))) \
        if dest.is_dir() else ""
    assert not check or PASSWORD not in text, "the sudo password is in cluster's host logs (%s)" % dest
    return text


def phase_timings(p, label):
    for phase in PHASES:
        TIMINGS["%s: phase %s" % (label, phase)] = c.phase_seconds(p, phase)
    TIMINGS["%s: whole" % label] = c.total_seconds(p, "cluster up")


def host_seconds(p):
    """{host: seconds} from cluster's summary table."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r"(?m)^(node\d)\s+\S+\s+.*?\s([0-9.]+) s$", p.stdout)}


def snapshot(node):
    return node.sh_out(["sh", "-c", SNAPSHOT], quiet=True)


def test_1_cluster_up_from_node1(nodes, workdir, state):
    n1 = nodes[0]
    p = cluster(n1, up_argv(), workdir, "cluster-up-1.log")
    assert p.returncode == 0, "cluster up failed (see %s)" % (workdir / "cluster-up-1.log")
    phase_timings(p, "cluster up, 3 fresh hosts")
    for host, seconds in sorted(host_seconds(p).items()):
        TIMINGS["cluster up, 3 fresh hosts: %s (summary TIME)" % host] = seconds
    assert len(re.findall(r"(?m)^node\d\s.*\sReady\s", p.stdout)) == 3, p.stdout
    logs = save_cluster_logs(n1, workdir, "1")
    assert "sudo -S -p '' --" in logs, "cluster did not use sudo -S"
    c.wait_nodes_ready(n1, list(NODES))
    c.wait_system_pods_ready(n1, list(NODES))
    # every host got the bundle from node1 over ssh, byte for byte
    want = n1.sh_out(["sha256sum", TAR]).split()[0]
    for n in nodes:
        got = n.sh_out(["sha256sum", "%s/k8s-offline/%s.tar" % (HOME, BUNDLE_TOP)]).split()[0]
        assert got == want, "%s holds another bundle" % n.name
    for n in nodes:
        c.assert_no_pull(n)
    state["up"] = True


def test_2_pod_traffic_and_dns_across_the_nodes(nodes, state):
    c.need(state, "up")
    n1 = nodes[0]
    c.check_pod_traffic(n1, "node2", "node3")
    c.delete_test_pods(n1)
    c.check_pod_traffic(n1, "node1", "node2", with_service=False)
    c.delete_test_pods(n1)
    for n in nodes:
        c.assert_no_pull(n)
    state["traffic"] = True


def test_3_cluster_up_again_changes_nothing(nodes, workdir, state):
    c.need(state, "up")
    n1 = nodes[0]
    time.sleep(5)      # the test pods' deletion settled
    before = {n.name: snapshot(n) for n in nodes}
    p = cluster(n1, up_argv(), workdir, "cluster-up-2-again.log")
    assert p.returncode == 0, "cluster up again failed (see %s)" % (workdir / "cluster-up-2-again.log")
    TIMINGS["cluster up again (no-op): whole"] = c.total_seconds(p, "cluster up")
    for phase in ("copy", "verify", "master", "workers", "wait"):
        TIMINGS["cluster up again (no-op): phase %s" % phase] = c.phase_seconds(p, phase)
    err = p.stderr
    assert err.count("skipped: holds the same bytes") == 3, err
    assert "[master] node1 (control-plane): skipped: already a control plane" in err, err
    assert err.count("skipped: already joined") == 2, err
    after = {n.name: snapshot(n) for n in nodes}
    for n in nodes:
        if before[n.name] != after[n.name]:
            import difflib
            diff = "\n".join(difflib.unified_diff(before[n.name].splitlines(),
                                                  after[n.name].splitlines(), lineterm="", n=0))
            pytest.fail("cluster up again changed %s:\n%s" % (n.name, diff[:5000]))
    save_cluster_logs(n1, workdir, "2")
    c.wait_nodes_ready(n1, list(NODES), timeout=60)
    log("cluster up again: nothing changed on %s" % ", ".join(NODES))


def test_4_a_worker_cut_off_mid_join_then_a_rerun_finishes_it(nodes, workdir, state):
    c.need(state, "up")
    n1, n2, n3 = nodes
    for name in ("node3", "node2"):
        p = cluster(n1, ["python3", TOOL, "cluster", "remove", "-i", INVENTORY, name,
                         "--become-password-file", PASSWORD_FILE, "--log-dir", LOG_DIR],
                    workdir, "cluster-remove-%s.log" % name)
        assert p.returncode == 0, "cluster remove %s failed (see %s)" % (name, workdir)
    left = c.nodes_ready(n1)
    assert sorted(left) == ["node1"], "cluster remove left %s" % left
    for n in (n2, n3):
        assert n.exec(["test", "-e", "/etc/kubernetes/kubelet.conf"], check=False).returncode != 0, \
            "cluster remove did not reset %s" % n.name

    # cluster up again; node3's sshd dies with its sessions while its kubeadm join runs
    argv = ["docker", "exec", n1.container, "runuser", "-l", USER, "-c",
            " ".join(shlex.quote(a) for a in up_argv())]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    try:
        cut_at = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            if n3.exec(["pgrep", "-f", "^kubeadm join"], check=False, quiet=True).returncode == 0:
                cut_at = time.monotonic() - t0
                cut_sshd(n3)
                break
            time.sleep(1)
        out, err = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    p = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    record(p, workdir, "cluster-up-3-cut.log", t0)
    assert cut_at is not None, "node3's kubeadm join was never seen running (see %s)" % (
        workdir / "cluster-up-3-cut.log")
    TIMINGS["cluster up, node3's sshd killed mid-join: whole"] = c.total_seconds(p, "cluster up")
    assert p.returncode == 1, "cluster up with a worker cut off exited %d" % p.returncode
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "node3" in errors[0] and "node2" not in errors[0], errors
    assert "lost the ssh connection (port 22) in the middle of join" in errors[0], errors
    log("the cut-off worker, in one line: %s" % errors[0])
    assert "[wait] node2 (worker): Ready" in err, err
    assert re.search(r"(?m)^node3\s.*FAILED", out), out
    save_cluster_logs(n1, workdir, "3")
    assert c.nodes_ready(n1).get("node2"), "node2 is not Ready after the run that lost node3"

    # sshd back; the rerun finishes node3
    n3.exec(["systemctl", "start", "ssh.service"])
    p = cluster(n1, up_argv(), workdir, "cluster-up-4-rerun.log")
    assert p.returncode == 0, "cluster up after node3 is back failed (see %s)" % (
        workdir / "cluster-up-4-rerun.log")
    TIMINGS["cluster up, rerun that finishes node3: whole"] = c.total_seconds(p, "cluster up")
    TIMINGS["cluster up, rerun that finishes node3: phase workers"] = c.phase_seconds(p, "workers")
    assert "[workers] node3 (worker): done" in p.stderr, p.stderr
    assert "skipped: already joined" in p.stderr      # node2
    save_cluster_logs(n1, workdir, "4")
    c.wait_nodes_ready(n1, list(NODES))
    c.wait_system_pods_ready(n1, list(NODES))
    c.check_pod_traffic(n1, "node2", "node3", with_service=False)
    c.delete_test_pods(n1)
    for n in nodes:
        c.assert_no_pull(n)


def cut_sshd(node):
    """Stop sshd and kill every process of its unit (the sessions, cluster's join among them),
    as a dying sshd takes its sessions with it; `systemctl stop` alone (KillMode=process) would
    leave the sessions running."""
    node.exec(["systemctl", "stop", "ssh.service"])
    node.exec(["systemctl", "kill", "--signal=SIGKILL", "ssh.service"], check=False)
    time.sleep(1)
    left = node.sh_out(["pgrep", "-f", "k8s_offline.py join|^kubeadm join"], check=False, quiet=True)
    if left:   # the unit's cgroup did not hold them: end them by their ids
        log("cut: %s still runs %s after systemctl kill: killing those pids" % (node.name, left.split()))
        node.exec(["kill", "-KILL"] + left.split(), check=False)
    left = node.sh_out(["pgrep", "-f", "k8s_offline.py join|^kubeadm join"], check=False, quiet=True)
    assert not left, "%s still runs the join after the cut: %s" % (node.name, left)
    log("cut: sshd and its sessions on %s are gone" % node.name)
