#!/usr/bin/env python3
"""k8s-offline: a kubeadm cluster on hosts that cannot reach the internet.

Two halves, one file:

* ``bundle`` runs on a connected machine.  It pulls every image kubeadm needs
  straight from the registries (no Docker daemon), downloads kubeadm, kubelet,
  kubectl, the CNI plugins and crictl, checks every byte against pinned and
  published checksums, and writes one tarball.  It may use requests, tqdm and
  the docker SDK, imported only inside bundle mode.
* ``verify``, ``master``, ``join``, ``token``, ``reset``, ``status`` and
  ``remove-node`` run on the air-gapped hosts.  They use the standard library
  only and run on Python 3.6 or newer, because nothing can be installed there.

The file is laid out in the order data flows: constants and the version
table, small utilities, the registry client, the bundle writer, the bundle
reader and verifier, host preparation, kubeadm, cluster checks, and the
command line.
"""

import argparse
import base64
import contextlib
import errno
import gzip
import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

# ===========================================================================
# Constants and the version table
# ===========================================================================

TOOL_VERSION = "0.1.0"
BUNDLE_FORMAT = 1
DEFAULT_KUBERNETES_VERSION = "v1.16.0"
DEFAULT_ARCH = "amd64"

# Where images are pulled from when bundling, and the name kubeadm looks
# for them under on the hosts (k8s.gcr.io is kubeadm's default up to 1.24).
DEFAULT_PULL_REPOSITORY = "registry.k8s.io"
KUBEADM_IMAGE_REPOSITORY = "k8s.gcr.io"

# Architectures by Kubernetes name, with the names uname and OCI use.
ARCHES = {
    "amd64": {"uname": ("x86_64", "amd64"), "docker_static": "x86_64"},
    "arm64": {"uname": ("aarch64", "arm64"), "docker_static": "aarch64"},
    "arm": {"uname": ("armv7l", "armv6l", "arm"), "docker_static": "armhf"},
    "ppc64le": {"uname": ("ppc64le",), "docker_static": "ppc64le"},
    "s390x": {"uname": ("s390x",), "docker_static": "s390x"},
}

# What kubeadm of each minor release wants besides its own version, and the
# add-ons that were current with it.  Cross-checked at bundle time against
# `kubeadm config images list` of the downloaded kubeadm when it can run.
VERSION_TABLE = {
    "1.16": {"pause": "3.1", "etcd": "3.3.15-0", "coredns": "1.6.2",
             "cni": "v0.7.5", "crictl": "v1.16.1", "flannel": "v0.11.0"},
    "1.17": {"pause": "3.1", "etcd": "3.4.3-0", "coredns": "1.6.5",
             "cni": "v0.7.5", "crictl": "v1.17.0", "flannel": "v0.11.0"},
    "1.18": {"pause": "3.2", "etcd": "3.4.3-0", "coredns": "1.6.7",
             "cni": "v0.8.6", "crictl": "v1.18.0", "flannel": "v0.12.0"},
    "1.19": {"pause": "3.2", "etcd": "3.4.13-0", "coredns": "1.7.0",
             "cni": "v0.8.7", "crictl": "v1.19.0", "flannel": "v0.13.0"},
    "1.20": {"pause": "3.2", "etcd": "3.4.13-0", "coredns": "1.7.0",
             "cni": "v0.8.7", "crictl": "v1.20.0", "flannel": "v0.13.0"},
}

CONTROL_PLANE_COMPONENTS = ("kube-apiserver", "kube-controller-manager",
                            "kube-scheduler")
# Images a worker needs; masters need every image in the bundle.
WORKER_IMAGE_NAMES = ("pause", "kube-proxy", "coredns", "flannel")

FLANNEL_REPOSITORY = "quay.io/coreos/flannel"
KUBE_RELEASE_URL = "https://dl.k8s.io/release/{version}/bin/linux/{arch}/{name}"
CNI_URL_OLD = ("https://github.com/containernetworking/plugins/releases/"
               "download/{cni}/cni-plugins-{arch}-{cni}.tgz")
CNI_URL = ("https://github.com/containernetworking/plugins/releases/"
           "download/{cni}/cni-plugins-linux-{arch}-{cni}.tgz")
