"""The lab's current release (issue 19): Kubernetes v1.37.2 and every part a cluster of it needs,
built here from their Go modules (gobuild.py rows of gomod/builds.json), served from a registry and
a file server on 127.0.0.1 as registry.k8s.io, ghcr.io, dl.k8s.io and github.com serve them.

    python3 -m tests.e2e.current --prepare     # build (or reuse) the served images and files
    python3 -m tests.e2e.current --image       # the node image of the scenario (no runtime)

The versions follow the tool: the image tags are the ones the built kubeadm names (`kubeadm config
images list --kubernetes-version v1.37.2`), the CNI plugins, crictl, containerd, runc and flannel
the ones k8s_offline.py's release table names for 1.37 (version_facts); the lab refuses to serve a
build that disagrees (but for crictl and flannel's CNI plugin, see STAND-INS).

REAL, built from their modules: kubeadm, kubelet, kubectl, kube-apiserver, kube-controller-manager,
kube-scheduler, kube-proxy v1.37.2 (k8s.io/kubernetes, staging modules at v0.37.2); pause 3.10.2
(build/pause/linux/pause.c of that module, static); etcd + etcdctl 3.7.0 (go.etcd.io/etcd); CoreDNS
v1.14.6; containerd v2.3.4 (containerd, containerd-shim-runc-v2, ctr) and runc v1.4.3 in their
release layout; the CNI plugins v1.9.1 bridge/host-local/portmap/loopback; flanneld v0.28.9
(github.com/flannel-io/flannel); crictl when the proxy serves the version the tool names.

STAND-INS: flannel's CNI plugin image (ghcr.io/flannel-io/flannel-cni-plugin:<tag>) holds the
flannel CNI plugin of containernetworking/plugins v0.7.5 (the code flannel-io/cni-plugin was split
from; already built for the v1.16.0 lab): the Go module proxy here serves no version of
github.com/flannel-io/cni-plugin (403 for v1.9.1-flannel3, v1.9.1-flannel1, v1.9.0-flannel1, and
for its version list). The runc wrapper inside the nodes (see nodes.py, bare.py).

The node image: Debian 12 with the packages of the lab's usual node (nodes.NODE_PACKAGES) but no
container runtime (no docker.io, containerd, runc): `--with-containerd` brings containerd 2.x and
runc, as on a host that never had a runtime. It carries the lab's runc wrapper and containerd
drop-in as the bare node does (bare.py).
"""

import argparse
import hashlib
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

from . import bare, gobuild, netbuild, nodes, ociimage
from . import upstream as up
from .common import CACHE_DIR, cache_lock, log, out, require_tools, run, sha256_file, write_json

#: Bump when the images, the file layout or the checksums change (cheap: no Go build).
CURRENT_RECIPE = "1"
VERSION = "v1.37.2"
MINOR = VERSION.lstrip("v").rsplit(".", 1)[0]
ARCH = "amd64"
K8S_ROW = "kubernetes-" + VERSION
ETCD_ROW, COREDNS_ROW = "etcd-3.7.0", "coredns-1.14.6"
CNI_ROW, CONTAINERD_ROW, RUNC_ROW = "cni-plugins-v1.9.1", "containerd-v2.3.4", "runc-v1.4.3"
FLANNEL_ROW = "flannel-v0.28.9"
#: crictl rows by version: the one the tool names is built (the proxy serves these).
CRICTL_ROWS = {"v1.37.0": "cri-tools-v1.37.0", "v1.36.0": "cri-tools-v1.36.0"}
#: STAND-IN for flannel's CNI plugin: the flannel plugin of the CNI plugins v0.7.5 row.
FLANNEL_CNI_ROW = up.CNI_ROW
CNI_PLUGINS = ["bridge", "host-local", "portmap", "loopback"]
CONTAINERD_BINARIES = ["containerd", "containerd-shim-runc-v2", "ctr"]
NODE_TARBALL_BINARIES = ["kubeadm", "kubelet", "kubectl", "kube-proxy"]
#: Where the images live in the lab registry: the path under each registry host.
K8S_REGISTRY = "registry.k8s.io"
FLANNEL_REGISTRY = "ghcr.io"
#: The node image: the usual node's packages without a container runtime (and without scenario
#: cluster's sshd and sudo).
RUNTIMES = ("docker.io", "containerd", "runc")
NODE_INCLUDES = [p for p in nodes.NODE_PACKAGES if p not in RUNTIMES + ("openssh-server", "sudo")]


