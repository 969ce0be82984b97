"""Faults while bundling (issue 5): a fault-injecting proxy in front of the
real registry and file server, kill -9 at seeded random moments, and a full
disk.  Whatever happens, no bundle that fails `verify` is ever written under
the final name, and the cache never keeps a wrong blob."""

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from fixtures.faultproxy import FaultProxy, Rule

import k8s_offline as ko

REPO = os.path.dirname(os.path.abspath(ko.__file__))
SCRIPT = os.path.join(REPO, "k8s_offline.py")
BLOB = r"/v2/.+/blobs/sha256:"
MANIFEST = r"/v2/.+/manifests/"
FILE = r"/dl\.k8s\.io/.+/kubelet$"


def cache_is_clean(cache):
    """Every entry of the content-addressed cache hashes to its name."""
    folder = os.path.join(cache, "sha256")
    if not os.path.isdir(folder):
        return True
    for name in os.listdir(folder):
        if not re.match(r"^[0-9a-f]{64}$", name):
            continue        # a .partial download or a temporary file: never used
        with open(os.path.join(folder, name), "rb") as handle:
            if hashlib.sha256(handle.read()).hexdigest() != name:
                return False
    return True


@pytest.fixture
def proxies(test_images, file_server):
    registry = FaultProxy(test_images.host).start()
    files = FaultProxy("127.0.0.1:%d" % file_server.port).start()
    yield registry, files
    registry.stop()
    files.stop()


def proxied_args(make_bundle_args, registry, files, file_server):
    args = make_bundle_args(registry_host=registry.host)
    return [a.replace("127.0.0.1:%d" % file_server.port, files.host)
            for a in args] + ["--timeout", "2"]


FAULTS = [
    # (where, fault, times, outcome)
    (BLOB, "503", 2, "ok"),
    (BLOB, "429", 2, "ok"),
    (BLOB, "reset", 3, "ok"),
    (BLOB, "truncate", 3, "ok"),
    (BLOB, "flip", 2, "ok"),
    (BLOB, "stall", 1, "ok"),
    (BLOB, "flip", 50, "fail"),
    (BLOB, "503", 50, "fail"),
    (BLOB, "redirect_loop", 1000, "fail"),
    (MANIFEST, "503", 2, "ok"),
    (MANIFEST, "flip", 1, "fail"),
    (FILE, "reset", 2, "ok"),
    (FILE, "flip", 1, "ok"),
    (FILE, "flip", 50, "fail"),
]


@pytest.mark.parametrize("where,fault,times,outcome", FAULTS,
                         ids=["%s-%s-x%d" % (w.split("/")[1][:4] or "file", f, t)
                              for w, f, t, _ in FAULTS])
def test_bundle_under_faults(where, fault, times, outcome, proxies, make_bundle_args,
                             file_server, run_cli, tmp_path):
    registry, files = proxies
    target = files if where == FILE else registry
    target.set_rules([Rule(where, fault, times, stall_seconds=4)])
    output = tmp_path / "out.tar"
    cache = tmp_path / "cache"
    rc, out, err = run_cli("bundle", *proxied_args(make_bundle_args, registry, files,
                                                   file_server),
                           "--output", output, "--cache-dir", cache, timeout=600)
    assert "Traceback" not in err
    assert cache_is_clean(str(cache)), "a wrong blob was kept in the cache"
    assert target.rules[0].hits >= 1, "the fault never fired"
    if outcome == "ok":
        assert rc == 0, err
        rc, vout, verr = run_cli("verify", output)
        assert rc == 0, verr
    else:
        assert rc != 0
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert not output.exists()
    assert not [p for p in os.listdir(str(tmp_path)) if ".partial" in p]