CRICTL_URL = ("https://github.com/kubernetes-sigs/cri-tools/releases/"
              "download/{crictl}/crictl-{crictl}-linux-{arch}.tar.gz")
DOCKER_STATIC_VERSION = "19.03.15"
DOCKER_STATIC_URL = ("https://download.docker.com/linux/static/stable/"
                     "{docker_arch}/docker-{docker}.tgz")

# Pinned sha256 of downloads, by file name (the last part of the URL).
# The release's own .sha256 files are checked as well where published.
# `--checksum-file` replaces this table.
PINNED_SHA256 = {
    "cni-plugins-amd64-v0.7.5.tgz":
        "3ca15c0a18ee830520cf3a95408be826cbd255a1535a38e0be9608b25ad8bf64",
    "crictl-v1.16.1-linux-amd64.tar.gz":
        "19fed421710fccfe58f5573383bb137c19438a9056355556f1a15da8d23b3ad1",
}

# Layout of a bundle (inside its one top directory).
BUNDLE_JSON = "bundle.json"
IMAGES_DIR = "images"
BIN_DIR = "bin"
ARCHIVES_DIR = "archives"
SYSTEMD_DIR = "systemd"
MANIFESTS_DIR = "manifests"
FLANNEL_MANIFEST = "kube-flannel.yml"
MAX_BUNDLE_MEMBERS = 10000
MAX_BUNDLE_JSON_BYTES = 16 * 1024 * 1024

# Media types of image manifests.
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
MT_DOCKER_SCHEMA1_SIGNED = \
    "application/vnd.docker.distribution.manifest.v1+prettyjws"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
SCHEMA1_TYPES = (MT_DOCKER_SCHEMA1, MT_DOCKER_SCHEMA1_SIGNED)

# systemd units of the official kubelet packages.
KUBELET_SERVICE = """\
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/home/

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

KUBEADM_DROPIN = """\
# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/\
bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime,
# populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a
# last resort. Preferably, the user should use the .NodeRegistration.
# KubeletExtraArgs object in the configuration files instead.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS \
$KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""

log = logging.getLogger("k8s-offline")


# ===========================================================================
# Small utilities
# ===========================================================================

class UserError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


def sha256_file(path, chunk=1 << 20):
    """Return the hex sha256 of a file, reading it in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj):
    """JSON bytes that are the same for the same data on every run."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def human_size(num):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num) < 1024 or unit == "GiB":
            return ("%d %s" % (num, unit)) if unit == "B" \
                else ("%.1f %s" % (num, unit))
        num /= 1024.0


def parse_version(text):
    """Return (major, minor, patch) of 'v1.16.0'; UserError if malformed."""
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)$", text or "")
    if not match:
        raise UserError("bad Kubernetes version %r: use the form v1.16.0" % text)
    return tuple(int(part) for part in match.groups())


def normalize_version(text):
    major, minor, patch = parse_version(text)
    return "v%d.%d.%d" % (major, minor, patch)


def version_facts(kubernetes_version):
    """The VERSION_TABLE row for a Kubernetes version, or a UserError."""
    major, minor, _ = parse_version(kubernetes_version)
    key = "%d.%d" % (major, minor)
    if key not in VERSION_TABLE:
        raise UserError("Kubernetes %s is not supported: supported minors are %s"
                        % (kubernetes_version, ", ".join(sorted(VERSION_TABLE))))
    return VERSION_TABLE[key]


def check_arch(arch):
    if arch not in ARCHES:
        raise UserError("unknown architecture %r: use one of %s"
                        % (arch, ", ".join(sorted(ARCHES))))
    return arch


def host_arch():
    """The Kubernetes name of this machine's architecture, or None."""
    machine = platform.machine().lower()
    for name, facts in ARCHES.items():
        if machine in facts["uname"]:
            return name
    return None


def parse_mapping(text, what):
    """Split 'SRC=DST' of --registry-mirror and --file-mirror."""
    src, sep, dst = (text or "").partition("=")
    if not sep or not src.strip() or not dst.strip():
        raise UserError("bad %s %r: use the form SOURCE=DESTINATION" % (what, text))
    return src.strip(), dst.strip()


