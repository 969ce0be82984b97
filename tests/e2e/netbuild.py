"""Real pod networking for the lab: flanneld and the CNI plugins built from upstream release sources.

    python3 -m tests.e2e.netbuild              # build (or reuse) flanneld + CNI plugins, print where

The sources are test inputs, never part of the project: unmodified release tarballs (git archive of
the tag, every dependency vendored) read from $K8SO_LAB_UPSTREAM_SRC, by default `shared/upstream-src`
beside the repository (CI gets a read-only copy of shared/ there). Their SOURCES.md names each file
with its sha256; the lab checks it before building. The flannel version is the one k8s_offline.py's
own table picks for the lab's Kubernetes version, so the lab follows the tool.

Builds are cached under $K8SO_LAB_CACHE/network/<key>, keyed by the sources' sha256, the recipe and
the Go version (the Go build cache is shared with the Kubernetes build). When the sources are absent
the lab falls back to placeholders, and says so loudly: then no node can go Ready.
"""

import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .common import (CACHE_DIR, K8S_VERSION, OLD_GO, REPO_ROOT, log, old_go_env, out, sha256_file,
                     write_json)

#: Bump when the recipe below changes (forces a rebuild of flanneld and the plugins).
NET_RECIPE = "1"
UPSTREAM_SRC = Path(os.environ.get("K8SO_LAB_UPSTREAM_SRC")
                    or str(REPO_ROOT.parent / "shared" / "upstream-src"))
#: The plugins a flannel node needs in /opt/cni/bin (flannel delegates to bridge + host-local;
#: the manifest's conflist chains portmap; kubelet wants loopback).
CNI_PLUGINS = ["plugins/meta/flannel", "plugins/main/bridge", "plugins/ipam/host-local",
               "plugins/meta/portmap", "plugins/main/loopback"]


def tool_versions():
    """(flannel, cni) versions k8s_offline.py's own version table picks for K8S_VERSION."""
    spec = importlib.util.spec_from_file_location("k8s_offline_for_lab", str(REPO_ROOT / "k8s_offline.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    facts = mod.version_facts(K8S_VERSION)
    return facts["flannel"], facts["cni"]


def source_sums():
    """{file name: sha256} as SOURCES.md lists them ({} when there is no SOURCES.md)."""
    doc = UPSTREAM_SRC / "SOURCES.md"
    if not doc.is_file():
        return {}
    sums = {}
    for line in doc.read_text(errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].endswith(".tar.gz") and re.match(r"^[0-9a-f]{64}$", cells[-1]):
            sums[cells[0]] = cells[-1]
    return sums


class NetBuild(object):
    """Paths of one cached flanneld + CNI plugins build (or the reason there is none)."""

    def __init__(self, flannel_version, cni_version):
        self.flannel_version = flannel_version
        self.cni_version = cni_version
        self.flannel_src = UPSTREAM_SRC / ("flannel-%s-src.tar.gz" % flannel_version)
        self.cni_src = UPSTREAM_SRC / ("cni-plugins-%s-src.tar.gz" % cni_version)
        self.missing = [str(p) for p in (self.flannel_src, self.cni_src) if not p.is_file()]
        self.key = None
        self.root = None
        if not self.missing:
            material = "\n".join([NET_RECIPE, sha256_file(self.flannel_src), sha256_file(self.cni_src),
                                  out([OLD_GO, "version"], quiet=True)])
            self.key = hashlib.sha256(material.encode()).hexdigest()[:12]
            self.root = CACHE_DIR / "network" / self.key

    @property
    def real(self):
        return not self.missing

    @property
    def flanneld(self):
        return self.root / "flanneld"

    @property
    def cni_dir(self):
        return self.root / "cni"

    @property
    def stamp(self):
        return self.root / "complete.json"

    def placeholder_banner(self):
        return ("!" * 100 + "\n!!! k8s-offline lab: REAL POD NETWORKING CANNOT BE BUILT: missing %s\n"
                "!!! (set K8SO_LAB_UPSTREAM_SRC to the folder of SOURCES.md). Falling back to PLACEHOLDER "
                "flannel image and flannel CNI plugin:\n!!! no node can go Ready, the cluster tests "
                "will fail.\n" % ", ".join(self.missing) + "!" * 100)


def _check_source(path):
    want = source_sums().get(path.name)
    if want is None:
        raise RuntimeError("%s is not listed in %s" % (path, UPSTREAM_SRC / "SOURCES.md"))
    have = sha256_file(path)
    if have != want:
        raise RuntimeError("%s has sha256 %s but SOURCES.md says %s" % (path, have, want))


def _unpack(tarball, dest):
    """Unpack a release source tarball into dest; returns its one top directory."""
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(dest), "--no-same-owner", "-xzf", str(tarball)], check=True)
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise RuntimeError("%s does not hold one top directory: %s" % (tarball, tops))
    return tops[0]


