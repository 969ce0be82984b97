"""Bare hosts (issue 11): a node image that is Debian 12's minimal install and nothing more, and an
upstream that serves what `bundle --os debian-12 --with-containerd` downloads.

    python3 -m tests.e2e.bare --image      # build (or reuse) the bare node image only
    python3 -m tests.e2e.bare --archive    # build (or reuse) the served archive and release files
    python3 -m tests.e2e.bare --bench 5    # time bundle with/without --os (BENCHMARKS.md)

The bare node: `debootstrap --variant=minbase` (Priority required, Essential and what they depend on,
plus apt) with systemd, systemd-sysv, dbus (systemd as PID 1) and python3 (the tool). No docker,
containerd, runc, conntrack, socat, ebtables, ethtool, ipset, iptables or iproute2 (neither
iptables nor iproute2 is in minbase): the test asserts that with dpkg-query on the node.

The served Debian archive is Debian's own, not a rebuild: this machine's apt lists hold
deb.debian.org's signed bookworm InRelease and the main/binary-amd64 Packages it lists (the lab
checks the signature with gpgv and Debian's keyring, and the Packages' sha256 against the InRelease,
before serving them); Packages.xz and .gz are fetched from the mirror by hash when reachable;
the pool holds only the .deb files of the closure the tool should bundle (fetched from the mirror,
each checked against the Packages' sha256). So the tool checks Debian's real signature with
Debian's real key (its default keyring, /usr/share/keyrings/debian-archive-keyring.gpg).

containerd 1.6.20 and runc 1.1.5 are served in upstream's release layout
(github.com/containerd/.../containerd-1.6.20-linux-amd64.tar.gz with bin/..., runc.amd64, their
.sha256sum files), built here from their Go modules (rows containerd-v1.6.20 and runc-v1.1.5 of
gomod/builds.json: static, as upstream's Makefiles build them; runc with libseccomp). Their sha256
go into the lab's checksum file. containerd.service is the tool's own (upstream publishes no
checksum).

LAB ONLY: the runc wrapper (see nodes.py) sits in /opt/k8so-lab/bin, first on containerd's PATH by
a drop-in (containerd.service.d/k8so-lab-runc.conf) that the image carries before any containerd
exists; it execs the runc the tool installed. The tool never sees it: its runc stays where it put it.
Network settings of the nodes are made with this machine's `ip` in the node's namespace (nsenter),
since a bare node has no iproute2.
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from . import gobuild
from . import nodes as nodes_mod
from .common import (CACHE_DIR, cache_lock, DEBIAN_MIRROR, DEBIAN_SUITE, PREFIX, log, out, require_tools, run,
                     sha256_bytes, sha256_file, write_json)
from .upstream import _download

#: Bump when the bare image's recipe changes.
BARE_RECIPE = "2"
#: Bump when the served archive or release files change.
ARCHIVE_RECIPE = "4"

OS_ID = "debian-12"
ARCH = "amd64"
#: What the tool bundles for a bare host, before dependencies (the issue and the contract: kubeadm's
#: and the kubelet's tools; kmod and procps for modprobe and sysctl, which minbase lacks; mount and
#: util-linux, which it has), less what the minimal install has.
WANTED = ["conntrack", "socat", "ebtables", "ethtool", "ipset", "iptables", "iproute2", "kmod", "procps",
          "mount", "util-linux"]
#: What a bare node must not have (the test asserts it).
ABSENT = ["docker.io", "containerd", "runc", "conntrack", "socat", "ebtables", "ethtool", "ipset",
          "iptables", "iproute2"]
ABSENT_COMMANDS = ["docker", "dockerd", "containerd", "ctr", "runc", "conntrack", "socat", "ebtables",
                   "ethtool", "ipset", "iptables", "ip", "crictl", "kubelet", "kubeadm"]
#: What debootstrap adds to minbase: systemd as PID 1 (dbus, which it recommends), python3 (the tool).
BARE_INCLUDES = ["systemd", "systemd-sysv", "dbus", "python3"]

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_LISTS = Path("/var/lib/apt/lists")
DEBIAN_HOST = "deb.debian.org"
DIST = "dists/%s" % DEBIAN_SUITE
PACKAGES_INDEX = "main/binary-%s/Packages" % ARCH

CONTAINERD_VERSION = "1.6.20"
RUNC_VERSION = "1.1.5"
CONTAINERD_TGZ = "containerd-%s-linux-%s.tar.gz" % (CONTAINERD_VERSION, ARCH)
CONTAINERD_PATH = "github.com/containerd/containerd/releases/download/v%s/%s" % (
    CONTAINERD_VERSION, CONTAINERD_TGZ)
RUNC_PATH = "github.com/opencontainers/runc/releases/download/v%s/runc.%s" % (RUNC_VERSION, ARCH)
RUNC_SUMS_PATH = "github.com/opencontainers/runc/releases/download/v%s/runc.sha256sum" % RUNC_VERSION
#: bin/<name> in the tarball, from gobuild's row CONTAINERD_ROW.
CONTAINERD_BINARIES = ["containerd", "containerd-shim", "containerd-shim-runc-v1",
                       "containerd-shim-runc-v2", "ctr"]
CONTAINERD_ROW = "containerd-v%s" % CONTAINERD_VERSION
RUNC_ROW = "runc-v%s" % RUNC_VERSION

LAB_BIN = "/opt/k8so-lab/bin"
#: An image's first process when it has one of its own (ensure_bare_image's init).
LAB_INIT = LAB_BIN + "/k8so-lab-init"
#: The lab's runc wrapper, finding the real runc on PATH after its own folder.
BARE_RUNC_WRAPPER = nodes_mod.RUNC_WRAPPER.replace(
    'REAL = "/usr/sbin/runc.k8so-lab-real"\n',
    'REAL = next((os.path.join(d, "runc") for d in os.environ.get("PATH", "").split(":")\n'
    '             if d and d != "%s" and os.access(os.path.join(d, "runc"), os.X_OK)),\n'
    '            "/usr/local/sbin/runc")\n' % LAB_BIN)
CONTAINERD_DROPIN = """# k8s-offline AIR-GAP LAB ONLY (tests/e2e/bare.py): the runc wrapper first on containerd's PATH
[Service]
Environment=PATH=%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
""" % LAB_BIN

BARE_DOCKERFILE = """FROM {base}
COPY rootfs/ /
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/sbin/init"]
LABEL org.k8s-offline.lab.node="bare-{key}"
"""


# --------------------------------------------------------------------------- Debian metadata

def parse_packages(text):
    """{package: {field: value}} of a Packages file (amd64 and all; continuation lines dropped)."""
    found = {}
    for para in text.split("\n\n"):
        fields = {}
        for line in para.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            fields[k] = v.strip()
        if fields.get("Package") and fields.get("Architecture") in (ARCH, "all"):
            found[fields["Package"]] = fields
    return found


def _dependencies(packages, providers, name, prefer):
    """The packages name Pre-Depends/Depends on: of each group an alternative (or provider of a
    virtual name) in prefer if there is one, else the first alternative that exists (a virtual
    name by its first provider)."""
    found = []
    for field in ("Pre-Depends", "Depends"):
        for group in packages[name].get(field, "").split(","):
            alts = [a.strip().split(" ")[0].split(":")[0] for a in group.split("|") if a.strip()]
            have = [c for alt in alts for c in [alt] + providers.get(alt, []) if c in prefer]
            if have:
                found.append(have[0])
                continue
            for alt in alts:
                if alt in packages:
                    found.append(alt)
                    break
                if alt in providers:
                    found.append(providers[alt][0])
                    break
            else:
                if alts:
                    raise RuntimeError("%s: no package satisfies %r" % (name, group))
    return found


def _providers(packages):
    providers = {}
    for name, f in sorted(packages.items()):
        for prov in f.get("Provides", "").split(","):
            prov = prov.strip().split(" ")[0]
            if prov:
                providers.setdefault(prov, []).append(name)
    return providers


def _walk(packages, providers, start, stop=frozenset(), prefer=frozenset()):
    """start and everything it depends on, not descending into stop (returned apart)."""
    take, boundary, stack = set(), set(), list(start)
    while stack:
        name = stack.pop()
        if name in take or name in boundary:
            continue
        if name not in packages:
            raise RuntimeError("Debian's %s metadata lacks %s" % (DEBIAN_SUITE, name))
        if name in stop:
            boundary.add(name)
            continue
        take.add(name)
        stack.extend(_dependencies(packages, providers, name, prefer | stop))
    return take, boundary


def minimal_install(packages):
    """Debian's minimal install as the tool defines it (the contract): Priority required and
    Essential: yes, and everything they depend on (what debootstrap --variant=minbase installs,
    apt aside)."""
    base = required_or_essential(packages)
    return sorted(_walk(packages, _providers(packages), base, prefer=frozenset(base))[0])


def required_or_essential(packages):
    return sorted(n for n, f in packages.items() if f.get("Priority") == "required" or
                  f.get("Essential") == "yes")


def closure(packages, wanted):
    """(to bundle, boundary): the wanted packages and what they depend on, not descending into
    the minimal install; boundary: the minimal-install packages reached (served too, as a mirror
    would, in case the tool takes them)."""
    take, boundary = _walk(packages, _providers(packages), wanted, set(minimal_install(packages)))
    return sorted(take), sorted(boundary)


def release_sha256(inrelease):
    """{path: (sha256, size)} of the SHA256 section of a Release/InRelease text."""
    table, inside = {}, False
    for line in inrelease.splitlines():
        if not line.startswith(" "):
            inside = line.startswith("SHA256:")
            continue
        if inside:
            sha, size, path = line.split()
            table[path] = (sha, int(size))
    return table


class AptLists(object):
    """This machine's apt lists of DEBIAN_MIRROR's bookworm: the signed InRelease and its
    main/binary-amd64 Packages (stored however apt stores them; apt-helper decompresses)."""

    def __init__(self):
        prefix = re.sub(r"^[a-z]+://", "", DEBIAN_MIRROR).rstrip("/").replace("/", "_")
        self.inrelease = APT_LISTS / ("%s_%s_InRelease" % (prefix, DIST.replace("/", "_")))
        stem = "%s_%s_%s" % (prefix, DIST.replace("/", "_"), PACKAGES_INDEX.replace("/", "_"))
        found = sorted(APT_LISTS.glob(stem + "*"))
        if not self.inrelease.is_file() or not found:
            raise RuntimeError("no apt lists of %s %s under %s: run apt-get update (CI does)" % (
                DEBIAN_MIRROR, DEBIAN_SUITE, APT_LISTS))
        self.packages_file = found[0]

    def key_material(self):
        return sha256_file(self.inrelease)

    def verified(self, workdir):
        """(InRelease bytes, Packages bytes), the signature checked with gpgv against Debian's
        keyring and the Packages' sha256 and size against the InRelease."""
        require_tools(["gpgv"])
        if not Path(KEYRING).is_file():
            raise RuntimeError("%s is missing: install debian-archive-keyring" % KEYRING)
        run(["gpgv", "--keyring", KEYRING, self.inrelease], capture=True)
        inrelease = self.inrelease.read_bytes()
        plain = workdir / "Packages"
        with open(str(plain), "wb") as f:
            subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(self.packages_file)],
                           stdout=f, check=True)
        sha, size = release_sha256(inrelease.decode())[PACKAGES_INDEX]
        if sha256_file(plain) != sha or plain.stat().st_size != size:
            raise RuntimeError("%s does not match the sha256 its InRelease gives: run apt-get update" %
                               self.packages_file)
        return inrelease, plain


