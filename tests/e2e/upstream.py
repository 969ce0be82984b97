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
  kube-proxy (built from source), pause (kubernetes' pause.c), etcd (Debian's etcd-server),
  CNI plugins bridge/host-local/portmap/loopback/... (Debian's containernetworking-plugins).
- placeholders (cannot be built here): coredns:1.7.0 and coreos/flannel:v0.11.0-amd64 images,
  the flannel CNI plugin binary, and crictl.
"""

import argparse
import functools
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

from . import ociimage
from .common import (CACHE_DIR, DEBIAN_MIRROR, DEBIAN_SUITE, K8S_VERSION, free_port, log, out,
                     require_tools, run, sha256_file, write_json)

#: Bump when the build of the binaries changes (forces the slow Go build).
RECIPE = "3"
#: Bump when the images, the file layout or the checksums change (cheap: no Go build).
SERVE_RECIPE = "2"

ARCH = "amd64"
K8S_BINARIES = ["kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager",
                "kube-scheduler", "kube-proxy"]
DL_BINARIES = ["kubeadm", "kubelet", "kubectl"]
PAUSE_TAG = "3.2"
ETCD_TAG = "3.4.13-0"
COREDNS_TAG = "1.7.0"
FLANNEL_REPO = "coreos/flannel"
#: flannel tags served (placeholders): v0.11.0 as a signed schema1 manifest, as quay.io served
#: it; later ones as schema2. k8s_offline.py uses v0.11.0 for 1.16/1.17 and v0.13.0 for 1.20.
FLANNEL_TAGS = [("v0.11.0-amd64", True), ("v0.12.0-amd64", False), ("v0.13.0-amd64", False)]
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

CRICTL_PLACEHOLDER = """#!/bin/sh
# k8s-offline-lab PLACEHOLDER: cri-tools cannot be built offline here.
case "$1" in
  --version|-v) echo "crictl version %s-k8s-offline-lab-placeholder"; exit 0 ;;
esac
echo "crictl: k8s-offline-lab PLACEHOLDER (cri-tools cannot be built offline here)" >&2
exit 1
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
    return vers + "\n" + out(["go", "version"])


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

class Build(object):
    """Paths of one cached upstream build."""

    def __init__(self, key):
        self.key = key
        self.root = CACHE_DIR / "upstream" / key
        self.bin = self.root / "bin"
        self.bin_stamp = self.bin / ".complete"
        serve = self.root / ("serve-" + SERVE_RECIPE)
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
        """Every image the lab registry serves, as repo:tag."""
        return json.loads(self.stamp.read_text())["images"]


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
    env = dict(os.environ)
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


def image_specs(build):
    """[(repo path in the registry, tag, layers kwargs, schema1)] for every image the lab serves."""
    labels = {"org.k8s-offline.lab": "built from source by the k8s-offline air-gap lab"}
    specs = []
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        layer = ociimage.Layer()
        layer.add_dir("tmp", 0o1777)
        layer.add_file("usr/local/bin/" + name, build.bin / name, 0o755)
        specs.append((name, K8S_VERSION, dict(layers=[layer], entrypoint=["/usr/local/bin/" + name],
                                              labels=labels), False))
    # kube-proxy with iptables (nft flavour, as on Debian 12 nodes) and conntrack.
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    layer.add_dir("run", 0o755)
    layer.add_dir("var/run", 0o755)
    layer.add_file("usr/local/bin/kube-proxy", build.bin / "kube-proxy", 0o755)
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
    specs.append(("kube-proxy", K8S_VERSION, dict(layers=[layer], entrypoint=["/usr/local/bin/kube-proxy"],
                                                  labels=labels), False))
    layer = ociimage.Layer()
    layer.add_file("pause", build.bin / "pause", 0o755)
    specs.append(("pause", PAUSE_TAG, dict(layers=[layer], entrypoint=["/pause"], labels=labels), False))
    layer = ociimage.Layer()
    layer.add_dir("tmp", 0o1777)
    layer.add_dir("var/lib/etcd", 0o700)
    layer.add_host_file_with_libs("/usr/bin/etcd", "/usr/local/bin/etcd", 0o755)
    specs.append(("etcd", ETCD_TAG, dict(layers=[layer], entrypoint=["/usr/local/bin/etcd"],
                                         labels=labels), False))
    placeholders = [("coredns", COREDNS_TAG, ["coredns"], False)] + [
        (FLANNEL_REPO, tag, ["opt/bin/flanneld", "bin/cp"], s1) for tag, s1 in FLANNEL_TAGS]
    for repo, tag, paths, schema1 in placeholders:
        ref = "%s:%s" % (repo, tag)
        prog = build_placeholder(build, ref)
        layer = ociimage.Layer()
        layer.add_file("k8s-offline-lab-placeholder", prog, 0o755)
        for p in paths:
            layer.add_symlink(p, "/k8s-offline-lab-placeholder")
        layer.add_bytes("PLACEHOLDER.txt", "k8s-offline-lab placeholder for %s: not buildable offline\n" % ref)
        specs.append((repo, tag, dict(layers=[layer], entrypoint=["/" + paths[0]],
                                      labels={PLACEHOLDER_LABEL: ref}), schema1))
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
    _write_tgz(cni, [("./" + p.name, str(p), None) for p in sorted(Path(DEBIAN_CNI_DIR).iterdir())]
               + [("./flannel", None, CNI_FLANNEL_PLACEHOLDER)])
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
                   "docker-registry", "ldd", "strip"])
    t0 = time.monotonic()
    key, uris = compute_key()
    build = Build(key)
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
        for repo, tag, kw, schema1 in specs:
            layout = build.oci / ("%s_%s" % (repo.replace("/", "_"), tag))
            ociimage.write_image_layout(layout, **kw)
            ociimage.push_layout(layout, "%s/%s:%s" % (registry.host, repo, tag), schema1=schema1)
    finally:
        registry.stop()
    shutil.rmtree(str(build.oci))
    write_json(build.stamp, {"key": key, "images": ["%s:%s" % (r, t) for r, t, _, _ in specs],
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
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        _QuietHandler.requests_log = self.requests
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

    def bundle_args(self):
        """The `k8s_offline.py bundle` flags that point it at this upstream."""
        reg = self.registry.host
        args = ["--kubernetes-version", K8S_VERSION, "--arch", ARCH]
        for src in ("registry.k8s.io", "k8s.gcr.io", "quay.io"):
            args += ["--registry-mirror", "%s=%s" % (src, reg)]
        args += ["--insecure-registry", reg]
        for host in ("dl.k8s.io", "github.com"):
            args += ["--file-mirror", "https://%s=%s/%s" % (host, self.files.url, host)]
        args += ["--checksum-file", str(self.build.checksums)]
        return args

    def describe(self):
        return "\n".join([
            "upstream build %s (%s)" % (self.build.key, self.build.root),
            "  registry    %s  (images: %s)" % (
                self.registry.host, ", ".join(self.build.images())),
            "  file server %s  (dl.k8s.io/..., github.com/...)" % self.files.url,
            "  checksums   %s" % self.build.checksums,
            "  PLACEHOLDERS (cannot be built offline): images coredns:%s and %s:%s, "
            "the flannel CNI plugin in %s, and crictl in %s" % (
                COREDNS_TAG, FLANNEL_REPO, "/".join(t for t, _ in FLANNEL_TAGS), CNI_TGZ, CRICTL_TGZ),
        ])


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