def tool_facts():
    """What k8s_offline.py's release table says for VERSION (RuntimeError if it does not know it:
    issue 19's bundle side not merged)."""
    tool = netbuild.tool_module()
    try:
        return tool.version_facts(VERSION)
    except Exception as exc:  # the tool's UserError: one line
        raise RuntimeError("k8s_offline.py cannot bundle Kubernetes %s (%s): the current scenario "
                           "needs issue 19's release table" % (VERSION, exc))


def names(facts):
    """The files the bundle downloads for VERSION, by what they are: (path under the file server)."""
    cni, crictl, ctrd, runc = facts["cni"], facts["crictl"], facts["containerd"], facts["runc"]
    cni_tgz = facts.get("cni_tarball", {}).get(ARCH) or "cni-plugins-linux-%s-%s.tgz" % (ARCH, cni)
    crictl_tgz = facts.get("crictl_tarball", {}).get(ARCH) or "crictl-%s-linux-%s.tar.gz" % (crictl, ARCH)
    ctrd_tgz = "containerd-%s-linux-%s.tar.gz" % (ctrd, ARCH)
    return {
        "dl": "dl.k8s.io/release/%s/bin/linux/%s" % (VERSION, ARCH),
        "node_tarball": "dl.k8s.io/%s/kubernetes-node-linux-%s.tar.gz" % (VERSION, ARCH),
        "cni": cni, "cni_tgz": cni_tgz,
        "cni_path": "github.com/containernetworking/plugins/releases/download/%s/%s" % (cni, cni_tgz),
        "crictl": crictl, "crictl_tgz": crictl_tgz,
        "crictl_path": "github.com/kubernetes-sigs/cri-tools/releases/download/%s/%s" % (crictl, crictl_tgz),
        "containerd": ctrd, "containerd_tgz": ctrd_tgz,
        "containerd_path": "github.com/containerd/containerd/releases/download/v%s/%s" % (ctrd, ctrd_tgz),
        "runc": runc,
        "runc_path": "github.com/opencontainers/runc/releases/download/v%s/runc.%s" % (runc, ARCH),
        "runc_sums_path": "github.com/opencontainers/runc/releases/download/v%s/runc.sha256sum" % runc,
        "flannel": facts["flannel"], "flannel_cni_plugin": facts["flannel_cni_plugin"],
    }


class Build(object):
    """One cached upstream of the current release (served images and files, by key)."""

    def __init__(self, key, rows):
        self.key = key
        self.rows = dict((r.name, r) for r in rows)
        self.root = CACHE_DIR / "current" / key
        self.bin = self.root / "bin"
        self.oci = self.root / "layouts"
        self.files = self.root / "files"
        self.registry = self.root / "registry"
        self.checksums = self.root / "SHA256SUMS"
        self.stamp = self.root / "complete.json"
        self.names = self.tags = self.crictl_row = None

    @property
    def complete(self):
        return self.stamp.exists()

    def binary(self, name, row=None):
        if row is not None:
            return self.rows[row].binary(name)
        if name == "pause":
            return self.bin / "pause"
        for r in self.rows.values():
            if r.name != FLANNEL_CNI_ROW and r.binary(name).is_file():
                return r.binary(name)
        raise KeyError(name)

    def images(self):
        """Every image the lab registry serves, as path:tag (the path under its registry host)."""
        return json.loads(self.stamp.read_text())["images"]

    def refs(self):
        """The images as the bundle names them (registry.k8s.io/..., ghcr.io/..., docker.io/...)."""
        return json.loads(self.stamp.read_text())["refs"]


def kubeadm_tags(kubeadm):
    """{image path under registry.k8s.io: tag} that the built kubeadm names for VERSION."""
    text = out([kubeadm, "config", "images", "list", "--kubernetes-version", VERSION], quiet=True)
    tags = {}
    for line in text.splitlines():
        ref = line.strip()
        if not ref.startswith(K8S_REGISTRY + "/"):
            raise RuntimeError("kubeadm %s names %s outside %s" % (VERSION, ref, K8S_REGISTRY))
        path, tag = ref[len(K8S_REGISTRY) + 1:].rsplit(":", 1)
        tags[path] = tag
    want = {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "pause",
            "etcd", "coredns/coredns"}
    if set(tags) != want:
        raise RuntimeError("kubeadm config images list names %s, want %s:\n%s" % (
            sorted(tags), sorted(want), text))
    return tags