def bundle_name(kubernetes_version, arch):
    return "k8s-offline-%s-linux-%s" % (kubernetes_version, arch)


class Progress(object):
    """Byte or item progress: tqdm on a terminal, plain lines otherwise.

    Plain mode prints at most one line every few seconds so logs stay short.
    tqdm is imported only when present, so install mode works without it.
    """

    def __init__(self, total, desc, unit="B", enabled=True, stream=None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()
        self.bar = None
        self.last_print = 0.0
        self.start = time.time()
        self.enabled = enabled
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit=unit,
                                unit_scale=(unit == "B"),
                                unit_divisor=1024, file=self.stream,
                                leave=False)

    def update(self, amount):
        with self.lock:
            self.done += amount
            if self.bar is not None:
                self.bar.update(amount)
                return
            now = time.time()
            if self.enabled and now - self.last_print >= 5.0:
                self.last_print = now
                self._print_line()

    def _print_line(self):
        if self.unit == "B":
            rate = self.done / max(time.time() - self.start, 1e-6)
            text = "%s: %s of %s (%s/s)" % (self.desc, human_size(self.done),
                                           human_size(self.total),
                                           human_size(rate))
        else:
            text = "%s: %d of %d" % (self.desc, self.done, self.total)
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done:
            self._print_line()


def write_file_atomic(path, data, mode=0o644):
    """Write bytes to path through a temporary file and rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".k8s-offline-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def setup_logging(verbose=False, log_file=None):
    """Log to stderr; with log_file, also a full debug log there (mode 0600)."""
    log.setLevel(logging.DEBUG)
    log.handlers[:] = []
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if log_file:
        try:
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
            os.chmod(log_file, 0o600)
            handler = logging.FileHandler(log_file)
        except OSError as exc:
            log.warning("warning: cannot write the log %s: %s", log_file,
                        exc.strerror)
        else:
            handler.setLevel(logging.DEBUG)
            handler.setFormatter(logging.Formatter(
                "%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)


# ===========================================================================
# Registry client (bundle mode: requests)
# ===========================================================================

# (filled in below)


# ===========================================================================
# Bundle writer (bundle mode)
# ===========================================================================

# (filled in below)


# ===========================================================================
# Bundle reader and verifier (standard library only)
# ===========================================================================

class BundleError(UserError):
    """The bundle is damaged, incomplete or unsafe."""


def _check_member_name(name):
    """Refuse tar member names that could land outside the target."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise BundleError("unsafe path %r in the bundle: refusing it" % name)
    parts = name.split("/")
    if ".." in parts:
        raise BundleError("unsafe path %r in the bundle: refusing it" % name)


