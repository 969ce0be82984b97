"""What the scenarios do on the nodes: run k8s_offline.py there, read the cluster with kubectl, check
that the pod network carries traffic across nodes, that nothing was pulled, and time the tool's
phases from its own log lines."""

import contextlib
import ipaddress
import json
import re
import subprocess
import time

import pytest

from . import nodes as nodes_mod
from .common import log, run
from .selfcheck import KUBECTL
from .upstream import TEST_IMAGE

USB = "/media/usb"
EXTRA_FILE = "/root/k8so-lab-kubeadm-extra.yaml"
#: Sandbox only (see README): kube-proxy cannot set nf_conntrack_max inside a node container.
EXTRA_YAML = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 0
"""
#: Where `master` writes the join file when the bundle's folder is read-only (the USB mount).
MASTER_JOIN_FILE = "/etc/kubernetes/k8s-offline-join.json"
WORKER_JOIN_FILE = "/root/k8s-offline-join.json"
CONTROL_PLANE = ["etcd-", "kube-apiserver-", "kube-controller-manager-", "kube-scheduler-"]
TIMEOUT_POD = 300


def need(state, *keys):
    missing = [k for k in keys if k not in state]
    if missing:
        pytest.fail("an earlier step failed, so this one cannot run (missing: %s)" % ", ".join(missing))


def boot(lab, bundle_dir, *names, image=None, docker=True):
    """Boot air-gapped nodes with the bundle mounted read-only; checks there is no route out.
    image: another node image than the lab's; docker=False: the image has no docker (bare)."""
    t0 = time.monotonic()
    nodes = [lab.add_node(n, bundle_dir, image=image) for n in names]
    for n in nodes:
        n.wait_booted(docker=docker)
    log("%d nodes booted in %.0fs" % (len(nodes), time.monotonic() - t0))
    for n in nodes:
        routes = n.ip_cmd("-4", "route", "show", "default")
        dead = "default via %s dev eth0" % nodes_mod.dead_gateway(n)
        assert routes == dead, "%s has a route out: %r (want only %r)" % (n.name, routes, dead)
        assert n.exec(["test", "-f", USB + "/k8s_offline.py"], check=False).returncode == 0
        n.exec(["sh", "-c", "cat > %s" % EXTRA_FILE], input=EXTRA_YAML)
    return nodes


@contextlib.contextmanager
def scenario_nodes(lab, bundle_dir, *names, watch_images=True, **boot_kw):
    """Boot a scenario's nodes (with the Docker image-event watch) and remove them, logs saved,
    when the scenario ends. boot_kw: boot()'s image and docker."""
    try:
        nodes = boot(lab, bundle_dir, *names, **boot_kw)
        if watch_images:
            start_event_watch(nodes)
        yield nodes
    finally:
        for name in names:
            if name in lab.nodes:
                lab.remove_node(name)


#: timed=True: a small Python on the node runs the tool and writes here the seconds from the
#: tool's start (its interpreter's exec) to its exit, measured on the node itself.
WALL_FILE = "/run/k8so-lab-tool-wall"
_WALL_WRAPPER = ("import subprocess, sys, time\n"
                 "t = time.monotonic()\n"
                 "rc = subprocess.call(sys.argv[1:])\n"
                 "open(%r, 'w').write('%%.2f' %% (time.monotonic() - t))\n"
                 "sys.exit(rc)\n" % WALL_FILE)


def tool_node(node, args, workdir, logname, timeout=900, timed=False):
    """Run the bundle's own k8s_offline.py inside a node (as a user does from the USB stick).
    timed: also set p.wall, the command's wall time on the node (start to exit)."""
    t0 = time.monotonic()
    argv = ["python3", USB + "/k8s_offline.py"] + args
    if timed:
        node.exec(["rm", "-f", WALL_FILE])
        argv = ["python3", "-c", _WALL_WRAPPER] + argv
    p = node.exec(argv, check=False, timeout=timeout)
    p.wall = float(node.sh_out(["cat", WALL_FILE])) if timed else None
    (workdir / logname).write_text("$ k8s_offline.py %s\nexit %d (%.0fs)\n--- stdout\n%s\n--- stderr\n%s" % (
        " ".join(args), p.returncode, time.monotonic() - t0, p.stdout, p.stderr))
    log("%s: k8s_offline.py %s -> exit %d in %.0fs (output in %s)" % (
        node.name, args[0], p.returncode, time.monotonic() - t0, workdir / logname))
    if p.returncode != 0:
        log("--- stdout (tail)\n%s\n--- stderr (tail)\n%s" % (p.stdout[-3000:], p.stderr[-3000:]))
    return p


def phase_seconds(proc, phase):
    """Seconds the tool's log says a phase took ("[init] done in 12.3 s"); None if absent."""
    m = re.search(r"\[%s\] done in ([0-9.]+) s" % re.escape(phase), proc.stdout + proc.stderr)
    return float(m.group(1)) if m else None