def build_pause(build):
    """pause from kubernetes' own build/pause/linux/pause.c (k8s.io/kubernetes module), static,
    as build/pause/Makefile builds it (-Os -Wall -Werror -static -DVERSION=...)."""
    src = build.rows[K8S_ROW].module_dir() / "build" / "pause" / "linux" / "pause.c"
    build.bin.mkdir(parents=True, exist_ok=True)
    run(["gcc", "-Os", "-Wall", "-Werror", "-static",
         "-DVERSION=v%s-k8s-offline-lab" % build.tags["pause"], "-o", build.bin / "pause", src])
    run(["strip", build.bin / "pause"])


def image_specs(build):
    """[(path in the registry, tag, layer kwargs)] for every image the current lab serves."""
    labels = {"org.k8s-offline.lab": "built from its Go module by the k8s-offline air-gap lab"}
    tags, n = build.tags, build.names
    specs = []
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        layer = ociimage.Layer()
        layer.add_dir("tmp", 0o1777)
        layer.add_file("usr/local/bin/" + name, build.binary(name), 0o755)
        specs.append((name, tags[name], dict(layers=[layer], entrypoint=["/usr/local/bin/" + name],
                                             labels=labels)))
    layer = ociimage.Layer()
    for d in ("tmp", "run", "var/run"):
        layer.add_dir(d, 0o1777 if d == "tmp" else 0o755)
    layer.add_file("usr/local/bin/kube-proxy", build.binary("kube-proxy"), 0o755)
    up.add_iptables(layer)
    specs.append(("kube-proxy", tags["kube-proxy"], dict(
        layers=[layer], entrypoint=["/usr/local/bin/kube-proxy"], labels=labels)))
    layer = ociimage.Layer()
    layer.add_file("pause", build.binary("pause"), 0o755)
    specs.append(("pause", tags["pause"], dict(layers=[layer], entrypoint=["/pause"], labels=labels)))
    # etcd as upstream's image has it (/usr/local/bin/etcd, etcdctl); busybox sh for exec probes
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    up.add_busybox(layer, ["sh", "env", "ls", "cat"])
    layer.add_dir("var/lib/etcd", 0o700)
    layer.add_file("usr/local/bin/etcd", build.binary("etcd"), 0o755)
    layer.add_file("usr/local/bin/etcdctl", build.binary("etcdctl"), 0o755)
    specs.append(("etcd", tags["etcd"], dict(layers=[layer], entrypoint=["/usr/local/bin/etcd"],
                                             labels=labels)))
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    layer.add_file("coredns", build.binary("coredns"), 0o755)
    specs.append(("coredns/coredns", tags["coredns/coredns"], dict(
        layers=[layer], entrypoint=["/coredns"], labels=labels)))
    # flannel as its Dockerfile has it: /opt/bin/flanneld, iptables, cp (install-cni)
    layer = ociimage.Layer()
    for d in ("tmp", "run", "var/run", "etc/kube-flannel"):
        layer.add_dir(d, 0o1777 if d == "tmp" else 0o755)
    layer.add_file("opt/bin/flanneld", build.binary("flannel", row=FLANNEL_ROW), 0o755)
    layer.add_host_file_with_libs("/usr/bin/cp", "/bin/cp", 0o755)
    up.add_iptables(layer)
    specs.append(("flannel-io/flannel", n["flannel"], dict(
        layers=[layer], entrypoint=["/opt/bin/flanneld"], labels=labels)))
    # STAND-IN: flannel's CNI plugin image, /flannel and cp (its init container copies it)
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    up.add_busybox(layer, ["sh", "cp"])
    layer.add_file("flannel", build.binary("flannel", row=FLANNEL_CNI_ROW), 0o755)
    specs.append(("flannel-io/flannel-cni-plugin", n["flannel_cni_plugin"], dict(
        layers=[layer], cmd=["sh"], labels={up.STANDIN_LABEL: "flannel CNI plugin of "
                                            "containernetworking/plugins v0.7.5"})))
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    add = ["sh", "httpd", "wget", "nc", "sleep", "cat", "echo", "mkdir", "hostname", "ip", "ls",
           "ps", "nslookup", "timeout"]
    up.add_busybox(layer, add)
    specs.append((up.BUSYBOX_REPO, up.TEST_IMAGE.rsplit(":", 1)[1], dict(
        layers=[layer], cmd=["sh"], labels={"org.k8s-offline.lab": "test image: Debian's busybox-static"})))
    return specs


