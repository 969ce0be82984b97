"""The lab's stand-in for the internet: real Kubernetes v1.20.2 built from Debian's source package,
served from a real registry and a file server on 127.0.0.1.

    python3 -m tests.e2e.upstream --prepare     # the slow cold build (cached; a warm run is quick)
    python3 -m tests.e2e.upstream --serve       # prepare, then serve until Ctrl-C, printing the flags

Build outputs live under $K8SO_LAB_CACHE (default /var/cache/k8s-offline-lab), keyed by the
checksum of the kubernetes source package (.dsc) plus the recipe and the host tool versions, so a
warm run skips the build. Nothing is installed with apt: the source package is fetched with a
private apt state (deb-src list, lists and archives all under the cache dir).

What is real and what is a placeholder (printed by describe()):
- real: kubeadm, kubelet, kubectl, kube-apiserver, kube-controller-manager, kube-scheduler,
  kube-proxy (built from source), pause (kubernetes' pause.c), etcd + etcdctl (Debian's
  etcd-server and etcd-client), flanneld and the CNI plugins flannel/bridge/host-local/portmap/
  loopback (built from the upstream release sources, see netbuild.py), and a busybox test image
  (Debian's busybox-static) that the tests ship with --extra-image.
- placeholders (cannot be built here): the coredns:1.7.0 image (busybox httpd answering CoreDNS's
  /health and /ready probes, no DNS) and crictl. Without the upstream sources, flannel and its
  CNI plugin fall back to placeholders too, and the lab says so loudly.

The registry serves kubeadm's images at the root (k8s.gcr.io's layout) and again under
google_containers/ (registry.aliyuncs.com's layout, for the seed's --image-repository).
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

from . import netbuild, ociimage
from .common import (CACHE_DIR, DEBIAN_MIRROR, DEBIAN_SUITE, K8S_VERSION, OLD_GO, free_port, log,
                     old_go_env, out, require_tools, run, sha256_file, write_json)

#: Bump when the build of the binaries changes (forces the slow Go build).
RECIPE = "3"
#: Bump when the images, the file layout or the checksums change (cheap: no Go build).
SERVE_RECIPE = "3"

ARCH = "amd64"
K8S_BINARIES = ["kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager",
                "kube-scheduler", "kube-proxy"]
DL_BINARIES = ["kubeadm", "kubelet", "kubectl"]
PAUSE_TAG = "3.2"
ETCD_TAG = "3.4.13-0"
COREDNS_TAG = "1.7.0"
FLANNEL_REPO = "coreos/flannel"
#: Where registry.aliyuncs.com keeps kubeadm's images (the seed's --image-repository).
ALIYUN_HOST = "registry.aliyuncs.com"
ALIYUN_PREFIX = "google_containers"
SEED_IMAGE_REPOSITORY = ALIYUN_HOST + "/" + ALIYUN_PREFIX
#: The test pods' image: Debian's busybox-static, shipped through `bundle --extra-image`.
BUSYBOX_REPO = "library/busybox"
TEST_IMAGE = "docker.io/%s:1.35.0" % BUSYBOX_REPO
BUSYBOX = "/bin/busybox"
CNI_VERSION = "v0.8.7"
CRICTL_VERSION = "v1.20.0"

CNI_TGZ = "cni-plugins-linux-%s-%s.tgz" % (ARCH, CNI_VERSION)
CRICTL_TGZ = "crictl-%s-linux-%s.tar.gz" % (CRICTL_VERSION, ARCH)
CNI_PATH = "github.com/containernetworking/plugins/releases/download/%s/%s" % (CNI_VERSION, CNI_TGZ)
CRICTL_PATH = "github.com/kubernetes-sigs/cri-tools/releases/download/%s/%s" % (
    CRICTL_VERSION, CRICTL_TGZ)
DL_PATH = "dl.k8s.io/release/%s/bin/linux/%s" % (K8S_VERSION, ARCH)

#: Debian packages the build reads from the host (installed by CI, never by the lab).
HOST_PACKAGES = ["golang-go", "golang-github-modern-go-reflect2-dev", "etcd-server",
                 "containernetworking-plugins", "iptables", "conntrack"]
#: Host packages only the served images read (part of the serve key, not the slow build's key).
SERVE_HOST_PACKAGES = ["etcd-client", "busybox-static", "coreutils"]
REFLECT2_SRC = "/usr/share/gocode/src/github.com/modern-go/reflect2"
DEBIAN_CNI_DIR = "/usr/lib/cni"
PLACEHOLDER_LABEL = "org.k8s-offline.lab.placeholder"

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

CNI_FLANNEL_PLACEHOLDER = """#!/bin/sh
# k8s-offline-lab PLACEHOLDER: the flannel CNI plugin cannot be built offline here.
echo '{"cniVersion": "0.3.1", "code": 100, "msg": "k8s-offline-lab placeholder flannel CNI plugin"}'
exit 1
"""

CRICTL_PLACEHOLDER = r"""#!/bin/sh
# k8s-offline-lab PLACEHOLDER crictl: cri-tools cannot be built offline here. It answers only what
# kubeadm 1.20 asks crictl on a containerd node (info, inspecti, pods -q, stopp, rmp, pull), through
# containerd's own `ctr`, and refuses every pull (the nodes are air-gapped).
sock=/run/containerd/containerd.sock
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--runtime-endpoint|-i|--image-endpoint) sock="${2#unix://}"; shift 2 ;;
    --runtime-endpoint=*|--image-endpoint=*) sock="${1#*=}"; sock="${sock#unix://}"; shift ;;
    --version|-v) echo "crictl version %s-k8s-offline-lab-placeholder"; exit 0 ;;
    -*) shift ;;
    *) break ;;
  esac
