"""Shared helpers of the air-gap lab: paths, logging, subprocess calls (argv lists only)."""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent

#: Build outputs that survive runs (Go build cache, built binaries, images, node image rootfs).
CACHE_DIR = Path(os.environ.get("K8SO_LAB_CACHE", "/var/cache/k8s-offline-lab"))
#: Per-run scratch space (bundle, node logs). Ignored by git.
WORK_DIR = Path(os.environ.get("K8SO_LAB_WORK", str(E2E_DIR / ".work")))
#: Prefix of every Docker object the lab creates.
PREFIX = "k8so-lab"
#: Label put on every container, network and volume the lab creates (value: the run id).
RUN_LABEL = "org.k8s-offline.lab.run"

#: The lab's Kubernetes: the tool's default (the seed's own), built from k8s.io/kubernetes (gobuild.py).
K8S_VERSION = "v1.16.0"


def _apt_debian_mirror():
    """The main Debian archive this machine's apt already uses (deb822
    sources or the one-line list), so the lab reaches nothing apt does not."""
    candidates = []
    folder = Path("/etc/apt/sources.list.d")
    for path in sorted(folder.glob("*.sources")) if folder.is_dir() else []:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                candidates += line.split()[1:]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] in ("deb", "deb-src"):
                candidates.append(parts[1] if not parts[1].startswith("[") else parts[2])
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise RuntimeError("no Debian archive found in /etc/apt sources: set "
                       "K8SO_LAB_DEBIAN_MIRROR")


DEBIAN_MIRROR = os.environ.get("K8SO_LAB_DEBIAN_MIRROR") or _apt_debian_mirror()
DEBIAN_SUITE = "bookworm"

_T0 = time.monotonic()


def log(msg):
    """Print a lab progress line (flushed, so pytest -s shows it at once)."""
    sys.stdout.write("[k8so-lab %6.1fs] %s\n" % (time.monotonic() - _T0, msg))
    sys.stdout.flush()


def run(argv, check=True, capture=False, input=None, timeout=None, env=None, cwd=None, quiet=False):
    """Run one command given as an argv list. Returns CompletedProcess (text mode)."""
    argv = [str(a) for a in argv]
    if not quiet:
        log("$ " + " ".join(argv))
    kw = {}
    if capture:
        kw["stdout"] = subprocess.PIPE
        kw["stderr"] = subprocess.PIPE
    proc = subprocess.run(argv, input=input, timeout=timeout, env=env, cwd=cwd,
                          universal_newlines=True, **kw)
    if check and proc.returncode != 0:
        detail = ""
        if capture:
            detail = "\nstdout:\n%s\nstderr:\n%s" % (proc.stdout[-4000:], proc.stderr[-4000:])
        raise CommandError(proc.returncode, argv, output=detail)
    return proc


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message carries the tail of the command's output."""

    def __str__(self):
        return subprocess.CalledProcessError.__str__(self) + (self.output or "")


def out(argv, **kw):
    """Run and return stripped stdout."""
    return run(argv, capture=True, **kw).stdout.strip()


def sha256_file(path, bufsize=1 << 20):
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        while True:
            chunk = f.read(bufsize)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (callers verify after binding)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def require_tools(tools):
    """Fail with one clear message listing every missing host tool."""
    import shutil
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            "the air-gap lab needs these host tools, missing: %s "
            "(see tests/e2e/README.md for the apt packages)" % ", ".join(missing))


@contextlib.contextmanager
def cache_lock():
    """The lab's build lock on CACHE_DIR: concurrent lab runs wait for one build (and say so)."""
    import fcntl
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / "prepare.lock"
    with open(str(path), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log("waiting for another lab process that holds %s" % path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