def _tgz(path, members):
    """members: [(name in the archive, source file)], owned by root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(str(path), "w:gz") as tar:
        for arcname, src in members:
            info = tar.gettarinfo(str(src), arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(str(src), "rb") as f:
                tar.addfile(info, f)


def build_files(build):
    """dl.k8s.io's and github.com's layout of what the bundle downloads, each with the checksum
    file its publisher puts beside it, and the lab's checksum file (sha256; sha512 of the node
    tarball)."""
    n = build.names
    if build.files.exists():
        shutil.rmtree(str(build.files))
    sums = []
    dl = build.files / n["dl"]
    dl.mkdir(parents=True)
    for b in ("kubeadm", "kubelet", "kubectl"):
        shutil.copy2(str(build.binary(b)), str(dl / b))
        digest = sha256_file(dl / b)
        (dl / (b + ".sha256")).write_text(digest)
        sums.append((digest, b))
    node = build.files / n["node_tarball"]
    _tgz(node, [("kubernetes/node/bin/" + b, build.binary(b)) for b in NODE_TARBALL_BINARIES])
    h = hashlib.sha512()
    with open(str(node), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    sums.append((h.hexdigest(), node.name))
    archives = [
        (n["cni_path"], [("./" + p, build.binary(p, row=CNI_ROW)) for p in CNI_PLUGINS]),
        (n["crictl_path"], [("crictl", build.binary("crictl", row=build.crictl_row))]),
        (n["containerd_path"], [("bin/" + b, build.binary(b, row=CONTAINERD_ROW))
                                for b in CONTAINERD_BINARIES]),
    ]
    for rel, members in archives:
        path = build.files / rel
        _tgz(path, members)
        digest = sha256_file(path)
        suffix = ".sha256sum" if rel == n["containerd_path"] else ".sha256"
        (path.parent / (path.name + suffix)).write_text("%s  %s\n" % (digest, path.name))
        sums.append((digest, path.name))
    runc = build.files / n["runc_path"]
    runc.parent.mkdir(parents=True)
    shutil.copyfile(str(build.binary("runc", row=RUNC_ROW)), str(runc))
    runc.chmod(0o755)
    digest = sha256_file(runc)
    (build.files / n["runc_sums_path"]).write_text("%s  %s\n" % (digest, runc.name))
    sums.append((digest, runc.name))
    build.checksums.write_text("".join("%s  %s\n" % s for s in sums))


def rows_for(facts):
    """The gobuild rows of the current release, checked against the versions the tool names."""
    n = names(facts)
    crictl_row = CRICTL_ROWS.get(n["crictl"], CRICTL_ROWS["v1.37.0"])
    wanted = {CNI_ROW: n["cni"], CONTAINERD_ROW: "v" + n["containerd"], RUNC_ROW: "v" + n["runc"],
              FLANNEL_ROW: n["flannel"]}
    table = dict((r.name, r) for r in gobuild.rows())
    for row, version in sorted(wanted.items()):
        if table[row].version != version:
            raise RuntimeError("k8s_offline.py bundles %s for %s but the lab builds %s (row %s of %s)"
                               % (version, VERSION, table[row].version, row, gobuild.TABLE))
    return [K8S_ROW, ETCD_ROW, COREDNS_ROW, CNI_ROW, crictl_row, CONTAINERD_ROW,
            RUNC_ROW, FLANNEL_ROW, FLANNEL_CNI_ROW], crictl_row


def serve_key(rows, facts):
    vers = out(["dpkg-query", "-W", "-f", "${Package}=${Version}\n"] + up.SERVE_HOST_PACKAGES, quiet=True)
    code = "".join(Path(m.__file__).read_text() for m in (sys.modules[__name__], up, ociimage))
    material = "\n".join([CURRENT_RECIPE, vers, code, json.dumps(names(facts), sort_keys=True)]
                         + ["%s=%s" % (r.name, r.key) for r in rows])
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def prepare(force=False):
    """Build (or reuse) the current release's served images and files; returns the Build."""
    with cache_lock():
        return _prepare(force)