# --------------------------------------------------------------------------- the served archive

class Archive(object):
    """Paths of one cached archive build: files/ (served), SHA256SUMS, complete.json."""

    def __init__(self, key):
        self.key = key
        self.root = CACHE_DIR / "bare" / key
        self.files = self.root / "files"
        self.checksums = self.root / "SHA256SUMS"
        self.stamp = self.root / "complete.json"

    @property
    def complete(self):
        return self.stamp.exists()

    def info(self):
        import json
        return json.loads(self.stamp.read_text())

    @property
    def debian_root(self):
        return self.files / DEBIAN_HOST / "debian"


def runtime_rows():
    """The gobuild rows of containerd and runc (built when missing; the cache lock is held)."""
    rows = [gobuild.ensure(CONTAINERD_ROW), gobuild.ensure(RUNC_ROW)]
    for row, want in zip(rows, (CONTAINERD_VERSION, RUNC_VERSION)):
        if row.version != "v" + want:
            raise RuntimeError("the tool bundles %s %s but row %s builds %s" % (
                row.module, want, row.name, row.version))
    return rows


def archive_key(lists):
    material = "\n".join([ARCHIVE_RECIPE, lists.key_material(), " ".join(WANTED), DEBIAN_MIRROR,
                          " ".join("%s=%s" % (r.name, r.key) for r in runtime_rows())])
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def prepare_archive():
    """Build (or reuse) the served archive and release files; returns the Archive."""
    with cache_lock():
        lists = AptLists()
        archive = Archive(archive_key(lists))
        if archive.complete:
            log("bare-host archive %s is cached (%s)" % (archive.key, archive.root))
            return archive
        t0 = time.monotonic()
        if archive.root.exists():
            shutil.rmtree(str(archive.root))  # only regular files the lab wrote
        archive.root.mkdir(parents=True)
        info = _write_debian(archive, lists)
        info["release_files"] = _write_release_files(archive)
        info["seconds"] = round(time.monotonic() - t0, 1)
        write_json(archive.stamp, info)
        log("bare-host archive %s built in %.0fs" % (archive.key, time.monotonic() - t0))
        return archive


