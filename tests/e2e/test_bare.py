"""Scenario "bare": two bare air-gapped nodes (Debian 12's minimal install: no container runtime,
no conntrack, socat, ebtables, ethtool, ipset or iptables) become a cluster from one stick.

    make e2e SCENARIO=bare        (or: python3 -m pytest -s tests/e2e/test_bare.py)

The stick: `bundle --os debian-12 --with-containerd` with the lab's usual flags, the Debian archive
(Debian's real signed InRelease and Packages, the pool of what the tool should take) and the
containerd/runc release files served by a second loopback file server (see bare.py). Bundling it is
timed against the same bundle without --os and without --with-containerd (BENCHMARKS.md).

bare1: `master --dry-run` (no --cri: the stick's containerd is the runtime) changes nothing and names the packages it would install; `master`
installs exactly the bundled packages the node lacked (nothing upgraded, nothing removed) and the
bundled containerd and runc, byte for byte; bare2 joins; both Ready; pods on the two nodes reach
each other and a ClusterIP Service; nothing is pulled; `master` again changes nothing.

The steps run in file order and hand results on through the module's `state`; a step whose
prerequisite failed fails too (it is never skipped).
"""

import hashlib
import re
import tarfile

import pytest

from . import bare
from . import cluster as c
from . import upstream as up_mod
from .common import log, run, sha256_file
from .conftest import _SUMMARY, TIMINGS, tool_host

MASTER, WORKER = "bare1", "bare2"
#: No --cri, as a user of a bare host runs it: with no runtime on the host and containerd on the
#: stick, the tool takes containerd (the issue-11 contract).
CRI = []
BUNDLE_ROUNDS = 2


@pytest.fixture(scope="module")
def archive_server(upstream):
    archive = bare.prepare_archive()
    _SUMMARY.extend("REAL: %s (bare) from %s@%s, Go %s" % (
        r.name, r.module, r.version, r.row["go"]) for r in bare.runtime_rows())
    server = up_mod.FileServer(archive.files).start()
    try:
        yield archive, server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bare_bundle(tool, upstream, archive_server, workdir):
    """The bundle for bare hosts, verified and extracted; also times bundling it against the same
    bundle without --os and without --with-containerd, each with a cold cache."""
    archive, server = archive_server
    base = bare.bundle_base_args(upstream, archive, server, workdir)

    def check(label, flags, rnd, p):
        text = p.stdout + p.stderr
        if flags and rnd == 0:
            log("bundle %s said:\n%s" % (label, text[-4000:]))
            assert any("InRelease" in r for r in server.requests), \
                "bundle %s did not fetch the archive's InRelease from the lab: %s" % (
                    label, server.requests[:10])
            # Debian's real InRelease, checked with Debian's keyring (the tool's default)
            assert re.search(r"(?i)signature checked with %s" % re.escape(bare.KEYRING), text) and \
                not re.search(r"(?i)signature[^\n]*not (checked|verified)", text), \
                "bundle %s does not say that it checked Debian's signature with %s:\n%s" % (
                    label, bare.KEYRING, text[-3000:])
        del server.requests[:]
    times, sizes = bare.time_bundles(tool_host, base, workdir, BUNDLE_ROUNDS, check)
    for label, _ in bare.BUNDLE_VARIANTS:
        TIMINGS["bundle %s, cold cache (s, %d rounds)" % (label, BUNDLE_ROUNDS)] = " / ".join(
            "%.1f" % t for t in times[label])
        TIMINGS["bundle %s, size (MiB)" % label] = round(sizes[label] / 1048576.0, 1)
    plain = bare.BUNDLE_VARIANTS[0][0]
    for label, _ in bare.BUNDLE_VARIANTS[1:]:
        TIMINGS["bundle %s adds (s, min of rounds / MiB)" % label] = "%.1f / %.1f" % (
            min(times[label]) - min(times[plain]), (sizes[label] - sizes[plain]) / 1048576.0)

    out_tar = workdir / "bare-bundle-2.tar"
    for n in range(len(bare.BUNDLE_VARIANTS) - 1):
        (workdir / ("bare-bundle-%d.tar" % n)).unlink()
    p = tool_host(["verify", str(out_tar)])
    assert p.returncode == 0, "verify refused the bare-host bundle:\n%s\n%s" % (p.stdout, p.stderr)
    dest = workdir / "usb-bare"
    with tarfile.open(str(out_tar), "r:*") as tar:
        tops = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        assert len(tops) == 1, "the bundle must hold one top directory, has %s" % sorted(tops)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(str(dest), filter="data")
        else:
            tar.extractall(str(dest))
    top = dest / tops.pop()
    debs = {}
    for path in sorted(top.rglob("*.deb")):
        name, version = run(["dpkg-deb", "-f", path, "Package", "Version"],
                            capture=True, quiet=True).stdout.split("\n")[:2]
        name, version = name.split(": ", 1)[1], version.split(": ", 1)[1]
        debs[name] = {"version": version, "sha256": sha256_file(path), "path": path}
    served = {e["package"]: e for e in archive.info()["pool"]}
    log("bundled .deb files: %s" % ", ".join("%s=%s" % (n, d["version"]) for n, d in sorted(debs.items())))
    assert sorted(debs) == sorted(archive.info()["bundle"]), \
        "the bundle's packages differ from the closure the lab resolves from Debian's metadata " \
        "(wanted %s + dependencies, minus Priority required/important):\n extra %s\n missing %s" % (
            bare.WANTED, sorted(set(debs) - set(archive.info()["bundle"])),
            sorted(set(archive.info()["bundle"]) - set(debs)))
    for name, d in debs.items():
        assert d["sha256"] == served[name]["sha256"], "%s in the bundle is not the archive's file" % name
    TIMINGS["bundle --os %s: .deb files" % bare.OS_ID] = "%d (%.1f MiB)" % (
        len(debs), sum(d["path"].stat().st_size for d in debs.values()) / 1048576.0)
    release = archive.info()["release_files"]
    return {"tar": out_tar, "dir": top, "debs": debs, "release": release}


