"""The lab's Go builds, driven by one table: tests/e2e/gomod/builds.json.

    python3 -m tests.e2e.gobuild                 # build (or reuse) every row, print where
    python3 -m tests.e2e.gobuild NAME...         # only these rows
    python3 -m tests.e2e.gobuild --list          # the table and each row's cache key
    python3 -m tests.e2e.gobuild --sum NAME      # maintainer: complete NAME's go.sum (-mod=mod)

Each row names a module@version, the packages to build, the ldflags, cgo and the Go toolchain
(Debian's 1.19 for 2019 code, /usr/local/go, or GOTOOLCHAIN=go1.27.3, the one newer toolchain the
lab may take; otherwise GOTOOLCHAIN=local, so no toolchain is downloaded). The build runs in
tests/e2e/gomod/<gomod>/, whose go.mod and go.sum are the lab's own and committed: every module a
build reads is pinned by that go.sum, and `go` checks it (-mod=readonly). Modules come from the Go
module proxy through the `go` command only.

Outputs are cached under $K8SO_LAB_CACHE/go/bin/<name>-<key>, the key being the sha256 of the
row, its go.mod and go.sum, the toolchain's `go version` and RECIPE; one module cache
($K8SO_LAB_CACHE/go/mod) and one build cache ($K8SO_LAB_CACHE/go/build) serve every row.
Each step prints its progress (modules fetched, packages compiled) and its time.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import CACHE_DIR, E2E_DIR, cache_lock, log, write_json

#: Bump when the way a row is built changes (every row rebuilds).
RECIPE = "1"
GOMOD_DIR = E2E_DIR / "gomod"
TABLE = GOMOD_DIR / "builds.json"
GO_DIR = CACHE_DIR / "go"
GOMODCACHE = GO_DIR / "mod"
GOCACHE = GO_DIR / "build"


def table():
    return json.loads(TABLE.read_text())


class Row(object):
    """One row of builds.json, with its paths, environment and cache key."""

    def __init__(self, row, doc):
        self.row = row
        self.name = row["name"]
        self.module = row["module"]
        self.version = row["version"]
        self.packages = row["packages"]
        self.gomod = GOMOD_DIR / row.get("gomod", self.name)
        chain = doc["toolchains"][row["go"]]
        self.go = chain["go"]
        self.gotoolchain = chain["GOTOOLCHAIN"]
        self.cgo = bool(row.get("cgo"))
        flags = []
        for item in row.get("ldflags", []):
            flags += doc["ldflag_sets"][item[1:]] if item.startswith("@") else [item]
        self.ldflags = " ".join(flags)
        self.tags = ["-tags", ",".join(row["tags"])] if row.get("tags") else []
        self.check = row.get("check")
        self._key = None

    def env(self, mod="readonly"):
        env = dict(os.environ)
        env.update({
            "GOMODCACHE": str(GOMODCACHE), "GOCACHE": str(GOCACHE), "GOPATH": str(GO_DIR / "path"),
            "GOTOOLCHAIN": self.gotoolchain, "GOFLAGS": "-mod=%s -buildvcs=false" % mod,
            "GOWORK": "off", "GO111MODULE": "on", "CGO_ENABLED": "1" if self.cgo else "0",
        })
        # the table's toolchain, not whatever `go` comes first on PATH
        env["PATH"] = os.path.dirname(self.go) + os.pathsep + env.get("PATH", "")
        return env

    def go_version(self):
        return subprocess.run([self.go, "version"], env=self.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True,
                              cwd=str(self.gomod)).stdout.strip()

    @property
    def key(self):
        if self._key is None:
            h = hashlib.sha256()
            for part in (RECIPE, json.dumps(self.row, sort_keys=True), self.ldflags, self.go_version(),
                         (self.gomod / "go.mod").read_text(), (self.gomod / "go.sum").read_text()):
                h.update(part.encode() + b"\0")
            self._key = h.hexdigest()[:12]
        return self._key

    @property
    def out(self):
        return GO_DIR / "bin" / ("%s-%s" % (self.name, self.key))

    @property
    def stamp(self):
        return self.out / "complete.json"

    def binary(self, name):
        return self.out / name

    def module_dir(self):
        """Where the module's own source (its zip, unpacked) sits in the module cache."""
        p = subprocess.run([self.go, "mod", "download", "-json", "%s@%s" % (self.module, self.version)],
                           cwd=str(self.gomod), env=self.env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
        if p.returncode != 0:
            raise RuntimeError("go mod download %s@%s failed: %s" % (self.module, self.version, p.stderr))
        return Path(json.loads(p.stdout)["Dir"])


def _stream(row, step, argv, logf, env, count_total=None):
    """Run one go step, its output into logf; print a progress line every 30 s (lines so far,
    of count_total when known) and the step's time. Returns the seconds it took."""
    t0 = time.monotonic()
    logf.write("$ (cd %s) %s\n" % (row.gomod, " ".join(argv)))
    logf.flush()
    log("gobuild %s: %s ..." % (row.name, step))
    proc = subprocess.Popen(argv, cwd=str(row.gomod), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    lines, last = 0, t0
    for line in proc.stdout:
        logf.write(line)
        lines += 1
        now = time.monotonic()
        if now - last >= 30:
            last = now
            log("gobuild %s: %s: %d%s lines of output, %.0fs" % (
                row.name, step, lines, "/%d" % count_total if count_total else "", now - t0))
    rc = proc.wait()
    took = time.monotonic() - t0
    logf.flush()
    if rc != 0:
        raise RuntimeError("gobuild %s: %s failed (exit %d) after %.0fs, see %s" % (
            row.name, step, rc, took, logf.name))
    log("gobuild %s: %s done in %.0fs" % (row.name, step, took))
    return took


#: A package that asks for OpenAPI definitions: a `// +k8s:openapi-gen=...` comment line.
OPENAPI_TAG = re.compile(r"(?m)^\s*//\s*\+k8s:openapi-gen=")


def _go_out(row, argv, env):
    p = subprocess.run([row.go] + argv, cwd=str(row.gomod), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    if p.returncode != 0:
        raise RuntimeError("gobuild %s: go %s failed: %s" % (row.name, " ".join(argv), p.stderr[-3000:]))
    return p.stdout


def generate_openapi(row, tmp, env, logf):
    """Kubernetes keeps its OpenAPI definitions out of git and generates them in its build
    (Makefile.generated_files): run the row's openapi-gen (pinned by the row's go.sum) over every
    package of the import graph that carries the +k8s:openapi-gen tag. The module cache is
    read-only (and `go build -overlay` may not touch it), so the file goes into a copy of the
    module (checked by go.sum when it was downloaded), and the build reads that copy through a
    go.mod of its own (-modfile: the row's go.mod plus one replace line). Returns the -modfile."""
    spec = row.row["openapi"]
    tool = tmp / "tools" / "openapi-gen"
    _stream(row, "build openapi-gen", [row.go, "build", "-o", str(tool), spec["tool"]], logf, env)
    inputs = []
    for line in _go_out(row, ["list", "-deps", "-f", "{{.ImportPath}}\t{{.Dir}}"] + row.packages,
                        env).splitlines():
        path, _, folder = line.partition("\t")
        if not folder or "/_" in path or path.startswith(spec["tool"].split("/cmd/")[0]):
            continue
        for name in os.listdir(folder):
            if name.endswith(".go") and not name.endswith("_test.go"):
                with open(os.path.join(folder, name), errors="replace") as f:
                    if OPENAPI_TAG.search(f.read()):
                        inputs.append(path)
                        break
    moddir = Path(_go_out(row, ["list", "-m", "-f", "{{.Dir}}", row.module], env).strip())
    gen = tmp / "gen"
    _stream(row, "openapi-gen over %d tagged packages" % len(inputs),
            [str(tool), "-i", ",".join(sorted(inputs)), "-p", spec["package"], "-O", "zz_generated.openapi",
             "-h", str(moddir / spec["header"]), "-o", str(gen),
             "--report-filename", str(gen / "api-rules.txt")], logf, env)
    made = gen / spec["package"] / "zz_generated.openapi.go"
    if not made.is_file():
        raise RuntimeError("gobuild %s: openapi-gen wrote no %s" % (row.name, made))
    src = tmp / "src"
    shutil.copytree(str(moddir), str(src))  # the module zip, unpacked: regular files only
    rel = spec["package"][len(row.module) + 1:]
    (src / rel).chmod(0o755)
    shutil.copy2(str(made), str(src / rel / made.name))
    modfile = tmp / "build.mod"
    modfile.write_text((row.gomod / "go.mod").read_text()
                       + "\n// gobuild: the module with its generated OpenAPI file\nreplace %s => %s\n"
                       % (row.module, src))
    shutil.copy2(str(row.gomod / "go.sum"), str(tmp / "build.sum"))
    return modfile


def build(row):
    """Build one row into its cache folder (the steps: download, [generate], compile, check)."""
    for tool in [row.go] + (["gcc"] if row.cgo else []):
        if shutil.which(tool) is None:
            raise RuntimeError("gobuild %s needs %s (see tests/e2e/README.md, host packages)"
                               % (row.name, tool))
    if row.out.exists():
        shutil.rmtree(str(row.out))
    tmp = row.out.with_name(row.out.name + ".part")
    if tmp.exists():
        shutil.rmtree(str(tmp))
    tmp.mkdir(parents=True)
    for d in (GOMODCACHE, GOCACHE):
        d.mkdir(parents=True, exist_ok=True)
    env = row.env()
    times = {}
    log("gobuild %s: %s@%s, %d package(s), %s, cgo %s, key %s" % (
        row.name, row.module, row.version, len(row.packages), row.go_version(),
        "on" if row.cgo else "off", row.key))
    with open(str(tmp / "build.log"), "w") as logf:
        # 1. fetch the modules the packages import (go.sum checks every one)
        times["download"] = _stream(row, "fetch modules (go list -deps)",
                                    [row.go, "list"] + row.tags + ["-deps", "-f", "{{.ImportPath}}"]
                                    + row.packages, logf, env)
        with open(str(tmp / "build.log")) as f:
            total = sum(1 for l in f if not l.startswith("$ ")) - 1
        modfile = []
        if row.row.get("openapi"):
            t0 = time.monotonic()
            modfile = ["-modfile", str(generate_openapi(row, tmp, env, logf))]
            times["generate"] = time.monotonic() - t0
        # 2. compile; -v names each package it compiles (cached ones are not named)
        argv = [row.go, "build", "-v", "-p", str(os.cpu_count() or 2), "-trimpath"] + row.tags + [
                "-ldflags", row.ldflags] + modfile + ["-o", str(tmp) + "/"] + row.packages
        times["compile"] = _stream(row, "compile (%d packages in the import graph)" % total, argv,
                                   logf, env, count_total=total)
    # `go build -o dir/` names a binary after its package path (go.etcd.io/etcd/server/v3 gives
    # "server"): the row's `rename` gives it the name its release uses
    for built, name in sorted(row.row.get("rename", {}).items()):
        (tmp / built).rename(tmp / name)
    if row.check:
        argv = [str(tmp / row.check["argv"][0])] + row.check["argv"][1:]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=60)
        got = (p.stdout.strip().splitlines() or [""])[0].strip()
        if got != row.check["want"]:
            raise RuntimeError("gobuild %s: %s says %r, want %r" % (
                row.name, " ".join(row.check["argv"]), got, row.check["want"]))
    for scratch in ("src", "gen", "tools"):
        if (tmp / scratch).exists():
            shutil.rmtree(str(tmp / scratch))
    write_json(tmp / "complete.json", {"name": row.name, "key": row.key, "module": row.module,
                                       "version": row.version, "go": row.go_version(),
                                       "seconds": {k: round(v, 1) for k, v in times.items()}})
    tmp.rename(row.out)
    log("gobuild %s: built into %s (%s)" % (row.name, row.out, ", ".join(
        "%s %.0fs" % kv for kv in times.items())))
    return row


def rows(names=None):
    doc = table()
    found = [Row(r, doc) for r in doc["builds"]]
    if names:
        unknown = set(names) - {r.name for r in found}
        if unknown:
            raise RuntimeError("no such build row(s) in %s: %s" % (TABLE, ", ".join(sorted(unknown))))
        found = [r for r in found if r.name in names]
    return found


def ensure(name):
    """The built row `name` (built now when its cache folder is missing). Call with the lab's
    cache lock held (upstream.prepare holds it)."""
    row = rows([name])[0]
    if row.stamp.exists():
        info = json.loads(row.stamp.read_text())
        log("gobuild %s: cached (%s, built in %s)" % (row.name, row.out, info.get("seconds")))
        return row
    return build(row)


def complete_sum(row):
    """Maintainer step: let go add what go.sum lacks for the row's packages (-mod=mod)."""
    env = row.env(mod="mod")
    subprocess.run([row.go, "list"] + row.tags + ["-deps", "-f", "{{.ImportPath}}"] + row.packages,
                   cwd=str(row.gomod), env=env, check=True, stdout=subprocess.DEVNULL)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.gobuild", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="rows of builds.json (default: all)")
    ap.add_argument("--list", action="store_true", help="print the rows and their cache keys")
    ap.add_argument("--sum", action="store_true", help="complete the rows' go.sum (maintainer)")
    args = ap.parse_args(argv)
    for row in rows(args.names):
        if args.list:
            print("%-24s %s@%s go %s cgo %s key %s%s" % (
                row.name, row.module, row.version, row.row["go"], row.cgo, row.key,
                " (cached)" if row.stamp.exists() else ""))
            continue
        if args.sum:
            complete_sum(row)
            continue
        with cache_lock():
            print(ensure(row.name).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