done
cmd="$1"; [ $# -gt 0 ] && shift
ctr() { command ctr --address "$sock" -n k8s.io "$@"; }
case "$cmd" in
  info)
    command ctr --address "$sock" plugins ls | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" && $NF == "ok" {f=1} END {exit !f}' \
      || { echo "crictl (lab placeholder): containerd's CRI plugin is not running at $sock" >&2; exit 1; } ;;
  inspecti)
    name="$1"
    case "$name" in */*) ;; *) name="docker.io/library/$name" ;; esac
    case "${name%%%%/*}" in *.*|*:*|localhost) ;; *) name="docker.io/$name" ;; esac
    case "${name##*/}" in *:*|*@*) ;; *) name="$name:latest" ;; esac
    [ -n "$(ctr images ls -q "name==$name")" ] || { echo "crictl (lab placeholder): no image $name" >&2; exit 1; } ;;
  pods)
    ctr containers ls -q 'labels."io.cri-containerd.kind"==sandbox' ;;
  stopp)
    ctr tasks kill -s KILL "$1" >/dev/null 2>&1; ctr tasks delete -f "$1" >/dev/null 2>&1; true ;;
  rmp)
    ctr containers delete "$1" ;;
  pull)
    echo "crictl (lab placeholder): refusing to pull $1: this node is air-gapped" >&2; exit 1 ;;
  *)
    echo "crictl (lab placeholder): '$cmd' is not supported (cri-tools cannot be built offline here)" >&2
    exit 1 ;;
esac
""" % CRICTL_VERSION


# --------------------------------------------------------------------------- source + key

def _apt_opts():
    apt = CACHE_DIR / "apt"
    for d in ("lists/partial", "archives/partial", "parts"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    src = apt / "sources.list"
    src.write_text("deb-src %s %s main\n" % (DEBIAN_MIRROR, DEBIAN_SUITE))
    return ["-o", "Dir::Etc::SourceList=%s" % src, "-o", "Dir::Etc::SourceParts=%s" % (apt / "parts"),
            "-o", "Dir::State::Lists=%s" % (apt / "lists"), "-o", "Dir::Cache=%s" % apt,
            "-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1",
            "-o", "Acquire::http::Timeout=30", "-o", "Acquire::Retries=2", "-q"]


def source_package_uris():
    """[(url, filename, sha256)] of Debian's kubernetes source package, via a private apt state."""
    opts = _apt_opts()
    run(["apt-get"] + opts + ["update"], capture=True)
    text = out(["apt-get"] + opts + ["source", "--print-uris", "kubernetes"])
    uris = []
    for line in text.splitlines():
        if line.startswith("'"):
            url, name, _size, csum = line.split()
            assert csum.startswith("SHA256:"), line
            uris.append((url.strip("'"), name, csum[len("SHA256:"):]))
    if not any(n.endswith(".dsc") for _, n, _ in uris):
        raise RuntimeError("no kubernetes source package found:\n" + text)
    return uris


