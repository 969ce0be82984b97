#!/usr/bin/env python3
"""Image load from a bundle against the runtimes' own loaders (issue 21).

    python3 tests/bench/bench_image_load.py --bundle B.tar [--reps 3]
        [--workdir DIR] [--runtime docker,containerd] [--script k8s_offline.py]

On a private dockerd and a private containerd started here (their own data
roots, sockets and no networks: the host's daemons are not touched), each
store emptied before every run:

- docker: the tool's image load (phase_images, the code `master` runs,
  every byte hashed on the way in) against `docker load -i` of a
  `docker save` of the same images (made once, after the first load);
- containerd: the same phase into containerd's k8s.io namespace against
  `ctr -n k8s.io images import` of an OCI archive of them (`ctr images
  export` of what the tool loaded).

The contenders alternate, --reps times each; the table gives the median
wall time of each (the tool's time is its whole child process: Python's
start and the bundle's index read too) and the ratio, and the median CPU
time of the daemon (with its reaped children, docker-untar) plus the
client's (the tool and its docker/ctr, or docker load / ctr): on a shared
machine the wall ratio moves with the load, the CPU one much less.  --script compares
another copy of k8s_offline.py (main's, say) in the same run.  The page
cache is warm after the first run: this measures the loaders, not a disk.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

CHILD = r"""
import sys, time, types
sys.path.insert(0, sys.argv[1])
import k8s_offline as k
bundle = k.Bundle(sys.argv[2])
ctx = types.SimpleNamespace(
    bundle=bundle, role="master", image_repository=sys.argv[4],
    runner=k.Runner(), progress=False, dry_run=False,
    containerd_address=sys.argv[5], warnings=[])
ctx.warn = ctx.warnings.append
ctx.adapter = k.RUNTIMES[sys.argv[3]]
t0 = time.monotonic()
k.phase_images(ctx)
print("%.3f" % (time.monotonic() - t0))
"""


def sh(argv, env=None, check=True, **kwargs):
    return subprocess.run(argv, env=env, check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, **kwargs)


TICK = os.sysconf("SC_CLK_TCK")


def daemon_cpu(pid):
    """CPU seconds of a daemon and its reaped children (docker-untar)."""
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / float(TICK)


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter(object):
    """Wall time and CPU time (the daemon's plus this process's children's)
    of one run."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        self.t0, self.d0, self.c0 = time.monotonic(), daemon_cpu(self.pid), children_cpu()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        self.cpu = daemon_cpu(self.pid) - self.d0 + children_cpu() - self.c0


def wait_for(test, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not test():
        if time.monotonic() > deadline:
            raise SystemExit("%s did not come up" % what)
        time.sleep(0.2)


class PrivateDocker(object):
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "docker")
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "docker.sock")
        self.env = dict(os.environ, DOCKER_HOST="unix://" + self.sock)
        self.log = open(os.path.join(self.dir, "dockerd.log"), "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", os.path.join(self.dir, "root"),
             "--exec-root", os.path.join(self.dir, "exec"),
             "--pidfile", os.path.join(self.dir, "dockerd.pid"),
             "-H", "unix://" + self.sock, "--bridge=none", "--iptables=false",
             "--ip6tables=false", "--ip-masq=false", "--log-level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: sh(["docker", "info"], self.env, check=False).returncode == 0,
                 "the private dockerd")

    def empty(self):
        ids = sh(["docker", "images", "-aq"], self.env).stdout.split()
        if ids:
            sh(["docker", "rmi", "-f"] + sorted(set(ids)), self.env)
        assert sh(["docker", "images", "-aq"], self.env).stdout.strip() == ""

    def names(self):
        return [n for n in sh(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                              self.env).stdout.split() if not n.endswith(":<none>")]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