class Bundle(object):
    """A bundle, either the .tar as made or its extracted top directory.

    ``meta`` is bundle.json.  ``open(relpath)`` gives a binary file object of
    a member, by its path inside the top directory.  Nothing is extracted:
    a tar is read in place (it is uncompressed, so members can be seeked).
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.tar = None
        self.members = {}
        self.top = ""
        if os.path.isdir(self.path):
            bundle_json = os.path.join(self.path, BUNDLE_JSON)
            if not os.path.isfile(bundle_json):
                raise BundleError("%s has no %s: point --bundle at the "
                                  "extracted bundle folder or the .tar"
                                  % (self.path, BUNDLE_JSON))
            self.kind = "dir"
        elif os.path.isfile(self.path):
            self.kind = "tar"
            self._index_tar()
        else:
            raise BundleError("bundle %s does not exist" % path)
        self.meta = self._load_meta()

    # -- tar access ---------------------------------------------------------
    def _index_tar(self):
        try:
            self.tar = tarfile.open(self.path, "r:")
        except (tarfile.TarError, OSError) as exc:
            raise BundleError("%s is not a readable bundle tar: %s"
                              % (self.path, exc))
        tops = set()
        count = 0
        try:
            for member in self.tar:
                count += 1
                if count > MAX_BUNDLE_MEMBERS:
                    raise BundleError("bundle has more than %d members: "
                                      "refusing it" % MAX_BUNDLE_MEMBERS)
                _check_member_name(member.name)
                top, _, rel = member.name.partition("/")
                tops.add(top)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError("bundle member %s is a link or device: "
                                      "refusing it" % member.name)
                if rel in self.members:
                    raise BundleError("bundle member %s appears twice: "
                                      "refusing it" % member.name)
                self.members[rel] = member
                # Free tarfile's growing member list as we go.
                self.tar.members = []
        except tarfile.TarError as exc:
            raise BundleError("%s is truncated or damaged: %s" % (self.path, exc))
        if len(tops) != 1:
            raise BundleError("bundle must have exactly one top folder, found %s"
                              % ", ".join(sorted(tops)) or "none")
        self.top = tops.pop()

    def _load_meta(self):
        try:
            size = self.size(BUNDLE_JSON)
            if size > MAX_BUNDLE_JSON_BYTES:
                raise BundleError("%s is too large" % BUNDLE_JSON)
            with self.open(BUNDLE_JSON) as handle:
                raw = handle.read()
            meta = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise BundleError("%s in %s is not valid JSON: the bundle is damaged"
                              % (BUNDLE_JSON, self.path))
        if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
            raise BundleError("%s is not a k8s-offline bundle of format %d"
                              % (self.path, BUNDLE_FORMAT))
        self.meta_sha256 = sha256_bytes(raw)
        return meta

    def names(self):
        if self.kind == "tar":
            return sorted(self.members)
        found = []
        for root, dirs, files in os.walk(self.path):
            for name in files:
                full = os.path.join(root, name)
                found.append(os.path.relpath(full, self.path).replace(os.sep, "/"))
        return sorted(found)

    def size(self, relpath):
        if self.kind == "tar":
            if relpath not in self.members:
                raise BundleError("bundle member %s is missing" % relpath)
            return self.members[relpath].size
        full = self._dir_path(relpath)
        st = os.lstat(full)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError("bundle member %s is not a regular file" % relpath)
        return st.st_size

    def _dir_path(self, relpath):
        _check_member_name(relpath)
        full = os.path.join(self.path, relpath)
        if not os.path.lexists(full):
            raise BundleError("bundle member %s is missing" % relpath)
        return full

    def open(self, relpath):
        if self.kind == "tar":
            if relpath not in self.members:
                raise BundleError("bundle member %s is missing" % relpath)
            return self.tar.extractfile(self.members[relpath])
        full = self._dir_path(relpath)
        if os.path.islink(full):
            raise BundleError("bundle member %s is a link: refusing it" % relpath)
        return open(full, "rb")

    def read_json(self, relpath):
        with self.open(relpath) as handle:
            return json.loads(handle.read().decode("utf-8"))

    def close(self):
        if self.tar is not None:
            self.tar.close()

    # -- facts --------------------------------------------------------------
    @property
    def kubernetes_version(self):
        return self.meta["kubernetes_version"]

    @property
    def arch(self):
        return self.meta["arch"]

    def images_for_role(self, role):
        """Image entries a node of this role needs ('master' or 'worker')."""
        images = self.meta.get("images", [])
        if role == "master":
            return list(images)
        return [image for image in images
                if image.get("name") in WORKER_IMAGE_NAMES
                or image.get("extra")]


def verify_bundle(bundle, progress=True):
    """Check every byte of a bundle against bundle.json; BundleError if not.

    Checks: every listed file is present with its size and sha256; no file
    is there that is not listed; every blob is named by its own digest; every
    image's manifest, config and layers are present and the manifest names
    exactly the config and layers bundle.json records.
    """
    files = bundle.meta.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError("%s lists no files: the bundle is damaged" % BUNDLE_JSON)
    present = set(bundle.names()) - {BUNDLE_JSON}
    unlisted = sorted(present - set(files))
    if unlisted:
        raise BundleError("bundle member %s is not listed in %s: refusing the "
                          "bundle" % (unlisted[0], BUNDLE_JSON))
    total = 0
    for relpath, entry in files.items():
        _check_member_name(relpath)
        if relpath not in present:
            raise BundleError("bundle member %s is missing: rebuild or recopy "
                              "the bundle" % relpath)
        total += int(entry["size"])
    bar = Progress(total, "verify", enabled=progress)
    try:
        for relpath in sorted(files):
            entry = files[relpath]
            if bundle.size(relpath) != entry["size"]:
                raise BundleError("bundle member %s has size %d, expected %d: "
                                  "the bundle is damaged; recopy it"
                                  % (relpath, bundle.size(relpath), entry["size"]))
            digest = hashlib.sha256()
            with bundle.open(relpath) as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                    bar.update(len(block))
            if digest.hexdigest() != entry["sha256"]:
                raise BundleError("bundle member %s fails its sha256 check: the "
                                  "bundle is damaged; recopy it" % relpath)
            if relpath.startswith(IMAGES_DIR + "/blobs/sha256/") and \
                    relpath.rsplit("/", 1)[1] != entry["sha256"]:
                raise BundleError("blob %s is not named by its digest" % relpath)
    finally:
        bar.close()
    _verify_image_graph(bundle, files)


def _blob_path(digest):
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or not re.match(r"^[0-9a-f]{64}$", hexpart):
        raise BundleError("bad digest %r in the bundle" % digest)
    return "%s/blobs/sha256/%s" % (IMAGES_DIR, hexpart)


def _verify_image_graph(bundle, files):
    """Every image's manifest names the config and layers that are there."""
    for image in bundle.meta.get("images", []):
        manifest_path = _blob_path(image["manifest_digest"])
        if manifest_path not in files:
            raise BundleError("image %s: manifest blob is missing" % image["ref"])
        manifest = bundle.read_json(manifest_path)
        config = manifest.get("config", {}).get("digest")
        layers = [layer.get("digest") for layer in manifest.get("layers", [])]
        if config != image.get("config_digest") or layers != image.get("layers"):
            raise BundleError("image %s: manifest does not match %s"
                              % (image["ref"], BUNDLE_JSON))
        for digest in [config] + layers:
            if _blob_path(digest) not in files:
                raise BundleError("image %s: blob %s is missing"
                                  % (image["ref"], digest))