def total_seconds(proc, command):
    m = re.search(r"\b%s finished in ([0-9.]+) s" % re.escape(command), proc.stdout + proc.stderr)
    return float(m.group(1)) if m else None


def kubectl(node, *args, **kw):
    return node.exec(KUBECTL + list(args), **kw)


def kubectl_json(node, *args):
    return json.loads(node.sh_out(KUBECTL + list(args) + ["-o", "json"], quiet=True))


def wait_for(what, fn, timeout):
    """Poll fn() until it returns a truthy value; fail with its last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(3)
    pytest.fail("timed out after %ds waiting for %s (last: %r)" % (timeout, what, last))


def pods(node, namespace="kube-system"):
    """{pod name: pod} in a namespace."""
    return {p["metadata"]["name"]: p for p in kubectl_json(node, "get", "pods", "-n", namespace)["items"]}


def pod_ready(pod):
    st = pod.get("status", {})
    return st.get("phase") == "Running" and bool(st.get("containerStatuses")) and \
        all(c.get("ready") for c in st["containerStatuses"])


def nodes_ready(node):
    """{node name: True/False Ready}."""
    found = {}
    for n in kubectl_json(node, "get", "nodes")["items"]:
        conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
        found[n["metadata"]["name"]] = conds.get("Ready") == "True"
    return found


def wait_nodes_ready(master, names, timeout=TIMEOUT_POD):
    def check():
        ready = nodes_ready(master)
        return ready if all(ready.get(n) for n in names) else None
    return wait_for("nodes %s Ready" % ", ".join(names), check, timeout)


def wait_system_pods_ready(master, node_names, timeout=TIMEOUT_POD, ready=True,
                           flannel_namespace="kube-system"):
    """Every kube-system pod Running (and ready, unless ready=False), with kube-proxy and flannel
    on every node (flannel's pods in flannel_namespace: kube-flannel from flannel v0.19)."""
    def check():
        ps = pods(master)
        if flannel_namespace != "kube-system":
            ps.update(pods(master, flannel_namespace))
        bad = {n: p["status"].get("phase") for n, p in ps.items()
               if not (pod_ready(p) if ready else p["status"].get("phase") == "Running")}
        if bad:
            return None
        for prefix in ("kube-proxy-", "kube-flannel-"):
            on = {p["spec"].get("nodeName") for n, p in ps.items() if n.startswith(prefix)}
            if not set(node_names) <= on:
                return None
        return sorted(ps)
    return wait_for("every kube-system pod Running%s, kube-proxy and flannel on %s"
                    % (" and ready" if ready else "", ", ".join(node_names)), check, timeout)


def copy_file(src, src_path, dst, dst_path, workdir):
    """Carry a file from one node to another the way a user would (here through the host)."""
    local = workdir / ("carry-" + src_path.strip("/").replace("/", "_"))
    if local.exists():
        local.unlink()
    run(["docker", "cp", "%s:%s" % (src.container, src_path), str(local)])
    run(["docker", "cp", str(local), "%s:%s" % (dst.container, dst_path)])
    local.unlink()


def start_event_watch(nodes):
    for n in nodes:
        n.start_event_watch()


def assert_no_pull(node, cri="docker"):
    """No pull was attempted: no "pull" image event (a successful pull), no pull in the runtime's
    journal (a failed pull emits no event, only "Attempting next endpoint for pull ..." and a DNS
    timeout on the internal network), no kubelet "Pulling"/"ErrImagePull" event."""
    if cri == "docker":
        pulls = [e for e in node.image_events() if e.get("Action") == "pull"]
        assert not pulls, "Docker on %s pulled images: %s" % (node.name, pulls)
        dlog = node.sh_out(["journalctl", "--no-pager", "-u", "docker"], quiet=True)
        bad = [l for l in dlog.splitlines()
               if re.search(r"pull|registry-1|k8s\.gcr\.io/v2|quay\.io/v2|aliyuncs", l, re.I)]
    else:
        clog = node.sh_out(["journalctl", "--no-pager", "-u", "containerd"], quiet=True)
        bad = [l for l in clog.splitlines() if re.search(r"PullImage|fetch.*failed|resolv", l)]
    assert not bad, "the runtime on %s tried to pull:\n%s" % (node.name, "\n".join(bad[:20]))
    if node.exec(["test", "-f", "/etc/kubernetes/admin.conf"], check=False).returncode == 0:
        events = kubectl_json(node, "get", "events", "-A")["items"]
        pulling = ["%s: %s" % (e.get("reason"), e.get("message")) for e in events
                   if e.get("reason") in ("Pulling", "ErrImagePull", "ImagePullBackOff", "Failed")
                   and "pull" in (e.get("message") or "").lower()]
        assert not pulling, "kubelet tried to pull: %s" % pulling


# --------------------------------------------------------------------------- pod traffic

def web_pod(name, node_name):
    """A busybox httpd pod pinned to a node, answering its own name on port 8080."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, "k8so-lab": "web"}},
        "spec": {
            "nodeName": node_name,
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": TEST_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "mkdir -p /tmp/www && echo %s > /tmp/www/index.html && "
                            "exec httpd -f -p 8080 -h /tmp/www" % name],
                "ports": [{"containerPort": 8080}],
            }],
        },
    }


def service(name):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"k8so-lab": "web"}},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}


def apply(master, *objs):
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)})
    master.exec(KUBECTL + ["apply", "-f", "-"], input=doc)


def wait_pods_running(master, names, namespace="default"):
    """{pod name: pod IP} once every named pod is Running and ready with an IP."""
    def check():
        ps = pods(master, namespace)
        ok = {n: ps[n]["status"].get("podIP") for n in names
              if n in ps and pod_ready(ps[n]) and ps[n]["status"].get("podIP")}
        return ok if len(ok) == len(names) else None
    return wait_for("pods %s Running with an IP" % ", ".join(names), check, TIMEOUT_POD)


def fetch_from_pod(master, pod, url, want, timeout=60):
    """kubectl exec <pod> -- wget <url> until the answer is `want` (bounded). (Debian's static
    busybox 1.35 wget segfaults with -q -T, hence `timeout`.)"""
    def check():
        p = master.exec(KUBECTL + ["exec", pod, "--", "timeout", "5", "wget", "-q", "-O", "-", url],
                        check=False, quiet=True, timeout=30)
        return p.stdout.strip() == want and p.stdout.strip()
    return wait_for("%s to fetch %s (answer %r)" % (pod, url, want), check, timeout)


def nslookup(master, pod, name):
    """The addresses busybox nslookup in `pod` gets for `name` from the cluster DNS (CoreDNS)."""
    p = master.exec(KUBECTL + ["exec", pod, "--", "timeout", "10", "nslookup", name],
                    check=False, quiet=True, timeout=30)
    if p.returncode != 0:
        return None
    answer = p.stdout.split("Name:", 1)
    return sorted(set(re.findall(r"(?m)^Address:\s*([0-9.]+)\s*$", answer[1]))) if len(answer) == 2 else None


def check_dns(master, pod, service_name, cluster_ip):
    """Real CoreDNS across the nodes: `pod` (on the worker) resolves the API's Service name and a
    Service's name to their ClusterIPs, and reaches the Service by its short name."""
    api_ip = kubectl_json(master, "get", "service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    seen = {}
    for name, want in (("kubernetes.default.svc.cluster.local", api_ip),
                       ("%s.default.svc.cluster.local" % service_name, cluster_ip)):
        got = wait_for("%s to resolve %s to %s" % (pod, name, want),
                       lambda: nslookup(master, pod, name) == [want] and want, 90)
        seen["%s resolves %s" % (pod, name)] = got
    seen["%s -> http://%s/ (by name)" % (pod, service_name)] = fetch_from_pod(
        master, pod, "http://%s/" % service_name, service_name)
    log("cluster DNS: %s" % seen)
    return seen


def check_pod_traffic(master, a, b, with_service=True):
    """Pods on node a and node b reach each other by pod IP (vxlan across nodes), and a ClusterIP
    Service in front of the pod on a answers the pod on b (kube-proxy), by its ClusterIP and by
    its name through the cluster DNS (CoreDNS). Returns the pod IPs."""
    pa, pb = "web-%s" % a, "web-%s" % b
    objs = [web_pod(pa, a), web_pod(pb, b)] + ([service(pa)] if with_service else [])
    apply(master, *objs)
    ips = wait_pods_running(master, [pa, pb])
    for ip in ips.values():
        assert ip.startswith("10.244."), "pod IP %s is not in the pod network 10.244.0.0/16" % ip
    # flannel gives every node its own /24: different subnets mean the traffic crosses the vxlan
    assert ips[pa].rsplit(".", 1)[0] != ips[pb].rsplit(".", 1)[0], \
        "pods on %s and %s share a subnet: %s" % (a, b, ips)
    seen = {}
    seen["%s -> %s (%s)" % (pb, pa, ips[pa])] = fetch_from_pod(master, pb, "http://%s:8080/" % ips[pa], pa)
    seen["%s -> %s (%s)" % (pa, pb, ips[pb])] = fetch_from_pod(master, pa, "http://%s:8080/" % ips[pb], pb)
    if with_service:
        cip = kubectl_json(master, "get", "service", pa)["spec"]["clusterIP"]
        assert ipaddress.ip_address(cip) in ipaddress.ip_network(nodes_mod.SERVICE_CIDR), \
            "ClusterIP %s is not in the service network %s" % (cip, nodes_mod.SERVICE_CIDR)
        seen["%s -> service %s (%s)" % (pb, pa, cip)] = fetch_from_pod(master, pb, "http://%s/" % cip, pa)
        check_dns(master, pb, pa, cip)
    log("pod traffic: %s" % seen)
    return ips


def delete_test_pods(master):
    master.exec(KUBECTL + ["delete", "pods,services", "-l", "k8so-lab=web", "--wait=true",
                           "--timeout=60s"], check=False)