class PrivateContainerd(object):
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "containerd")
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "containerd.sock")
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as handle:
            handle.write('version = 2\nroot = "%s"\nstate = "%s"\n'
                         'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                         '[grpc]\n  address = "%s"\n' % (
                             os.path.join(self.dir, "root"),
                             os.path.join(self.dir, "state"), self.sock))
        self.log = open(os.path.join(self.dir, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.ctr("version", check=False).returncode == 0,
                 "the private containerd")

    def ctr(self, *argv, **kwargs):
        return sh(["ctr", "--address", self.sock, "-n", "k8s.io"] + list(argv), **kwargs)

    def names(self):
        return self.ctr("images", "ls", "-q").stdout.split()

    def empty(self):
        names = self.names()
        if names:
            self.ctr("images", "rm", "--sync", *names)
        assert self.names() == []
        deadline = time.monotonic() + 30
        while self.ctr("content", "ls", "-q").stdout.strip():
            if time.monotonic() > deadline:
                raise SystemExit("containerd kept content after images rm --sync")
            time.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def tool_load(daemon, script_dir, bundle, runtime, env, address, repository):
    with Meter(daemon.proc.pid) as meter:
        result = sh([sys.executable, "-c", CHILD, script_dir, bundle, runtime,
                     repository, address], env, check=False)
    if result.returncode != 0:
        raise SystemExit("the tool's load failed:\n%s" % result.stderr[-3000:])
    return meter


def timed(daemon, argv, env=None):
    with Meter(daemon.proc.pid) as meter:
        sh(argv, env)
    return meter


def bench_docker(args, scripts, workdir):
    docker = PrivateDocker(workdir)
    archive = os.path.join(workdir, "docker-save.tar")
    runs = dict((label, []) for label in list(scripts) + ["docker load -i"])
    try:
        for rep in range(args.reps):
            for label, script_dir in scripts.items():
                docker.empty()
                runs[label].append(tool_load(docker, script_dir, args.bundle, "docker",
                                             docker.env, "", args.image_repository))
                if not os.path.exists(archive):
                    sh(["docker", "save", "-o", archive] + docker.names(), docker.env)
            docker.empty()
            runs["docker load -i"].append(timed(docker, ["docker", "load", "-i", archive],
                                                docker.env))
        size = os.path.getsize(archive)
    finally:
        docker.empty()
        docker.stop()
    return runs, "docker load -i", "docker save archive %d MiB" % (size >> 20)


def bench_containerd(args, scripts, workdir):
    ctrd = PrivateContainerd(workdir)
    archive = os.path.join(workdir, "oci.tar")
    baseline = "ctr -n k8s.io images import (OCI archive)"
    runs = dict((label, []) for label in list(scripts) + [baseline])
    try:
        for rep in range(args.reps):
            for label, script_dir in scripts.items():
                ctrd.empty()
                runs[label].append(tool_load(ctrd, script_dir, args.bundle, "containerd",
                                             None, ctrd.sock, args.image_repository))
                if not os.path.exists(archive):
                    ctrd.ctr("images", "export", archive, *ctrd.names())
            ctrd.empty()
            runs[baseline].append(timed(ctrd, ["ctr", "--address", ctrd.sock, "-n",
                                               "k8s.io", "images", "import", archive]))
        size = os.path.getsize(archive)
    finally:
        ctrd.empty()
        ctrd.stop()
    return runs, baseline, "OCI archive %d MiB" % (size >> 20)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/k8so-bench-load")
    parser.add_argument("--runtime", default="docker,containerd")
    parser.add_argument("--image-repository", default="k8s.gcr.io")
    parser.add_argument("--script", action="append", default=[],
                        help="another k8s_offline.py to compare (LABEL=PATH)")
    args = parser.parse_args()
    args.bundle = os.path.abspath(args.bundle)
    scripts = {"this tool": REPO}
    for text in args.script:
        label, path = text.split("=", 1)
        scripts[label] = os.path.dirname(os.path.abspath(path))
    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)
    print("load average at start: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    rows = {}
    for runtime in args.runtime.split(","):
        bench = {"docker": bench_docker, "containerd": bench_containerd}[runtime]
        runs, baseline, what = bench(args, scripts, os.path.join(args.workdir, runtime))
        base = statistics.median(m.wall for m in runs[baseline])
        base_cpu = statistics.median(m.cpu for m in runs[baseline])
        print("\n%s (%s), median of %d; CPU: the daemon's and the client's" % (
            runtime, what, args.reps))
        for label, meters in runs.items():
            median = statistics.median(m.wall for m in meters)
            cpu = statistics.median(m.cpu for m in meters)
            print("  %-44s %6.2f s  (%s)  %.2fx   CPU %.2f s (%.2fx)" % (
                label, median, " ".join("%.2f" % m.wall for m in meters),
                median / base, cpu, cpu / base_cpu))
            rows["%s: %s" % (runtime, label)] = {
                "median": round(median, 2), "runs": [round(m.wall, 2) for m in meters],
                "ratio": round(median / base, 2), "cpu": round(cpu, 2),
                "cpu_ratio": round(cpu / base_cpu, 2)}
    print("load average at end: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    print(json.dumps(rows, sort_keys=True))
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
