"""The lab's stand-in for the internet: real Kubernetes v1.16.0 and its parts, built here from their
Go modules (tests/e2e/gobuild.py, one table: tests/e2e/gomod/builds.json), served from a real
registry and a file server on 127.0.0.1.

    python3 -m tests.e2e.upstream --prepare     # the slow cold build (cached; a warm run is quick)
    python3 -m tests.e2e.upstream --serve       # prepare, then serve until Ctrl-C, printing the flags

Build outputs live under $K8SO_LAB_CACHE (default /var/cache/k8s-offline-lab): each Go build under
go/bin/<row>-<key> (key: its go.sum, the row, the toolchain), the served images and files under
upstream/<key>, keyed by those build keys, the flannel build, the recipe and the host packages the
images copy. A warm run builds nothing.

What is real and what is a stand-in (printed by describe() and in every run's summary):
- REAL, built from their modules: kubeadm, kubelet, kubectl, kube-apiserver, kube-controller-manager,
  kube-scheduler, kube-proxy v1.16.0 (k8s.io/kubernetes), CoreDNS 1.6.2 (github.com/coredns/coredns),
  etcd + etcdctl 3.3.15 (github.com/coreos/etcd), the CNI plugins v0.7.5 flannel/bridge/host-local/
  portmap/loopback (github.com/containernetworking/plugins), pause 3.1 (pause.c of k8s.io/kubernetes
  v1.16.0); flanneld v0.11.0 from its release source (netbuild.py); the test image (Debian's
  busybox-static).
- STAND-IN: crictl. The Go module proxy here serves cri-tools v1.34.0 and v1.37.0 only, not the
  v1.16.1 the tool bundles for 1.16: the real crictl v1.34.0 is served under v1.16.1's name.
  Without the flannel source (K8SO_LAB_UPSTREAM_SRC), flannel falls back to a placeholder and the
  lab says so loudly.

The registry serves kubeadm's images at the root (k8s.gcr.io's layout) and again under
google_containers/ (registry.aliyuncs.com's layout, for the seed's --image-repository); flannel as a
schema1 manifest, as quay.io served v0.11.0.
"""

import argparse
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

from . import gobuild, netbuild, ociimage
from .common import (CACHE_DIR, K8S_VERSION, cache_lock, free_port, log, out, require_tools, run,
                     sha256_file, write_json)

#: Bump when the images, the file layout or the checksums change (cheap: no Go build).
SERVE_RECIPE = "4"

ARCH = "amd64"
#: The rows of gomod/builds.json that make the lab's Kubernetes, and what each gives.
K8S_ROWS = ["kubernetes-" + K8S_VERSION, "kube-apiserver-" + K8S_VERSION, "kubelet-" + K8S_VERSION]
COREDNS_ROW = "coredns-1.6.2"
ETCD_ROW = "etcd-3.3.15"
CNI_ROW = "cni-plugins-v0.7.5"
CRICTL_ROW = "cri-tools-v1.34.0"
#: The pause image kubeadm v1.16.0 names (checked against the built kubeadm in prepare()).
PAUSE_TAG = "3.1"
K8S_BINARIES = ["kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager",
                "kube-scheduler", "kube-proxy"]
DL_BINARIES = ["kubeadm", "kubelet", "kubectl"]
NODE_TARBALL_BINARIES = ["kubeadm", "kubelet", "kubectl", "kube-proxy"]
CNI_PLUGINS = ["flannel", "bridge", "host-local", "portmap", "loopback"]
FLANNEL_REPO = "coreos/flannel"
#: Where registry.aliyuncs.com keeps kubeadm's images (the seed's --image-repository).
ALIYUN_HOST = "registry.aliyuncs.com"
ALIYUN_PREFIX = "google_containers"
SEED_IMAGE_REPOSITORY = ALIYUN_HOST + "/" + ALIYUN_PREFIX
#: The test pods' image: Debian's busybox-static, shipped through `bundle --extra-image`.
BUSYBOX_REPO = "library/busybox"
TEST_IMAGE = "docker.io/%s:1.35.0" % BUSYBOX_REPO
BUSYBOX = "/bin/busybox"
DL_PATH = "dl.k8s.io/release/%s/bin/linux/%s" % (K8S_VERSION, ARCH)
NODE_TARBALL = "kubernetes-node-linux-%s.tar.gz" % ARCH
NODE_TARBALL_PATH = "dl.k8s.io/%s/%s" % (K8S_VERSION, NODE_TARBALL)

