"""Session fixtures of the air-gap lab. Every fixture that starts something removes it in its
finalizer, which pytest runs even when a step fails; SIGTERM is turned into KeyboardInterrupt so an
interrupted run tears down too, and leftovers of killed runs (dead owner pid) are reaped first.

The scenarios (test_seed.py, test_containerd.py, test_ha.py) share the upstream, the node image and
one bundle; each boots its own nodes and removes them when it ends."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from . import nodes as nodes_mod
from . import upstream as up_mod
from .common import K8S_VERSION, REPO_ROOT, RUN_LABEL, WORK_DIR, log, run, write_json

TOOL = REPO_ROOT / "k8s_offline.py"
BUNDLE_TOP = "k8s-offline-%s-linux-amd64" % K8S_VERSION


KEEP_RUNS = int(os.environ.get("K8SO_LAB_KEEP_RUNS", "5"))


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def _running(run_dir):
    """Whether the lab process that owns run_dir (run-<date>-<pid>) still runs: a second lab run
    in the same work dir must not delete the bundle the first one's nodes have mounted."""
    try:
        pid = int(run_dir.name.rsplit("-", 1)[1])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


@pytest.fixture(scope="session")
def workdir():
    signal.signal(signal.SIGTERM, _sigterm)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    # Earlier runs: keep their logs (the last KEEP_RUNS runs), drop their bundles. They hold
    # only regular files written by the tool and the lab, so rmtree is safe here.
    old = sorted(p for p in WORK_DIR.glob("run-*") if p.is_dir() and not _running(p))
    for i, p in enumerate(old):
        if i < len(old) - KEEP_RUNS + 1:
            shutil.rmtree(str(p), ignore_errors=True)
            continue
        for big in ["bundle-cache", "usb", "usb-corrupt", "usb-bare"] + [t.name for t in p.glob("*.tar")]:
            target = p / big
            if target.is_dir():
                shutil.rmtree(str(target), ignore_errors=True)
            elif target.exists():
                target.unlink()
    d = WORK_DIR / ("run-%s-%d" % (time.strftime("%Y%m%d-%H%M%S"), os.getpid()))
    d.mkdir(parents=True)
    log("lab work dir %s" % d)
    return d


@pytest.fixture(scope="session")
def upstream(workdir):
    t0 = time.monotonic()
    build = up_mod.prepare()
    log("upstream ready in %.0fs" % (time.monotonic() - t0))
    _SUMMARY.extend(up_mod.real_and_stand_ins(build))
    if not build.real_network:
        _SUMMARY.append(build.net.placeholder_banner())
    up = up_mod.Upstream(build, logdir=workdir)
    try:
        up.start()
        log(up.describe())
        yield up
    finally:
        up.stop()
        log("upstream registry and file server stopped")


@pytest.fixture(scope="session")
def node_image():
    nodes_mod.reap()  # leftovers of lab runs whose process is gone
    return nodes_mod.ensure_node_image()


_LOGDIRS = []
#: Measurements of this run (seconds), written to <run dir>/timings.json and printed at the end.
TIMINGS = {}
_SUMMARY = []


def pytest_terminal_summary(terminalreporter):
    for line in _SUMMARY:
        terminalreporter.write_line("air-gap lab: " + line)
    for key in sorted(TIMINGS):
        terminalreporter.write_line("air-gap lab timing: %-58s %s" % (key, TIMINGS[key]))
    for d in _LOGDIRS:
        if TIMINGS:
            write_json(d / "timings.json", TIMINGS)
        terminalreporter.write_line("air-gap lab: node logs (journal, kubelet, docker, kubeadm-init.log) "
                                    "and step outputs saved under %s" % d)


