"""Real pod networking for the lab: flanneld built from its upstream release source. (The CNI
plugins are a Go module: gobuild.py builds them, a row of gomod/builds.json.)

    python3 -m tests.e2e.netbuild              # build (or reuse) flanneld, print where

The sources are test inputs, never part of the project: unmodified release tarballs (git archive of
the tag, every dependency vendored) read from $K8SO_LAB_UPSTREAM_SRC, by default `shared/upstream-src`
beside the repository (CI gets a read-only copy of shared/ there). Their SOURCES.md names each file
with its sha256; the lab checks it before building. The flannel version is the one k8s_offline.py's
own table picks for the lab's Kubernetes version, so the lab follows the tool.

Builds are cached under $K8SO_LAB_CACHE/network/<key>, keyed by the source's sha256, the recipe and
the Go version (gobuild's toolchain "1.19", Debian's golang-go: 2019 code; the Go build cache is
gobuild's). When the source is absent the lab falls back to a placeholder, and says so loudly: then
no node can go Ready.
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

from . import gobuild
from .common import CACHE_DIR, K8S_VERSION, cache_lock, REPO_ROOT, log, out, sha256_file, write_json

#: Bump when the recipe below changes (forces a rebuild of flanneld and the plugins).
NET_RECIPE = "2"
#: gobuild's toolchain for flannel's GOPATH-era source
TOOLCHAIN = "1.19"
UPSTREAM_SRC = Path(os.environ.get("K8SO_LAB_UPSTREAM_SRC")
                    or str(REPO_ROOT.parent / "shared" / "upstream-src"))
_TOOL = []


def tool_module():
    """k8s_offline.py loaded as a module (its release table is what the lab follows)."""
    if not _TOOL:
        spec = importlib.util.spec_from_file_location("k8s_offline_for_lab",
                                                      str(REPO_ROOT / "k8s_offline.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _TOOL.append(mod)
    return _TOOL[0]


def go_binary():
    return gobuild.table()["toolchains"][TOOLCHAIN]["go"]


def tool_flannel():
    """The flannel version k8s_offline.py's own version table picks for K8S_VERSION."""
    return tool_module().version_facts(K8S_VERSION)["flannel"]


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
    """Paths of one cached flanneld build (or the reason there is none)."""

    def __init__(self, flannel_version):
        self.flannel_version = flannel_version
        self.flannel_src = UPSTREAM_SRC / ("flannel-%s-src.tar.gz" % flannel_version)
        self.missing = [str(p) for p in (self.flannel_src,) if not p.is_file()]
        self.key = None
        self.root = None
        if not self.missing:
            material = "\n".join([NET_RECIPE, sha256_file(self.flannel_src),
                                  out([go_binary(), "version"], quiet=True)])
            self.key = hashlib.sha256(material.encode()).hexdigest()[:12]
            self.root = CACHE_DIR / "network" / self.key

    @property
    def real(self):
        return not self.missing

    @property
    def flanneld(self):
        return self.root / "flanneld"

    @property
    def stamp(self):
        return self.root / "complete.json"

    def placeholder_banner(self):
        return ("!" * 100 + "\n!!! k8s-offline lab: REAL POD NETWORKING CANNOT BE BUILT: missing %s\n"
                "!!! (set K8SO_LAB_UPSTREAM_SRC to the folder of SOURCES.md). Falling back to a PLACEHOLDER "
                "flannel image:\n!!! no node can go Ready, the cluster tests "
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
    """Build flanneld into net.root (the recipe of SOURCES.md), with gobuild's Go 1.19."""
    _check_source(net.flannel_src)
    if net.root.exists():
        shutil.rmtree(str(net.root))
    net.root.mkdir(parents=True)
    work = CACHE_DIR / "network" / "src-build"
    if work.exists():
        shutil.rmtree(str(work))
    go = go_binary()
    env = dict(os.environ)
    env.update({"GOCACHE": str(gobuild.GOCACHE), "GOPROXY": "off", "GOFLAGS": "", "GOTOOLCHAIN": "local",
                "GOPATH": str(work / "gopath"), "CGO_ENABLED": "1"})  # the udp backend has C parts
    env["PATH"] = os.path.dirname(go) + os.pathsep + env.get("PATH", "")
    times = {}
    with open(str(net.root / "build.log"), "w") as logf:
        t0 = time.monotonic()
        ldflags = "-X github.com/coreos/flannel/version.Version=%s" % net.flannel_version
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
        log("building flanneld %s (%s)" % (net.flannel_version, go))
        _go([go, "build", "-o", str(net.flanneld), "-ldflags", ldflags, "."], top, env, logf)
        times["flanneld"] = round(time.monotonic() - t0, 1)
    shutil.rmtree(str(work))
    ver = subprocess.run([str(net.flanneld), "--version"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True).stdout.strip()
    if ver != net.flannel_version:
        raise RuntimeError("built flanneld reports %r, want %s" % (ver, net.flannel_version))
    write_json(net.stamp, {"key": net.key, "flannel": net.flannel_version, "seconds": times})
    log("flanneld %s built from source in %s (%s)" % (net.flannel_version, net.root, times))


def prepare():
    """The cached flanneld build for the tool's flannel version (built when missing), or a
    placeholder NetBuild (net.real False) when the source is absent. Call with the cache lock held."""
    flannel = tool_flannel()
    net = NetBuild(flannel)
    if not net.real:
        log(net.placeholder_banner())
        return net
    if net.stamp.exists():
        log("flanneld %s is cached (%s)" % (flannel, net.root))
        return net
    log("building flanneld %s from %s" % (flannel, UPSTREAM_SRC))
    build(net)
    return net


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.netbuild", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    with cache_lock():
        net = prepare()
    print(net.root if net.real else "placeholders: sources missing")
    return 0 if net.real else 1


if __name__ == "__main__":
    raise SystemExit(main())