@pytest.fixture(scope="module")
def bare_image():
    return bare.ensure_bare_image()


@pytest.fixture(scope="module")
def nodes(lab, bare_bundle, bare_image):
    with c.scenario_nodes(lab, bare_bundle["dir"], MASTER, WORKER, watch_images=False,
                          image=bare_image, docker=False) as both:
        yield both


def installed(node):
    """{package: version} of every installed package (dpkg status "ii")."""
    text = node.sh_out(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"], quiet=True)
    found = {}
    for line in text.splitlines():
        status, name, version = line.split("\t")
        if status.strip() == "ii":
            found[name] = version
    return found


def check_packages_added(node, before, bundle):
    """The node got exactly the bundled packages it lacked, at the bundled versions; nothing it had
    changed version or went away."""
    after = installed(node)
    debs = bundle["debs"]
    added = {n: v for n, v in after.items() if n not in before}
    want = {n: d["version"] for n, d in debs.items() if n not in before}
    assert added == want, "%s got other packages than the bundled ones it lacked:\n got %s\n want %s" % (
        node.name, sorted(added.items()), sorted(want.items()))
    changed = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    assert not changed, "%s: installed packages were upgraded or removed: %s" % (node.name, changed)
    log("%s: the packages phase installed %d packages: %s" % (node.name, len(added), " ".join(sorted(added))))
    return added


def check_runtime_is_the_bundled_one(node, bundle):
    """containerd runs, and the containerd and runc on the node are the bytes the stick carried."""
    assert node.sh_out(["systemctl", "is-active", "containerd"], check=False) == "active", \
        "containerd is not running on %s" % node.name
    tgz_sha = {}
    tgz = bundle["dir"].rglob(bare.CONTAINERD_TGZ)
    tgz = next(tgz, None)
    assert tgz is not None, "the bundle lacks %s" % bare.CONTAINERD_TGZ
    with tarfile.open(str(tgz), "r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                tgz_sha[m.name.rsplit("/", 1)[-1]] = hashlib.sha256(tar.extractfile(m).read()).hexdigest()
    for binary, want in (("containerd", tgz_sha["containerd"]), ("ctr", tgz_sha["ctr"]),
                         ("containerd-shim-runc-v2", tgz_sha["containerd-shim-runc-v2"]),
                         ("runc", bundle["release"]["runc.amd64"])):
        path = node.sh_out(["sh", "-c", "command -v %s" % binary], check=False)
        assert path, "%s has no %s on its PATH" % (node.name, binary)
        have = node.sh_out(["sha256sum", path]).split()[0]
        assert have == want, "%s on %s (%s) is not the bundled one" % (binary, node.name, path)
    ver = node.sh_out(["containerd", "--version"])
    assert bare.CONTAINERD_VERSION in ver, ver


def master_args(n1, *extra):
    return ["master"] + CRI + ["--apiserver-advertise-address", n1.ip(),
                               "--kubeadm-config-extra", c.EXTRA_FILE] + list(extra)


def node_state(node):
    """What a second `master` must leave as it is."""
    return {"packages": installed(node),
            "files": node.sh_out(["sh", "-c", "sha256sum /usr/local/bin/* /usr/local/sbin/* "
                                  "/etc/containerd/config.toml /etc/kubernetes/pki/ca.crt "
                                  "/etc/systemd/system/*.service 2>/dev/null | sort"], check=False, quiet=True)}


# --------------------------------------------------------------------------- steps

def test_0_the_nodes_are_bare(nodes, archive_server, state):
    archive, _ = archive_server
    minimal = archive.info()["required_or_essential"]
    state["before"] = {}
    for n in nodes:
        have = installed(n)
        there = [p for p in bare.ABSENT if p in have]
        assert not there, "the bare node %s has %s installed" % (n.name, there)
        found = n.sh_out(["sh", "-c", "for c in %s; do command -v $c; done; true" % " ".join(
            bare.ABSENT_COMMANDS)], quiet=True)
        assert found == "", "the bare node %s has %s" % (n.name, found.split())
        lacking = [p for p in minimal if p not in have]
        assert not lacking, "%s lacks Priority required/Essential packages %s" % (n.name, lacking)
        state["before"][n.name] = have
    log("bare nodes: %d packages each, none of %s" % (len(state["before"][MASTER]), ", ".join(bare.ABSENT)))


def test_1_dry_run_names_the_packages_and_changes_nothing(nodes, bare_bundle, workdir, state):
    c.need(state, "before")
    n1, _ = nodes
    p = c.tool_node(n1, master_args(n1, "--dry-run"), workdir, "bare-master-dry-run.log")
    assert p.returncode == 0, "master --dry-run failed on a bare node (see %s)" % (
        workdir / "bare-master-dry-run.log")
    text = p.stdout + p.stderr
    lacking = sorted(n for n in bare_bundle["debs"] if n not in state["before"][MASTER])
    unnamed = [n for n in lacking if not re.search(r"(?<![\w.+-])%s(?![\w+-])" % re.escape(n), text)]
    assert not unnamed, "master --dry-run does not name the packages it would install: %s" % unnamed
    assert re.search(r"(?i)containerd", text), "master --dry-run does not say it would install containerd"
    assert installed(n1) == state["before"][MASTER], "master --dry-run changed the installed packages"
    left = n1.sh_out(["sh", "-c", "find /usr/local/bin /usr/local/sbin /etc/containerd /var/lib/k8s-offline "
                      "-mindepth 1 2>/dev/null; true"], quiet=True)
    assert left == "", "master --dry-run wrote %s" % left.split()


def test_2_master_on_a_bare_node(nodes, bare_bundle, workdir, state):
    c.need(state, "before")
    n1, _ = nodes
    p = c.tool_node(n1, master_args(n1, "--no-wait"), workdir, "bare-master.log")
    assert p.returncode == 0, "master on a bare node failed (see %s)" % (workdir / "bare-master.log")
    added = check_packages_added(n1, state["before"][MASTER], bare_bundle)
    TIMINGS["bare master phase packages (%d .deb installed)" % len(added)] = c.phase_seconds(p, "packages")
    TIMINGS["bare master phase runtime (bundled containerd)"] = c.phase_seconds(p, "runtime")
    TIMINGS["bare master --no-wait whole"] = c.total_seconds(p, "master")
    check_runtime_is_the_bundled_one(n1, bare_bundle)
    c.wait_nodes_ready(n1, [MASTER])
    state["master"] = True


def test_3_a_second_bare_node_joins(nodes, bare_bundle, workdir, state):
    c.need(state, "master")
    n1, n2 = nodes
    c.copy_file(n1, c.MASTER_JOIN_FILE, n2, c.WORKER_JOIN_FILE, workdir)
    p = c.tool_node(n2, ["join"] + CRI + ["--join-file", c.WORKER_JOIN_FILE, "--no-wait"],
                    workdir, "bare-join.log")
    assert p.returncode == 0, "join on a bare node failed (see %s)" % (workdir / "bare-join.log")
    added = check_packages_added(n2, state["before"][WORKER], bare_bundle)
    TIMINGS["bare join phase packages (%d .deb installed)" % len(added)] = c.phase_seconds(p, "packages")
    check_runtime_is_the_bundled_one(n2, bare_bundle)
    c.wait_nodes_ready(n1, [MASTER, WORKER])
    c.wait_system_pods_ready(n1, [MASTER, WORKER], ready=False)
    state["joined"] = True


def test_4_pod_traffic(nodes, state):
    c.need(state, "joined")
    n1, n2 = nodes
    c.check_pod_traffic(n1, MASTER, WORKER)
    for n in (n1, n2):
        c.assert_no_pull(n, cri="containerd")
    c.delete_test_pods(n1)


def test_5_master_again_changes_nothing(nodes, workdir, state):
    c.need(state, "joined")
    n1, _ = nodes
    before = node_state(n1)
    p = c.tool_node(n1, master_args(n1, "--no-wait"), workdir, "bare-master-again.log")
    text = p.stdout + p.stderr
    assert "Traceback" not in text, "master again crashed:\n%s" % text[-3000:]
    if p.returncode != 0:
        assert re.search(r"already|exist|initiali[sz]ed|reset|running|in use", text, re.I), \
            "master again refused without a clear reason:\n%s" % text[-3000:]
    after = node_state(n1)
    assert after["packages"] == before["packages"], "master again changed the packages"
    assert after["files"] == before["files"], "master again changed files:\n%s\n---\n%s" % (
        before["files"], after["files"])
    c.wait_nodes_ready(n1, [MASTER, WORKER], timeout=60)
    log("master again: exit %d, nothing changed" % p.returncode)