# ===========================================================================
# Host preparation (install mode)
# ===========================================================================

# (filled in below)


# ===========================================================================
# kubeadm (install mode)
# ===========================================================================

# (filled in below)


# ===========================================================================
# Cluster checks (install mode)
# ===========================================================================

# (filled in below)


# ===========================================================================
# Command line
# ===========================================================================

def cmd_verify(args):
    bundle = Bundle(args.bundle)
    try:
        print("bundle.json sha256: %s" % bundle.meta_sha256)
        print("compare it with the value printed when the bundle was made")
        verify_bundle(bundle, progress=not args.no_progress)
    finally:
        bundle.close()
    print("OK: %s (Kubernetes %s, %s): %d files, %d images verified"
          % (args.bundle, bundle.kubernetes_version, bundle.arch,
             len(bundle.meta["files"]), len(bundle.meta.get("images", []))))
    return 0


def add_bundle_commands(sub):
    """bundle and images: filled in by the bundle writer section."""


def add_install_commands(sub):
    """master, join, token, reset, status, remove-node: install mode."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, exit status 2."""

    def error(self, message):
        self.exit(2, "error: %s (see %s --help)\n" % (message, self.prog))


def build_parser():
    parser = ArgumentParser(
        prog="k8s_offline.py",
        description="Bundle a kubeadm cluster on a connected machine, install "
                    "it on air-gapped hosts.")
    parser.add_argument("--version", action="version",
                        version="k8s-offline %s" % TOOL_VERSION)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_bundle_commands(sub)
    verify = sub.add_parser("verify", help="check every byte of a bundle "
                            "(standard library only)")
    verify.add_argument("bundle", help="the bundle .tar or its extracted folder")
    verify.add_argument("--no-progress", action="store_true")
    verify.set_defaults(func=cmd_verify)
    add_install_commands(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(verbose=args.verbose, log_file=getattr(args, "log_file", None))
    try:
        return args.func(args) or 0
    except UserError as exc:
        log.error("error: %s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("error: interrupted")
        return 130
    except OSError as exc:
        where = (" (%s)" % exc.filename) if getattr(exc, "filename", None) else ""
        log.error("error: %s%s", exc.strerror or exc, where)
        log.debug("details", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