def host_versions():
    vers = out(["dpkg-query", "-W", "-f", "${Package}=${Version}\n"] + HOST_PACKAGES)
    return vers + "\n" + out([OLD_GO, "version"])


def compute_key():
    """The cache key: source package checksum + recipe + host tool versions."""
    pointer = CACHE_DIR / "upstream" / "latest.json"
    try:
        uris = source_package_uris()
    except Exception as exc:  # no Debian mirror reachable: fall back to the last good build
        if pointer.exists():
            info = json.loads(pointer.read_text())
            log("cannot reach the Debian mirror (%s); using the cached build %s" % (exc, info["key"]))
            return info["key"], info["uris"]
        raise
    dsc_sum = [s for _, n, s in uris if n.endswith(".dsc")][0]
    material = "\n".join([dsc_sum, RECIPE, host_versions()])
    import hashlib
    key = dsc_sum[:12] + "-" + hashlib.sha256(material.encode()).hexdigest()[:12]
    return key, uris


# --------------------------------------------------------------------------- build

def serve_key(net):
    """Key of the served images and files: recipe, network build, host packages they copy."""
    vers = out(["dpkg-query", "-W", "-f", "${Package}=${Version}\n"] + SERVE_HOST_PACKAGES, quiet=True)
    # this module and ociimage.py write the images: any change to them is a new serve key
    code = "".join(Path(m.__file__).read_text() for m in (sys.modules[__name__], ociimage))
    material = "\n".join([SERVE_RECIPE, net.key or "placeholder-network", vers, code])
    return hashlib.sha256(material.encode()).hexdigest()[:12]


class Build(object):
    """Paths of one cached upstream build (binaries by key, served images and files by serve
    key), and the network build it serves (net.real False: placeholders)."""

    def __init__(self, key, net=None, skey=None):
        self.key = key
        self.net = net
        self.root = CACHE_DIR / "upstream" / key
        self.bin = self.root / "bin"
        self.bin_stamp = self.bin / ".complete"
        serve = self.root / ("serve-%s-%s" % (SERVE_RECIPE, skey or "none"))
        self.serve = serve
        self.oci = serve / "layouts"
        self.files = serve / "files"
        self.registry = serve / "registry"
        self.checksums = serve / "SHA256SUMS"
        self.stamp = serve / "complete.json"

    @property
    def complete(self):
        return self.bin_stamp.exists() and self.stamp.exists()

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