def test_kill_9_at_random_moments_then_resume(proxies, make_bundle_args, file_server,
                                              run_cli, tmp_path):
    """20 kills at seeded random moments of a slowed-down cold bundle; each
    re-run finishes and verifies, and re-fetches no more blob bytes than the
    killed run had left to fetch."""
    registry, files = proxies
    seed = int(os.environ.get("K8SO_KILL_SEED", "1626"))
    rnd = random.Random(seed)
    args = proxied_args(make_bundle_args, registry, files, file_server)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    slow = [Rule(BLOB, "slow", 100000, stall_seconds=0.004)]

    # One unkilled slow run sets the time scale and the total blob bytes.
    registry.set_rules(slow)
    start, before = time.monotonic(), registry.blob_bytes
    rc, out, err = run_cli("bundle", *args, "--output", tmp_path / "ref.tar",
                           "--cache-dir", tmp_path / "ref-cache")
    assert rc == 0, err
    cold_seconds, total_blob_bytes = time.monotonic() - start, registry.blob_bytes - before
    report = []
    for round_ in range(20):
        output = tmp_path / ("out-%d.tar" % round_)
        cache = tmp_path / ("cache-%d" % round_)
        registry.set_rules(slow)
        cmd = [sys.executable, SCRIPT, "bundle"] + [str(a) for a in args] + \
            ["--output", str(output), "--cache-dir", str(cache)]
        before = registry.blob_bytes
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env)
        time.sleep(rnd.uniform(0.0, cold_seconds))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        fetched_before_kill = registry.blob_bytes - before
        assert not output.exists() or run_cli("verify", output)[0] == 0
        assert cache_is_clean(str(cache))
        registry.set_rules([])
        before = registry.blob_bytes
        rc, out, err = run_cli("bundle", *args, "--output", output, "--cache-dir", cache,
                               timeout=300)
        assert rc == 0, "seed %d round %d: %s" % (seed, round_, err)
        assert run_cli("verify", output)[0] == 0
        refetched = registry.blob_bytes - before
        # A resume repeats at most what was in flight at the kill: one
        # download chunk for each of the 8 parallel downloads.
        lost = fetched_before_kill + refetched - total_blob_bytes
        assert lost <= 8 * ko.DOWNLOAD_CHUNK, (round_, fetched_before_kill, refetched)
        report.append((fetched_before_kill, refetched))
        assert not [p for p in os.listdir(str(tmp_path)) if ".partial-" in p]
    print("kill -9: seed %d, 20 rounds, cold run %.1f s, %d blob bytes in all; "
          "(blob bytes fetched before the kill, blob bytes fetched by the resume): %s"
          % (seed, cold_seconds, total_blob_bytes, report))


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        pytest.fail("cannot mount a tmpfs (needs root): %s" % r.stderr.decode())
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.parametrize("where", ["output", "cache"])
def test_disk_full(where, small_tmpfs, bundle_args, run_cli, tmp_path):
    output = (small_tmpfs if where == "output" else tmp_path) / "out.tar"
    cache = (small_tmpfs if where == "cache" else tmp_path) / "cache"
    rc, out, err = run_cli("bundle", *bundle_args, "--output", output,
                           "--cache-dir", cache)
    assert rc != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "space" in errors[0], err
    assert not output.exists()
    assert not [p for p in os.listdir(str(output.parent)) if ".partial-" in p]
    assert cache_is_clean(str(cache))


def test_blob_redirect_to_another_host_drops_authorization(
        token_registry, anon_registry, make_bundle_args, make_docker_config, file_server,
        run_cli, tmp_path):
    """Like registry.k8s.io's 307s to storage: the token must not follow."""
    storage = FaultProxy(anon_registry.host).start()   # same storage, no auth
    front = FaultProxy(token_registry.host).start()
    try:
        port = storage.host.split(":")[1]
        front.set_rules([Rule(BLOB, "redirect", 1000, target="http://localhost:" + port)])
        env = {"DOCKER_CONFIG": make_docker_config(front.host)}
        output = tmp_path / "out.tar"
        rc, out, err = run_cli("bundle", *make_bundle_args(front.host), "--output", output,
                               "--cache-dir", tmp_path / "cache", env=env)
        assert rc == 0, err
        assert front.rules[0].hits > 0 and storage.requests > 0
        assert front.authorization_seen, "the registry itself never got the token"
        assert storage.authorization_seen == [], "Authorization followed a redirect"
        assert run_cli("verify", output)[0] == 0
    finally:
        front.stop()
        storage.stop()
