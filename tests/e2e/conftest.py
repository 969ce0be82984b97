"""Session fixtures of the air-gap lab. Every fixture that starts something removes it in its
finalizer, which pytest runs even when a step fails; SIGTERM is turned into KeyboardInterrupt so an
interrupted run tears down too, and leftovers of killed runs (dead owner pid) are reaped first."""

import os
import shutil
import signal
import subprocess
import time

import pytest

from . import nodes as nodes_mod
from . import upstream as up_mod
from .common import RUN_LABEL, WORK_DIR, log


KEEP_RUNS = int(os.environ.get("K8SO_LAB_KEEP_RUNS", "5"))


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


@pytest.fixture(scope="session")
def workdir():
    signal.signal(signal.SIGTERM, _sigterm)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    # Earlier runs: keep their logs (the last KEEP_RUNS runs), drop their bundles. They hold
    # only regular files written by the tool and the lab, so rmtree is safe here.
    old = sorted(p for p in WORK_DIR.glob("run-*") if p.is_dir())
    for i, p in enumerate(old):
        if i < len(old) - KEEP_RUNS + 1:
            shutil.rmtree(str(p), ignore_errors=True)
            continue
        for big in ["bundle-cache", "usb", "usb-corrupt"] + [t.name for t in p.glob("*.tar")]:
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


def pytest_terminal_summary(terminalreporter):
    for d in _LOGDIRS:
        terminalreporter.write_line("air-gap lab: node logs (journal, kubelet, docker, kubeadm-init.log) "
                                    "and step outputs saved under %s" % d)


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


@pytest.fixture(scope="session")
def state():
    """Results handed from one step to the next (the steps run in file order)."""
    return {}