#: Host packages the served images copy from (part of the serve key). Go itself: gobuild's table.
SERVE_HOST_PACKAGES = ["busybox-static", "coreutils", "iptables", "conntrack", "libc6-dev", "gcc"]
PLACEHOLDER_LABEL = "org.k8s-offline.lab.placeholder"
STANDIN_LABEL = "org.k8s-offline.lab.stand-in"


def tool_facts():
    """What k8s_offline.py's own release table says for K8S_VERSION (cni, crictl, flannel, ...)."""
    return netbuild.tool_module().version_facts(K8S_VERSION)


def _names(facts):
    cni, crictl = facts["cni"], facts["crictl"]
    cni_tgz = facts["cni_tarball"][ARCH]
    crictl_tgz = facts["crictl_tarball"][ARCH]
    return {
        "cni": cni, "cni_tgz": cni_tgz,
        "cni_path": "github.com/containernetworking/plugins/releases/download/%s/%s" % (cni, cni_tgz),
        "crictl": crictl, "crictl_tgz": crictl_tgz,
        "crictl_path": "github.com/kubernetes-sigs/cri-tools/releases/download/%s/%s" % (
            crictl, crictl_tgz),
    }


PLACEHOLDER_C = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void bye(int s) { (void)s; _exit(0); }
int main(int argc, char **argv) {
    const char *b = strrchr(argv[0], '/');
    int is_cp;
    (void)argc;
    b = b ? b + 1 : argv[0];
    is_cp = strcmp(b, "cp") == 0;
    fprintf(stderr, "k8s-offline-lab PLACEHOLDER image %s: the real image cannot be built offline; "
            "'%s' does nothing here%s\n", IMAGE, b, is_cp ? " and exits 0" : " but sleep");
    if (is_cp) return 0;
    signal(SIGTERM, bye);
    signal(SIGINT, bye);
    for (;;) pause();
}
"""


# --------------------------------------------------------------------------- build

def serve_key(rows, net):
    """Key of the served images and files: recipe, Go builds, flannel build, host packages."""
    vers = out(["dpkg-query", "-W", "-f", "${Package}=${Version}\n"] + SERVE_HOST_PACKAGES, quiet=True)
    # this module and ociimage.py write the images: any change to them is a new serve key
    code = "".join(Path(m.__file__).read_text() for m in (sys.modules[__name__], ociimage))
    material = "\n".join([SERVE_RECIPE, net.key or "placeholder-network", vers, code]
                         + ["%s=%s" % (r.name, r.key) for r in rows])
    return hashlib.sha256(material.encode()).hexdigest()[:12]


class Build(object):
    """Paths of one cached upstream (the served images and files, by serve key), the Go builds it
    serves (rows by name) and the flannel build (net.real False: placeholder)."""

    def __init__(self, key, rows, net):
        self.key = key
        self.rows = dict((r.name, r) for r in rows)
        self.net = net
        self.root = CACHE_DIR / "upstream" / key
        self.bin = self.root / "bin"
        self.oci = self.root / "layouts"
        self.files = self.root / "files"
        self.registry = self.root / "registry"
        self.checksums = self.root / "SHA256SUMS"
        self.stamp = self.root / "complete.json"

    @property
    def complete(self):
        return self.stamp.exists()

    def binary(self, name):
        """A built binary by name: pause is the lab's, every other one comes from a gobuild row."""
        if name == "pause":
            return self.bin / "pause"
        for row in self.rows.values():
            if row.binary(name).is_file():
                return row.binary(name)
        raise KeyError(name)

    def images(self):
        """Every image the lab registry serves, as repo:tag (aliases included)."""
        return json.loads(self.stamp.read_text())["images"]

    def kubeadm_images(self):
        """The images kubeadm and the flannel manifest name, at their k8s.gcr.io / quay.io paths."""
        return [r for r in self.images() if not r.startswith((ALIYUN_PREFIX + "/", BUSYBOX_REPO + ":"))]

    @property
    def real_network(self):
        return self.net is not None and self.net.real