def build_binaries(build, uris):
    """Fetch + unpack the source package, swap in reflect2 1.0.2, build with the project Makefile."""
    # A fixed path (kubernetes' build keeps its Go cache under _output/, removed with the tree).
    srcdir = CACHE_DIR / "src-build"
    dl = CACHE_DIR / "sources"
    dl.mkdir(parents=True, exist_ok=True)
    for url, name, sha in uris:
        _download(url, dl / name, sha)
    dsc = [dl / n for _, n, _ in uris if n.endswith(".dsc")][0]
    if srcdir.exists():
        shutil.rmtree(str(srcdir))
    run(["dpkg-source", "--no-check", "-x", dsc, srcdir], capture=True)
    for _, name, _ in uris:  # dpkg-source leaves copies of the source files beside srcdir
        stray = srcdir.parent / name
        if stray.exists() and stray.parent != dl:
            stray.unlink()
    # reflect2 1.0.1 (vendored) makes kubeadm panic when built with Go >= 1.18; 1.0.2 fixes it.
    vend = srcdir / "vendor" / "github.com" / "modern-go" / "reflect2"
    shutil.rmtree(str(vend))
    shutil.copytree(REFLECT2_SRC, str(vend), symlinks=False)
    gopath = srcdir / ".go"
    (gopath / "src" / "k8s.io").mkdir(parents=True)
    os.symlink("../../..", str(gopath / "src" / "k8s.io" / "kubernetes"))
    env = old_go_env(os.environ)
    env.update({
        "GOPATH": str(gopath), "GO111MODULE": "off", "GOFLAGS": "", "CGO_ENABLED": "0",
        "GOCACHE": str(CACHE_DIR / "gocache"),
        "KUBE_GIT_VERSION": K8S_VERSION, "KUBE_GIT_TREE_STATE": "clean",
        "KUBE_GIT_MAJOR": "1", "KUBE_GIT_MINOR": "20",
    })
    t0 = time.monotonic()
    with open(str(build.root / "make.log"), "w") as logf:
        proc = subprocess.run(
            ["make", "WHAT=" + " ".join("cmd/" + b for b in K8S_BINARIES)],
            cwd=str(gopath / "src" / "k8s.io" / "kubernetes"), env=env,
            stdout=logf, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError("kubernetes build failed, see %s" % (build.root / "make.log"))
    log("kubernetes binaries built in %.0fs" % (time.monotonic() - t0))
    build.bin.mkdir(parents=True, exist_ok=True)
    outbin = srcdir / "_output" / "local" / "bin" / "linux" / ARCH
    for b in K8S_BINARIES:
        shutil.copy2(str(outbin / b), str(build.bin / b))
    # pause from kubernetes' own pause.c, static.
    pause_c = srcdir / "build" / "pause" / "linux" / "pause.c"
    run(["gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v%s-k8s-offline-lab" % PAUSE_TAG,
         "-o", build.bin / "pause", pause_c])
    run(["strip", build.bin / "pause"])
    shutil.rmtree(str(srcdir))
    ver = out([build.bin / "kubeadm", "version", "-o", "short"])
    if ver != K8S_VERSION:
        raise RuntimeError("built kubeadm reports %r, want %s" % (ver, K8S_VERSION))


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


COREDNS_PLACEHOLDER = """#!/bin/sh
# k8s-offline-lab PLACEHOLDER coredns: CoreDNS cannot be built offline here. This answers the
# probes of kubeadm's CoreDNS Deployment (/health on 8080, /ready on 8181) and serves NO DNS.
echo "k8s-offline-lab PLACEHOLDER coredns %s: answers /health and /ready, serves no DNS" >&2
httpd -p 8080 -h /k8so-lab-probes
exec httpd -f -p 8181 -h /k8so-lab-probes
""" % COREDNS_TAG


def image_specs(build):
    """[(repo paths in the registry, tag, layers kwargs, schema1)] for every image the lab serves.
    kubeadm's images are pushed at the root and under google_containers/ (aliyun's layout)."""
    labels = {"org.k8s-offline.lab": "built from source by the k8s-offline air-gap lab"}
    specs = []

    def kubeadm_image(name, tag, kw):
        specs.append(([name, ALIYUN_PREFIX + "/" + name], tag, kw, False))

    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        layer = ociimage.Layer()
        layer.add_dir("tmp", 0o1777)
        layer.add_file("usr/local/bin/" + name, build.bin / name, 0o755)
        kubeadm_image(name, K8S_VERSION, dict(layers=[layer], entrypoint=["/usr/local/bin/" + name],
                                              labels=labels))
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    layer.add_dir("run", 0o755)
    layer.add_dir("var/run", 0o755)
    layer.add_file("usr/local/bin/kube-proxy", build.bin / "kube-proxy", 0o755)
    add_iptables(layer)
    kubeadm_image("kube-proxy", K8S_VERSION, dict(layers=[layer], entrypoint=["/usr/local/bin/kube-proxy"],
                                                  labels=labels))
    layer = ociimage.Layer()
    layer.add_file("pause", build.bin / "pause", 0o755)
    kubeadm_image("pause", PAUSE_TAG, dict(layers=[layer], entrypoint=["/pause"], labels=labels))
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    layer.add_dir("var/lib/etcd", 0o700)
    layer.add_host_file_with_libs("/usr/bin/etcd", "/usr/local/bin/etcd", 0o755)
    layer.add_host_file_with_libs("/usr/bin/etcdctl", "/usr/local/bin/etcdctl", 0o755)
    kubeadm_image("etcd", ETCD_TAG, dict(layers=[layer], entrypoint=["/usr/local/bin/etcd"], labels=labels))

    ref = "coredns:%s" % COREDNS_TAG
    layer = ociimage.Layer()
    add_busybox(layer, ["sh", "httpd"])
    layer.add_bytes("coredns", COREDNS_PLACEHOLDER, 0o755)
    for probe in ("health", "ready"):
        layer.add_bytes("k8so-lab-probes/" + probe, "OK (k8s-offline-lab placeholder coredns)\n")
    layer.add_bytes("PLACEHOLDER.txt", "k8s-offline-lab placeholder for %s: not buildable offline\n" % ref)
    kubeadm_image("coredns", COREDNS_TAG, dict(layers=[layer], entrypoint=["/coredns"],
                                               labels={PLACEHOLDER_LABEL: ref}))

    flannel_tag = "%s-%s" % (build.net.flannel_version, ARCH)
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
                    "k8s-offline air-gap lab" % build.net.flannel_version}), False))
    else:
        ref = "%s:%s" % (FLANNEL_REPO, flannel_tag)
        prog = build_placeholder(build, ref)
        layer = ociimage.Layer()
        layer.add_file("k8s-offline-lab-placeholder", prog, 0o755)
        for path in ("opt/bin/flanneld", "bin/cp"):
            layer.add_symlink(path, "/k8s-offline-lab-placeholder")
        layer.add_bytes("PLACEHOLDER.txt", "k8s-offline-lab placeholder for %s: not buildable offline\n" % ref)
        specs.append(([FLANNEL_REPO], flannel_tag, dict(layers=[layer], entrypoint=["/opt/bin/flanneld"],
                                                        labels={PLACEHOLDER_LABEL: ref}), False))

    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    add_busybox(layer, ["sh", "httpd", "wget", "nc", "sleep", "cat", "echo", "mkdir", "hostname",
                        "ip", "ls", "ps", "nslookup", "timeout"])
    specs.append(([BUSYBOX_REPO], TEST_IMAGE.rsplit(":", 1)[1], dict(
        layers=[layer], cmd=["sh"], labels={"org.k8s-offline.lab": "test image: Debian's busybox-static"}),
        False))
    return specs