def _write_debian(archive, lists):
    dist = archive.debian_root / DIST
    index_dir = dist / PACKAGES_INDEX.rsplit("/", 1)[0]
    index_dir.mkdir(parents=True)
    inrelease, plain = lists.verified(archive.root)
    (dist / "InRelease").write_bytes(inrelease)
    table = release_sha256(inrelease.decode())
    by_hash = index_dir / "by-hash" / "SHA256"
    by_hash.mkdir(parents=True)
    served = []
    sha, _ = table[PACKAGES_INDEX]
    shutil.move(str(plain), str(index_dir / "Packages"))
    os.link(str(index_dir / "Packages"), str(by_hash / sha))
    served.append(PACKAGES_INDEX)
    # the compressed indexes, by hash from the mirror (stable while the mirror keeps them)
    for suffix in (".xz", ".gz"):
        path = PACKAGES_INDEX + suffix
        if path not in table:
            continue
        sha, _ = table[path]
        dest = by_hash / sha
        try:
            _download("%s/%s/%s/by-hash/SHA256/%s" % (DEBIAN_MIRROR, DIST, PACKAGES_INDEX.rsplit("/", 1)[0],
                                                     sha), dest, sha)
        except Exception as exc:  # the plain index is enough: the tool must take any listed
            log("not serving %s (%s): the mirror does not give it" % (path, exc))
            continue
        os.link(str(dest), str(dist / path))
        served.append(path)
    packages = parse_packages((index_dir / "Packages").read_text(errors="replace"))
    take, boundary = closure(packages, WANTED)
    pool = []
    for name in take + boundary:
        f = packages[name]
        dest = archive.debian_root / f["Filename"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        _download("%s/%s" % (DEBIAN_MIRROR, f["Filename"]), dest, f["SHA256"])
        pool.append({"package": name, "version": f["Version"], "filename": f["Filename"],
                     "sha256": f["SHA256"], "size": int(f["Size"]), "bundled": name in take})
    log("Debian archive: %s, pool of %d packages (%d to bundle, %d of the minimal install)" % (
        ", ".join(served), len(pool), len(take), len(boundary)))
    return {"key": archive.key, "indexes": served, "pool": pool, "bundle": take,
            "minimal_install": minimal_install(packages),
            "required_or_essential": required_or_essential(packages),
            "inrelease_sha256": sha256_bytes(inrelease)}


def _write_release_files(archive):
    """containerd and runc in upstream's layout (built from their modules) and their checksums.
    (No containerd.service: upstream publishes no checksum for it, the tool writes its own.)"""
    ctrd, runc_row = runtime_rows()
    tgz = archive.files / CONTAINERD_PATH
    tgz.parent.mkdir(parents=True)
    with tarfile.open(str(tgz), "w:gz") as tar:
        for name in CONTAINERD_BINARIES:
            info = tar.gettarinfo(str(ctrd.binary(name)), "bin/" + name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(str(ctrd.binary(name)), "rb") as f:
                tar.addfile(info, f)
    runc = archive.files / RUNC_PATH
    runc.parent.mkdir(parents=True)
    shutil.copyfile(str(runc_row.binary("runc")), str(runc))
    runc.chmod(0o755)
    sums = {}
    for path in (tgz, runc):
        sums[path.name] = sha256_file(path)
    (tgz.parent / (tgz.name + ".sha256sum")).write_text("%s  %s\n" % (sums[tgz.name], tgz.name))
    (archive.files / RUNC_SUMS_PATH).write_text("%s  %s\n" % (sums[runc.name], runc.name))
    archive.checksums.write_text("".join("%s  %s\n" % (s, n) for n, s in sorted(sums.items())))
    return sums


def file_mirrors(url):
    """--file-mirror flags sending the bare host's downloads (http and https) to the server at url
    (raw.githubusercontent.com too: nothing is served there, so a fetch fails on loopback instead
    of reaching the internet)."""
    flags = []
    for scheme in ("https", "http"):
        for prefix in (DEBIAN_HOST, "github.com/containerd", "github.com/opencontainers",
                       "raw.githubusercontent.com"):
            flags += ["--file-mirror", "%s://%s=%s/%s" % (scheme, prefix, url, prefix)]
    return flags


#: The bundles timed against each other (BENCHMARKS.md): (label, flags added to the lab's).
BUNDLE_VARIANTS = [("without --os", []), ("--os %s" % OS_ID, ["--os", OS_ID]),
                   ("--os %s --with-containerd" % OS_ID, ["--os", OS_ID, "--with-containerd"])]


def bundle_base_args(up, archive, server, workdir):
    """`bundle` with the lab's flags (upstream.bundle_args), the bare-host mirrors, and a checksum
    file holding the lab's SHA256SUMS and the containerd/runc ones."""
    sums = Path(workdir) / "SHA256SUMS-bare"
    sums.write_text(up.build.checksums.read_text() + archive.checksums.read_text())
    base = ["bundle"] + up.bundle_args()
    base[base.index("--checksum-file") + 1] = str(sums)
    return base + file_mirrors(server.url)


def time_bundles(run_tool, base, workdir, rounds, check=None, warm=False):
    """Make each of BUNDLE_VARIANTS `rounds` times, interleaved, each with a fresh cache dir
    (warm: one cache per variant, filled by an uncounted first round; every counted run writes a
    new output file, as issue 21's warm `--os` goal measures).
    run_tool(argv) -> CompletedProcess; check(label, flags, round, proc) after each run.
    Returns ({label: [seconds]}, {label: bytes}); the last round's bundles stay as
    <workdir>/bare-bundle-<n>.tar."""
    times = {label: [] for label, _ in BUNDLE_VARIANTS}
    sizes = {}
    for rnd in range(-1 if warm else 0, rounds):
        for n, (label, flags) in enumerate(BUNDLE_VARIANTS):
            out_tar = Path(workdir) / ("bare-bundle-%d.tar" % n)
            cache = Path(workdir) / ("bare-cache-%d-%s" % (n, "warm" if warm else rnd))
            if out_tar.exists():
                out_tar.unlink()
            t0 = time.monotonic()
            p = run_tool(base + flags + ["--output", str(out_tar), "--cache-dir", str(cache),
                                         "--no-progress"])
            if rnd >= 0:
                times[label].append(round(time.monotonic() - t0, 2))
            if p.returncode != 0:
                raise RuntimeError("bundle %s failed:\n%s\n%s" % (label, p.stdout[-3000:], p.stderr[-3000:]))
            sizes[label] = out_tar.stat().st_size
            if not warm:
                run(["rm", "-rf", "--one-file-system", cache], quiet=True)
            if check is not None:
                check(label, flags, rnd, p)
    return times, sizes


def bench(rounds, warm=False):
    """Time the bundle with and without --os (and --with-containerd) from the lab's loopback
    upstream, from cold caches (or warm ones: issue 21); prints a markdown table for
    BENCHMARKS.md."""
    import platform
    import statistics
    import sys
    import tempfile
    from . import upstream as up_mod
    from .common import REPO_ROOT, WORK_DIR
    archive = prepare_archive()
    up = up_mod.Upstream(up_mod.prepare()).start()
    server = up_mod.FileServer(archive.files).start()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-bare-", dir=str(WORK_DIR)))
    tool = [sys.executable, str(REPO_ROOT / "k8s_offline.py")]
    try:
        base = bundle_base_args(up, archive, server, workdir)
        load = os.getloadavg()
        times, sizes = time_bundles(
            lambda argv: subprocess.run(tool + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        universal_newlines=True), base, workdir, rounds,
            warm=warm)
    finally:
        server.stop()
        up.stop()
    plain = BUNDLE_VARIANTS[0][0]
    print("`python3 -m tests.e2e.bare --bench %d%s` at %s on %s; %d cores, load %.2f %.2f %.2f before, "
          "%.2f %.2f %.2f after; Python %s; tool %s" % (
              rounds, " --warm" if warm else "", time.strftime("%Y-%m-%d %H:%M"), platform.node(), os.cpu_count(),
              *(load + os.getloadavg()), platform.python_version(),
              out(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], quiet=True)))
    print("")
    print("| bundle | time s, median of %d (min-max), %s cache | added time s (medians) | size MiB | "
          "added MiB |" % (rounds, "warm" if warm else "cold"))
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, _ in BUNDLE_VARIANTS:
        med = statistics.median(times[label])
        print("| %s | %.2f (%.2f-%.2f) | %s | %.1f | %s |" % (
            label, med, min(times[label]), max(times[label]),
            "" if label == plain else "%.2f" % (med - statistics.median(times[plain])),
            sizes[label] / 1048576.0,
            "" if label == plain else "%.1f" % ((sizes[label] - sizes[plain]) / 1048576.0)))
    shutil.rmtree(str(workdir))  # only the tool's bundles and caches
    return 0


# --------------------------------------------------------------------------- the bare node image

def bare_keys(includes):
    base = hashlib.sha256("\n".join(["bare", DEBIAN_SUITE, DEBIAN_MIRROR, BARE_RECIPE,
                                     " ".join(includes)]).encode()).hexdigest()[:12]
    node = hashlib.sha256("\n".join([base, BARE_RUNC_WRAPPER, CONTAINERD_DROPIN, BARE_DOCKERFILE,
                                     nodes_mod.RSHARED_UNIT, " ".join(nodes_mod.MASKED_UNITS)]
                                    ).encode()).hexdigest()[:12]
    return base, node


def ensure_bare_image(includes=BARE_INCLUDES, name="bare", init=None):
    """Build (or reuse) the bare node image; returns its reference. includes/name: another node
    without a runtime (the current scenario's: the lab node's packages but docker, containerd, runc);
    init: a script the image runs first, which then execs /sbin/init (the current node's cgroup
    root, current.py)."""
    base_key, key = bare_keys(includes)
    dockerfile = BARE_DOCKERFILE
    if init is not None:
        key = hashlib.sha256((key + "\n" + init).encode()).hexdigest()[:12]
        dockerfile = dockerfile.replace('ENTRYPOINT ["/sbin/init"]', 'ENTRYPOINT ["%s"]' % LAB_INIT)
    ref = "%s-%s:%s" % (PREFIX, name, key)
    if nodes_mod.image_exists(ref):
        log("%s node image %s is cached" % (name, ref))
        return ref
    base = nodes_mod.debootstrap_image("%s-%s-base:%s" % (PREFIX, name, base_key),
                                       "%s-%s" % (name, base_key), includes)

    def rootfs(r):
        (r / LAB_BIN.strip("/")).mkdir(parents=True)
        wrapper = r / LAB_BIN.strip("/") / "runc"
        wrapper.write_text(BARE_RUNC_WRAPPER)
        wrapper.chmod(0o755)
        dropin = r / "etc/systemd/system/containerd.service.d"
        dropin.mkdir(parents=True)
        (dropin / "k8so-lab-runc.conf").write_text(CONTAINERD_DROPIN)
        if init is not None:
            (r / LAB_INIT.strip("/")).write_text(init)
            (r / LAB_INIT.strip("/")).chmod(0o755)
    return nodes_mod.build_image(ref, dockerfile.format(base=base, key=key), rootfs)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.bare")
    ap.add_argument("--image", action="store_true", help="build (or reuse) the bare node image")
    ap.add_argument("--archive", action="store_true", help="build (or reuse) the served archive")
    ap.add_argument("--bench", type=int, metavar="ROUNDS",
                    help="time the bundle with and without --os, ROUNDS times each")
    ap.add_argument("--warm", action="store_true",
                    help="with --bench: warm caches (one per variant), a new output file each run")
    args = ap.parse_args(argv)
    if args.bench:
        return bench(args.bench, warm=args.warm)
    if not (args.image or args.archive):
        ap.error("give --image, --archive or --bench")
    t0 = time.monotonic()
    if args.archive:
        a = prepare_archive()
        print(a.root)
    if args.image:
        print(ensure_bare_image())
    log("ready in %.0fs" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