def _download(url, dest, sha):
    if dest.exists() and sha256_file(dest) == sha:
        return
    log("fetching %s" % url)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=120) as resp, open(str(tmp), "wb") as f:
        shutil.copyfileobj(resp, f, 1 << 20)
    if sha256_file(tmp) != sha:
        raise RuntimeError("checksum mismatch for %s" % url)
    tmp.rename(dest)


def build_pause(build, k8s_row):
    """pause from kubernetes' own build/pause/pause.c (in the k8s.io/kubernetes module), static."""
    src = k8s_row.module_dir() / "build" / "pause" / "pause.c"
    build.bin.mkdir(parents=True, exist_ok=True)
    run(["gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v%s-k8s-offline-lab" % build.pause_tag,
         "-o", build.bin / "pause", src])
    run(["strip", build.bin / "pause"])


def kubeadm_image_tags(kubeadm):
    """{image name: tag} that the built kubeadm itself names for K8S_VERSION."""
    text = out([kubeadm, "config", "images", "list", "--kubernetes-version", K8S_VERSION], quiet=True)
    tags = {}
    for line in text.splitlines():
        ref = line.strip().rsplit("/", 1)[-1]
        if ":" in ref:
            name, tag = ref.split(":", 1)
            tags[name] = tag
    want = {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "pause",
            "etcd", "coredns"}
    if set(tags) != want:
        raise RuntimeError("kubeadm config images list names %s, want %s:\n%s" % (
            sorted(tags), sorted(want), text))
    return tags


def build_placeholder(build, image_name):
    path = build.bin / ("placeholder-" + image_name.replace("/", "-"))
    csrc = build.root / "placeholder.c"
    csrc.write_text(PLACEHOLDER_C)
    run(["gcc", "-Os", "-static", '-DIMAGE="%s"' % image_name, "-o", path, csrc])
    run(["strip", path])
    return path


def add_iptables(layer):
    """iptables (nft flavour, as on Debian 12 nodes, and legacy) and conntrack, with their libs."""
    for tool in ("/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi", "/usr/sbin/conntrack"):
        layer.add_host_file_with_libs(tool)
    xt = Path("/usr/lib/x86_64-linux-gnu/xtables")
    for so in sorted(xt.glob("*.so")):
        layer.add_host_file_with_libs(str(so))
    for fam in ("iptables", "ip6tables"):
        for suffix in ("", "-save", "-restore"):
            layer.add_symlink("usr/sbin/%s%s" % (fam, suffix), "xtables-nft-multi")
            layer.add_symlink("usr/sbin/%s-nft%s" % (fam, suffix), "xtables-nft-multi")
            layer.add_symlink("usr/sbin/%s-legacy%s" % (fam, suffix), "xtables-legacy-multi")


def add_busybox(layer, applets):
    """Debian's static busybox at /bin/busybox with symlinks for the applets named."""
    layer.add_file(BUSYBOX, BUSYBOX, 0o755)
    for applet in applets:
        layer.add_symlink("bin/" + applet, "busybox")