def build_files(build):
    """Lay out the binaries, CNI and crictl archives like dl.k8s.io / github.com, with checksums."""
    if build.files.exists():
        shutil.rmtree(str(build.files))
    dl = build.files / DL_PATH
    dl.mkdir(parents=True)
    sums = []
    for b in DL_BINARIES:
        shutil.copy2(str(build.bin / b), str(dl / b))
        digest = sha256_file(dl / b)
        (dl / (b + ".sha256")).write_text(digest)
        sums.append((digest, b))
    cni = build.files / CNI_PATH
    cni.parent.mkdir(parents=True)
    if build.real_network:  # the plugins built from the CNI plugins' release source
        _write_tgz(cni, [("./" + p.name, str(p), None) for p in sorted(build.net.cni_dir.iterdir())])
    else:
        _write_tgz(cni, [("./" + p.name, str(p), None) for p in sorted(Path(DEBIAN_CNI_DIR).iterdir())
                         if p.name != "flannel"] + [("./flannel", None, CNI_FLANNEL_PLACEHOLDER)])
    sums.append((sha256_file(cni), CNI_TGZ))
    crictl = build.files / CRICTL_PATH
    crictl.parent.mkdir(parents=True)
    _write_tgz(crictl, [("crictl", None, CRICTL_PLACEHOLDER)])
    sums.append((sha256_file(crictl), CRICTL_TGZ))
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
    """Make sure the cached upstream build exists; return its Build.

    Holds an exclusive lock on the cache while it works, so concurrent lab runs wait for one build.
    """
    import fcntl
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(str(CACHE_DIR / "prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare(force)


def _prepare(force):
    require_tools(["apt-get", "dpkg-source", "go", "make", "gcc", "rsync", "skopeo",
                   "docker-registry", "ldd", "strip", "etcdctl", "busybox"])
    t0 = time.monotonic()
    key, uris = compute_key()
    net = netbuild.prepare()
    if net.flannel_version is None:
        raise RuntimeError("k8s_offline.py names no flannel version for %s" % K8S_VERSION)
    if net.cni_version != CNI_VERSION:
        raise RuntimeError("k8s_offline.py bundles CNI plugins %s for %s but the lab serves %s: "
                           "update tests/e2e/upstream.py" % (net.cni_version, K8S_VERSION, CNI_VERSION))
    build = Build(key, net, serve_key(net))
    if build.complete and not force:
        log("upstream build %s is cached (%s)" % (key, build.root))
        return build
    if force or not build.bin_stamp.exists():
        log("cold upstream build %s into %s" % (key, build.root))
        if build.root.exists():
            shutil.rmtree(str(build.root))
        build.root.mkdir(parents=True)
        build_binaries(build, uris)
        build.bin_stamp.write_text(key + "\n")
    log("building the served images and files in %s" % build.serve)
    if build.serve.exists():
        shutil.rmtree(str(build.serve))
    build.serve.mkdir(parents=True)
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
                             "real_network": build.real_network,
                             "seconds": round(time.monotonic() - t0)})
    write_json(CACHE_DIR / "upstream" / "latest.json", {"key": key, "uris": uris})
    log("upstream build %s done in %.0fs" % (key, time.monotonic() - t0))
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

    def bundle_args(self, image_repository=None):
        """The `k8s_offline.py bundle` flags that point it at this upstream: every registry the
        bundle pulls from (registry.aliyuncs.com and docker.io included) maps to the lab's
        loopback registry, so nothing reaches a real host. With the seed's image repository,
        kubeadm's images come from google_containers/ as they would from aliyun."""
        reg = self.registry.host
        args = ["--kubernetes-version", K8S_VERSION, "--arch", ARCH]
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
            "upstream build %s (%s)" % (self.build.key, self.build.serve),
            "  registry    %s  (images: %s)" % (
                self.registry.host, ", ".join(self.build.images())),
            "  file server %s  (dl.k8s.io/..., github.com/...)" % self.files.url,
            "  checksums   %s" % self.build.checksums,
        ] + ["  " + line for line in real_and_placeholders(self.build)])


