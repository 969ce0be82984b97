"""Lab self-check, independent of k8s_offline.py: install the lab's own upstream build by hand in
two air-gapped nodes and run kubeadm init / join, to prove the nodes (runc wrapper, rshared /,
internal network, images from the lab registry) can run a real control plane.

    python3 -m tests.e2e.selfcheck [--keep]

Images reach the nodes the way an air-gapped host gets them: skopeo copies each one from the lab
registry into a docker-archive file, `docker cp` puts it in the node, `docker load` loads it.
"""

import argparse
import shutil
import json
import sys
import time

from . import nodes as nodes_mod
from . import upstream as up_mod
from .common import K8S_VERSION, WORK_DIR, log, run

POD_CIDR = "10.217.0.0/16"

KUBELET_SERVICE = """[Unit]
Description=kubelet (k8s-offline lab self-check)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

KUBEADM_DROPIN = """[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""

KUBEADM_CONFIG = """apiVersion: kubeadm.k8s.io/v1beta2
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: {ip}
---
apiVersion: kubeadm.k8s.io/v1beta2
kind: ClusterConfiguration
kubernetesVersion: {version}
networking:
  podSubnet: {cidr}
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 0
"""

KUBECTL = ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "--request-timeout", "20s"]


def export_images(upstream, dest):
    """docker-archive files of every served image, named as kubeadm/flannel expect them."""
    dest.mkdir(parents=True, exist_ok=True)
    images = upstream.build.kubeadm_images()
    archives = []
    for ref in images:
        name = ("quay.io/" if ref.startswith("coreos/") else "k8s.gcr.io/") + ref
        path = dest / (ref.replace("/", "_").replace(":", "_") + ".tar")
        if not path.exists():
            run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                 "docker://%s/%s" % (upstream.registry.host, ref),
                 "docker-archive:%s:%s" % (path, name)], capture=True)
        archives.append(path)
    return archives


def install_by_hand(node, upstream, archives):
    files = upstream.build.files
    node.exec(["mkdir", "-p", "/var/tmp/k8so-images", "/opt/cni/bin", "/etc/systemd/system/kubelet.service.d"])
    for a in archives:
        node.cp_in(str(a), "/var/tmp/k8so-images/")
        node.exec(["docker", "load", "-i", "/var/tmp/k8so-images/" + a.name])
        node.exec(["rm", "-f", "/var/tmp/k8so-images/" + a.name])
    for b in up_mod.DL_BINARIES:
        node.cp_in(str(files / up_mod.DL_PATH / b), "/usr/bin/" + b)
    node.cp_in(str(files / upstream.build.names["cni_path"]), "/var/tmp/cni.tgz")
    node.exec(["tar", "-C", "/opt/cni/bin", "-xzf", "/var/tmp/cni.tgz"])
    node.exec(["sh", "-c", "cat >/lib/systemd/system/kubelet.service"], input=KUBELET_SERVICE)
    node.exec(["sh", "-c", "cat >/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"],
              input=KUBEADM_DROPIN)
    node.exec(["systemctl", "daemon-reload"])
    node.exec(["systemctl", "enable", "kubelet"])


def wait_pods(node, names, timeout=240, namespace="kube-system"):
    """Wait until, for each name prefix, some pod whose name starts with it is Running."""
    deadline = time.monotonic() + timeout
    phases = {}
    while time.monotonic() < deadline:
        p = node.exec(KUBECTL + ["get", "pods", "-n", namespace, "-o", "json"], check=False, quiet=True)
        if p.returncode == 0:
            items = json.loads(p.stdout)["items"]
            phases = {}
            for it in items:
                for n in names:
                    if it["metadata"]["name"].startswith(n):
                        phases.setdefault(n, []).append(it["status"].get("phase"))
            if all("Running" in phases.get(n, []) for n in names):
                return phases
        time.sleep(2)
    raise AssertionError("pods not Running within %ds: %s" % (timeout, phases))