def image_specs(build):
    """[(repo paths in the registry, tag, layers kwargs, schema1)] for every image the lab serves.
    kubeadm's images are pushed at the root and under google_containers/ (aliyun's layout)."""
    labels = {"org.k8s-offline.lab": "built from its Go module by the k8s-offline air-gap lab"}
    tags = build.tags
    specs = []

    def kubeadm_image(name, kw):
        specs.append(([name, ALIYUN_PREFIX + "/" + name], tags[name], kw, False))

    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        layer = ociimage.Layer()
        layer.add_dir("tmp", 0o1777)
        layer.add_file("usr/local/bin/" + name, build.binary(name), 0o755)
        kubeadm_image(name, dict(layers=[layer], entrypoint=["/usr/local/bin/" + name], labels=labels))
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    layer.add_dir("run", 0o755)
    layer.add_dir("var/run", 0o755)
    layer.add_file("usr/local/bin/kube-proxy", build.binary("kube-proxy"), 0o755)
    add_iptables(layer)
    kubeadm_image("kube-proxy", dict(layers=[layer], entrypoint=["/usr/local/bin/kube-proxy"],
                                     labels=labels))
    layer = ociimage.Layer()
    layer.add_file("pause", build.binary("pause"), 0o755)
    kubeadm_image("pause", dict(layers=[layer], entrypoint=["/pause"], labels=labels))
    # etcd as upstream's image has it: etcd and etcdctl in /usr/local/bin (static builds) on a
    # busybox base (k8s.gcr.io/etcd:3.3.15-0 is FROM busybox: sh, env for ETCDCTL_API=3)
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    add_busybox(layer, ["sh", "env", "ls", "cat"])
    layer.add_dir("var/lib/etcd", 0o700)
    layer.add_file("usr/local/bin/etcd", build.binary("etcd"), 0o755)
    layer.add_file("usr/local/bin/etcdctl", build.binary("etcdctl"), 0o755)
    kubeadm_image("etcd", dict(layers=[layer], entrypoint=["/usr/local/bin/etcd"], labels=labels))
    # CoreDNS as upstream's image has it: /coredns (static), entrypoint /coredns
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    layer.add_file("coredns", build.binary("coredns"), 0o755)
    kubeadm_image("coredns", dict(layers=[layer], entrypoint=["/coredns"], labels=labels))

    flannel_tag = "%s-%s" % (build.net.flannel_version, ARCH)
    # quay.io served flannel v0.11.0 as a schema1 manifest: so does the lab (later tags: schema2)
    schema1 = build.net.flannel_version in ("v0.11.0",)
    if build.real_network:
        layer = ociimage.Layer()
        for d in ("tmp", "run", "var/run", "etc/kube-flannel"):
            layer.add_dir(d, 0o1777 if d == "tmp" else 0o755)
        layer.add_host_file_with_libs(str(build.net.flanneld), "/opt/bin/flanneld", 0o755)
        layer.add_host_file_with_libs("/usr/bin/cp", "/bin/cp", 0o755)
        add_iptables(layer)
        specs.append(([FLANNEL_REPO], flannel_tag, dict(
            layers=[layer], entrypoint=["/opt/bin/flanneld"],
            labels={"org.k8s-offline.lab": "flanneld %s built from its release source by the "
                    "k8s-offline air-gap lab" % build.net.flannel_version}), schema1))
    else:
        ref = "%s:%s" % (FLANNEL_REPO, flannel_tag)
        prog = build_placeholder(build, ref)
        layer = ociimage.Layer()
        layer.add_file("k8s-offline-lab-placeholder", prog, 0o755)
        for path in ("opt/bin/flanneld", "bin/cp"):
            layer.add_symlink(path, "/k8s-offline-lab-placeholder")
        layer.add_bytes("PLACEHOLDER.txt", "k8s-offline-lab placeholder for %s: not buildable offline\n" % ref)
        specs.append(([FLANNEL_REPO], flannel_tag, dict(layers=[layer], entrypoint=["/opt/bin/flanneld"],
                                                        labels={PLACEHOLDER_LABEL: ref}), schema1))

    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    add_busybox(layer, ["sh", "httpd", "wget", "nc", "sleep", "cat", "echo", "mkdir", "hostname",
                        "ip", "ls", "ps", "nslookup", "timeout"])
    specs.append(([BUSYBOX_REPO], TEST_IMAGE.rsplit(":", 1)[1], dict(
        layers=[layer], cmd=["sh"], labels={"org.k8s-offline.lab": "test image: Debian's busybox-static"}),
        False))
    return specs