def _tool_commands():
    """The subcommands `k8s_offline.py --help` lists."""
    p = subprocess.run([sys.executable, str(TOOL), "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    return set(re.findall(r"(?m)^\s{4}([a-z][a-z-]+)\s", p.stdout)), p.stdout


@pytest.fixture(scope="session")
def tool():
    """k8s_offline.py with its install commands. Their absence is a failure of the lab, never a
    skip: a regression that dropped `master` must turn CI red."""
    assert TOOL.is_file(), "k8s_offline.py is absent from the repository root (%s)" % TOOL
    commands, text = _tool_commands()
    missing = {"bundle", "verify", "master", "join", "reset", "status", "token", "remove-node"} - commands
    assert not missing, "k8s_offline.py --help lacks %s:\n%s" % (sorted(missing), text)
    return TOOL


def tool_host(args, timeout=1800):
    """Run k8s_offline.py on this machine (the connected side); returns the CompletedProcess."""
    p = run([sys.executable, str(TOOL)] + args, check=False, capture=True, timeout=timeout)
    log("exit %d\n--- stdout (tail)\n%s\n--- stderr (tail)\n%s" % (
        p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    return p


def _timed(argv, runs=2):
    """Wall seconds of the last of `runs` runs of argv (the first warms the page cache)."""
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        took = time.monotonic() - t0
    return took


@pytest.fixture(scope="session")
def bundle(tool, upstream, workdir):
    """One bundle made the way the seed made it: no --kubernetes-version (the tool's default,
    v1.16.0), kubeadm's images from registry.aliyuncs.com/google_containers, which the lab's
    registry plays; verified, and extracted like a USB stick.
    Returns {"tar": path, "dir": extracted top folder}. Measures verify against sha256sum."""
    p = tool_host(["images", "--kubernetes-version", K8S_VERSION,
                   "--image-repository", up_mod.SEED_IMAGE_REPOSITORY,
                   "--extra-image", up_mod.TEST_IMAGE], timeout=120)
    assert p.returncode == 0, "k8s_offline.py images failed:\n%s" % p.stderr[-2000:]
    served = set(upstream.build.images())
    wanted = [l.strip() for l in p.stdout.splitlines() if l.strip()]
    unserved = [r for r in wanted if r.split("/", 1)[1] not in served]
    assert not unserved, "the lab's upstream does not serve %s (it serves %s): update " \
        "tests/e2e/upstream.py" % (unserved, sorted(served))

    out_tar = workdir / ("%s.tar" % BUNDLE_TOP)
    args = (["bundle"] + upstream.bundle_args(up_mod.SEED_IMAGE_REPOSITORY)
            + ["--output", str(out_tar), "--cache-dir", str(workdir / "bundle-cache"), "--no-progress"])
    t0 = time.monotonic()
    p = tool_host(args)
    TIMINGS["bundle (from the lab's loopback upstream)"] = round(time.monotonic() - t0, 1)
    assert p.returncode == 0, "bundle failed:\n%s\n%s" % (p.stdout[-3000:], p.stderr[-3000:])
    assert out_tar.is_file(), "bundle did not write %s" % out_tar
    assert upstream.files.requests, "bundle fetched nothing from the lab file server"
    p = tool_host(["verify", str(out_tar)])
    assert p.returncode == 0, "verify refused a fresh bundle:\n%s\n%s" % (p.stdout, p.stderr)

    dest = workdir / "usb"
    with tarfile.open(str(out_tar), "r:*") as tar:
        tops = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        assert tops == {BUNDLE_TOP}, "bundle must hold one top directory %s, has %s" % (BUNDLE_TOP, tops)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(str(dest), filter="data")
        else:
            tar.extractall(str(dest))
    top = dest / BUNDLE_TOP
    for entry in ("k8s_offline.py", "bundle.json", "bin", "archives", "images", "manifests", "systemd"):
        assert (top / entry).exists(), "bundle lacks %s" % entry
    meta = json.loads((top / "bundle.json").read_text())
    assert meta.get("kubernetes_version") == K8S_VERSION, \
        "the default bundle is not %s: bundle.json says %r" % (K8S_VERSION, meta.get("kubernetes_version"))
    refs = [i.get("ref") for i in meta.get("images", [])]
    assert up_mod.TEST_IMAGE in refs, "the bundle lacks the --extra-image %s: %s" % (up_mod.TEST_IMAGE, refs)

    # verify against sha256sum over the same bytes (second of two runs each: warm page cache)
    size = out_tar.stat().st_size
    verify_s = _timed([sys.executable, str(TOOL), "verify", "--no-progress", str(out_tar)])
    sha_s = _timed(["sha256sum", str(out_tar)])
    TIMINGS["verify of the bundle .tar (%d MiB)" % (size >> 20)] = round(verify_s, 2)
    TIMINGS["sha256sum of the same .tar"] = round(sha_s, 2)
    TIMINGS["verify / sha256sum (goal <= 1.2)"] = round(verify_s / sha_s, 2)
    return {"tar": out_tar, "dir": top}


@pytest.fixture(scope="session")
def lab(workdir, node_image):
    the_lab = nodes_mod.Lab(workdir, node_image)
    _LOGDIRS.append(workdir)
    try:
        the_lab.create_network()
        yield the_lab
    finally:
        the_lab.stop()
        leftovers = []
        for ls in (["docker", "ps", "-aq"], ["docker", "network", "ls", "-q"],
                   ["docker", "volume", "ls", "-q"]):
            p = subprocess.run(ls + ["--filter", "label=%s=%s" % (RUN_LABEL, the_lab.run_id)],
                               stdout=subprocess.PIPE, universal_newlines=True)
            leftovers += p.stdout.split()
        log("lab torn down (run %s); node logs saved under %s" % (the_lab.run_id, the_lab.logdir))
        assert not leftovers, "teardown left Docker objects behind: %s" % leftovers


@pytest.fixture(scope="module")
def state():
    """Results handed from one step of a scenario to the next (the steps run in file order)."""
    return {}