def selfcheck(keep=False):
    t_all = time.monotonic()
    build = up_mod.prepare()
    image = nodes_mod.ensure_node_image()
    workdir = WORK_DIR / ("selfcheck-%d" % int(time.time()))
    workdir.mkdir(parents=True)
    upstream = up_mod.Upstream(build, logdir=workdir).start()
    lab = nodes_mod.Lab(workdir, image)
    timings = {}
    try:
        print(upstream.describe())
        archives = export_images(upstream, workdir / "images")
        lab.create_network()
        t0 = time.monotonic()
        n1 = lab.add_node("node1")
        n2 = lab.add_node("node2")
        n1.wait_booted()
        n2.wait_booted()
        timings["node boot (2 nodes)"] = time.monotonic() - t0
        for n in (n1, n2):
            n.start_event_watch()
            install_by_hand(n, upstream, archives)
        n1.exec(["sh", "-c", "cat >/root/kubeadm.yaml"], input=KUBEADM_CONFIG.format(
            ip=n1.ip(), version=K8S_VERSION, cidr=POD_CIDR))
        t0 = time.monotonic()
        p = n1.exec(["kubeadm", "init", "--config", "/root/kubeadm.yaml"], check=False, timeout=600)
        timings["kubeadm init"] = time.monotonic() - t0
        (workdir / "kubeadm-init.log").write_text(p.stdout + p.stderr)
        print(p.stdout[-3000:], p.stderr[-3000:])
        if p.returncode != 0:
            raise AssertionError("kubeadm init failed (rc %d)" % p.returncode)
        wait_pods(n1, ["etcd-", "kube-apiserver-", "kube-controller-manager-", "kube-scheduler-",
                       "kube-proxy-"])
        timings["control plane + kube-proxy Running"] = time.monotonic() - t0
        join = n1.sh_out(["kubeadm", "token", "create", "--print-join-command"])
        t0 = time.monotonic()
        p = n2.exec(join.split(), check=False, timeout=600)
        timings["kubeadm join"] = time.monotonic() - t0
        (workdir / "kubeadm-join.log").write_text(p.stdout + p.stderr)
        if p.returncode != 0:
            print(p.stdout[-3000:], p.stderr[-3000:])
            raise AssertionError("kubeadm join failed (rc %d)" % p.returncode)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            nodes = json.loads(n1.sh_out(KUBECTL + ["get", "nodes", "-o", "json"], quiet=True))["items"]
            proxies = [it for it in json.loads(n1.sh_out(
                KUBECTL + ["get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "-o", "json"],
                quiet=True))["items"] if it["status"].get("phase") == "Running"]
            if len(nodes) == 2 and len(proxies) == 2:
                break
            time.sleep(2)
        else:
            raise AssertionError("second node / kube-proxy not up: %d nodes, %d kube-proxy Running"
                                 % (len(nodes), len(proxies)))
        timings["node2 registered + kube-proxy Running on both"] = time.monotonic() - t0
        pulls = [e for n in (n1, n2) for e in n.image_events() if e.get("Action") == "pull"]
        if pulls:
            raise AssertionError("image pulls attempted in an air-gapped node: %s" % pulls)
        print(n1.sh_out(KUBECTL + ["get", "nodes,pods", "-A", "-o", "wide"]))
        timings["total"] = time.monotonic() - t_all
        for k, v in timings.items():
            log("TIMING %-45s %6.1fs" % (k, v))
        log("SELF-CHECK PASSED")
        if keep:
            log("--keep: nodes left running: %s (remove with python3 -m tests.e2e.nodes --reap "
                "after this process ends)" % ", ".join(lab.containers))
            lab = None
    finally:
        if lab is not None:
            lab.stop()
        upstream.stop()
        shutil.rmtree(str(workdir / "images"), ignore_errors=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.selfcheck")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    return selfcheck(args.keep)


if __name__ == "__main__":
    sys.exit(main())