def build_files(build):
    """Lay out the binaries, the node tarball, the CNI and crictl archives like dl.k8s.io /
    github.com, with a checksum file (sha256 of each, sha512 of the node tarball)."""
    names = build.names
    if build.files.exists():
        shutil.rmtree(str(build.files))
    dl = build.files / DL_PATH
    dl.mkdir(parents=True)
    sums = []
    for b in DL_BINARIES:
        shutil.copy2(str(build.binary(b)), str(dl / b))
        digest = sha256_file(dl / b)
        (dl / (b + ".sha256")).write_text(digest)
        sums.append((digest, b))
    # the release's node tarball (kubernetes/node/bin/...), which the tool prefers for v1.16.0:
    # its sha512 is what the release notes publish, here the lab's checksum file
    node = build.files / NODE_TARBALL_PATH
    node.parent.mkdir(parents=True)
    _write_tgz(node, [("kubernetes/node/bin/" + b, str(build.binary(b)), None)
                      for b in NODE_TARBALL_BINARIES])
    h = hashlib.sha512()
    with open(str(node), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    sums.append((h.hexdigest(), NODE_TARBALL))
    cni = build.files / names["cni_path"]
    cni.parent.mkdir(parents=True)
    _write_tgz(cni, [("./" + p, str(build.binary(p)), None) for p in CNI_PLUGINS])
    sums.append((sha256_file(cni), names["cni_tgz"]))
    crictl = build.files / names["crictl_path"]
    crictl.parent.mkdir(parents=True)
    _write_tgz(crictl, [("crictl", str(build.binary("crictl")), None)])
    sums.append((sha256_file(crictl), names["crictl_tgz"]))
    build.checksums.write_text("".join("%s  %s\n" % s for s in sums))


def _write_tgz(path, members):
    with tarfile.open(str(path), "w:gz") as tar:
        for arcname, src, text in members:
            if src is not None:
                info = tar.gettarinfo(src, arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                with open(src, "rb") as f:
                    tar.addfile(info, f)
            else:
                data = text.encode()
                info = tarfile.TarInfo(arcname)
                info.size = len(data)
                info.mode = 0o755
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))


def prepare(force=False):
    """Make sure the cached upstream exists; return its Build.

    Holds an exclusive lock on the cache while it works, so concurrent lab runs wait for one build.
    """
    with cache_lock():
        return _prepare(force)


def _prepare(force):
    require_tools(["gcc", "skopeo", "docker-registry", "ldd", "strip", "busybox", "dpkg-query"])
    t0 = time.monotonic()
    facts = tool_facts()
    names = _names(facts)
    row_names = K8S_ROWS + [COREDNS_ROW, ETCD_ROW, CNI_ROW, CRICTL_ROW]
    rows = [gobuild.ensure(n) for n in row_names]
    net = netbuild.prepare()
    if net.flannel_version is None:
        raise RuntimeError("k8s_offline.py names no flannel version for %s" % K8S_VERSION)
    cni_row = [r for r in rows if r.name == CNI_ROW][0]
    if cni_row.version != names["cni"]:
        raise RuntimeError("k8s_offline.py bundles CNI plugins %s for %s but the lab builds %s "
                           "(row %s of %s)" % (names["cni"], K8S_VERSION, cni_row.version, CNI_ROW,
                                               gobuild.TABLE))
    key = serve_key(rows, net)
    build = Build(key, rows, net)
    build.names = names
    build.tags = kubeadm_image_tags(build.binary("kubeadm"))
    for name, row in (("coredns", COREDNS_ROW), ("etcd", ETCD_ROW)):
        ver = build.rows[row].version.lstrip("v").split("+")[0]
        if build.tags[name].split("-")[0] != ver:
            raise RuntimeError("kubeadm %s wants %s:%s but the lab builds %s (row %s of %s)" % (
                K8S_VERSION, name, build.tags[name], ver, row, gobuild.TABLE))
    if build.tags["pause"] != PAUSE_TAG:
        raise RuntimeError("kubeadm %s wants pause:%s, the lab says %s (upstream.PAUSE_TAG)" % (
            K8S_VERSION, build.tags["pause"], PAUSE_TAG))
    build.pause_tag = PAUSE_TAG
    if build.complete and not force:
        log("upstream %s is cached (%s)" % (key, build.root))
        return build
    log("building the served images and files in %s" % build.root)
    if build.root.exists():
        shutil.rmtree(str(build.root))
    build.root.mkdir(parents=True)
    build_pause(build, build.rows[K8S_ROWS[0]])
    build_files(build)
    build.oci.mkdir()
    specs = image_specs(build)
    registry = Registry(build.registry, readonly=False)
    registry.start()
    try:
        for repos, tag, kw, schema1 in specs:
            layout = build.oci / ("%s_%s" % (repos[0].replace("/", "_"), tag))
            ociimage.write_image_layout(layout, **kw)
            for repo in repos:
                ociimage.push_layout(layout, "%s/%s:%s" % (registry.host, repo, tag), schema1=schema1)
    finally:
        registry.stop()
    shutil.rmtree(str(build.oci))
    write_json(build.stamp, {"key": key, "images": ["%s:%s" % (r, t) for rs, t, _, _ in specs for r in rs],
                             "real_network": build.real_network, "tags": build.tags,
                             "rows": dict((r.name, r.key) for r in rows),
                             "seconds": round(time.monotonic() - t0)})
    log("upstream %s done in %.0fs" % (key, time.monotonic() - t0))
    return build