def _prepare(force):
    require_tools(["gcc", "skopeo", "docker-registry", "ldd", "strip", "busybox", "dpkg-query"])
    t0 = time.monotonic()
    facts = tool_facts()
    row_names, crictl_row = rows_for(facts)
    rows = [gobuild.ensure(r) for r in row_names]
    build = Build(serve_key(rows, facts), rows)
    build.names, build.crictl_row = names(facts), crictl_row
    build.tags = kubeadm_tags(build.binary("kubeadm"))
    for path, row in (("coredns/coredns", COREDNS_ROW), ("etcd", ETCD_ROW)):
        ver = build.rows[row].version.lstrip("v")
        if build.tags[path].lstrip("v").split("-")[0] != ver:
            raise RuntimeError("kubeadm %s wants %s:%s but the lab builds %s (row %s of %s)" % (
                VERSION, path, build.tags[path], ver, row, gobuild.TABLE))
    if build.complete and not force:
        log("current upstream %s is cached (%s)" % (build.key, build.root))
        return build
    log("building the current release's served images and files in %s" % build.root)
    if build.root.exists():
        shutil.rmtree(str(build.root))
    build.root.mkdir(parents=True)
    build_pause(build)
    build_files(build)
    build.oci.mkdir()
    specs = image_specs(build)
    registry = up.Registry(build.registry, readonly=False)
    registry.start()
    try:
        for path, tag, kw in specs:
            layout = build.oci / ("%s_%s" % (path.replace("/", "_"), tag))
            ociimage.write_image_layout(layout, **kw)
            ociimage.push_layout(layout, "%s/%s:%s" % (registry.host, path, tag))
    finally:
        registry.stop()
    shutil.rmtree(str(build.oci))
    hosts = {"flannel-io/": FLANNEL_REGISTRY, up.BUSYBOX_REPO + ":": "docker.io"}

    def ref(path, tag):
        host = next((h for p, h in hosts.items() if (path + ":").startswith(p)), K8S_REGISTRY)
        return "%s/%s:%s" % (host, path, tag)
    write_json(build.stamp, {"key": build.key, "images": ["%s:%s" % (p, t) for p, t, _ in specs],
                             "refs": [ref(p, t) for p, t, _ in specs], "tags": build.tags,
                             "names": build.names, "rows": dict((r.name, r.key) for r in rows),
                             "seconds": round(time.monotonic() - t0)})
    log("current upstream %s done in %.0fs" % (build.key, time.monotonic() - t0))
    return build


class Upstream(up.Upstream):
    """The current release's registry and file server."""

    def bundle_args(self):
        """`bundle --kubernetes-version VERSION` with the lab's mirror flags only: every registry
        the bundle pulls from maps to the loopback registry, dl.k8s.io and github.com to the file
        server, and the lab's checksum file vouches for its own builds."""
        reg = self.registry.host
        args = ["--kubernetes-version", VERSION, "--arch", ARCH]
        for src in (K8S_REGISTRY, FLANNEL_REGISTRY, "docker.io"):
            args += ["--registry-mirror", "%s=%s" % (src, reg)]
        args += ["--insecure-registry", reg, "--extra-image", up.TEST_IMAGE]
        for host in ("dl.k8s.io", "github.com"):
            args += ["--file-mirror", "https://%s=%s/%s" % (host, self.files.url, host)]
        return args + ["--checksum-file", str(self.build.checksums)]

    def describe(self):
        return "\n".join([
            "current upstream %s (%s)" % (self.build.key, self.build.root),
            "  registry    %s  (images: %s)" % (self.registry.host, ", ".join(self.build.refs())),
            "  file server %s" % self.files.url,
        ] + ["  " + line for line in real_and_stand_ins(self.build)])