def real_and_placeholders(build):
    """Lines saying what the lab serves for real and what is a placeholder."""
    net = build.net
    real = ["kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler "
            "kube-proxy %s (Debian's source)" % K8S_VERSION, "pause:%s (pause.c)" % PAUSE_TAG,
            "etcd:%s (Debian's etcd-server + etcdctl)" % ETCD_TAG,
            "test image %s (Debian's busybox-static)" % TEST_IMAGE]
    fake = ["coredns:%s (busybox httpd answering /health and /ready; NO DNS)" % COREDNS_TAG,
            "crictl %s in %s (cri-tools is not buildable here)" % (CRICTL_VERSION, CRICTL_TGZ)]
    if build.real_network:
        real.append("flannel %s image (flanneld from source + iptables + cp) and CNI plugins %s "
                    "(flannel bridge host-local portmap loopback, from source) [%s]" % (
                        net.flannel_version, net.cni_version, net.root))
    else:
        fake.append("FLANNEL image %s and the flannel CNI plugin: upstream sources missing (%s); "
                    "no node can go Ready" % (net.flannel_version, ", ".join(net.missing)))
    return ["REAL: " + r for r in real] + ["PLACEHOLDER: " + f for f in fake]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.upstream", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="build (or reuse) the cached upstream")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