# --------------------------------------------------------------------------- servers

class Registry(object):
    """The distribution registry (docker-registry) on 127.0.0.1:<free port>."""

    def __init__(self, storage, readonly=True, logfile=None):
        self.storage = Path(storage)
        self.readonly = readonly
        self.proc = None
        self.port = None
        self.logfile = logfile

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self.storage.mkdir(parents=True, exist_ok=True)
        last = None
        # A port picked by free_port() can be taken by another process before the registry binds
        # it; the registry then exits at once with "address already in use" and we pick again.
        for _ in range(5):
            self.port = free_port()
            conf = self.storage.parent / ("registry-%d.yml" % self.port)
            conf.write_text(json.dumps({
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                            "maintenance": {"uploadpurging": {"enabled": False},
                                            "readonly": {"enabled": self.readonly}}},
                "http": {"addr": self.host},
                # accept and serve the schema1 manifest the lab pushes for flannel (as quay.io did)
                "compatibility": {"schema1": {"enabled": True}},
            }))
            logf = open(str(self.logfile or os.devnull), "ab")
            self.proc = subprocess.Popen(["docker-registry", "serve", str(conf)],
                                         stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            logf.close()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen("http://%s/v2/" % self.host, timeout=2) as r:
                        if r.status == 200:
                            conf.unlink()
                            log("registry serving %s on %s (pid %d)" % (self.storage, self.host,
                                                                          self.proc.pid))
                            return self
                except OSError as exc:
                    last = exc
                    time.sleep(0.2)
            self.stop()
            conf.unlink()
        raise RuntimeError("registry did not start: %s" % last)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests_log = None

    def log_message(self, fmt, *args):
        if self.requests_log is not None:
            self.requests_log.append(fmt % args)


class FileServer(object):
    """A threaded HTTP file server on 127.0.0.1:<ephemeral port> serving a directory."""

    def __init__(self, root):
        self.root = Path(root)
        self.httpd = None
        self.thread = None
        self.requests = []

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def start(self):
        # a handler class of its own, so that two servers keep apart request logs
        own = type("_FileServerHandler", (_QuietHandler,), {"requests_log": self.requests})
        handler = functools.partial(own, directory=str(self.root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="k8so-lab-files",
                                       daemon=True)
        self.thread.start()
        log("file server serving %s on %s" % (self.root, self.url))
        return self

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(10)
        self.httpd = None


class Upstream(object):
    """A prepared build plus its running registry and file server."""

    def __init__(self, build, logdir=None):
        self.build = build
        self.registry = Registry(build.registry, readonly=True,
                                 logfile=(Path(logdir) / "registry.log") if logdir else None)
        self.files = FileServer(build.files)

    def start(self):
        self.registry.start()
        self.files.start()
        return self

    def stop(self):
        self.files.stop()
        self.registry.stop()

    def bundle_args(self, image_repository=None, kubernetes_version=False):
        """The `k8s_offline.py bundle` flags that point it at this upstream: every registry the
        bundle pulls from (registry.aliyuncs.com and docker.io included) maps to the lab's
        loopback registry, so nothing reaches a real host. With the seed's image repository,
        kubeadm's images come from google_containers/ as they would from aliyun. Without
        kubernetes_version no --kubernetes-version is given (the seed's bundle: the tool's
        default, which is the lab's K8S_VERSION)."""
        reg = self.registry.host
        args = ["--arch", ARCH]
        if kubernetes_version:
            args = ["--kubernetes-version", K8S_VERSION] + args
        if image_repository:
            args += ["--image-repository", image_repository]
        for src in ("registry.k8s.io", "k8s.gcr.io", "quay.io", ALIYUN_HOST, "docker.io"):
            args += ["--registry-mirror", "%s=%s" % (src, reg)]
        args += ["--insecure-registry", reg, "--extra-image", TEST_IMAGE]
        for host in ("dl.k8s.io", "github.com"):
            args += ["--file-mirror", "https://%s=%s/%s" % (host, self.files.url, host)]
        args += ["--checksum-file", str(self.build.checksums)]
        return args

    def describe(self):
        return "\n".join([
            "upstream %s (%s)" % (self.build.key, self.build.root),
            "  registry    %s  (images: %s)" % (
                self.registry.host, ", ".join(self.build.images())),
            "  file server %s  (dl.k8s.io/..., github.com/...)" % self.files.url,
            "  checksums   %s" % self.build.checksums,
        ] + ["  " + line for line in real_and_stand_ins(self.build)])


def real_and_stand_ins(build):
    """One line per part the lab serves: REAL (what it is built from) or STAND-IN (and why)."""
    net, names, tags = build.net, build.names, build.tags
    mod = dict((r.name, "%s@%s, Go %s" % (r.module, r.version, r.row["go"])) for r in build.rows.values())
    real = ["kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy "
            "%s (%s)" % (K8S_VERSION, mod[K8S_ROWS[0]]),
            "pause:%s (pause.c of k8s.io/kubernetes@%s)" % (tags["pause"], K8S_VERSION),
            "etcd:%s, etcd + etcdctl (%s)" % (tags["etcd"], mod[ETCD_ROW]),
            "coredns:%s (%s)" % (tags["coredns"], mod[COREDNS_ROW]),
            "%s: %s (%s)" % (names["cni_tgz"], " ".join(CNI_PLUGINS), mod[CNI_ROW]),
            "test image %s (Debian's busybox-static)" % TEST_IMAGE]
    stand = ["%s: crictl %s built from %s: the Go module proxy here serves cri-tools v1.34.0 and "
             "v1.37.0 only, not %s" % (names["crictl_tgz"], build.rows[CRICTL_ROW].version,
                                        mod[CRICTL_ROW], names["crictl"]),
             "runc inside the nodes: a wrapper that drops CAP_SYS_RESOURCE (this sandbox cannot grant "
             "it; nodes.py)"]
    if build.real_network:
        real.append("flannel %s image (flanneld from its release source, %s; iptables + cp)" % (
            net.flannel_version, net.root))
    else:
        stand.append("FLANNEL image %s: PLACEHOLDER, upstream sources missing (%s); no node can go "
                     "Ready" % (net.flannel_version, ", ".join(net.missing)))
    return ["REAL: " + r for r in real] + ["STAND-IN: " + f for f in stand]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.upstream", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="build (or reuse) the cached upstream")
    ap.add_argument("--force", action="store_true", help="rebuild the served images and files")
    ap.add_argument("--serve", action="store_true", help="serve registry + files until Ctrl-C")
    args = ap.parse_args(argv)
    if not (args.prepare or args.serve):
        ap.error("give --prepare and/or --serve")
    t0 = time.monotonic()
    build = prepare(force=args.force)
    log("prepare took %.0fs" % (time.monotonic() - t0))
    if args.serve:
        up = Upstream(build).start()
        try:
            print(up.describe())
            print("bundle flags: " + " ".join(up.bundle_args()))
            signal.sigwait([signal.SIGINT, signal.SIGTERM])
        finally:
            up.stop()
    else:
        print("\n".join(real_and_stand_ins(build)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