def real_and_stand_ins(build):
    """One line per part of the current release: REAL (built from what) or STAND-IN (why)."""
    mod = dict((r.name, "%s@%s, Go %s" % (r.module, r.version, r.row["go"])) for r in build.rows.values())
    n, tags = build.names, build.tags
    real = ["kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy "
            "%s (%s)" % (VERSION, mod[K8S_ROW]),
            "pause:%s (build/pause/linux/pause.c of k8s.io/kubernetes@%s)" % (tags["pause"], VERSION),
            "etcd:%s, etcd + etcdctl (%s)" % (tags["etcd"], mod[ETCD_ROW]),
            "coredns/coredns:%s (%s)" % (tags["coredns/coredns"], mod[COREDNS_ROW]),
            "%s: %s (%s)" % (n["cni_tgz"], " ".join(CNI_PLUGINS), mod[CNI_ROW]),
            "%s: %s (%s)" % (n["containerd_tgz"], " ".join(CONTAINERD_BINARIES),
                                        mod[CONTAINERD_ROW]),
            "runc.%s %s (%s)" % (ARCH, n["runc"], mod[RUNC_ROW]),
            "%s/flannel-io/flannel:%s (flanneld, %s; iptables + cp)" % (
                FLANNEL_REGISTRY, n["flannel"], mod[FLANNEL_ROW])]
    stand = ["%s/flannel-io/flannel-cni-plugin:%s: the flannel CNI plugin of %s (the proxy here "
             "serves no github.com/flannel-io/cni-plugin)" % (
                 FLANNEL_REGISTRY, n["flannel_cni_plugin"], mod[FLANNEL_CNI_ROW]),
             "runc inside the nodes: a wrapper that drops CAP_SYS_RESOURCE (this sandbox cannot "
             "grant it; bare.py)"]
    crictl_version = build.rows[build.crictl_row].version
    line = "%s: crictl %s (%s)" % (n["crictl_tgz"], crictl_version, mod[build.crictl_row])
    if crictl_version == n["crictl"]:
        real.append(line)
    else:
        stand.append(line + ": the proxy serves no %s" % n["crictl"])
    return ["REAL (current): " + r for r in real] + ["STAND-IN (current): " + s for s in stand]


#: LAB ONLY: the node's own cgroup as the root of every cgroup v1 hierarchy, before systemd starts.
#: Docker runs the node in the host's cgroup namespace and the lab bind-mounts the host's
#: /sys/fs/cgroup, so the node's systemd (PID 1, in /docker/<id>) makes kubepods.slice under
#: /docker/<id>/ while a kubelet with the systemd cgroup driver (Kubernetes 1.22+) looks for it at
#: the hierarchy's root ("cgroup [kubepods] has some missing paths:
#: /sys/fs/cgroup/systemd/kubepods.slice"; and, on the hybrid layout's cgroup2 hierarchy at
#: /sys/fs/cgroup/unified, runc's `exec` into a pod found no cgroup.procs under
#: /sys/fs/cgroup/unified/kubepods.slice/...). As kind's entrypoint does: bind the node's cgroup
#: over each hierarchy's root (cgroup and cgroup2), and the root again at /docker/<id> inside it, so both
#: the paths /proc/self/cgroup names and the root-relative ones lead to the node's own cgroup. On a
#: real host systemd is PID 1 at the root: nothing of this is the tool's.
CGROUP_ROOT_INIT = r"""#!/bin/sh
# k8s-offline AIR-GAP LAB ONLY (tests/e2e/current.py): the node's cgroup as the hierarchy root
own=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3}' /proc/self/cgroup)
if [ "$(stat -fc %T /sys/fs/cgroup)" = tmpfs ] && [ -n "$own" ] && [ "$own" != / ]; then
    for m in $(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts); do
        [ -d "$m$own" ] || continue
        mount --bind "$m$own" "$m"
        mkdir -p "$m$own"
        mount --bind "$m" "$m$own"
    done
fi
exec /sbin/init "$@"
"""


def ensure_node_image():
    """The current scenario's node image: the lab node's packages without a runtime, with the
    bare node's runc wrapper and containerd drop-in, and CGROUP_ROOT_INIT before systemd."""
    return bare.ensure_bare_image(NODE_INCLUDES, name="current", init=CGROUP_ROOT_INIT)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.current", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="build (or reuse) the served images/files")
    ap.add_argument("--force", action="store_true", help="rebuild the served images and files")
    ap.add_argument("--image", action="store_true", help="build (or reuse) the node image")
    args = ap.parse_args(argv)
    if not (args.prepare or args.image):
        ap.error("give --prepare and/or --image")
    if args.prepare:
        t0 = time.monotonic()
        build = prepare(force=args.force)
        log("current prepare took %.0fs" % (time.monotonic() - t0))
        print("\n".join(real_and_stand_ins(build)))
    if args.image:
        print(ensure_node_image())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