def _go(argv, cwd, env, logf):
    logf.write("$ (cd %s) %s\n" % (cwd, " ".join(argv)))
    logf.flush()
    proc = subprocess.run(argv, cwd=str(cwd), env=env, stdout=logf, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError("%s failed in %s, see %s" % (" ".join(argv), cwd, logf.name))


def build(net):
    """Build flanneld and the CNI plugins into net.root (the recipes of SOURCES.md)."""
    for src in (net.flannel_src, net.cni_src):
        _check_source(src)
    if net.root.exists():
        shutil.rmtree(str(net.root))
    net.cni_dir.mkdir(parents=True)
    work = CACHE_DIR / "network" / "src-build"
    if work.exists():
        shutil.rmtree(str(work))
    base = old_go_env(os.environ)
    base.update({"GOCACHE": str(CACHE_DIR / "gocache"), "GOPROXY": "off", "GOFLAGS": "",
                 "GOPATH": str(work / "gopath")})
    times = {}
    with open(str(net.root / "build.log"), "w") as logf:
        t0 = time.monotonic()
        ldflags = "-X github.com/coreos/flannel/version.Version=%s" % net.flannel_version
        env = dict(base, CGO_ENABLED="1")  # the udp backend has C parts
        if net.flannel_version in ("v0.11.0",):  # GOPATH era: no go.mod, deps under vendor/
            top = _unpack(net.flannel_src, work / "flannel")
            where = work / "gopath" / "src" / "github.com" / "coreos"
            where.mkdir(parents=True)
            top.rename(where / "flannel")
            top = where / "flannel"
            env["GO111MODULE"] = "off"
        else:
            top = _unpack(net.flannel_src, work / "flannel")
            env["GOFLAGS"] = "-mod=vendor"
        _go([OLD_GO, "build", "-o", str(net.flanneld), "-ldflags", ldflags, "."], top, env, logf)
        times["flanneld"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        top = _unpack(net.cni_src, work / "cni")
        env = dict(base, CGO_ENABLED="0", GO111MODULE="on", GOFLAGS="-mod=vendor")
        for plugin in CNI_PLUGINS:
            _go([OLD_GO, "build", "-o", str(net.cni_dir / plugin.rsplit("/", 1)[1]),
                 "-ldflags", "-X github.com/containernetworking/plugins/pkg/utils/buildversion."
                 "BuildVersion=%s" % net.cni_version, "./" + plugin], top, env, logf)
        times["cni plugins"] = round(time.monotonic() - t0, 1)
    shutil.rmtree(str(work))
    ver = subprocess.run([str(net.flanneld), "--version"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True).stdout.strip()
    if ver != net.flannel_version:
        raise RuntimeError("built flanneld reports %r, want %s" % (ver, net.flannel_version))
    write_json(net.stamp, {"key": net.key, "flannel": net.flannel_version, "cni": net.cni_version,
                           "seconds": times})
    log("flanneld %s and CNI plugins %s built from source in %s (%s)" % (
        net.flannel_version, net.cni_version, net.root, times))


def prepare():
    """The cached network build for the tool's versions (built when missing), or a placeholder
    NetBuild (net.real False) when the sources are absent. Call with the cache lock held."""
    flannel, cni = tool_versions()
    net = NetBuild(flannel, cni)
    if not net.real:
        log(net.placeholder_banner())
        return net
    if net.stamp.exists():
        log("flanneld %s + CNI plugins %s are cached (%s)" % (flannel, cni, net.root))
        return net
    log("building flanneld %s and CNI plugins %s from %s" % (flannel, cni, UPSTREAM_SRC))
    build(net)
    return net


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.netbuild", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    import fcntl
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(str(CACHE_DIR / "prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        net = prepare()
    print(net.root if net.real else "placeholders: sources missing")
    return 0 if net.real else 1


if __name__ == "__main__":
    raise SystemExit(main())
