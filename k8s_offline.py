#!/usr/bin/env python3
"""k8s-offline: a kubeadm cluster on hosts that cannot reach the internet.

What it does.  On a connected machine, ``bundle`` pulls every image kubeadm
needs straight from the registries (no Docker daemon), downloads kubeadm,
kubelet, kubectl, the CNI plugins and crictl (with --with-docker a static
Docker, with --with-containerd upstream's containerd and runc, with --os ID
the distribution packages a minimal install lacks, from its signed
archive), checks every byte against pinned, published or signed checksums,
and writes one tarball.  On the air-gapped hosts, the same file, run from
the extracted bundle, verifies it again, installs the OS packages the host
lacks, prepares the host, loads the images,
runs kubeadm, applies the bundled flannel manifest and waits until the node
is healthy; a join file carries what the other nodes need.

Usage: python3 k8s_offline.py COMMAND [options]     (COMMAND --help for each)

  Connected machine (bundle mode: may use requests, tqdm, the docker SDK,
  imported only here):
    bundle        pull and verify everything into one tarball (or parts
                  that a FAT32 stick holds: --split); workload images also
                  from the local Docker daemon (docker-daemon:REF) or
                  docker-/OCI-archive tars
    images        print every image the bundle will hold
  Air-gapped hosts (install mode: standard library only, Python 3.6+):
    verify        check every byte of a bundle
    master        set up the first control-plane node    (phases: see below)
    join          join this host as a worker or another control-plane node
    token         on a master: a fresh join file and join command
    reset         remove Kubernetes from this host
    status        nodes, kube-system pods and certificate expiry
    remove-node   on a master: drain and delete a node
    certs check   every kubeadm certificate with its expiry
    certs renew   on a master: renew, restart the control plane
    backup        on a master: etcd snapshot, PKI and kubeadm config
    restore       on a reset or fresh master: bring a cluster back
    cluster up    from the one host holding the bundle, over ssh: every host
                  of an Ansible inventory (kubespray's inventory.ini,
                  kubeasz's hosts) or of --masters/--workers: preflight,
                  copy, verify, master, join, wait; a summary table
    cluster add   the same as up: the new hosts of the inventory join
    cluster status   status of the first control-plane host, over ssh
    cluster remove   drain and delete a host's node, then reset the host
    cluster reset    reset every host of the inventory (--yes)
    cluster probe    (run by cluster on each host) its state as JSON

  master, join and reset are made of phases, listed by their --help;
  --skip-phases A,B leaves some out (never verify or preflight, except in a
  --dry-run), and ``COMMAND phase NAME`` runs one, as ``kubeadm init phase``
  does.  Every command that changes a host has --dry-run.

Environment variables it reads:
  DOCKER_CONFIG       bundle: the folder of the registry credentials
                      (config.json; default ~/.docker)
  XDG_CACHE_HOME      bundle: the download cache lives in
                      $XDG_CACHE_HOME/k8s-offline (default ~/.cache)
  HOME                bundle: for ~ in the two defaults above
  HTTPS_PROXY, HTTP_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE
                      bundle: read by requests for every download
  K8SO_RELEASE_TABLE  bundle: a release table replacing bundle/releases.json
                      (tests)
  K8SO_LARGE_BUNDLE_BYTES bundle: warn that FAT32 cannot hold the tarball
                      from this many bytes instead of 4 GiB (tests)
  DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
                      bundle with docker-daemon: images: read by the docker
                      SDK to reach the local Docker daemon
  SUDO_USER           master, join --control-plane, certs renew, restore:
                      this user gets a kubeconfig too (~/.kube/config);
                      reset removes it
  K8SO_CLUSTER_TOOL   cluster: the program copied to the hosts and run there
                      in place of this file (tests)
  PATH                install mode: where kubeadm, docker, ctr, systemctl,
                      iptables and the other host tools are found

Hidden flags (not in --help; for tests and unusual hosts):
  --root DIR          every install-mode command: treat DIR as the host's /
                      (every host file is read and written under it)
  --containerd-address SOCKET
                      master, join, reset, certs renew, backup, restore:
                      containerd's socket (default /run/containerd/
                      containerd.sock)

The file is laid out in parts, one section per banner: the kernel (errors
and utilities, the shared grammars, the formats, Host and Runner, the
bundle reader and verifier, the phase runner); the profiles (what changes
with the Kubernetes version); what install, reset and day two share (the
node context, preflight, kubeconfig and wait); one slice per workflow
(bundle, install for master and join, reset, day two, cluster over SSH),
each reading top to bottom; and the command line.  No function uses a name a later section
defines, and a slice uses the kernel, the profiles and the shared part,
never another slice (tests/test_layering.py).
"""

import argparse
import base64
import binascii
import bisect
import calendar
import collections
import contextlib
import errno
import fcntl
import gzip
import hashlib
import io
import ipaddress
import json
import logging
import os
import platform
import posixpath
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib


# ===========================================================================
# Kernel: errors, shared constants and small utilities
# ===========================================================================

TOOL_VERSION = "0.1.0"

# Architectures by Kubernetes name, with the names uname and OCI use.
ARCHES = {
    "amd64": {"uname": ("x86_64", "amd64"), "docker_static": "x86_64",
              "rpm": "x86_64"},
    "arm64": {"uname": ("aarch64", "arm64"), "docker_static": "aarch64",
              "rpm": "aarch64"},
    "arm": {"uname": ("armv7l", "armv6l", "arm"), "docker_static": "armhf"},
    "ppc64le": {"uname": ("ppc64le",), "docker_static": "ppc64le"},
    "s390x": {"uname": ("s390x",), "docker_static": "s390x"},
}

RPM_CORE_CENTOS7 = ("basesystem", "bash", "coreutils", "filesystem", "glibc",
                    "setup", "shadow-utils", "systemd", "rpm", "yum",
                    "util-linux", "procps-ng", "kmod", "e2fsprogs",
                    "hostname", "passwd", "sudo", "vim-minimal", "less",
                    "openssh-server", "iproute", "iptables")
RPM_CORE_ROCKY8 = ("basesystem", "bash", "coreutils", "filesystem", "glibc",
                   "setup", "shadow-utils", "systemd", "rpm", "dnf",
                   "util-linux", "procps-ng", "kmod", "e2fsprogs",
                   "hostname", "passwd", "sudo", "vim-minimal", "less",
                   "openssh-server", "iproute")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
UBUNTU_KEYRING = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"


def _apt_distro(distro_id, version_id, suite, amd64, arm64=None):
    """A DISTROS entry of an apt distribution (Ubuntu: main and universe,
    where ipset lives)."""
    ubuntu = distro_id == "ubuntu"
    return {"id": distro_id, "version_id": version_id, "family": "deb",
            "base": {"amd64": amd64, "arm64": arm64 or amd64},
            "suite": suite,
            "components": ("main", "universe") if ubuntu else ("main",),
            "keyring": UBUNTU_KEYRING if ubuntu else DEBIAN_KEYRING}


_UBUNTU = ("http://archive.ubuntu.com/ubuntu",
           "http://ports.ubuntu.com/ubuntu-ports")
DISTROS = {
    # buster has left deb.debian.org for the archive
    "debian-10": _apt_distro("debian", "10", "buster",
                             "https://archive.debian.org/debian"),
    "debian-11": _apt_distro("debian", "11", "bullseye",
                             "https://deb.debian.org/debian"),
    "debian-12": _apt_distro("debian", "12", "bookworm",
                             "https://deb.debian.org/debian"),
    "ubuntu-18.04": _apt_distro("ubuntu", "18.04", "bionic", *_UBUNTU),
    "ubuntu-20.04": _apt_distro("ubuntu", "20.04", "focal", *_UBUNTU),
    "ubuntu-22.04": _apt_distro("ubuntu", "22.04", "jammy", *_UBUNTU),
    "ubuntu-24.04": _apt_distro("ubuntu", "24.04", "noble", *_UBUNTU),
    "debian-13": _apt_distro("debian", "13", "trixie",
                             "https://deb.debian.org/debian"),
    # CentOS 7 is end of life: its last tree lives on vault.centos.org
    # (aarch64 under altarch/).  Rocky 8: the pinned 8.9 tree in the vault,
    # which does not move as pub/rocky/8 does.
    "centos-7": {"id": "centos", "version_id": "7", "family": "rpm",
                 "repos": {"amd64": (
                     "https://vault.centos.org/7.9.2009/os/x86_64",),
                     "arm64": (
                     "https://vault.centos.org/altarch/7.9.2009/os/aarch64",)},
                 "core": RPM_CORE_CENTOS7,
                 "ebtables": "ebtables"},
    "rocky-8": {"id": "rocky", "version_id": "8", "family": "rpm",
                "repos": {"amd64": (
                    "https://dl.rockylinux.org/vault/rocky/8.9/BaseOS/x86_64/os",
                    "https://dl.rockylinux.org/vault/rocky/8.9/AppStream/x86_64/os"),
                    "arm64": (
                    "https://dl.rockylinux.org/vault/rocky/8.9/BaseOS/aarch64/os",
                    "https://dl.rockylinux.org/vault/rocky/8.9/AppStream/aarch64/os")},
                "core": RPM_CORE_ROCKY8,
                "ebtables": "iptables-ebtables"},
    # Rocky 9: the pinned 9.5 tree in the vault.  EL9 has no iptables or
    # iptables-ebtables package: iptables-nft carries iptables and ebtables.
    "rocky-9": {"id": "rocky", "version_id": "9", "family": "rpm",
                "repos": {"amd64": (
                    "https://dl.rockylinux.org/vault/rocky/9.5/BaseOS/x86_64/os",
                    "https://dl.rockylinux.org/vault/rocky/9.5/AppStream/x86_64/os"),
                    "arm64": (
                    "https://dl.rockylinux.org/vault/rocky/9.5/BaseOS/aarch64/os",
                    "https://dl.rockylinux.org/vault/rocky/9.5/AppStream/aarch64/os")},
                "core": RPM_CORE_ROCKY8,
                "iptables": "iptables-nft", "ebtables": "iptables-nft"},
}

# Layout of a bundle (inside its one top directory).
BUNDLE_JSON = "bundle.json"

# master and token write the join file into an extracted bundle folder, so
# it travels on the stick; it is not part of the bundle.
JOIN_FILE_NAME = "k8s-offline-join.json"
IMAGES_DIR = "images"
BIN_DIR = "bin"
ARCHIVES_DIR = "archives"
SYSTEMD_DIR = "systemd"
MANIFESTS_DIR = "manifests"
PACKAGES_DIR = "packages"        # bundle --os: packages/ID/*.deb|*.rpm
FLANNEL_MANIFEST = "kube-flannel.yml"

MAX_BUNDLE_JSON_BYTES = 16 * 1024 * 1024


# The distribution reference grammar (docker/distribution reference.go).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
           r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
           r"(?::[0-9]{1,5})?")

# Paths on the host (prefixed by --root in tests).
INSTALL_LOG = "/var/log/k8s-offline.log"
STATE_DIR = "/var/lib/k8s-offline"

KUBEADM_INIT_LOG = "/var/log/kubeadm-init.log"

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"

CONTAINERD_CONFIG = "/etc/containerd/config.toml"

CRI_SOCKETS = {"docker": "/var/run/dockershim.sock",
               "containerd": "/run/containerd/containerd.sock"}

_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"

INIT_CONFIG = STATE_DIR + "/kubeadm-init.json"

log = logging.getLogger("k8s-offline")


class UserError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


class BundleError(UserError):
    """The bundle is damaged, incomplete or unsafe."""


def full_match(pattern, value):
    """True when value is a str that pattern matches whole: no trailing
    newline slips through as it does past a pattern ending in `$`."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def short_json(value):
    """value as JSON for a message, cut to 60 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def schema_problem(value, schema, where=""):
    """(field, what is wrong) of the first part of value that schema (see
    the Data section for its kinds) refuses, or None: the one shape check
    of every JSON document read from outside (bundle.json, a parts index,
    backup.json, the documents of an image archive)."""
    kind, detail = schema
    if kind == "const":
        if type(value) is not type(detail) or value != detail:
            return where, "is %s, expected %s" % (short_json(value),
                                                  short_json(detail))
    elif kind == "match":
        if not full_match(detail, value):
            return where, "is %s, not a valid value" % short_json(value)
    elif kind == "int":
        if (type(value) is not int or value < 0 or
                (detail is not None and value > detail)):
            return where, "is %s, expected a whole number" % short_json(value)
    elif kind == "bool":
        if type(value) is not bool:
            return where, "is %s, expected true or false" % short_json(value)
    elif kind == "either":
        if value is not None:
            return schema_problem(value, detail, where)
    elif kind == "list":
        inner, most = detail
        if not isinstance(value, list) or len(value) > most:
            return where, "is %s, expected a list of at most %d" % (
                type(value).__name__, most)
        for number, item in enumerate(value):
            found = schema_problem(item, inner, "%s[%d]" % (where, number))
            if found:
                return found
    elif kind == "map":
        key_re, inner, most = detail
        if not isinstance(value, dict) or len(value) > most:
            return where, "is %s, expected an object of at most %d keys" % (
                type(value).__name__, most)
        for key in sorted(value):
            if not full_match(key_re, key):
                return where, "has the name %s, which is not allowed" % (
                    short_json(key))
            found = schema_problem(value[key], inner, "%s[%s]" % (
                where, json.dumps(key)))
            if found:
                return found
    elif kind == "record":
        fields, required = detail
        if not isinstance(value, dict):
            return where, "is %s, expected an object" % type(value).__name__
        for key in required:
            if key not in value:
                return where, "has no %s" % key
        for key in sorted(value):
            if key not in fields:
                return where, "has the unknown field %s" % short_json(key)
            found = schema_problem(value[key], fields[key], "%s.%s" % (
                where, key) if where else key)
            if found:
                return found
    return None


O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk=1 << 20):
    """Return the hex sha256 of a file, reading it in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj):
    """JSON bytes that are the same for the same data on every run."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def human_size(num):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num) < 1024 or unit == "GiB":
            return (("%d %s" % (num, unit)) if unit == "B"
                    else ("%.1f %s" % (num, unit)))
        num /= 1024.0


def host_arch():
    """The Kubernetes name of this machine's architecture, or None."""
    machine = platform.machine().lower()
    for name, facts in ARCHES.items():
        if machine in facts["uname"]:
            return name
    return None


def script_dir():
    """The folder holding k8s_offline.py (and, in a checkout, bundle/ and
    manifests/; in an extracted bundle, bundle.json)."""
    return os.path.dirname(os.path.abspath(__file__))


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
        self.start = time.time()
        self.last_print = self.start
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
    fill_file_atomic(path, lambda handle: handle.write(data), mode)


def fill_file_atomic(path, fill, mode=0o644):
    """fill(handle) writes a temporary file in path's folder; it is flushed
    to disk and renamed to path only when fill returns: an error (a hash
    that does not match) leaves path as it was and no temporary behind."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".k8s-offline-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_regular_file(path, what):
    """A binary stream of a file named by a flag, found on the stick or
    beside a backup: opened without blocking (a FIFO cannot hang the run)
    and a regular file only (not /dev/zero, a folder or a FIFO).  Every
    reader of a file from outside opens it here."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | O_CLOEXEC)
    except (OSError, ValueError) as exc:
        raise UserError("cannot read %s %s: %s" % (
            what, path, getattr(exc, "strerror", None) or exc))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError("%s %s is not a regular file: give a file"
                            % (what, path))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_regular_file(path, what, cap):
    """The bytes of a file named by a flag or found on the stick (opened
    by open_regular_file), at most cap bytes."""
    with open_regular_file(path, what) as handle:
        st = os.fstat(handle.fileno())
        if st.st_size > cap:
            raise UserError("%s %s is larger than %s: give the right file"
                            % (what, path, human_size(cap)))
        try:
            data = handle.read(cap + 1)
        except OSError as exc:
            raise UserError("cannot read %s %s: %s" % (what, path,
                                                       exc.strerror))
    if len(data) > cap:
        raise UserError("%s %s is larger than %s: give the right file"
                        % (what, path, human_size(cap)))
    return data


def open_private_log(path, append):
    """A UTF-8 text stream of a log file that may hold secrets: opened
    without following a link and without blocking (no FIFO), a regular
    file only, made mode 0600 every time, whatever it was before."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK |
             O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC))
    fd = os.open(path, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return io.open(fd, "a" if append else "w", encoding="utf-8",
                   errors="backslashreplace")


def part_name(bundle_file, number):
    """NAME.tar.000, NAME.tar.001, ...: `cat NAME.tar.[0-9]*` is NAME.tar."""
    return "%s.%03d" % (bundle_file, number)


CHUNK = 1 << 20                  # file copies and hashing
F_SETPIPE_SZ = 1031              # fcntl.F_SETPIPE_SZ (Linux; Python 3.10 names it)


# ===========================================================================
# Kernel: shared grammars
# ===========================================================================

# The minor releases this tool sets up.  What each patch release of them
# needs (kubeadm's image tags, the CNI plugins, crictl and flannel releases,
# and the checksums pinned for them) is data: bundle/releases.json, read by
# bundle mode only (release_table()).
SUPPORTED_MINORS = tuple("1.%d" % minor for minor in range(16, 38))

# Every name bundle.json may list, by folder: anything else is refused
# before a byte of it is read.  Names become host paths (bin/kubelet goes
# to /usr/bin/kubelet), so none may hold a "..", a slash too many or a
# character a shell or config file would read differently.
# The one grammar of a SHA-256 in hex, and of a digest naming a blob by it.
SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")
DIGEST_RE = re.compile("sha256:" + SHA256_HEX_RE.pattern)
# An OS package's file name, as the distribution's pool names it.
PACKAGE_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~%-]{0,200}\.(?:deb|rpm)")
OS_ID_RE = re.compile("|".join(re.escape(os_id) for os_id in sorted(DISTROS)))
MEMBER_NAME_RE = re.compile(
    r"k8s_offline\.py|%s|"
    r"(?:%s|%s|%s|%s)/[A-Za-z0-9][A-Za-z0-9._+-]{0,127}|"
    r"%s/(?:%s)/%s|"
    r"%s/(?:oci-layout|index\.json|manifest\.json|blobs/sha256/%s)"
    % (re.escape(BUNDLE_JSON), BIN_DIR, ARCHIVES_DIR, SYSTEMD_DIR,
       MANIFESTS_DIR, PACKAGES_DIR, OS_ID_RE.pattern, PACKAGE_FILE_RE.pattern,
       IMAGES_DIR, SHA256_HEX_RE.pattern))

IMAGE_NAME_RE = re.compile(r"(?:%s/)?%s(?:/%s)*" % (_DOMAIN, _PATH_COMPONENT,
                                                    _PATH_COMPONENT))
IMAGE_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
IMAGE_REF_RE = re.compile(r"(?:%s)(?::%s)?(?:@%s)?" % (
    IMAGE_NAME_RE.pattern, IMAGE_TAG_RE.pattern, DIGEST_RE.pattern))
VERSION_RE = re.compile(r"v[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,4}")
TEXT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
PRINTABLE_RE = re.compile(r"[^\x00-\x1f\x7f]{0,1000}")   # notes, never used

# An OS package as bundle.json lists it: what the packages phase needs to
# pick what this host lacks and install it in dependency order.
PACKAGE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
PACKAGE_VERSION_RE = re.compile(r"[A-Za-z0-9.+:~_-]{1,128}")

# A dependency as apt writes it: name, or name (op version).
DEB_RELATION_TEXT_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,127}(?: \((?:<<|<=|=|>=|>>) "
    r"[A-Za-z0-9.+:~_-]{1,128}\))?")

# The index of a split bundle, NAME.tar.parts.json, as require_schema reads it.
PARTS_BUNDLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")

PART_NUMBER_RE = re.compile(r"\.[0-9]{3,}")


NODE_NAME_RE = re.compile(r"(?=.{1,253}\Z)%s(?:\.%s)*" % (_DNS_LABEL,
                                                         _DNS_LABEL), re.S)
SOCKET_PATH_RE = re.compile(r"/[A-Za-z0-9._/-]{1,200}")
PREFLIGHT_ERRORS_RE = re.compile(r"[A-Za-z0-9.,_-]{1,500}")

JOIN_COMMAND_RE = re.compile(
    r"kubeadm join\s+(\S+)\s+--token\s+(\S+)\s+"
    r"(?:\\\s*)?--discovery-token-ca-cert-hash\s+(\S+)")


def parse_version(text):
    """Return (major, minor, patch) of 'v1.16.0'; UserError if malformed."""
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)\Z", text or "")
    if not match:
        raise UserError("bad Kubernetes version %r: use the form v1.16.0" % text)
    return tuple(int(part) for part in match.groups())


def normalize_version(text):
    major, minor, patch = parse_version(text)
    return "v%d.%d.%d" % (major, minor, patch)


def supported_version(kubernetes_version):
    """(major, minor, patch) of a version whose minor this tool supports."""
    major, minor, patch = parse_version(kubernetes_version)
    if "%d.%d" % (major, minor) not in SUPPORTED_MINORS:
        raise UserError("Kubernetes %s is not supported: supported minors are %s"
                        % (kubernetes_version, ", ".join(SUPPORTED_MINORS)))
    return major, minor, patch


DOCKER_HUB = "docker.io"

_REPO_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                      r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}\Z")


class ImageRef(object):
    """A parsed image reference: registry, repository, tag and/or digest."""

    def __init__(self, registry, repository, tag=None, digest=None):
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest

    @property
    def reference(self):
        return self.digest or self.tag

    def __str__(self):
        text = "%s/%s" % (self.registry, self.repository)
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def parse_image_ref(text):
    """Parse 'quay.io/coreos/flannel:v0.11.0-amd64' the way Docker does."""
    original = text
    text = text or ""
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not DIGEST_RE.fullmatch(digest):
            raise UserError("bad image reference %r: the digest must be "
                            "sha256:<64 hex digits>" % original)
    tag = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise UserError("bad image reference %r: bad tag %r" % (original, tag))
    if not tag and not digest:
        tag = "latest"
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, text
        if "/" not in repository:
            repository = "library/" + repository
    if (not _REPO_RE.fullmatch(repository) or
            not IMAGE_NAME_RE.fullmatch(registry + "/" + repository)):
        raise UserError("bad image reference %r: use the form "
                        "[registry/]repository[:tag][@sha256:digest]" % original)
    return ImageRef(registry, repository, tag, digest)


def _blob_path(digest):
    if not full_match(DIGEST_RE, digest):
        raise BundleError("bad digest %r in the bundle" % (digest,))
    return "%s/blobs/sha256/%s" % (IMAGES_DIR, digest[len("sha256:"):])


def is_image_repository(value):
    """A registry and path that image names are built under, such as
    k8s.gcr.io or registry.local:5000/k8s (distribution's name grammar)."""
    return full_match(IMAGE_NAME_RE, value) and len(value) <= 255


# ===========================================================================
# Kernel: formats (the TOML reader and writer, the YAML subset, deb versions, tar)
# ===========================================================================

# A Debian dependency (Depends, Pre-Depends, Provides) and its operators,
# the obsolete < and > read as <= and >= as dpkg does.
DEB_RELATION_RE = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9.+_-]*)(?::[a-z0-9]+)?\s*"
    r"(?:\(\s*(<<|<=|>=|>>|=|<|>)\s*([A-Za-z0-9.+:~_-]+)\s*\))?\s*(?:\[.*\])?")
DEB_RELATION_OPS = {"<<": "<<", "<=": "<=", "<": "<=", "=": "=", ">=": ">=",
                    ">": ">=", ">>": ">>"}

BUNDLE_MTIME = 1577836800        # fixed member time: same input, same bytes

MAX_YAML_DEPTH = 40


def parse_deb_relations(field):
    """Depends/Pre-Depends/Provides text as groups of alternatives, each
    (name, operator or None, version or None); architecture qualifiers
    (:any) and restrictions are dropped."""
    groups = []
    for part in (field or "").split(","):
        group = []
        for alternative in part.split("|"):
            match = DEB_RELATION_RE.fullmatch(alternative.strip())
            if match:
                op = match.group(2)
                group.append((match.group(1), DEB_RELATION_OPS.get(op),
                              match.group(3)))
        if group:
            groups.append(group)
    return groups


def relation_text(relation):
    name, op, version = relation
    return name if not op else "%s (%s %s)" % (name, op, version)


def _deb_char_order(char):
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _deb_compare_part(left, right):
    """dpkg's comparison of an upstream version or revision: runs of
    non-digits by character (~ before the end, letters before the rest),
    runs of digits as numbers."""
    while left or right:
        left_text = re.match(r"[^0-9]*", left).group()
        right_text = re.match(r"[^0-9]*", right).group()
        for index in range(max(len(left_text), len(right_text))):
            a = (_deb_char_order(left_text[index])
                 if index < len(left_text) else 0)
            b = (_deb_char_order(right_text[index])
                 if index < len(right_text) else 0)
            if a != b:
                return -1 if a < b else 1
        left, right = left[len(left_text):], right[len(right_text):]
        left_digits = re.match(r"[0-9]*", left).group()
        right_digits = re.match(r"[0-9]*", right).group()
        if int(left_digits or 0) != int(right_digits or 0):
            return -1 if int(left_digits or 0) < int(right_digits or 0) else 1
        left, right = left[len(left_digits):], right[len(right_digits):]
    return 0


def deb_version_compare(left, right):
    """-1, 0 or 1 as dpkg --compare-versions orders two versions."""
    def split(version):
        epoch, _, rest = (version.partition(":") if ":" in version
                          else ("0", "", version))
        upstream, _, revision = (rest.rpartition("-") if "-" in rest
                                 else (rest, "", ""))
        return int(epoch) if epoch.isdigit() else 0, upstream, revision
    (left_epoch, left_up, left_rev) = split(left)
    (right_epoch, right_up, right_rev) = split(right)
    if left_epoch != right_epoch:
        return -1 if left_epoch < right_epoch else 1
    return (_deb_compare_part(left_up, right_up) or
            _deb_compare_part(left_rev, right_rev))


def deb_relation_holds(installed, op, version):
    """True when an installed version satisfies `op version`."""
    if op is None:
        return True
    order = deb_version_compare(installed, version)
    return {"<<": order < 0, "<=": order <= 0, "=": order == 0,
            ">=": order >= 0, ">>": order > 0}[op]


def yaml_mapping(pairs):
    """A flat YAML mapping of (key, value) pairs; each value is written as
    JSON (a quoted YAML scalar), so no value can add a line or a key."""
    return "".join("%s: %s\n" % (key, json.dumps(value)) for key, value in pairs)


class TarWriter(object):
    """Writes an uncompressed POSIX tar by hand, so big members are copied in
    1 MiB blocks and hashed on the way; member times and owners are fixed,
    so the same content gives the same bytes."""

    def __init__(self, handle, progress=None):
        self.out = handle
        self.progress = progress

    def _header(self, name, size, mode):
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = mode
        info.mtime = BUNDLE_MTIME
        info.uname = info.gname = "root"
        if size < 0:
            info.type = tarfile.DIRTYPE
            info.size = 0
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size):
        if size % 512:
            self.out.write(b"\0" * (512 - size % 512))

    def add_dir(self, name):
        self._header(name + "/", -1, 0o755)

    def add_bytes(self, name, data, mode=0o644):
        self._header(name, len(data), mode)
        self.out.write(data)
        self._pad(len(data))

    def add_file(self, name, path, sha256_hex, mode=0o644, rehash=True):
        """Copy a cached file in, failing if its bytes are not sha256_hex.

        rehash=False is for files this run has just downloaded and checked.
        """
        size = os.path.getsize(path)
        self._header(name, size, mode)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                if rehash:
                    digest.update(block)
                self.out.write(block)
                if self.progress:
                    self.progress.update(len(block))
        if rehash and digest.hexdigest() != sha256_hex:
            os.unlink(path)
            raise UserError("cached file %s was damaged on disk; it has been "
                            "removed: run bundle again" % path)
        self._pad(size)

    def close(self):
        self.out.write(b"\0" * 1024)
        pos = self.out.tell()
        if pos % tarfile.RECORDSIZE:
            self.out.write(b"\0" * (tarfile.RECORDSIZE - pos % tarfile.RECORDSIZE))


class TomlError(ValueError):
    """A TOML text this tool's reader does not accept (line number inside)."""


class TomlReader(object):
    """Reads the part of TOML that containerd's config files use: tables
    ``[a."b.c"]``, keys (bare, quoted, dotted), basic and literal strings,
    integers, floats, booleans, arrays (over several lines) and inline
    tables.  Arrays of tables, multi-line strings and dates are refused
    with a TomlError naming the line, rather than guessed at."""

    _BARE = re.compile(r"[A-Za-z0-9_-]+")
    _NUMBER = re.compile(r"[+-]?(?:\d[\d_]*)(\.\d[\d_]*)?([eE][+-]?\d+)?"
                         r"(?=[\s,\]}#]|\Z)")
    _ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r",
                '"': '"', "\\": "\\"}

    def __init__(self, text):
        self.text = text
        self.pos = 0

    def fail(self, what):
        line = self.text.count("\n", 0, self.pos) + 1
        raise TomlError("line %d: %s" % (line, what))

    def peek(self, size=1):
        return self.text[self.pos:self.pos + size]

    def skip_space(self, newlines=False):
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self.pos += 1
            elif char == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            else:
                return

    def end_of_line(self):
        self.skip_space()
        if self.pos < len(self.text) and self.peek() not in "\r\n":
            self.fail("unexpected %r after a value" % self.peek())

    def parse(self):
        root = {}
        table = root
        defined = set()
        while True:
            self.skip_space(newlines=True)
            if self.pos >= len(self.text):
                return root
            if self.peek(2) == "[[":
                self.fail("arrays of tables are not supported")
            if self.peek() == "[":
                self.pos += 1
                path = self.key_path("]")
                self.pos += 1
                if tuple(path) in defined:
                    self.fail("table [%s] is defined twice" % ".".join(path))
                defined.add(tuple(path))
                table = self.descend(root, path)
                self.end_of_line()
                continue
            path = self.key_path("=")
            self.pos += 1
            self.skip_space()
            value = self.value()
            target = self.descend(table, path[:-1])
            if path[-1] in target:
                self.fail("key %s is defined twice" % ".".join(path))
            target[path[-1]] = value
            self.end_of_line()

    def descend(self, table, path):
        for key in path:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                self.fail("%s is a value and a table" % key)
        return table

    def key_path(self, closing):
        path = []
        while True:
            self.skip_space()
            path.append(self.simple_key())
            self.skip_space()
            if self.peek() == ".":
                self.pos += 1
                continue
            if self.peek() != closing:
                self.fail("expected %r after the key %s" % (closing, path[-1]))
            return path

    def simple_key(self):
        if self.peek() in ('"', "'"):
            return self.string()
        match = self._BARE.match(self.text, self.pos)
        if not match:
            self.fail("expected a key")
        self.pos = match.end()
        return match.group(0)

    def string(self):
        quote = self.peek()
        if self.peek(3) == quote * 3:
            self.fail("multi-line strings are not supported")
        self.pos += 1
        out = []
        while True:
            if self.pos >= len(self.text) or self.peek() in "\r\n":
                self.fail("unterminated string")
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(out)
            if char == "\\" and quote == '"':
                code = self.peek()
                self.pos += 1
                if code in self._ESCAPES:
                    out.append(self._ESCAPES[code])
                elif code in ("u", "U"):
                    size = 4 if code == "u" else 8
                    digits = self.text[self.pos:self.pos + size]
                    if not re.match(r"^[0-9A-Fa-f]{%d}\Z" % size, digits):
                        self.fail("bad \\%s escape" % code)
                    out.append(chr(int(digits, 16)))
                    self.pos += size
                else:
                    self.fail("bad escape \\%s" % code)
            elif ord(char) < 0x20 and char != "\t":
                self.fail("control character in a string")
            else:
                out.append(char)

    def value(self):
        char = self.peek()
        if char in ('"', "'"):
            return self.string()
        if char == "[":
            return self.array()
        if char == "{":
            return self.inline_table()
        for word, value in (("true", True), ("false", False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return value
        match = self._NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            number = match.group(0).replace("_", "")
            return (float(number) if match.group(1) or match.group(2)
                    else int(number))
        self.fail("unsupported value starting %r" % self.text[self.pos:self.pos + 12])

    def array(self):
        self.pos += 1
        items = []
        while True:
            self.skip_space(newlines=True)
            if self.peek() == "]":
                self.pos += 1
                return items
            items.append(self.value())
            self.skip_space(newlines=True)
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "]":
                self.fail("expected , or ] in an array")

    def inline_table(self):
        self.pos += 1
        table = {}
        self.skip_space()
        if self.peek() == "}":
            self.pos += 1
            return table
        while True:
            path = self.key_path("=")
            self.pos += 1
            self.skip_space()
            target = self.descend(table, path[:-1])
            target[path[-1]] = self.value()
            self.skip_space()
            if self.peek() == "}":
                self.pos += 1
                return table
            if self.peek() != ",":
                self.fail("expected , or } in an inline table")
            self.pos += 1


def toml_loads(text):
    return TomlReader(text).parse()


def _toml_key(key):
    if re.match(r"^[A-Za-z0-9_-]+\Z", key):
        return key
    return _toml_string(key)


def _toml_string(text):
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7f:
            out.append("\\u%04x" % ord(char))
        else:
            out.append(char)
    return "".join(out) + '"'


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join("%s = %s" % (_toml_key(k), _toml_value(v))
                               for k, v in value.items()) + "}"
    raise TypeError("no TOML form for %r" % (value,))


def toml_dumps(data):
    """TOML text of nested dicts: the scalars of each table under its
    [header], then its sub-tables; keys and strings quoted as needed."""
    lines = []

    def emit(table, path):
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
        if path and (scalars or not tables):
            lines.append("")
            lines.append("[%s]" % ".".join(_toml_key(k) for k in path))
        for key, value in scalars:
            lines.append("%s = %s" % (_toml_key(key), _toml_value(value)))
        for key, value in tables:
            emit(value, path + [key])
    emit(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


def split_documents(text):
    """The documents of a multi-document YAML or JSON file, as text; empty
    ones (only blanks and comments) dropped."""
    docs, current = [], []
    for line in text.splitlines():
        if re.fullmatch(r"(?:---|\.\.\.)\s*(?:#.*)?", line):
            docs.append(current)
            current = []
        else:
            current.append(line)
    docs.append(current)
    return ["\n".join(lines) + "\n" for lines in docs
            if any(line.strip() and not line.lstrip().startswith("#")
                   for line in lines)]


class YamlSubsetError(ValueError):
    """A document outside the YAML subset kubeadm configs use."""


def parse_yaml_document(text):
    """One document of the YAML subset kubeadm configs are written in, with
    the standard library: JSON; block mappings and sequences; plain,
    single- and double-quoted scalars; flow [..] and {..} collections.
    Anchors, aliases, tags and block scalars (| >) are refused."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(stripped)
        except ValueError:
            pass        # flow YAML such as {a: b}: parsed below
        except RecursionError:
            raise YamlSubsetError("nested more than %d deep" % MAX_YAML_DEPTH)
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        content = _strip_comment(raw).rstrip()
        if not content.strip():
            continue
        body = content.lstrip(" ")
        if body.startswith("\t") or "\t" in content[:len(content) - len(body)]:
            raise YamlSubsetError("line %d is indented with a tab" % number)
        lines.append((len(content) - len(body), body, number))
    if not lines:
        return None
    value, end = _yaml_block(lines, 0, lines[0][0], 0)
    if end != len(lines):
        raise YamlSubsetError("line %d is not where its indentation puts it"
                              % lines[end][2])
    return value


def _strip_comment(line):
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"" and (index == 0 or line[index - 1] in " :-[{,"):
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def _yaml_block(lines, index, indent, depth):
    if depth > MAX_YAML_DEPTH:
        raise YamlSubsetError("nested more than %d deep" % MAX_YAML_DEPTH)
    if lines[index][1] == "-" or lines[index][1].startswith("- "):
        return _yaml_sequence(lines, index, indent, depth)
    return _yaml_mapping(lines, index, indent, depth)


def _yaml_nested(lines, index, indent, depth, number, allow_sequence):
    """The block value under a line ending in ':' or '-', or None."""
    if index < len(lines) and (lines[index][0] > indent or (
            allow_sequence and lines[index][0] == indent and
            (lines[index][1] == "-" or lines[index][1].startswith("- ")))):
        return _yaml_block(lines, index, lines[index][0], depth + 1)
    return None, index


def _yaml_mapping(lines, index, indent, depth):
    result = {}
    while index < len(lines) and lines[index][0] == indent:
        _, body, number = lines[index]
        key, value = _yaml_key_value(body, number)
        if key in result:
            raise YamlSubsetError("line %d repeats the key %s" % (number, key))
        index += 1
        if value is None:
            result[key], index = _yaml_nested(lines, index, indent, depth,
                                              number, True)
        else:
            result[key] = _yaml_scalar(value, number, depth)
    if index < len(lines) and lines[index][0] > indent:
        raise YamlSubsetError("line %d is indented more than its mapping"
                              % lines[index][2])
    return result, index


def _yaml_sequence(lines, index, indent, depth):
    result = []
    while (index < len(lines) and lines[index][0] == indent and
            (lines[index][1] == "-" or lines[index][1].startswith("- "))):
        _, body, number = lines[index]
        rest = body[1:].lstrip(" ")
        index += 1
        if not rest:
            item, index = _yaml_nested(lines, index, indent, depth, number,
                                       False)
        elif _yaml_is_key(rest):
            # "- key: value" opens a mapping whose keys line up with "key".
            inner = indent + len(body) - len(rest)
            lines[index - 1] = (inner, rest, number)
            item, index = _yaml_mapping(lines, index - 1, inner, depth + 1)
        else:
            item = _yaml_scalar(rest, number, depth)
        result.append(item)
    return result, index


def _yaml_is_key(body):
    return (not body.startswith(("'", '"', "[", "{")) and
            re.match(r"[^\s:][^:]*:(?:\s|\Z)", body) is not None or
            re.match(r"(\"[^\"]*\"|'[^']*'):(?:\s|\Z)", body) is not None)


def _yaml_key_value(body, number):
    """(key, value text or None) of a block line `key: value`, found by one
    scan (a backtracking pattern took minutes on a long line of spaces)."""
    if body[:1] in ("'", '"'):
        close = body.find(body[0], 1)
        after = body[close + 1:].lstrip() if close > 0 else ""
        if not after.startswith(":"):
            raise YamlSubsetError("line %d is not 'key: value'" % number)
        key, rest = _yaml_scalar(body[:close + 1], number, 0), after[1:]
    else:
        colon = body.find(":")
        key, rest = body[:colon].rstrip(), body[colon + 1:]
        if (colon < 0 or not key or key[0].isspace() or
                key[0] in ":'\"[{#&*!|>" or (key[0] == "-" and (
                    len(key) < 2 or key[1].isspace()))):
            raise YamlSubsetError("line %d is not 'key: value'" % number)
    if rest and not rest[0].isspace():
        raise YamlSubsetError("line %d is not 'key: value'" % number)
    return key, rest.lstrip() if rest.strip() else None


def _yaml_scalar(text, number, depth):
    text = text.strip()
    if text[:1] in ("&", "*", "!", "|", ">", "%", "@", "`"):
        raise YamlSubsetError("line %d uses %s (anchors, aliases, tags and "
                              "block scalars are not supported)"
                              % (number, text[:1]))
    if text[:1] in ("[", "{"):
        value, rest = _yaml_flow(text, number, depth)
        if rest.strip():
            raise YamlSubsetError("line %d has text after a closing bracket"
                                  % number)
        return value
    if text[:1] == '"':
        try:
            value, end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            raise YamlSubsetError("line %d has a bad double-quoted string"
                                  % number)
        if text[end:].strip():
            raise YamlSubsetError("line %d has text after a string" % number)
        return value
    if text[:1] == "'":
        if (len(text) < 2 or not text.endswith("'") or
                "'" in text[1:-1].replace("''", "")):
            raise YamlSubsetError("line %d has a bad single-quoted string"
                                  % number)
        return text[1:-1].replace("''", "'")
    if text in ("null", "Null", "NULL", "~", ""):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?",
                    text):
        return float(text)
    return text


def _yaml_flow(text, number, depth):
    """A flow collection at the start of text: (value, rest of text)."""
    value, end = _yaml_flow_at(text, 0, number, depth)
    return value, text[end:]


_YAML_SPACE = re.compile(r"\s*")
_YAML_FLOW_KEY = re.compile(r"(\"[^\"]*\"|'[^']*'|[^\s:,\[\]{}]+)\s*:\s*")
_YAML_FLOW_ITEM = re.compile(r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^']|'')*'|"
                             r"[^,\[\]{}]*)")


def _yaml_flow_at(text, pos, number, depth):
    """The flow collection at text[pos]: (value, the position after it),
    read by positions, never by copying the rest (linear time)."""
    if depth > MAX_YAML_DEPTH:
        raise YamlSubsetError("nested more than %d deep" % MAX_YAML_DEPTH)
    opening = text[pos]
    closing = "]" if opening == "[" else "}"
    items = [] if opening == "[" else {}
    pos = _YAML_SPACE.match(text, pos + 1).end()
    while True:
        if text.startswith(closing, pos):
            return items, pos + 1
        if opening == "{":
            match = _YAML_FLOW_KEY.match(text, pos)
            if not match:
                raise YamlSubsetError("line %d has a bad flow mapping" % number)
            key = _yaml_scalar(match.group(1), number, depth)
            pos = match.end()
        if text[pos:pos + 1] in ("[", "{"):
            value, pos = _yaml_flow_at(text, pos, number, depth + 1)
        else:
            match = _YAML_FLOW_ITEM.match(text, pos)
            value = _yaml_scalar(match.group(1), number, depth)
            pos = match.end()
        if opening == "[":
            items.append(value)
        else:
            items[key] = value
        pos = _YAML_SPACE.match(text, pos).end()
        if text.startswith(",", pos):
            pos = _YAML_SPACE.match(text, pos + 1).end()
        elif not text.startswith(closing, pos):
            raise YamlSubsetError("line %d has an unclosed %s" % (number,
                                                                  opening))


# ===========================================================================
# Kernel: Host and Runner
# ===========================================================================

STATE_FILE = STATE_DIR + "/state.json"

# ioctls asking the kernel for an interface's IPv4 address and netmask.
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891b

TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
             "/sbin", "/bin")

DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"

# What --open-firewall opens (firewalld rules): the ports kubeadm's install
# guide lists for each role, and flannel's vxlan.
FIREWALL_RULES = {
    "master": ("6443/tcp", "2379-2380/tcp", "10250/tcp", "10251/tcp",
               "10252/tcp", "8472/udp"),
    "worker": ("10250/tcp", "30000-32767/tcp", "8472/udp")}

SELINUX_ENFORCE = "/sys/fs/selinux/enforce"

SMALLEST_POD_PREFIX = 24      # each node gets a /24 of the pod network

MAX_JOIN_FILE_BYTES = 64 * 1024


def current_euid():
    """The effective uid; tests replace this to act as another user."""
    return os.geteuid()


def now():
    """The clock every wait loop reads; tests replace it."""
    return time.time()


def sleep(seconds):
    """The pause every wait loop takes; tests replace it."""
    time.sleep(seconds)


class CommandResult(object):
    def __init__(self, argv, returncode, stdout="", stderr=""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self):
        return self.returncode == 0

    def output(self):
        return (self.stdout or "") + (self.stderr or "")


class Runner(object):
    """Every command the install phases run goes through here.

    A command is either a read (``change=False``: it looks at the host and
    runs even under --dry-run) or a change (printed, not run, under
    --dry-run).  Tests replace ``_execute`` and ``_execute_piped`` with a
    recorder that returns canned results.
    """

    def __init__(self, dry_run=False):
        self.dry_run = dry_run

    def run(self, argv, change=True, check=True, timeout=300, tee=None,
            input_text=None, what=None):
        """Run argv; a failing command with check=True raises UserError.

        tee: a host path; the output is shown on the screen as it comes and
        also written there.
        """
        argv = [str(part) for part in argv]
        if change and self.dry_run:
            log.info("  would run: %s", " ".join(argv))
            return CommandResult(argv, 0)
        log.debug("run: %s", " ".join(argv))
        if tee:
            with open_tee(tee) as stream:
                result = self._execute(argv, timeout=timeout, tee=stream,
                                       input_text=input_text)
        else:
            result = self._execute(argv, timeout=timeout,
                                   input_text=input_text)
        if result.stdout:
            log.debug("stdout: %s", result.stdout.rstrip()[-4000:])
        if result.stderr:
            log.debug("stderr: %s", result.stderr.rstrip()[-4000:])
        if check and not result.ok:
            raise UserError("%s failed (exit %d): %s" % (
                what or " ".join(argv[:3]), result.returncode,
                last_line(result.output()) or "no output"))
        return result

    def run_piped(self, argv, producer, timeout=3600, what=None):
        """Run argv with producer(stream) writing its standard input."""
        argv = [str(part) for part in argv]
        if self.dry_run:
            log.info("  would run: %s  (input streamed from the bundle)",
                     " ".join(argv))
            return CommandResult(argv, 0)
        log.debug("run: %s < stream", " ".join(argv))
        result = self._execute_piped(argv, producer, timeout=timeout)
        if not result.ok:
            raise UserError("%s failed (exit %d): %s" % (
                what or " ".join(argv[:3]), result.returncode,
                last_line(result.output()) or "no output"))
        return result

    def execute(self, argv, timeout=300, input_text=None):
        """Run argv now, even under --dry-run, and return its CommandResult
        as it is: nothing raised, nothing of its output logged (for a
        caller that judges each result itself and keeps secrets out of the
        log: cluster's ssh)."""
        return self._execute(argv, timeout=timeout, input_text=input_text)

    def execute_piped(self, argv, producer, timeout=3600):
        """run_piped's stream, run now and returned as it is (as execute)."""
        return self._execute_piped(argv, producer, timeout=timeout)

    # -- the real thing ----------------------------------------------------
    def _execute(self, argv, timeout=300, tee=None, input_text=None):
        try:
            if tee:
                return self._execute_tee(argv, timeout, tee)
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if input_text is not None
                else subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, universal_newlines=True,
                encoding="utf-8", errors="replace")
        except OSError as exc:
            return CommandResult(argv, 127, "", "%s: %s" % (argv[0],
                                                            exc.strerror))
        try:
            out, err = proc.communicate(input=input_text, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return CommandResult(argv, 124, out, (err or "") +
                                 "\ntimed out after %d s" % timeout)
        return CommandResult(argv, proc.returncode, out, err)

    def _execute_tee(self, argv, timeout, log_handle):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                universal_newlines=True,
                                encoding="utf-8", errors="replace")
        lines = []

        def pump():
            for line in proc.stdout:
                lines.append(line)
                echo(line)
                with contextlib.suppress(OSError):
                    log_handle.write(line)
                    log_handle.flush()
        reader = threading.Thread(target=pump)
        reader.daemon = True
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            lines.append("timed out after %d s\n" % timeout)
        reader.join(10)
        return CommandResult(argv, proc.returncode, "".join(lines), "")

    def _execute_piped(self, argv, producer, timeout=3600):
        try:
            # Large writes into a large pipe: the reader (docker, ctr) gets
            # big reads and the two switch less often.
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=CHUNK)
        except OSError as exc:
            return CommandResult(argv, 127, "", "%s: %s" % (argv[0],
                                                            exc.strerror))
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(proc.stdin.fileno(), F_SETPIPE_SZ, CHUNK)
        chunks = {"out": [], "err": []}

        def drain(stream, key):
            for block in iter(lambda: stream.read(65536), b""):
                chunks[key].append(block)
        threads = [threading.Thread(target=drain, args=(proc.stdout, "out")),
                   threading.Thread(target=drain, args=(proc.stderr, "err"))]
        for thread in threads:
            thread.daemon = True
            thread.start()
        broken = None
        try:
            producer(proc.stdin)
        except (IOError, OSError) as exc:
            if exc.errno != errno.EPIPE:
                self._abort(proc)
                raise
            broken = exc
        except BaseException:
            # The stream stops before its last member is whole: kill the
            # reader so the runtime's import fails and keeps nothing.
            self._abort(proc)
            raise
        finally:
            with contextlib.suppress(IOError, OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for thread in threads:
            thread.join(10)
        out = b"".join(chunks["out"]).decode("utf-8", "replace")
        err = b"".join(chunks["err"]).decode("utf-8", "replace")
        if broken is not None and proc.returncode == 0:
            return CommandResult(argv, 1, out, err + "\nbroken pipe")
        return CommandResult(argv, proc.returncode, out, err)


    @staticmethod
    def _abort(proc):
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(OSError):
            proc.wait(timeout=60)


def open_tee(path):
    """The log a command's output is copied to (it may hold a token): see
    open_private_log; a UserError when it is a link or not a file."""
    try:
        return open_private_log(path, append=False)
    except OSError as exc:
        raise UserError("cannot write %s: %s: remove it if it is a link or "
                        "not a file, then run again" % (path, exc.strerror))


def echo(text):
    """Write text to stdout even where the locale cannot encode it (C
    locale, non-ASCII paths): such characters are escaped, never fatal."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        sys.stdout.write(text.encode(encoding, "backslashreplace")
                         .decode(encoding))
    sys.stdout.flush()


def say(text):
    echo(text + "\n")


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _state_pod_cidr(value):
    try:
        network = ipaddress.ip_network(value, strict=True)
    except (TypeError, ValueError):
        return False
    return network.version == 4 and 8 <= network.prefixlen <= 28


def _state_kubeconfig(path):
    return (isinstance(path, str) and path.startswith("/") and
            len(path) < 4096 and "\x00" not in path and "\n" not in path)


# The kubelet's unit and kubeadm's drop-in for it, in a unit folder (the
# profile's unit_dir): where the packages put them (/etc/systemd/system
# up to 1.23, /usr/lib/systemd/system from pkgs.k8s.io's 1.24 on), in
# systemd's order: a unit in an earlier folder overrides a later one.
KUBELET_UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system")


def kubelet_unit_files(unit_dir):
    """{bundled unit name: host path} of the kubelet's units in unit_dir."""
    return {"kubelet.service": unit_dir + "/kubelet.service",
            "10-kubeadm.conf": unit_dir + "/kubelet.service.d/10-kubeadm.conf"}


def _state_units(paths):
    known = [path for folder in KUBELET_UNIT_DIRS
             for path in kubelet_unit_files(folder).values()]
    return (isinstance(paths, list) and len(paths) <= 8 and
            all(path in known for path in paths))


# What this tool records in state.json, each key with its check: what is
# read back from the file (or a backup) keeps only the keys that pass.
STATE_CHECKS = {
    "role": lambda v: v in ("master", "worker", "control-plane"),
    "init": lambda v: v in ("started", "done"),
    "join": lambda v: v in ("started", "done"),
    "cri": lambda v: v in CRI_SOCKETS,
    "cgroup_driver": lambda v: v in ("cgroupfs", "systemd"),
    "kubernetes_version": lambda v: full_match(VERSION_RE, v),
    "arch": lambda v: full_match(TEXT_RE, v),
    "pod_cidr": lambda v: v is None or _state_pod_cidr(v),
    "image_repository": lambda v: v is None or is_image_repository(v),
    "node": lambda v: full_match(NODE_NAME_RE, v),
    "certificate_key": lambda v: v is None or full_match(SHA256_HEX_RE, v),
    "certificate_key_expires": lambda v: (type(v) is int and
                                          0 <= v < 1 << 40),
    "kubeconfigs": lambda v: isinstance(v, list) and len(v) <= 64,
    "units": _state_units,            # the kubelet units install wrote
}


def checked_state(value):
    """The keys of a state.json document that pass their check (of the
    kubeconfig copies, the paths that are plain absolute paths)."""
    if not isinstance(value, dict):
        return {}
    checked = dict((key, value[key]) for key in sorted(value)
                   if key in STATE_CHECKS and STATE_CHECKS[key](value[key]))
    if "kubeconfigs" in checked:
        checked["kubeconfigs"] = [path for path in checked["kubeconfigs"]
                                  if _state_kubeconfig(path)]
    return checked


class Host(object):
    """Files of the host, all under ``root`` (``/`` except in tests).

    Writes honour --dry-run: they are printed instead.  Every write checks
    the current content first, so a re-run changes nothing that is right.
    """

    def __init__(self, root="/", dry_run=False):
        self.root = os.path.abspath(root or "/")
        self.real_root = os.path.realpath(self.root)
        self.dry_run = dry_run
        self.planned = set()      # folders a dry run has said it would make

    def path(self, host_path):
        """The real path of a host path; a UserError for anything that is
        not absolute, holds "..", or resolves (through links) outside the
        root: names that come from a bundle or state.json cannot reach
        elsewhere."""
        if (not isinstance(host_path, str) or not host_path.startswith("/")
                or "\x00" in host_path or ".." in host_path.split("/")):
            raise UserError("refusing the host path %r: it is not a plain "
                            "absolute path" % (host_path,))
        if self.root == "/":
            return host_path
        full = os.path.join(self.root, host_path.lstrip("/"))
        real = os.path.realpath(full)
        if (real != self.real_root and
                not real.startswith(self.real_root.rstrip("/") + "/")):
            raise UserError("refusing the host path %s: it resolves to %s, "
                            "outside %s" % (host_path, real, self.root))
        return full

    def exists(self, host_path):
        return os.path.lexists(self.path(host_path))

    def isdir(self, host_path):
        return os.path.isdir(self.path(host_path))

    def read(self, host_path, default=None):
        try:
            with open(self.path(host_path), "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except (IOError, OSError):
            return default

    def read_bytes(self, host_path):
        try:
            with open(self.path(host_path), "rb") as handle:
                return handle.read()
        except (IOError, OSError):
            return None

    def listdir(self, host_path):
        try:
            return sorted(os.listdir(self.path(host_path)))
        except OSError:
            return []

    def makedirs(self, host_path, mode=0o755):
        if self.isdir(host_path):
            return False
        if self.dry_run:
            if host_path not in self.planned:
                self.planned.add(host_path)
                log.info("  would create folder %s", host_path)
            return True
        os.makedirs(self.path(host_path), mode)
        return True

    def write(self, host_path, data, mode=0o644, owner=None):
        """Write data (bytes or text) if it differs; True when it changed."""
        if not isinstance(data, bytes):
            data = data.encode("utf-8")
        full = self.path(host_path)
        same = self.read_bytes(host_path) == data
        if (same and stat.S_IMODE(os.lstat(full).st_mode) == mode and
                (owner is None or _owned_by(full, owner))):
            return False
        if self.dry_run:
            log.info("  would write %s (%s, mode %04o)", host_path,
                     human_size(len(data)), mode)
            return True
        self.makedirs(os.path.dirname(host_path))
        write_file_atomic(full, data, mode)
        if owner is not None:
            os.chown(full, owner[0], owner[1])
        log.debug("wrote %s", host_path)
        return True

    def install_member(self, host_path, bundle, relpath, mode=0o755):
        """Copy a bundle member to host_path, hashing it on the way: it goes
        to a temporary name in the target folder, is flushed to disk, and
        is renamed into place only when its sha256 is the one bundle.json
        lists.  A file already there with those bytes and mode is left
        alone; True when it changed."""
        entry = bundle.meta["files"][relpath]
        full = self.path(host_path)
        if (_file_sha256(full) == entry["sha256"] and
                stat.S_IMODE(os.lstat(full).st_mode) == mode):
            return False
        if self.dry_run:
            log.info("  would write %s (%s, mode %04o)", host_path,
                     human_size(entry["size"]), mode)
            return True
        self.makedirs(os.path.dirname(host_path))

        def copy(out):
            with bundle.open(relpath) as source:
                for block in iter(lambda: source.read(CHUNK), b""):
                    out.write(block)
                if not source.verified:
                    raise BundleError("bundle member %s was not read whole: "
                                      "recopy the bundle" % relpath)
        fill_file_atomic(full, copy, mode)
        log.debug("wrote %s", host_path)
        return True

    def remove(self, host_path):
        full = self.path(host_path)
        if not os.path.lexists(full):
            return False
        if self.dry_run:
            log.info("  would remove %s", host_path)
            return True
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)
        log.debug("removed %s", host_path)
        return True

    def chown(self, host_path, uid, gid):
        if self.dry_run:
            log.info("  would chown %s to %d:%d", host_path, uid, gid)
            return
        os.chown(self.path(host_path), uid, gid)

    def which(self, name):
        """The host path of a tool, from the usual folders, or None."""
        for folder in TOOL_DIRS:
            candidate = folder + "/" + name
            full = self.path(candidate)
            if os.path.isfile(full) and os.access(full, os.X_OK):
                return candidate
        return None

    def state(self):
        """What earlier runs recorded (role, settings, files written)."""
        text = self.read(STATE_FILE)
        if not text or len(text) > MAX_JOIN_FILE_BYTES:
            return {}
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return {}
        return checked_state(value)

    def save_state(self, **changes):
        state = self.state()
        state.update(changes)
        self.makedirs(STATE_DIR, 0o700)
        self.write(STATE_FILE, canonical_json(state), 0o600)
        return state


def _file_sha256(full):
    """The sha256 of a regular file (not followed if a link), else None."""
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK |
                     O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _owned_by(path, owner):
    st = os.lstat(path)
    return (st.st_uid, st.st_gid) == tuple(owner)


def host_cpu_count(host):
    text = host.read("/proc/cpuinfo", "")
    count = len(re.findall(r"^processor\s*:", text, re.M))
    return count or os.cpu_count() or 1


def host_memory_mb(host):
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", host.read("/proc/meminfo", ""),
                      re.M)
    return int(match.group(1)) // 1024 if match else None


def active_swaps(host):
    lines = host.read("/proc/swaps", "").splitlines()[1:]
    return [line.split()[0] for line in lines if line.strip()]


def listening_ports(host):
    """TCP ports in LISTEN state, from /proc/net/tcp and tcp6."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in host.read(name, "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def host_hostname(host):
    name = (host.read("/proc/sys/kernel/hostname") or "").strip()
    if not name and host.root == "/":
        name = socket.gethostname()
    return name


def hostname_resolves(host, name):
    """True when name is in /etc/hosts or (on the real host) resolves."""
    for line in host.read("/etc/hosts", "").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) > 1 and name in fields[1:]:
            return True
    if host.root != "/":
        return False
    try:
        socket.getaddrinfo(name, None)
        return True
    except (socket.error, UnicodeError):
        return False


def kernel_ipv4_addresses():
    """[(interface, ip_interface)] asked of the kernel (an ioctl per
    interface: its primary IPv4 address and netmask), for a bare host
    whose iproute2 the packages phase has not installed yet."""
    import struct
    found = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode("utf-8")[:15])
            try:
                address = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
                netmask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, request)
            except OSError:         # no IPv4 address on this interface
                continue
            found.append((name, ipaddress.ip_interface("%s/%s" % (
                socket.inet_ntoa(address[20:24]),
                socket.inet_ntoa(netmask[20:24])))))
    finally:
        sock.close()
    return found


def host_addresses(runner):
    """[(interface, ip_interface)] of the host's IPv4 addresses (from the
    kernel itself where `ip` is not installed)."""
    result = runner.run(["ip", "-o", "-4", "addr", "show"], change=False,
                        check=False)
    if result.returncode == 127:
        return kernel_ipv4_addresses()
    found = []
    for line in result.stdout.splitlines():
        match = re.match(r"^\d+:\s+(\S+)\s+inet\s+(\S+)", line)
        if match:
            try:
                found.append((match.group(1).split("@")[0],
                              ipaddress.ip_interface(match.group(2))))
            except ValueError:
                continue
    return found


def parse_cidr(text, option):
    try:
        network = ipaddress.ip_network(u"%s" % text, strict=True)
    except ValueError:
        raise UserError("bad %s %r: use a network such as %s" % (
            option, text, DEFAULT_POD_CIDR if "pod" in option
            else DEFAULT_SERVICE_CIDR))
    if network.version != 4:
        raise UserError("%s %s is IPv6: this tool sets up IPv4 clusters; "
                        "use an IPv4 network" % (option, text))
    return network


def valid_cidrs(pod_cidr, service_cidr):
    pod = parse_cidr(pod_cidr, "--pod-network-cidr")
    service = parse_cidr(service_cidr, "--service-cidr")
    if pod.prefixlen > SMALLEST_POD_PREFIX:
        raise UserError("--pod-network-cidr %s is too small: each node gets a "
                        "/%d of it; use a /%d or larger network such as %s"
                        % (pod, SMALLEST_POD_PREFIX, SMALLEST_POD_PREFIX,
                           DEFAULT_POD_CIDR))
    if pod.overlaps(service):
        raise UserError("--pod-network-cidr %s overlaps --service-cidr %s: "
                        "choose networks that do not overlap" % (pod, service))
    return pod, service


def valid_ipv4_address(text, what):
    """An IPv4 address as text; IPv6 is refused (the pod network, flannel
    and kube-proxy are set up for IPv4 only)."""
    try:
        address = (ipaddress.ip_address(u"%s" % text)
                   if isinstance(text, str) else None)
    except ValueError:
        address = None
    if address is None:
        raise UserError("bad %s %r: give an IPv4 address such as %s"
                        % (what, text, "10.0.0.10"))
    if address.version != 4:
        raise UserError("%s %s is IPv6: this tool sets up IPv4 clusters; give "
                        "an IPv4 address" % (what, text))
    return str(address)


def valid_endpoint(text, what):
    """HOST:PORT with an IPv4 address or a DNS name and a port 1-65535."""
    host, sep, port = (text.rpartition(":") if isinstance(text, str)
                       else ("", "", ""))
    if host.startswith("[") or host.count(":"):
        raise UserError("%s %r is IPv6: this tool sets up IPv4 clusters; use "
                        "an IPv4 address or a name, as HOST:PORT" % (what, text))
    if (not sep or not re.fullmatch(r"[0-9]{1,5}", port) or
            not 0 < int(port) < 65536 or not (
                re.fullmatch(r"[0-9.]+", host) or
                full_match(NODE_NAME_RE, host.lower()))):
        raise UserError("bad %s %r: use HOST:PORT such as 10.0.0.10:6443"
                        % (what, text))
    if re.fullmatch(r"[0-9.]+", host):
        valid_ipv4_address(host, what)
    return text


def iptables_backend(runner):
    """('1.8.7', 'nf_tables') from `iptables --version`, or None."""
    result = runner.run(["iptables", "--version"], change=False, check=False)
    match = re.search(r"v(\d+\.\d+(?:\.\d+)?)(?:\s+\((\w+)\))?", result.stdout)
    if not result.ok or not match:
        return None
    return match.group(1), match.group(2) or "legacy"


def service_active(runner, name):
    result = runner.run(["systemctl", "is-active", name], change=False,
                        check=False)
    return result.stdout.strip() == "active"


def docker_info(runner):
    """Docker's `info` as a dict when the daemon answers, else None."""
    result = runner.run(["docker", "info", "--format", "{{json .}}"],
                        change=False, check=False)
    if not result.ok:
        return None
    try:
        info = json.loads(result.stdout.strip() or "null")
    except ValueError:
        return None
    if not isinstance(info, dict) or not info.get("ServerVersion"):
        return None
    return info


def containerd_running(ctx):
    result = ctx.runner.run(["ctr", "--address", ctx.containerd_address,
                             "version"], change=False, check=False)
    return result.ok and "Server:" in result.stdout


def read_containerd_config(text, where=CONTAINERD_CONFIG):
    """containerd's config as data; UserError if this reader cannot take it."""
    try:
        return toml_loads(text or "")
    except TomlError as exc:
        raise UserError("cannot read %s (%s): fix it, or move it away so a "
                        "new one is written" % (where, exc))


def docker_image_id(runner, name):
    result = runner.run(["docker", "image", "inspect", "--format", "{{.Id}}",
                         name], change=False, check=False)
    return result.stdout.strip() if result.ok else None


def docker_image_ids(runner):
    """({name: image ID} of Docker's tagged images, names spelled as
    containerd does (docker.io/library/x:1), {every image ID}): one call."""
    result = runner.run(["docker", "images", "--no-trunc", "--format",
                         "{{.Repository}}:{{.Tag}} {{.ID}}"], change=False,
                        check=False)
    names, ids = {}, set()
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) != 2:
            continue
        ids.add(fields[1])
        if "<none>" not in fields[0]:
            names[_normalize_image_name(fields[0])] = fields[1]
    return names, ids


def containerd_images(ctx):
    """{name: manifest digest} of the images in containerd's k8s.io."""
    result = ctx.runner.run(["ctr", "--address", ctx.containerd_address,
                             "-n", "k8s.io", "images", "ls"],
                            change=False, check=False)
    found = {}
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("sha256:"):
            found[fields[0]] = fields[2]
    return found


def containerd_image_labels(ctx):
    """{name: its labels as ctr lists them, k=v,k=v} of containerd's k8s.io
    images (the last column of `ctr images ls`)."""
    result = ctx.runner.run(["ctr", "--address", ctx.containerd_address,
                             "-n", "k8s.io", "images", "ls"],
                            change=False, check=False)
    return dict((line.split()[0], line.split()[-1])
                for line in result.stdout.splitlines()[1:]
                if len(line.split()) >= 3)


def _normalize_image_name(name):
    """docker.io/library/x:1 as containerd names what Docker calls x:1."""
    first = name.split("/", 1)[0]
    if "/" not in name or ("." not in first and ":" not in first
                           and first != "localhost"):
        if "/" not in name:
            name = "library/" + name
        name = "docker.io/" + name
    return name


def existing_cluster_files(host):
    found = [path for path in ("/etc/kubernetes/manifests/kube-apiserver.yaml",
                               KUBELET_CONF, ADMIN_CONF)
             if host.exists(path)]
    if host.listdir("/var/lib/etcd"):
        found.append("/var/lib/etcd")
    return found


def continuing_run(ctx):
    """True when an earlier run of this tool, same role, made this cluster:
    then the cluster's own files and ports are expected, not a conflict."""
    state = ctx.host.state()
    return state.get("role") == ctx.role


def firewall_rules(ctx):
    return FIREWALL_RULES["worker" if ctx.role == "worker" else "master"]


def selinux_enforcing(host):
    return (host.read(SELINUX_ENFORCE) or "").strip() == "1"


def firewalld_active(ctx):
    return (bool(ctx.host.which("firewall-cmd")) and
            service_active(ctx.runner, "firewalld"))


def node_name(ctx):
    """--node-name (or the name the state or a backup records), else this
    host's hostname in lower case, read once."""
    if ctx.node_name is not None:
        return ctx.node_name
    if ctx.found.hostname is None:
        ctx.found.hostname = host_hostname(ctx.host).lower()
    return ctx.found.hostname


def wait_for(ctx, check, what, timeout=60, interval=2, logs="journalctl -xe"):
    """Poll check() until true, at most timeout seconds; UserError after,
    naming the logs to read."""
    if ctx.dry_run:
        return
    deadline = now() + timeout
    while True:
        if check():
            return
        if now() >= deadline:
            raise UserError("%s did not happen within %d s: see its logs "
                            "(%s)" % (what, timeout, logs))
        sleep(interval)


def bundled_runtime(bundle):
    """'docker' (--with-docker), 'containerd' (--with-containerd) or None."""
    archives = bundle.meta.get("archives", {})
    if archives.get("docker"):
        return "docker"
    if archives.get("containerd") and archives.get("runc"):
        return "containerd"
    return None


# ===========================================================================
# Kernel: the bundle reader and verifier
# ===========================================================================

BUNDLE_FORMAT = 1

CONTROL_PLANE_COMPONENTS = ("kube-apiserver", "kube-controller-manager",
                            "kube-scheduler")
# Images a worker needs; masters need every image in the bundle.
WORKER_IMAGE_NAMES = ("pause", "kube-proxy", "coredns", "flannel",
                      "flannel-cni-plugin")

NODE_TARBALL_BINARIES = ("kubeadm", "kubelet", "kubectl")

BUNDLE_JSON_SHA = "bundle.json.sha256"   # sha256sum format: `sha256sum -c` works

MAX_BUNDLE_MEMBERS = 10000

# A bundle split for sticks that cannot hold one big file (bundle --split):
# NAME.tar.000, NAME.tar.001, ... whose concatenation is NAME.tar, and the
# index NAME.tar.parts.json (each part's name, size and sha256).
PARTS_INDEX_SUFFIX = ".parts.json"
PARTS_FORMAT = 1
MAX_PARTS = 1000                          # three-digit part numbers

IMAGE_ORIGINS = ("registry", "docker-daemon", "docker-archive", "oci-archive")

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)

MAX_IMAGE_JSON_BYTES = 4 * 1024 * 1024     # an image manifest, index.json
MAX_BUNDLE_IMAGES = 500

# bundle.json's schema.  Each entry: (kind, detail); kinds are "const",
# "match" (a str the pattern matches whole), "int" (>= 0, not a bool),
# "bool", "either" (value None or the inner schema), "list" (inner, most
# items), "map" (key pattern, value schema, most keys) and "record"
# ({key: schema}, required keys).  Nothing deeper than this is read.
_DIGEST = ("match", DIGEST_RE)
_MEMBER = ("match", MEMBER_NAME_RE)
IMAGE_SCHEMA = ("record", ({
    "name": ("match", TEXT_RE), "kubeadm": ("bool", None),
    "extra": ("bool", None), "repository": ("match", IMAGE_NAME_RE),
    "tag": ("match", IMAGE_TAG_RE), "ref": ("match", IMAGE_REF_RE),
    "source": ("match", IMAGE_REF_RE), "source_digest": _DIGEST,
    "manifest_digest": _DIGEST,
    "manifest_media_type": ("match", re.compile("|".join(
        re.escape(t) for t in MANIFEST_TYPES))),
    "config_digest": _DIGEST, "layers": ("list", (_DIGEST, 1000)),
    "size": ("int", None),
    "origin": ("match", re.compile("|".join(IMAGE_ORIGINS)))},
    ("name", "kubeadm", "repository", "tag", "ref", "manifest_digest",
     "config_digest", "layers")))

_PACKAGE_NAMES = ("list", (("match", PACKAGE_NAME_RE), 200))

OS_PACKAGE_SCHEMA = ("record", ({
    "name": ("match", PACKAGE_NAME_RE), "version": ("match", PACKAGE_VERSION_RE),
    "arch": ("match", TEXT_RE), "path": _MEMBER, "wanted": ("bool", None),
    "needs": _PACKAGE_NAMES, "pre_depends": _PACKAGE_NAMES,
    "requires": ("list", (("list", (("match", DEB_RELATION_TEXT_RE), 20)),
                          200)),
    "provides": _PACKAGE_NAMES},
    ("name", "version", "arch", "path", "wanted", "needs", "requires",
     "pre_depends", "provides")))
OS_PACKAGES_SCHEMA = ("map", (OS_ID_RE, ("record", ({
    "id": ("match", TEXT_RE), "version_id": ("match", TEXT_RE),
    "family": ("match", re.compile("deb|rpm")),
    "signatures": ("list", (("match", PRINTABLE_RE), 20)),
    "packages": ("list", (OS_PACKAGE_SCHEMA, 1000))},
    ("id", "version_id", "family", "signatures", "packages"))), 20))
BUNDLE_SCHEMA = ("record", ({
    "format": ("const", BUNDLE_FORMAT),
    "name": ("match", re.compile(r"k8s-offline-v[0-9.]+-linux-[a-z0-9]+")),
    "tool_version": ("match", TEXT_RE),
    "kubernetes_version": ("match", VERSION_RE),
    "arch": ("match", re.compile("|".join(sorted(ARCHES)))),
    "versions": ("map", (re.compile(r"[a-z][a-z-]{0,19}"),
                         ("either", ("match", TEXT_RE)), 20)),
    "images": ("list", (IMAGE_SCHEMA, MAX_BUNDLE_IMAGES)),
    "files": ("map", (MEMBER_NAME_RE, ("record", ({
        "size": ("int", None), "sha256": ("match", SHA256_HEX_RE)},
        ("size", "sha256"))), MAX_BUNDLE_MEMBERS)),
    "binaries": ("map", (re.compile("|".join(NODE_TARBALL_BINARIES)),
                         _MEMBER, 10)),
    "archives": ("map", (re.compile(
        "cni|crictl|docker|cri-dockerd|containerd|runc"), _MEMBER, 10)),
    "os_packages": OS_PACKAGES_SCHEMA,
    "systemd": ("map", (re.compile(r"kubelet\.service|10-kubeadm\.conf|"
                                   r"docker\.service|containerd\.service|"
                                   r"cri-docker\.service|cri-docker\.socket"),
                        _MEMBER, 10)),
    # The imageRepository kubeadm is configured with so that it looks for
    # exactly the bundled refs (absent: KUBEADM_IMAGE_REPOSITORY).
    "image_repository": ("match", IMAGE_NAME_RE),
    "flannel_manifest": _MEMBER,
    "script": ("const", "k8s_offline.py"),
    # What vouched for each file's checksum (issue 8): shown, not used.
    "checksum_sources": ("map", (MEMBER_NAME_RE, ("list", (
        ("match", PRINTABLE_RE), 20)), MAX_BUNDLE_MEMBERS))},
    ("format", "name", "kubernetes_version", "arch", "images", "files",
     "binaries", "archives")))

PARTS_INDEX_SCHEMA = ("record", ({
    "format": ("const", PARTS_FORMAT),
    "bundle": ("match", PARTS_BUNDLE_RE),
    "size": ("int", None),
    "part_size": ("int", None),
    "parts": ("list", (("record", ({
        "name": ("match", PARTS_BUNDLE_RE), "size": ("int", None),
        "sha256": ("match", SHA256_HEX_RE)}, ("name", "size", "sha256"))),
        MAX_PARTS))},
    ("format", "bundle", "size", "part_size", "parts")))

# How far a read may jump ahead of a part's hash and have the skipped
# bytes (tar headers, padding) read and hashed too.
PART_GAP_FILL = 64 * 1024


def require_schema(value, schema, where, document=BUNDLE_JSON, fix=None):
    """BundleError naming the first field of value that schema refuses
    (in bundle.json, or the document named, with its fix)."""
    found = schema_problem(value, schema, where)
    if found:
        raise BundleError("%s field %s %s: %s" % (
            document, found[0], found[1], fix or "the bundle is damaged or "
            "was not made by this tool; rebuild it"))


def _short_json(value):
    return short_json(value)


def require_bundle_meta(meta):
    """bundle.json against its schema, then what the schema cannot say:
    every path it names is listed in files, the version is supported."""
    require_schema(meta, BUNDLE_SCHEMA, "")
    try:
        supported_version(meta["kubernetes_version"])
    except UserError as exc:
        raise BundleError("%s field kubernetes_version: %s" % (BUNDLE_JSON, exc))
    files = meta["files"]
    named = (list(meta["binaries"].items()) + list(meta["archives"].items()) +
             list(meta.get("systemd", {}).items()) +
             [("flannel_manifest", meta.get("flannel_manifest"))] +
             [("os_packages.%s" % os_id, package["path"])
              for os_id, entry in sorted(meta.get("os_packages", {}).items())
              for package in entry["packages"]])
    for key, relpath in named:
        if relpath is not None and relpath not in files:
            raise BundleError("%s names %s for %s, which is not in its files: "
                              "the bundle is damaged; rebuild it"
                              % (BUNDLE_JSON, relpath, key))
    for os_id, entry in sorted(meta.get("os_packages", {}).items()):
        distro = DISTROS[os_id]
        if (entry["id"], entry["version_id"], entry["family"]) != (
                distro["id"], distro["version_id"], distro["family"]):
            raise BundleError("%s field os_packages.%s is for %s %s (%s), not "
                              "%s: the bundle is damaged; rebuild it" % (
                                  BUNDLE_JSON, os_id, entry["id"],
                                  entry["version_id"], entry["family"], os_id))
        for package in entry["packages"]:
            if (not package["path"].startswith(
                    "%s/%s/" % (PACKAGES_DIR, os_id)) or
                    not package["path"].endswith("." + entry["family"])):
                raise BundleError("%s lists %s under os_packages.%s: the "
                                  "bundle is damaged; rebuild it" % (
                                      BUNDLE_JSON, package["path"], os_id))
    for key, relpath in meta["binaries"].items():
        if relpath != "%s/%s" % (BIN_DIR, key):
            raise BundleError("%s field binaries.%s is %s, expected %s/%s: the "
                              "bundle is damaged; rebuild it" % (
                                  BUNDLE_JSON, key, relpath, BIN_DIR, key))
    carried = set((image["name"], image["kubeadm"],
                   image.get("extra", False)) for image in meta["images"])
    for name in CONTROL_PLANE_COMPONENTS + ("kube-proxy", "pause", "etcd",
                                            "coredns", "flannel"):
        if (name, name != "flannel", False) not in carried:
            raise BundleError("%s has no %s image: the bundle is damaged or "
                              "incomplete; rebuild it" % (BUNDLE_JSON, name))
    if meta["name"] != bundle_name(meta["kubernetes_version"], meta["arch"]):
        raise BundleError("%s field name is %s, expected %s: the bundle is "
                          "damaged; rebuild it" % (BUNDLE_JSON, meta["name"],
                          bundle_name(meta["kubernetes_version"], meta["arch"])))


def _require_member_name(name):
    """Refuse tar member names that could land outside the target."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise BundleError("unsafe path %r in the bundle: refusing it" % name)
    parts = name.split("/")
    if ".." in parts or "." in parts or "" in parts[:-1]:
        raise BundleError("unsafe path %r in the bundle: refusing it" % name)


def json_loads_bounded(raw, what):
    """json.loads that gives a BundleError, never a crash, on bad input
    (not UTF-8, not JSON, nested too deep)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BundleError("%s is not valid JSON: the bundle is damaged; "
                          "recopy it" % what)


class _HandleReader(object):
    """A reader over self.handle, closed with it (and by `with`)."""

    def close(self):
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VerifiedReader(_HandleReader):
    """Reads one bundle member and hashes it on the way: the read that
    completes the size bundle.json lists checks the sha256 and raises
    before handing over those last bytes, so a member changed after
    `verify` never reaches its consumer whole."""

    def __init__(self, handle, relpath, size, sha256_hex):
        self.handle = handle
        self.relpath = relpath
        self.left = size
        self.expected = sha256_hex
        self.digest = hashlib.sha256()
        self.verified = False
        if size == 0:
            self._check()

    def _check(self):
        if self.handle.read(1):
            raise BundleError("bundle member %s is longer than %s says: it "
                              "changed after it was verified; recopy the "
                              "bundle" % (self.relpath, BUNDLE_JSON))
        if self.digest.hexdigest() != self.expected:
            raise BundleError("bundle member %s fails its sha256 check: the "
                              "bundle is damaged or changed after it was "
                              "verified; recopy it" % self.relpath)
        self.verified = True

    def read(self, size=-1):
        want = self.left if size is None or size < 0 else min(size, self.left)
        parts = []
        while want > 0:
            block = self.handle.read(min(want, CHUNK))
            if not block:
                raise BundleError("bundle member %s is shorter than %s says: "
                                  "the bundle is damaged or changed after it "
                                  "was verified; recopy it"
                                  % (self.relpath, BUNDLE_JSON))
            self.digest.update(block)
            self.left -= len(block)
            want -= len(block)
            parts.append(block)
            if self.left == 0:
                self._check()
        return b"".join(parts)


def parts_index_path(path):
    """The index of the split bundle path names (the index itself, the
    bundle's .tar name, or one of its parts), or None if it names none."""
    path = os.path.abspath(path)
    if path.endswith(PARTS_INDEX_SUFFIX):
        return path
    base, dot, number = path.rpartition(".")
    if (dot and number.isdigit() and len(number) >= 3
            and base.endswith(".tar")):
        return base + PARTS_INDEX_SUFFIX
    if not os.path.lexists(path) and os.path.lexists(path + PARTS_INDEX_SUFFIX):
        return path + PARTS_INDEX_SUFFIX
    return None


def read_parts_index(index_path):
    """The index, checked whole against its grammar: the part names are
    exactly NAME.tar.000 on in order, the sizes add up, and every part but
    the last is part_size bytes."""
    index_name = os.path.basename(index_path)
    raw = read_regular_file(index_path, "the split bundle's index %s"
                            % index_name, 1024 * 1024)
    index = json_loads_bounded(raw, index_name)
    require_schema(index, PARTS_INDEX_SCHEMA, "", index_name)
    bundle_file = index["bundle"]
    parts = index["parts"]

    def bad(what):
        raise BundleError("%s %s: the split bundle is damaged; recopy it"
                          % (index_name, what))
    if index_name != bundle_file + PARTS_INDEX_SUFFIX:
        bad("names the bundle %s, not %s" % (
            bundle_file, index_name[:-len(PARTS_INDEX_SUFFIX)]))
    if not parts or index["part_size"] < 1:
        bad("lists no parts")
    for number, part in enumerate(parts):
        if part["name"] != part_name(bundle_file, number):
            bad("lists %s as part %d" % (part["name"], number))
        last = number == len(parts) - 1
        if (part["size"] > index["part_size"] or part["size"] < 1
                or (not last and part["size"] != index["part_size"])):
            bad("gives %s the size %d with parts of %d" % (
                part["name"], part["size"], index["part_size"]))
    if sum(part["size"] for part in parts) != index["size"]:
        bad("gives a total size that is not the sum of its parts")
    return index


class PartsReader(object):
    """The parts of a split bundle read in place as one seekable file.

    Every part is checked before use: present, a regular file, of the
    size its index gives, and no part there that the index does not list.
    Each part is hashed as its bytes are first read (reads that skip a few
    bytes ahead, over tar headers, have the gap read too); the read that
    completes a part checks its sha256.  require_all_parts() hashes what is left
    and names the first part that is wrong: a damaged, swapped or foreign
    part is refused by name."""

    def __init__(self, index_path):
        self.folder = os.path.dirname(index_path)
        index = read_parts_index(index_path)
        self.index_name = os.path.basename(index_path)
        self.parts = index["parts"]
        self.starts = []
        offset = 0
        for part in self.parts:
            self.starts.append(offset)
            offset += part["size"]
        self.size = offset
        self.pos = 0
        self.hashed = [0] * len(self.parts)
        self.digests = [hashlib.sha256() for _ in self.parts]
        self.current = None        # (part number, fd)
        self.failed = None         # the first part found wrong, named
        self._require_present(index["bundle"])

    def _require_present(self, bundle_file):
        listed = set(part["name"] for part in self.parts)
        try:
            names = os.listdir(self.folder)
        except OSError as exc:
            raise BundleError("cannot list %s: %s" % (self.folder, exc.strerror))
        for name in sorted(names):
            if (name.startswith(bundle_file) and name not in listed
                    and full_match(PART_NUMBER_RE, name[len(bundle_file):])):
                raise BundleError("part %s is not listed in %s: it is from "
                                  "another bundle; remove it or recopy the "
                                  "parts" % (name, self.index_name))
        for number, part in enumerate(self.parts):
            fd = self._open_part(number)
            try:
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size != part["size"]:
                raise BundleError("part %s has %d bytes, %s says %d: it is "
                                  "cut short or from another bundle; recopy "
                                  "it" % (part["name"], size, self.index_name,
                                          part["size"]))

    def _open_part(self, number):
        name = self.parts[number]["name"]
        try:
            fd = os.open(os.path.join(self.folder, name), os.O_RDONLY |
                         os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise BundleError("part %s is missing: copy every part listed "
                                  "in %s" % (name, self.index_name))
            raise BundleError("cannot read part %s: %s" % (
                name, "a link" if exc.errno == errno.ELOOP else exc.strerror))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BundleError("part %s is not a regular file: refusing it"
                              % name)
        return fd

    def _fd(self, number):
        if self.current is None or self.current[0] != number:
            self._close_current()
            self.current = (number, self._open_part(number))
        return self.current[1]

    def _close_current(self):
        if self.current is not None:
            os.close(self.current[1])
            self.current = None

    def _part_at(self, offset):
        """The number of the part holding byte offset of the bundle."""
        return bisect.bisect_right(self.starts, offset) - 1

    def _pread(self, number, offset, size):
        block = os.pread(self._fd(number), size, offset)
        if len(block) != size:
            raise BundleError("part %s is shorter than %s says: it changed "
                              "while being read; recopy it"
                              % (self.parts[number]["name"], self.index_name))
        return block

    def _hash(self, number, offset, block):
        """Feed the bytes at offset of part number to its hash if they
        continue it (after reading a short gap), check a completed part."""
        done = self.hashed[number]
        if offset > done and offset - done <= PART_GAP_FILL:
            self.digests[number].update(self._pread(number, done, offset - done))
            done = offset
        if offset <= done < offset + len(block):
            self.digests[number].update(block[done - offset:])
            done = offset + len(block)
        self.hashed[number] = done
        if done == self.parts[number]["size"]:
            self.hashed[number] = done + 1      # checked: never again
            if self.digests[number].hexdigest() != self.parts[number]["sha256"]:
                self.failed = BundleError(
                    "part %s fails its sha256 check: it is damaged, from "
                    "another bundle, or the parts were renamed out of order; "
                    "recopy it" % self.parts[number]["name"])
                raise self.failed

    def read(self, size=-1):
        if size is None or size < 0:
            size = self.size - self.pos
        out = []
        while size > 0 and self.pos < self.size:
            number = self._part_at(self.pos)
            offset = self.pos - self.starts[number]
            take = min(size, self.parts[number]["size"] - offset, CHUNK)
            block = self._pread(number, offset, take)
            self._hash(number, offset, block)
            out.append(block)
            self.pos += take
            size -= take
        return b"".join(out)

    def require_all_parts(self):
        """Hash what is left of every part; BundleError naming the first
        part whose sha256 is not the index's (or the one a read found)."""
        if self.failed is not None:
            raise self.failed
        for number, part in enumerate(self.parts):
            while self.hashed[number] < part["size"]:
                done = self.hashed[number]
                self._hash(number, done, self._pread(
                    number, done, min(CHUNK, part["size"] - done)))

    def seek(self, offset, whence=0):
        if whence == 1:
            offset += self.pos
        elif whence == 2:
            offset += self.size
        if offset < 0:
            raise OSError(errno.EINVAL, "negative seek")
        self.pos = offset
        return self.pos

    def tell(self):
        return self.pos

    def seekable(self):
        return True

    def readable(self):
        return True

    def close(self):
        self._close_current()


class _LockedReader(_HandleReader):
    """A member of a tar bundle read under the bundle's lock (its seek and
    read go together)."""

    def __init__(self, handle, lock):
        self.handle, self.lock = handle, lock

    def read(self, size=-1):
        with self.lock:
            return self.handle.read(size)


class Bundle(object):
    """A bundle, either the .tar as made or its extracted top directory.

    ``meta`` is bundle.json, read once and checked against its schema.
    ``open(relpath)`` gives a VerifiedReader of a listed member: every byte
    that leaves the bundle is hashed on the way.  Nothing is extracted: a
    tar is read in place (it is uncompressed, so members can be seeked);
    in a folder every path component is opened without following links.
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.tar = None
        # The members of a .tar (or parts) share one file: each read seeks
        # first, so a lock lets several streams read members at once.
        self.read_lock = threading.Lock()
        self.dir_fd = None
        self.parts = None
        self.members = {}
        self.folders = set()
        self.top = ""
        index = parts_index_path(self.path)
        if index is not None:
            self._open_parts(index)
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise BundleError("bundle %s does not exist: give the bundle "
                                  ".tar or its extracted folder" % path)
            raise BundleError("cannot open the bundle %s: %s" % (
                path, exc.strerror))
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            self.kind = "dir"
            self.dir_fd = fd
            try:
                os.close(self._open_dir_member(BUNDLE_JSON)[0])
            except BundleError:
                self.close()
                raise BundleError("%s has no %s: point --bundle at the "
                                  "extracted bundle folder or the .tar"
                                  % (self.path, BUNDLE_JSON))
        elif stat.S_ISREG(mode):
            self.kind = "tar"
            self._index_tar(os.fdopen(fd, "rb"))
        else:
            os.close(fd)
            raise BundleError("bundle %s is not a file or folder: give the "
                              "bundle .tar or its extracted folder" % path)
        try:
            self.meta = self._load_meta()
        except BaseException:
            self.close()
            raise

    def _open_parts(self, index):
        """A split bundle: its parts read in place as one tar.  When the
        tar or bundle.json is wrong, the part that makes it so is named."""
        self.kind = "tar"
        self.parts = PartsReader(index)
        try:
            try:
                self._index_tar(self.parts)
                self.meta = self._load_meta()
            except BundleError:
                self.require_parts()
                raise
        except BaseException:
            self.close()
            self.parts.close()
            raise

    def require_parts(self):
        """Every part of a split bundle matches its sha256: BundleError
        naming the first that does not (nothing for other bundles)."""
        if self.parts is not None:
            self.parts.require_all_parts()

    # -- tar access ---------------------------------------------------------
    def _index_tar(self, handle):
        try:
            self.tar = tarfile.open(fileobj=handle, mode="r:")
        except (tarfile.TarError, OSError) as exc:
            handle.close()
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
                _require_member_name(member.name.rstrip("/"))
                top, _, rel = member.name.rstrip("/").partition("/")
                tops.add(top)
                if member.isdir():
                    if rel:
                        self.folders.add(rel)
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
            if len(tops) != 1:
                raise BundleError("bundle must have exactly one top folder, "
                                  "found %s" % (", ".join(sorted(tops)) or "none"))
        except tarfile.TarError as exc:
            self.close()
            raise BundleError("%s is truncated or damaged: %s" % (self.path, exc))
        except BaseException:
            self.close()
            raise
        self.top = tops.pop()

    # -- folder access ------------------------------------------------------
    def _open_dir_member(self, relpath):
        """(fd, stat) of a regular file in the folder, every component
        opened without following a link; BundleError otherwise."""
        _require_member_name(relpath)
        parts = relpath.split("/")
        current = self.dir_fd
        try:
            for part in parts[:-1]:
                try:
                    following = os.open(part, os.O_RDONLY | os.O_DIRECTORY |
                                        os.O_NOFOLLOW | O_CLOEXEC,
                                        dir_fd=current)
                except OSError as exc:
                    self._member_error(relpath, exc)
                if current != self.dir_fd:
                    os.close(current)
                current = following
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW |
                             os.O_NONBLOCK | O_CLOEXEC, dir_fd=current)
            except OSError as exc:
                self._member_error(relpath, exc)
        finally:
            if current != self.dir_fd:
                os.close(current)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise BundleError("bundle member %s is not a regular file: "
                              "refusing it" % relpath)
        return fd, st

    @staticmethod
    def _member_error(relpath, exc):
        if exc.errno == errno.ENOENT:
            raise BundleError("bundle member %s is missing: rebuild or recopy "
                              "the bundle" % relpath)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise BundleError("bundle member %s is a link or not a regular "
                              "file: refusing it" % relpath)
        raise BundleError("cannot read bundle member %s: %s"
                          % (relpath, exc.strerror))

    def _walk_folder(self):
        """(files, folders) under the folder, nothing followed; a link,
        FIFO or device anywhere is refused."""
        files, folders = [], set()
        pending = [""]
        while pending:
            prefix = pending.pop()
            try:
                entries = sorted(os.listdir(os.path.join(self.path, prefix)
                                            if prefix else self.path))
            except OSError as exc:
                raise BundleError("cannot list %s in the bundle: %s"
                                  % (prefix or ".", exc.strerror))
            for name in entries:
                rel = prefix + "/" + name if prefix else name
                if rel == JOIN_FILE_NAME:
                    continue
                mode = os.lstat(os.path.join(self.path, rel)).st_mode
                if stat.S_ISDIR(mode):
                    folders.add(rel)
                    pending.append(rel)
                elif stat.S_ISREG(mode):
                    files.append(rel)
                else:
                    raise BundleError("bundle member %s is a link or device: "
                                      "refusing it" % rel)
                if len(files) + len(folders) > MAX_BUNDLE_MEMBERS:
                    raise BundleError("bundle has more than %d members: "
                                      "refusing it" % MAX_BUNDLE_MEMBERS)
        return sorted(files), folders

    # -- either -------------------------------------------------------------
    def _load_meta(self):
        if self.size(BUNDLE_JSON) > MAX_BUNDLE_JSON_BYTES:
            raise BundleError("%s is too large: this is not a k8s-offline "
                              "bundle" % BUNDLE_JSON)
        try:
            with self.open_raw(BUNDLE_JSON) as handle:
                raw = handle.read(MAX_BUNDLE_JSON_BYTES + 1)
            with self.open_raw(BUNDLE_JSON_SHA) as handle:
                recorded = handle.read(200).decode("ascii", "replace").split()
        except BundleError:
            raise BundleError("%s or %s is missing or not a file: this is not "
                              "a complete k8s-offline bundle"
                              % (BUNDLE_JSON, BUNDLE_JSON_SHA))
        if not recorded or recorded[0] != sha256_bytes(raw):
            raise BundleError("bundle member %s fails its sha256 check (%s): "
                              "the bundle is damaged; recopy it"
                              % (BUNDLE_JSON, BUNDLE_JSON_SHA))
        meta = json_loads_bounded(raw, "%s in %s" % (BUNDLE_JSON, self.path))
        if (not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT
                or type(meta.get("format")) is not int):
            raise BundleError("%s is not a k8s-offline bundle of format %d: "
                              "use a bundle made by this tool"
                              % (self.path, BUNDLE_FORMAT))
        require_bundle_meta(meta)
        self.meta_sha256 = sha256_bytes(raw)
        return meta

    def names(self):
        if self.kind == "tar":
            return sorted(self.members)
        files, self.folders = self._walk_folder()
        return files

    def size(self, relpath):
        if self.kind == "tar":
            if relpath not in self.members:
                raise BundleError("bundle member %s is missing" % relpath)
            return self.members[relpath].size
        fd, st = self._open_dir_member(relpath)
        os.close(fd)
        return st.st_size

    def data_offset(self, relpath):
        """Where a member's bytes start in the tar (0 in a folder)."""
        member = self.members.get(relpath) if self.kind == "tar" else None
        return member.offset_data if member is not None else 0

    def open_raw(self, relpath):
        """A file object of a member as it is now, not checked: only for
        `verify` and bundle.json, which check what they read themselves."""
        if self.kind == "tar":
            if relpath not in self.members:
                raise BundleError("bundle member %s is missing" % relpath)
            return _LockedReader(self.tar.extractfile(self.members[relpath]),
                                 self.read_lock)
        return os.fdopen(self._open_dir_member(relpath)[0], "rb")

    def open(self, relpath):
        """A VerifiedReader of a member bundle.json lists."""
        entry = self.meta["files"].get(relpath)
        if entry is None:
            raise BundleError("bundle member %s is not listed in %s: the "
                              "bundle is damaged; rebuild it"
                              % (relpath, BUNDLE_JSON))
        return VerifiedReader(self.open_raw(relpath), relpath, entry["size"],
                              entry["sha256"])

    def read_member(self, relpath, cap=None):
        """The verified bytes of a member (small ones: units, manifests,
        archives that are unpacked from memory)."""
        size = self.meta["files"].get(relpath, {}).get("size", 0)
        if cap is not None and size > cap:
            raise BundleError("bundle member %s is %d bytes, more than the "
                              "%d expected: the bundle is damaged; rebuild it"
                              % (relpath, size, cap))
        with self.open(relpath) as handle:
            return handle.read()

    def read_json(self, relpath):
        return json_loads_bounded(self.read_member(relpath, MAX_IMAGE_JSON_BYTES),
                                  "bundle member %s" % relpath)

    def close(self):
        if self.tar is not None:
            self.tar.fileobj.close()
            self.tar.close()
            self.tar = None
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    # -- facts --------------------------------------------------------------
    @property
    def kubernetes_version(self):
        return self.meta["kubernetes_version"]

    @property
    def arch(self):
        return self.meta["arch"]

    def images_for_role(self, role):
        """Image entries a node of this role needs ('master' or 'worker')."""
        images = self.meta["images"]
        if role == "master":
            return list(images)
        return [image for image in images
                if image["name"] in WORKER_IMAGE_NAMES or image.get("extra")]


def verify_bundle(bundle, progress=True):
    """Check every byte of a bundle against bundle.json; BundleError if not.
    In a split bundle, whatever is wrong is laid at the part that makes it
    so, when a part does: every part is hashed to the end."""
    try:
        require_every_member(bundle, progress)
        bundle.require_parts()
    except BundleError:
        bundle.require_parts()
        raise


def require_every_member(bundle, progress):
    """The checks of verify_bundle.

    Checks: every listed file is present with its size and sha256; no file,
    folder or link is there that is not listed; every blob is named by its
    own digest; every image's manifest, config and layers are present and
    the manifest names exactly the config and layers bundle.json records.
    """
    files = bundle.meta["files"]
    if not files:
        raise BundleError("%s lists no files: the bundle is damaged" % BUNDLE_JSON)
    present = set(bundle.names()) - {BUNDLE_JSON, BUNDLE_JSON_SHA}
    unlisted = sorted(present - set(files))
    if unlisted:
        raise BundleError("bundle member %s is not listed in %s: refusing the "
                          "bundle" % (unlisted[0], BUNDLE_JSON))
    needed = set()
    for relpath in files:
        parts = relpath.split("/")
        needed.update("/".join(parts[:i]) for i in range(1, len(parts)))
    stray = sorted(bundle.folders - needed)
    if stray:
        raise BundleError("bundle folder %s is not listed in %s: refusing the "
                          "bundle" % (stray[0], BUNDLE_JSON))
    total = 0
    for relpath, entry in files.items():
        _require_member_name(relpath)
        if relpath not in present:
            raise BundleError("bundle member %s is missing: rebuild or recopy "
                              "the bundle" % relpath)
        total += entry["size"]
    bar = Progress(total, "verify", enabled=progress)
    try:
        # In the order the tar holds them: one pass over a stick, which
        # also hashes a split bundle's parts on the way.
        for relpath in sorted(files, key=lambda p: (bundle.data_offset(p), p)):
            entry = files[relpath]
            if bundle.size(relpath) != entry["size"]:
                raise BundleError("bundle member %s has size %d, expected %d: "
                                  "the bundle is damaged; recopy it"
                                  % (relpath, bundle.size(relpath), entry["size"]))
            with bundle.open(relpath) as handle:
                for block in iter(lambda: handle.read(CHUNK), b""):
                    bar.update(len(block))
            if (relpath.startswith(IMAGES_DIR + "/blobs/sha256/") and
                    relpath.rsplit("/", 1)[1] != entry["sha256"]):
                raise BundleError("blob %s is not named by its digest" % relpath)
    finally:
        bar.close()
    _verify_image_graph(bundle, files)


def _verify_image_graph(bundle, files):
    """Every image's manifest names the config and layers that are there."""
    for image in bundle.meta["images"]:
        manifest_path = _blob_path(image["manifest_digest"])
        if manifest_path not in files:
            raise BundleError("image %s: manifest blob is missing" % image["ref"])
        manifest = bundle.read_json(manifest_path)
        config = manifest.get("config") if isinstance(manifest, dict) else None
        layers = manifest.get("layers") if isinstance(manifest, dict) else None
        if (not isinstance(config, dict) or not isinstance(layers, list) or
                not all(isinstance(layer, dict) for layer in layers)):
            raise BundleError("image %s: its manifest is not an image manifest: "
                              "the bundle is damaged; rebuild it" % image["ref"])
        if (config.get("digest") != image["config_digest"] or
                [layer.get("digest") for layer in layers] != image["layers"]):
            raise BundleError("image %s: manifest does not match %s"
                              % (image["ref"], BUNDLE_JSON))
        for digest in [image["config_digest"]] + image["layers"]:
            if _blob_path(digest) not in files:
                raise BundleError("image %s: blob %s is missing"
                                  % (image["ref"], digest))


# ===========================================================================
# Kernel: phases and the phase runner
# ===========================================================================

class Found(object):
    """What a run's phases learn, one explicit record, as kubeadm's InitData
    holds it: a subclass names every field in __slots__ (a misspelt one
    raises), each None until a phase sets it or the subclass gives a
    default.  Phases write ctx.found.X and read it back, never ctx.X."""

    __slots__ = ()

    def __init__(self, **values):
        for name in self.__slots__:
            setattr(self, name, None)
        for name, value in values.items():
            setattr(self, name, value)


class Context(object):
    """A command's context: built once (its __init__ checks every flag and
    reads what the run decides up front), read-only afterwards.  What the
    phases learn goes into self.found; setting any other public attribute
    of a built context is a programming error.  Lazy caches behind
    properties keep private _fields."""

    _built = False

    def __setattr__(self, name, value):
        if self._built and not name.startswith("_"):
            raise AttributeError(
                "%s.%s is set after the context was built: the context is "
                "read-only; record it in ctx.found" % (type(self).__name__,
                                                       name))
        object.__setattr__(self, name, value)

    def _seal(self):
        """The end of the build: from here on the context is read-only."""
        self._built = True


def parse_skip_phases(text):
    return set(part.strip() for part in (text or "").split(",") if part.strip())


# A step of a command, as kubeadm's workflow package has them: its name (for
# --skip-phases and `COMMAND phase NAME`), a line for --help, the function
# doing it, and run_if: when given, the phase runs only where it is true.
class Phase(object):
    def __init__(self, name, short, run, run_if=None):
        self.name, self.short, self.run, self.run_if = name, short, run, run_if


# Never left out of a run that changes the host.
SAFETY_PHASES = ("verify", "preflight")


def phase_summary(phase):
    """The first paragraph of the phase function's docstring, one line."""
    return " ".join((phase.run.__doc__ or "").strip().split("\n\n")[0]
                    .split())


def require_skip_phases(ctx, workflow):
    """--skip-phases names phases of this command, and a safety phase only
    in a dry run, which changes nothing; that is said loudly."""
    names = [phase.name for phase in workflow]
    unknown = sorted(ctx.skip - set(names))
    if unknown:
        raise UserError("unknown phase %s in --skip-phases: the phases of %s "
                        "are %s" % (unknown[0], ctx.command, ", ".join(names)))
    for name in SAFETY_PHASES:
        if name in ctx.skip and not ctx.dry_run:
            raise UserError("--skip-phases %s is refused: the %s phase checks "
                            "the %s before anything changes; run without it "
                            "(only a --dry-run may leave it out)" % (
                                name, name, "bundle" if name == "verify"
                                else "host"))
        if name in ctx.skip:
            log.warning("warning: the %s phase is left out of this dry run: "
                        "a real run always does it", name)


def run_phases(ctx, workflow, only=None):
    """Run a workflow in order: each phase logged and timed, skipped when
    named in --skip-phases or when its run_if is false, printed only under
    --dry-run.  With only (`COMMAND phase NAME`), that phase runs alone,
    after the safety phases, which no run that changes the host leaves out.
    A context may log its phases at another level (ctx.phase_log_level)."""
    require_skip_phases(ctx, workflow)
    level = getattr(ctx, "phase_log_level", logging.INFO)
    started = now()
    for phase in workflow:
        if only is not None and phase.name not in (only,) + SAFETY_PHASES:
            continue
        if phase.name in ctx.skip:
            log.info("[%s] skipped (--skip-phases)", phase.name)
            continue
        if phase.run_if is not None and not phase.run_if(ctx):
            log.debug("[%s] not for this node", phase.name)
            continue
        log.log(level, "[%s] %s%s", phase.name, phase_summary(phase),
                " (dry run)" if ctx.dry_run else "")
        began = now()
        phase.run(ctx)
        log.log(level, "[%s] done in %.1f s", phase.name, now() - began)
    log.log(level, "%s finished in %.1f s", ctx.command, now() - started)


def phases_help(command, workflow, runnable=True):
    """The --help epilog listing a command's phases."""
    lines = ["phases, in order (--skip-phases A,B leaves some out;",
             "`%s phase NAME` runs one):" % command] if runnable else [
                 "phases, in order (%s writes a bundle whole or not at all):"
                 % command]
    for phase in workflow:
        lines.append("  %-14s %s" % (phase.name, phase.short))
    return "\n".join(lines)


def run_workflow(ctx, workflow, only=None):
    try:
        run_phases(ctx, workflow, only)
    finally:
        ctx.close()
    if ctx.dry_run:
        log.info("dry run: nothing was changed")
    return 0


def only_phase(args):
    """NAME of `COMMAND phase NAME`, or None: the whole workflow."""
    if args.phase_action and not args.phase_name:
        command = getattr(args, "phase_command", args.command)
        raise UserError("`%s phase` needs the name of a phase: see `%s "
                        "--help` for them" % (command, command))
    return args.phase_name


# ===========================================================================
# Profiles: Kubernetes versions and container runtimes
# ===========================================================================

DEFAULT_KUBERNETES_VERSION = "v1.16.0"

RELEASE_TABLE_FILE = "bundle/releases.json"
RELEASE_TABLE_ENV = "K8SO_RELEASE_TABLE"     # tests: a table of their own

# What changes with the Kubernetes minor.  A row holds what is new from its
# minor on (the first row is the base); profile() folds the rows up to a
# version's minor, once a minor, into the run's profile.  Versions are
# compared here and in the release table alone (tests/test_layout_rules.py).
KUBERNETES_PROFILES = (
    (16, {"kubeadm_api": "kubeadm.k8s.io/v1beta2",       # the config API
          "kubelet_api": "kubelet.config.k8s.io/v1beta1",
          # The taints kubeadm puts on a control-plane node.
          "master_taint": ("node-role.kubernetes.io/master",),
          # kube-proxy's image detects the iptables backend from 1.17 on
          # (kubernetes #82966); 1.16's writes legacy rules only.
          "iptables_backend_detected": False,
          # kubeadm's certificate commands: under `alpha` up to 1.19.
          "certs_command": ("kubeadm", "alpha", "certs"),
          # The repository kubeadm's images are named under by default (the
          # release table names the patches of 1.22-1.24 that moved early),
          # and CoreDNS's path under it.
          "default_image_repository": "k8s.gcr.io",
          "coredns_path": "coredns",
          # The flannel manifest (FLANNEL_LINES) and its namespace.
          "flannel_line": "v0.11", "flannel_namespace": "kube-system",
          # The kubelet's dockershim (gone in 1.24: Docker then goes
          # through cri-dockerd); the runtime when --cri is not given.
          "dockershim": True, "default_cri": "docker",
          # criSocket and the runtime endpoints: a bare path up to 1.23,
          # kubeadm wants a URL from 1.24.
          "cri_socket_scheme": "",
          # None: the kubelet takes the runtime's driver; from 1.22 kubeadm
          # defaults to systemd and the runtime is set to systemd too.
          "cgroup_driver": None,
          # The kubelet refuses a cgroup v1 host from 1.35 unless
          # failCgroupV1 is false (kubernetes #134298).
          "fail_cgroup_v1": False,
          # The kubelet's --pod-infra-container-image (removed in 1.35,
          # kubernetes #133779): the runtime's config names the sandbox.
          "pod_infra_flag": True,
          # Where the kubelet unit and its 10-kubeadm.conf drop-in go.
          "unit_dir": "/etc/systemd/system",
          # kube-scheduler's and kube-controller-manager's health ports
          # (the secure ones from 1.17: kubernetes #85043).
          "control_plane_ports": (10251, 10252),
          # How their /healthz is asked: plain HTTP on the insecure ports,
          # HTTPS (a self-signed serving certificate) on the secure ones.
          "control_plane_scheme": "http",
          # etcd's health endpoint kubeadm probes (/livez from 1.31,
          # kubernetes #124465), and the tool that restores a snapshot
          # (etcdutl: etcd 3.6 dropped `etcdctl snapshot restore`).
          "etcd_probe": "/health", "etcd_restore": "etcdctl"}),
    (17, {"iptables_backend_detected": True,
          "control_plane_ports": (10259, 10257),
          "control_plane_scheme": "https"}),
    (20, {"certs_command": ("kubeadm", "certs")}),
    # CoreDNS moved to coredns/coredns under the default repository; the
    # CNI plugins 1.x no longer carry flannel's binary, the current flannel
    # line brings its own (and drops RBAC v1beta1 and the PSP).
    (21, {"coredns_path": "coredns/coredns", "flannel_line": "v0.28",
          "flannel_namespace": "kube-flannel"}),
    (22, {"kubeadm_api": "kubeadm.k8s.io/v1beta3", "cgroup_driver": "systemd"}),
    (24, {"dockershim": False, "default_cri": "containerd",
          "cri_socket_scheme": "unix://",
          "master_taint": ("node-role.kubernetes.io/master",
                           "node-role.kubernetes.io/control-plane"),
          "unit_dir": "/usr/lib/systemd/system"}),
    (25, {"default_image_repository": "registry.k8s.io",
          "master_taint": ("node-role.kubernetes.io/control-plane",)}),
    (31, {"kubeadm_api": "kubeadm.k8s.io/v1beta4", "etcd_probe": "/livez"}),
    (34, {"etcd_restore": "etcdutl"}),
    (35, {"fail_cgroup_v1": True, "pod_infra_flag": False}),
)
# The host tools kubeadm's preflight refuses to run without, from the minor
# named on (before it, kubeadm only warns), and the package holding each.
KUBEADM_REQUIRED_TOOLS = (("ip", 16, "iproute2"), ("iptables", 16, "iptables"),
                          ("mount", 16, "mount"), ("nsenter", 16, "util-linux"),
                          ("conntrack", 18, "conntrack"))
_PROFILES = {}
CNI_URL_OLD = ("https://github.com/containernetworking/plugins/releases/"
               "download/{cni}/cni-plugins-{arch}-{cni}.tgz")
CNI_URL = ("https://github.com/containernetworking/plugins/releases/"
           "download/{cni}/cni-plugins-linux-{arch}-{cni}.tgz")

_RELEASE_TABLES = {}
_HEX = {"sha256": SHA256_HEX_RE, "sha512": re.compile(r"[0-9a-f]{128}")}
_RELEASE_RE = re.compile(r"^v1\.(\d+)\.(\d+)\Z")
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_IMAGE_TAG_RE = re.compile(r"^v?\d+(\.\d+)*(-\d+)?\Z")
_COREDNS_PATHS = ("coredns", "coredns/coredns")


def profile(kubernetes_version):
    """The run's profile: KUBERNETES_PROFILES folded up to the version's
    minor, with the tools kubeadm requires at that minor."""
    _, minor, _ = parse_version(kubernetes_version)
    if minor not in _PROFILES:
        folded = dict(KUBERNETES_PROFILES[0][1])
        for since, changes in KUBERNETES_PROFILES[1:]:
            if minor >= since:
                folded.update(changes)
        folded["required_tools"] = tuple(
            tool for tool, since, _ in KUBEADM_REQUIRED_TOOLS if minor >= since)
        # The runtime adapter (RUNTIMES) of each --cri at this minor.
        folded["runtimes"] = {"containerd": "containerd", "docker": (
            "docker" if folded["dockershim"] else "cri-dockerd")}
        _PROFILES[minor] = folded
    return _PROFILES[minor]


def cni_url_template(cni_version):
    """The CNI plugins' release URL: its file names changed in 0.8.0."""
    return CNI_URL_OLD if parse_version(cni_version) < (0, 8, 0) else CNI_URL


def containerd_config_version(containerd_version):
    """The config version a new containerd config file is written in:
    containerd older than 1.3 reads version 1 only, 2.x writes version 3."""
    if containerd_version and containerd_version < (1, 3):
        return 1
    return 3 if containerd_version and containerd_version >= (2, 0) else 2


def release_table():
    """The release table (bundle/releases.json beside this file, or the file
    K8SO_RELEASE_TABLE names), checked once per run."""
    path = (os.environ.get(RELEASE_TABLE_ENV) or
            os.path.join(script_dir(), RELEASE_TABLE_FILE))
    if path not in _RELEASE_TABLES:
        try:
            with open(path, "rb") as handle:
                table = json.loads(handle.read().decode("utf-8"))
        except (OSError, IOError) as exc:
            raise UserError("cannot read the release table %s: %s: run bundle "
                            "from the k8s-offline folder" % (path, exc.strerror))
        except (ValueError, UnicodeDecodeError):
            raise UserError("the release table %s is not valid JSON: restore it "
                            "from git" % path)
        problem = release_table_problem(table)
        if problem:
            raise UserError("the release table %s is malformed (%s): restore it "
                            "from git" % (path, problem))
        _RELEASE_TABLES[path] = table
    return _RELEASE_TABLES[path]


def release_table_problem(table):
    """What is wrong with a release table, or None (see releases.json)."""
    if not isinstance(table, dict) or table.get("schema") != 1:
        return "schema is not 1"
    releases, minors = table.get("releases"), table.get("minors")
    if not isinstance(releases, dict) or not isinstance(minors, dict):
        return "no releases or minors"

    def hexes(entry, key, kind):
        values = entry.get(key, {})
        if not isinstance(values, dict):
            return "%s is not a table" % key
        for arch, value in values.items():
            if (arch not in ARCHES or not isinstance(value, str) or
                    not _HEX[kind].fullmatch(value)):
                return "%s of %s is not a %s" % (key, arch, kind)
        return None

    for version, entry in releases.items():
        match = _RELEASE_RE.match(version)
        if not match or "1.%s" % match.group(1) not in SUPPORTED_MINORS:
            return "release %r is not a supported version" % version
        if "1.%s" % match.group(1) not in minors:
            return "release %s has no minor entry" % version
        images = entry.get("images") if isinstance(entry, dict) else None
        if not isinstance(images, dict) or any(
                not isinstance(images.get(name), str) or
                not _IMAGE_TAG_RE.match(images[name])
                for name in ("pause", "etcd", "coredns")):
            return "release %s lacks an image tag" % version
        problem = hexes(entry, "node_sha512", "sha512")
        if problem:
            return "release %s: %s" % (version, problem)
        if entry.get("coredns_path", "coredns") not in _COREDNS_PATHS or (
                "image_repository" in entry and
                not full_match(IMAGE_NAME_RE, entry["image_repository"])):
            return "release %s: bad coredns_path or image_repository" % version
        binaries = entry.get("binaries_sha256", {})
        if not isinstance(binaries, dict) or any(
                arch not in ARCHES or not isinstance(pins, dict) or any(
                    name not in NODE_TARBALL_BINARIES or
                    not full_match(SHA256_HEX_RE, value)
                    for name, value in pins.items())
                for arch, pins in binaries.items()):
            return "release %s: bad binaries_sha256" % version
    for minor, entry in minors.items():
        if minor not in SUPPORTED_MINORS or not isinstance(entry, dict):
            return "minor %r is not supported" % minor
        for key in ("cni", "crictl", "flannel", "containerd", "runc"):
            if (not isinstance(entry.get(key), str) or
                    not _IMAGE_TAG_RE.match(entry[key])):
                return "minor %s lacks a %s version" % (minor, key)
        for key in ("cri_dockerd", "flannel_cni_plugin"):
            if entry.get(key) is not None and not full_match(
                    IMAGE_TAG_RE, entry[key]):
                return "minor %s: bad %s" % (minor, key)
        for key in ("cni_sha256", "crictl_sha256", "cri_dockerd_sha256"):
            problem = hexes(entry, key, "sha256")
            if problem:
                return "minor %s: %s" % (minor, problem)
        for key in ("cni_tarball", "crictl_tarball"):
            names = entry.get(key, {})
            if not isinstance(names, dict) or any(
                    arch not in ARCHES or not isinstance(name, str) or
                    not _FILE_NAME_RE.match(name) for arch, name in names.items()):
                return "minor %s: bad %s" % (minor, key)
    for name, entry in ((table.get("runtimes") or {}).get("docker") or {}).items():
        if not isinstance(entry, dict) or not _HEX["sha256"].fullmatch(
                str(entry.get("sha256", ""))):
            return "docker %s has no sha256" % name
    return None


def version_facts(kubernetes_version):
    """What the release table says about one patch release: kubeadm's image
    tags and repository, the CNI, crictl, flannel and runtime versions, and
    the pinned checksums (by arch).  A patch newer than the table in a minor
    still getting releases ("open") has no image tags here (listed False):
    its own kubeadm lists them at bundle time.  UserError for a version the
    table does not know."""
    major, minor, _ = supported_version(kubernetes_version)
    table = release_table()
    version = normalize_version(kubernetes_version)
    minor_key = "%d.%d" % (major, minor)
    release = table["releases"].get(version)
    known = sorted(table["releases"], key=parse_version)
    in_minor = [v for v in known if v.startswith("v%s." % minor_key)]
    newer = (table["minors"].get(minor_key, {}).get("open") and
             (not in_minor or parse_version(version) > parse_version(in_minor[-1])))
    if release is None and not newer:
        raise UserError("Kubernetes %s is not supported: it is not a release "
                        "in the release table (%s to %s)" % (
                            version, known[0], known[-1]))
    if release is not None and release.get("do_not_use"):
        raise UserError("Kubernetes %s is not supported: its release notes say "
                        "\"%s\": choose another patch release"
                        % (version, release["do_not_use"]))
    row = profile(version)
    facts = dict(table["minors"][minor_key])
    facts["listed"] = release is not None
    release = release or {"images": dict.fromkeys(("pause", "etcd", "coredns"))}
    facts.update(release["images"])
    facts["newest_listed"] = in_minor[-1] if in_minor else None
    facts["node_sha512"] = release.get("node_sha512", {})
    facts["binaries_sha256"] = release.get("binaries_sha256", {})
    facts["image_repository"] = release.get(
        "image_repository", row["default_image_repository"])
    facts["coredns_path"] = release.get("coredns_path", row["coredns_path"])
    return facts


# ===========================================================================
# Shared by install, reset and day two: the node context, preflight, kubeconfig and wait
# ===========================================================================

KUBEADM_IMAGE_REPOSITORY = "k8s.gcr.io"

FALLBACK_JOIN_FILE = "/etc/kubernetes/" + JOIN_FILE_NAME

CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

DEFAULT_WAIT_TIMEOUT = 600

# The ports a master needs free, with its profile's control_plane_ports.
MASTER_PORTS = (6443, 10250, 2379, 2380)
# kubeadm's preflight check that, from 1.35, errors on a cgroup v1 host.
CGROUP_V1_CHECK = "SystemVerification"
WORKER_PORTS = (10250,)
MIN_MASTER_MEMORY_MB = 1700
MIN_WORKER_MEMORY_MB = 1000

# kubeadm's own preflight (cmd/kubeadm/app/preflight/checks.go): the tools
# it refuses to run without, with the minor release that began refusing
# (conntrack: kubernetes PR #85857, 1.18), and the tools it warns about.
# Each with the package to install and what else needs it.
KUBEADM_WARNED_TOOLS = ("ebtables", "ethtool", "socat", "tc", "touch")
TOOL_USERS = {"conntrack": "kube-proxy needs it",
              "socat": "`kubectl port-forward` needs it"}

SELINUX_CONFIG = "/etc/selinux/config"

# Links and interfaces the cluster makes; they are not "host networks".
CLUSTER_LINKS = ("cni0", "flannel.1", "kube-ipvs0", "docker0")

TOKEN_TTL_SECONDS = 24 * 3600
CERT_KEY_TTL_SECONDS = 2 * 3600

RESERVED_KINDS = ("InitConfiguration", "ClusterConfiguration",
                  "JoinConfiguration")

MAX_EXTRA_CONFIG_BYTES = 1024 * 1024

CLUSTER_INFO_PATH = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
KUBEADM_CONFIG_PATH = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config"
API_TIMEOUT = 15

WAIT_INTERVAL = 5
# The wait phase's rounds (a kubectl or three each): a user waits for the
# first round that sees the cluster working, so they come often.
WAIT_POLL = 1
# The cluster domain kubeadm is given, and the name the wait phase asks
# CoreDNS for (through the kube-dns Service, as a pod would).
CLUSTER_DOMAIN = "cluster.local"
DNS_PROBE_NAME = "kubernetes.default.svc." + CLUSTER_DOMAIN
# A node's Ready condition is the kubelet's; its heartbeat, in the kubelet's
# (this host's) clock, must not predate this run's kubeadm by more than the
# timestamps' rounding.
HEARTBEAT_SLACK = 2
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                      "ErrImageNeverPull")


# Where each containerd config version keeps what this tool sets: the
# sandbox (pause) image, the CNI directories and runc's options (its
# SystemdCgroup).  Version 3 is containerd 2.x's (docs/cri/config.md).
CONTAINERD_LAYOUTS = {
    1: {"sandbox": ("plugins", "cri", "sandbox_image"),
        "cni": ("plugins", "cri", "cni"),
        "runc": ("plugins", "cri", "containerd", "runtimes", "runc",
                 "options")},
    2: {"sandbox": ("plugins", "io.containerd.grpc.v1.cri", "sandbox_image"),
        "cni": ("plugins", "io.containerd.grpc.v1.cri", "cni"),
        "runc": ("plugins", "io.containerd.grpc.v1.cri", "containerd",
                 "runtimes", "runc", "options")},
    3: {"sandbox": ("plugins", "io.containerd.cri.v1.images", "pinned_images",
                    "sandbox"),
        "cni": ("plugins", "io.containerd.cri.v1.runtime", "cni"),
        "runc": ("plugins", "io.containerd.cri.v1.runtime", "containerd",
                 "runtimes", "runc", "options")},
}
CRI_PLUGIN_NAMES = ("cri", "io.containerd.grpc.v1.cri",
                    "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime")


def _config_table(config, path, what):
    """The table at path (a tuple of keys) of a containerd config, made
    where missing; UserError when something else is in the way."""
    table = config
    for key in path:
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise UserError("%s in %s is not a table: fix it" % (
                what if key == path[-1] else key, CONTAINERD_CONFIG))
    return table


def containerd_config_with(config_text, pause_image, version=None,
                           cgroup_driver=None):
    """containerd's config with the CRI plugin on and our sandbox image.

    A file without `version = 2` is read as version 1, where the CRI
    plugin's section is [plugins.cri]; version 2 names it
    [plugins."io.containerd.grpc.v1.cri"], version 3 (containerd 2.x)
    splits it into io.containerd.cri.v1.images and .runtime.  The
    containerd.io package ships `disabled_plugins = ["cri"]` and nothing
    else.  Without a file, a new one is written in the version the
    installed containerd writes (containerd_config_version).  The CNI
    directories are the ones the install phase fills; with the systemd
    cgroup driver runc gets SystemdCgroup = true.  The result goes through
    toml_dumps.
    """
    if config_text is None:
        config = {"version": containerd_config_version(version)}
    else:
        config = read_containerd_config(config_text)
    schema = config.get("version", 1)
    if schema not in CONTAINERD_LAYOUTS:
        raise UserError("%s has version = %r; this tool writes versions 1, 2 "
                        "and 3: fix it or move it away" % (CONTAINERD_CONFIG,
                                                           schema))
    layout = CONTAINERD_LAYOUTS[schema]
    disabled = config.get("disabled_plugins")
    if disabled is not None:
        if not isinstance(disabled, list):
            raise UserError("disabled_plugins in %s is not a list: fix it"
                            % CONTAINERD_CONFIG)
        config["disabled_plugins"] = [name for name in disabled
                                      if name not in CRI_PLUGIN_NAMES]
    if not isinstance(config.setdefault("plugins", {}), dict):
        raise UserError("plugins in %s is not a table: fix it"
                        % CONTAINERD_CONFIG)
    _config_table(config, layout["sandbox"][:2],
                  "the CRI plugin's entry")
    _config_table(config, layout["sandbox"][:-1],
                  "the CRI plugin's entry")[layout["sandbox"][-1]] = pause_image
    cni = _config_table(config, layout["cni"], "the CRI plugin's cni entry")
    # The plugins are installed in /opt/cni/bin; Debian's package points
    # the CRI plugin at /usr/lib/cni, where no pod would get a network.
    cni["bin_dir"], cni["conf_dir"] = CNI_BIN_DIR, CNI_CONF_DIR
    if cgroup_driver == "systemd":
        _config_table(config, layout["runc"], "runc's options")[
            "SystemdCgroup"] = True
    return toml_dumps(config)


def containerd_version(runner):
    """(major, minor) of the installed containerd, or None."""
    result = runner.run(["containerd", "--version"], change=False, check=False)
    match = re.search(r"\sv?(\d+)\.(\d+)\.\d+", result.stdout or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def containerd_cgroup_driver(config_text):
    return "systemd" if re.search(r"^\s*SystemdCgroup\s*=\s*true",
                                  config_text or "", re.M) else "cgroupfs"


# -- the container runtimes ---------------------------------------------------
# One adapter per runtime the kubelet can use: RUNTIMES[name], the name
# the run's profile gives --cri (profile()["runtimes"]): docker through the
# dockershim up to 1.23, through cri-dockerd from 1.24, and containerd.

CRI_DOCKERD_SOCKET = "/var/run/cri-dockerd.sock"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
CRI_DOCKERD_BIN = "/usr/bin/cri-dockerd"
CRI_DOCKERD_DROPIN = "/etc/systemd/system/cri-docker.service.d/k8s-offline.conf"
PINNED_LABEL = "io.cri-containerd.pinned=pinned"
# Docker has no pinned images: the kubelet's image GC is kept from the
# bundled ones by its thresholds (100: GC never starts; README says so).
DOCKER_IMAGE_GC = (("imageGCHighThresholdPercent", 100),
                   ("imageGCLowThresholdPercent", 90))
SYSTEMD_WORD_RE = re.compile(r"[A-Za-z0-9/-][A-Za-z0-9._/:@=+-]{0,500}")


def systemd_dropin(sections):
    """A systemd drop-in from [(section, [(key, [word])])], each word
    checked against a grammar systemd reads back as the same word."""
    lines = []
    for section, items in sections:
        lines.append("[%s]" % section)
        for key, words in items:
            for word in words:
                if not full_match(SYSTEMD_WORD_RE, word):
                    raise UserError("%r cannot go into a systemd unit: give "
                                    "a plain name" % (word,))
            lines.append("%s=%s" % (key, " ".join(words)))
    return "\n".join(lines) + "\n"


class DockerRuntime(object):
    """Docker Engine, through the kubelet's dockershim (up to 1.23)."""

    name = cri = "docker"
    units = ("containerd.service", "docker.service")   # from the bundle
    services = ("containerd", "docker")                 # in start order
    # What the runtime phase starts (systemctl enable --now), by its plan.
    starts = {"install": services, "start": services[1:], "running": ()}
    image_format = "docker-archive"
    load_what = "docker load"
    # A layer two streams carry is registered once (the second finds it,
    # or its copy is dropped): images need not share a stream.
    streams_share_layers = True
    # dockerd unpacks a stream's layers one after another (gzip on one
    # core): 4 streams at once kept a 2-core node's cores busy (more
    # did not help), tests/bench/bench_image_load.py.
    load_streams = 4
    binaries = ()                 # (archives key, host path) it adds
    binary_units = ()             # and their units, from the bundle
    # Where the runtime's cgroup driver is set, for a warning.
    driver_setting = '"exec-opts": ["native.cgroupdriver=systemd"]'
    config_file = DOCKER_DAEMON_JSON
    pins_images = False

    def socket(self, ctx):
        return CRI_SOCKETS["docker"]

    def bundled(self, bundle):
        return bool(bundle.meta.get("archives", {}).get("docker"))

    def running(self, ctx):
        return docker_info(ctx.runner) is not None

    def installed(self, ctx):
        return bool(ctx.host.which("dockerd"))

    def none_text(self, ctx):
        return ("no container runtime: Docker is not running, not "
                "installed, and the bundle has no Docker: install and "
                "start Docker, rebuild the bundle with --with-docker, or "
                "use --cri containerd%s" % (
                    " (the bundle carries containerd)"
                    if RUNTIMES["containerd"].bundled(ctx.bundle) else ""))

    def refusal(self, ctx):
        """Why this runtime cannot serve this bundle's Kubernetes, or None."""
        return None

    def config_problems(self, ctx):
        return iter(())

    def configure(self, ctx, pause_image, prof):
        """Point the runtime at the bundled pause image (and the profile's
        cgroup driver); True when a config changed."""
        return False

    def cgroup_driver(self, ctx):
        info = docker_info(ctx.runner) or {}
        return (info.get("CgroupDriver") or
                ctx.host.state().get("cgroup_driver") or "cgroupfs")

    def kubelet_settings(self):
        """What this runtime needs in the KubeletConfiguration."""
        return DOCKER_IMAGE_GC

    def load_argv(self, ctx):
        return ["docker", "load"]

    def missing(self, ctx, wanted):
        """[(image, target)] of wanted not in the runtime under its name
        (an image there under another name is tagged, not loaded); one
        listing of Docker's images, not an inspect per image."""
        names, ids = docker_image_ids(ctx.runner)
        missing = []
        for image, target in wanted:
            if names.get(_normalize_image_name(target)) == image["config_digest"]:
                continue
            if image["config_digest"] in ids:
                ctx.runner.run(["docker", "tag", image["config_digest"],
                                target], what="docker tag")
                continue
            missing.append((image, target))
        return missing

    def pin(self, ctx, targets):
        """Keep the images from the kubelet's GC; the number pinned now."""
        return 0

    def unload(self, ctx, targets):
        """Remove the names this run loaded (a load that failed half way)."""
        ctx.runner.run(["docker", "rmi"] + list(targets), check=False)

    def has_image(self, ctx, image):
        return docker_image_id(ctx.runner, image) is not None

    def container_running(self, ctx, cid):
        result = ctx.runner.run(["docker", "inspect", "--format",
                                 "{{.State.Running}}", cid], change=False,
                                check=False)
        return result.ok and result.stdout.strip() == "true"

    def etcd_argv(self, ctx, image, mounts, tool, argv):
        """A one-off container of the etcd image running tool (etcdctl with
        API v3, or etcdutl) on the host network, mounts [(host path,
        container path, rw)]."""
        run = ["docker", "run", "--rm", "--network", "host", "-e",
               "ETCDCTL_API=3", "--entrypoint", tool]
        for source, target, writable in mounts:
            run += ["-v", "%s:%s%s" % (ctx.host.path(source), target,
                                       "" if writable else ":ro")]
        return run + [image] + argv


class CriDockerdRuntime(DockerRuntime):
    """Docker Engine through cri-dockerd (Kubernetes 1.24 on: no
    dockershim), from the bundle (bundle --with-docker) or the host."""

    name = "cri-dockerd"
    binary_units = ("cri-docker.service", "cri-docker.socket")
    services = DockerRuntime.services + ("cri-docker.socket",
                                         "cri-docker.service")
    starts = {"install": services, "start": services[1:],
              "running": services[2:]}
    binaries = (("cri-dockerd", CRI_DOCKERD_BIN),)

    def socket(self, ctx):
        return CRI_DOCKERD_SOCKET

    def refusal(self, ctx):
        if (ctx.bundle.meta.get("archives", {}).get("cri-dockerd") or
                ctx.host.which("cri-dockerd")):
            return None
        return ("Kubernetes %s has no dockershim and the bundle carries no "
                "cri-dockerd for Docker: use --cri containerd, or rebuild "
                "the bundle with Docker and cri-dockerd (bundle --with-docker)"
                % ctx.bundle.kubernetes_version)

    def configure(self, ctx, pause_image, prof):
        binary = CRI_DOCKERD_BIN
        if not (ctx.bundle.meta.get("archives", {}).get("cri-dockerd")):
            binary = ctx.host.which("cri-dockerd") or binary
        return ctx.host.write(CRI_DOCKERD_DROPIN, systemd_dropin([
            ("Service", [("ExecStart", []), ("ExecStart", [
                binary, "--container-runtime-endpoint", "fd://",
                "--network-plugin=cni", "--cni-bin-dir=" + CNI_BIN_DIR,
                "--cni-conf-dir=" + CNI_CONF_DIR,
                "--pod-infra-container-image=" + pause_image])])]))


class ContainerdRuntime(DockerRuntime):
    """containerd's CRI plugin (the bundle's --with-containerd, Docker's
    containerd, or the host's own)."""

    name = cri = "containerd"
    driver_setting = "SystemdCgroup = true (runc's options)"
    config_file = CONTAINERD_CONFIG
    units = ("containerd.service",)
    services = ("containerd",)
    starts = {"install": services, "start": services, "running": ()}
    image_format = "oci-layout"
    load_what = "ctr images import"
    streams_share_layers = False  # one import of a blob at a time
    # Imports at once only contend for containerd's metadata store (slower
    # than one, tests/bench/bench_image_load.py).
    load_streams = 1
    pins_images = True

    def socket(self, ctx):
        return ctx.containerd_address

    def bundled(self, bundle):
        return bundled_runtime(bundle) is not None

    def running(self, ctx):
        return containerd_running(ctx)

    def installed(self, ctx):
        return bool(ctx.host.which("containerd"))

    def none_text(self, ctx):
        return ("no container runtime: containerd is not running or not "
                "installed: install containerd, rebuild the bundle with "
                "--with-containerd (or --with-docker, which carries "
                "containerd too), or use --cri docker")

    def config_problems(self, ctx):
        config = ctx.host.read(CONTAINERD_CONFIG)
        if config is not None:
            try:
                containerd_config_with(config, "pause")
            except UserError as exc:
                yield error(str(exc))

    def configure(self, ctx, pause_image, prof):
        config = ctx.host.read(CONTAINERD_CONFIG)
        return ctx.host.write(CONTAINERD_CONFIG, containerd_config_with(
            config, pause_image,
            containerd_version(ctx.runner) if config is None else None,
            prof["cgroup_driver"]))

    def cgroup_driver(self, ctx):
        return containerd_cgroup_driver(ctx.host.read(CONTAINERD_CONFIG, ""))

    def kubelet_settings(self):
        return ()

    def load_argv(self, ctx):
        return ["ctr", "--address", ctx.containerd_address, "-n", "k8s.io",
                "images", "import", "-"]

    def missing(self, ctx, wanted):
        have = containerd_images(ctx)
        return [(image, target) for image, target in wanted
                if have.get(_normalize_image_name(target)) !=
                image["manifest_digest"]]

    def pin(self, ctx, targets):
        labels = containerd_image_labels(ctx)
        todo = [target for target in targets
                if PINNED_LABEL not in labels.get(_normalize_image_name(
                    target), "").split(",")]
        failures = []

        def label(names):
            try:
                for target in names:
                    ctx.runner.run(["ctr", "--address", ctx.containerd_address,
                                    "-n", "k8s.io", "images", "label",
                                    _normalize_image_name(target),
                                    PINNED_LABEL], what="ctr images label")
            except BaseException as exc:        # raised again below
                failures.append(exc)
        # One ctr a label: a few at once, each mostly its own start-up.
        threads = [threading.Thread(target=label, args=(todo[n::PIN_THREADS],))
                   for n in range(1, min(PIN_THREADS, len(todo)))]
        for thread in threads:
            thread.daemon = True
            thread.start()
        label(todo[0::PIN_THREADS])
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return len(todo)

    def unload(self, ctx, targets):
        ctx.runner.run(["ctr", "--address", ctx.containerd_address, "-n",
                        "k8s.io", "images", "rm"] + [
                            _normalize_image_name(t) for t in targets],
                       check=False)

    def has_image(self, ctx, image):
        return _normalize_image_name(image) in containerd_images(ctx)

    def container_running(self, ctx, cid):
        result = ctx.runner.run(["ctr", "--address", ctx.containerd_address,
                                 "-n", "k8s.io", "tasks", "ls"], change=False,
                                check=False)
        return any(line.split()[:1] == [cid] and "RUNNING" in line
                   for line in result.stdout.splitlines())

    def etcd_argv(self, ctx, image, mounts, tool, argv):
        run = ["ctr", "--address", ctx.containerd_address, "-n", "k8s.io",
               "run", "--rm", "--net-host", "--env", "ETCDCTL_API=3"]
        for source, target, writable in mounts:
            run += ["--mount", "type=bind,src=%s,dst=%s,options=rbind:%s" % (
                ctx.host.path(source), target, "rw" if writable else "ro")]
        return run + [_normalize_image_name(image), "k8s-offline-etcdctl-%d"
                      % os.getpid(), tool] + argv


PIN_THREADS = 4

RUNTIMES = dict((adapter.name, adapter) for adapter in (
    DockerRuntime(), CriDockerdRuntime(), ContainerdRuntime()))


def runtime_adapter(cri, kubernetes_version):
    """The adapter of --cri (docker or containerd) at a Kubernetes version."""
    return RUNTIMES[profile(kubernetes_version)["runtimes"][cri]]


def runtime_endpoint(ctx, adapter, kubernetes_version):
    """The runtime's socket as kubeadm's criSocket wants it there."""
    return (profile(kubernetes_version)["cri_socket_scheme"] +
            adapter.socket(ctx))


def runtime_plan(ctx):
    """What the runtime phase will do: 'running', 'start' or 'install'.

    Raises UserError when there is no way to a runtime.
    """
    adapter = ctx.adapter
    if adapter.running(ctx):
        return "running"
    if adapter.installed(ctx):
        return "start"
    if adapter.bundled(ctx.bundle):
        return "install"
    raise UserError(adapter.none_text(ctx))


def read_extra_config(path):
    """(documents, {kind: document}) of --kubeadm-config-extra, parsed and
    checked: each document a mapping with a top-level apiVersion and
    kind, none of the kinds this tool writes itself."""
    if not path:
        return [], {}
    data = read_regular_file(path, "--kubeadm-config-extra",
                             MAX_EXTRA_CONFIG_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("--kubeadm-config-extra %s is not UTF-8 text: give a "
                        "YAML or JSON file" % path)
    docs, kinds = [], {}
    for number, source in enumerate(split_documents(text), 1):
        try:
            doc = parse_yaml_document(source)
        except (YamlSubsetError, RecursionError) as exc:
            raise UserError("document %d of %s cannot be read: %s: write it as "
                            "plain YAML or JSON" % (number, path, exc))
        if (not isinstance(doc, dict) or
                not isinstance(doc.get("kind"), str) or
                not isinstance(doc.get("apiVersion"), str)):
            raise UserError("document %d of %s has no kind or apiVersion: each "
                            "document needs both" % (number, path))
        if doc["kind"] in RESERVED_KINDS:
            raise UserError("%s in %s is generated by this tool: use the "
                            "command's options instead" % (doc["kind"], path))
        if doc["kind"] in kinds:
            raise UserError("%s appears twice in %s: give each kind once"
                            % (doc["kind"], path))
        kinds[doc["kind"]] = doc
        docs.append(doc)
    return docs, kinds


def passwd_entry(host, name):
    """(uid, gid, home) of a user from the host's /etc/passwd, or None."""
    for line in host.read("/etc/passwd", "").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == name:
            try:
                return int(fields[2]), int(fields[3]), fields[5]
            except ValueError:
                return None
    return None


def kubeconfig_targets(ctx):
    """[(path, uid, gid)]: root's ~/.kube/config and the sudo user's."""
    root_entry = passwd_entry(ctx.host, "root") or (0, 0, "/root")
    targets = [(root_entry[2].rstrip("/") + "/.kube/config", 0, 0)]
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != "root":
        entry = passwd_entry(ctx.host, sudo_user)
        if entry is None:
            ctx.warn("the sudo user %s is not in /etc/passwd: no kubeconfig "
                     "copied for them" % sudo_user)
        else:
            targets.append((entry[2].rstrip("/") + "/.kube/config",
                            entry[0], entry[1]))
    return targets


def open_kube_folder(ctx, path, uid, gid, create):
    """(fd or None, why not) of the folder of a kubeconfig copy PATH
    (~/.kube/config): ~/.kube opened without following a link, a folder
    the user owns (uid None: anyone's, for reset); made 0700 for them when create and it is missing.  The
    user can change what lies there, so root writes and unlinks `config`
    only through this fd."""
    home, folder = os.path.dirname(os.path.dirname(path)), os.path.dirname(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | O_CLOEXEC
    try:
        home_fd = os.open(ctx.host.path(home), os.O_RDONLY | os.O_DIRECTORY |
                          O_CLOEXEC)
    except OSError as exc:
        return None, "cannot open %s: %s" % (home, exc.strerror)
    try:
        try:
            fd = os.open(".kube", flags, dir_fd=home_fd)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not create:
                return None, ("%s is a link or not a folder" % folder
                              if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                              else "cannot open %s: %s" % (folder,
                                                           exc.strerror))
            if ctx.dry_run:
                log.info("  would create folder %s", folder)
                return None, None
            os.mkdir(".kube", 0o700, dir_fd=home_fd)
            fd = os.open(".kube", flags, dir_fd=home_fd)
            os.fchown(fd, uid, gid)
    finally:
        os.close(home_fd)
    if uid is not None and os.fstat(fd).st_uid != uid:
        os.close(fd)
        return None, "%s is not owned by uid %d" % (folder, uid)
    return fd, None


def write_in_folder(folder_fd, name, data, mode, owner):
    """Write name in the folder of folder_fd (through a temporary file and
    a rename, never through a link there); True when it changed."""
    try:
        old_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK |
                         O_CLOEXEC, dir_fd=folder_fd)
    except OSError:
        old_fd = None
    if old_fd is not None:
        with os.fdopen(old_fd, "rb") as handle:
            st = os.fstat(old_fd)
            if (stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode
                    and (st.st_uid, st.st_gid) == tuple(owner) and
                    handle.read(len(data) + 1) == data):
                return False
    tmp = ".k8s-offline-%d" % os.getpid()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                 O_CLOEXEC, 0o600, dir_fd=folder_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(fd, mode)
            os.fchown(fd, owner[0], owner[1])
            os.fsync(fd)
        os.rename(tmp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder_fd)
        raise
    return True


def run_kubeadm_init(ctx, argv, error_line, hint=""):
    """kubeadm init as argv says, its output teed into KUBEADM_INIT_LOG and
    its start recorded (the wait phase wants the node's Ready from after
    it): master's init and restore's.  A failure is a UserError quoting
    error_line(output), the log, and hint after it."""
    host = ctx.host
    host.makedirs(os.path.dirname(KUBEADM_INIT_LOG))
    ctx.found.kubeadm_started = now()
    ctx.found.kubeadm_started_by = "kubeadm init"
    result = ctx.runner.run(argv, timeout=1800, check=False,
                            tee=host.path(KUBEADM_INIT_LOG))
    if not result.ok:
        raise UserError("kubeadm init failed (exit %d): %s: the full output is "
                        "in %s%s" % (result.returncode, error_line(
                            result.output()) or "no output", KUBEADM_INIT_LOG,
                            hint))


def phase_kubeconfig(ctx):
    """Copy admin.conf to ~/.kube/config of root and of the sudo user
    (owned by them, mode 0600), so kubectl works for both; ~/.kube is
    opened without following links and must be the user's own."""
    host = ctx.host
    data = host.read_bytes(ADMIN_CONF)
    if data is None:
        if ctx.dry_run:
            data = b""
        else:
            raise UserError("%s is missing: the init or join phase has not "
                            "run; run the command again" % ADMIN_CONF)
    written = list(host.state().get("kubeconfigs") or [])
    for path, uid, gid in kubeconfig_targets(ctx):
        fd, why = open_kube_folder(ctx, path, uid, gid, create=True)
        if why:
            ctx.warn("%s: no kubeconfig copied for %s; remove it or make it "
                     "theirs, then run the kubeconfig phase again" % (
                         why, "root" if uid == 0 else
                         os.environ.get("SUDO_USER")))
            continue
        if fd is None:
            log.info("  would write %s (mode 0600, owner %d)", path, uid)
        else:
            try:
                if ctx.dry_run:
                    log.info("  would write %s (mode 0600, owner %d)", path,
                             uid)
                else:
                    write_in_folder(fd, "config", data, 0o600, (uid, gid))
            finally:
                os.close(fd)
        log.info("  kubeconfig %s (owner %d)", path, uid)
        if path not in written:
            written.append(path)
    host.save_state(kubeconfigs=written)


def parse_join_command(text):
    match = JOIN_COMMAND_RE.search(text or "")
    if not match:
        return None
    return {"api_server_endpoint": match.group(1), "token": match.group(2),
            "discovery_token_ca_cert_hash": match.group(3)}


def fresh_certificate_key(ctx):
    result = ctx.runner.run(["kubeadm", "init", "phase", "upload-certs",
                             "--upload-certs"], what="kubeadm upload-certs")
    keys = re.findall(r"\b%s\b" % SHA256_HEX_RE.pattern, result.stdout)
    if ctx.dry_run:
        return "<certificate key>"
    if not keys:
        raise UserError("kubeadm upload-certs printed no certificate key: %s"
                        % last_line(result.output()))
    return keys[-1]


def make_join_info(ctx, upload_certs, kubernetes_version, arch):
    """A fresh token (and certificate key) and the facts a node needs."""
    result = ctx.runner.run(["kubeadm", "token", "create",
                             "--print-join-command"], what="kubeadm token create")
    parsed = parse_join_command(result.stdout)
    if parsed is None:
        if not ctx.dry_run:
            raise UserError("kubeadm token create printed no join command: %s"
                            % last_line(result.output()))
        parsed = {"api_server_endpoint": "<endpoint>", "token": "<token>",
                  "discovery_token_ca_cert_hash": "<hash>"}
    state = ctx.host.state()
    info = {"format": 1, "kubernetes_version": kubernetes_version,
            "arch": arch, "token_expires": int(now()) + TOKEN_TTL_SECONDS,
            "image_repository": state.get("image_repository")
            or ctx.image_repository,
            "control_plane_nodes": [state.get("node") or node_name(ctx)],
            "certificate_key": None, "certificate_key_expires": None,
            "created": int(now())}
    info.update(parsed)
    if upload_certs:
        key = state.get("certificate_key")
        expires = state.get("certificate_key_expires") or 0
        if not key or expires - now() < 600:
            key = fresh_certificate_key(ctx)
            expires = int(now()) + CERT_KEY_TTL_SECONDS
            if not ctx.dry_run:
                ctx.host.save_state(certificate_key=key,
                                    certificate_key_expires=expires)
        info["certificate_key"] = key
        info["certificate_key_expires"] = expires
    return info


def bundle_folder(bundle_path):
    """Where the join file goes so that it travels with the bundle: the
    folder holding a .tar, or the extracted folder itself (beside
    bundle.json and k8s_offline.py, on the USB stick)."""
    path = os.path.abspath(bundle_path)
    return path if os.path.isdir(path) else os.path.dirname(path)


def default_join_file(ctx, bundle_path):
    """Beside the bundle when that folder is writable, else under
    /etc/kubernetes (a real path)."""
    if bundle_path:
        folder = bundle_folder(bundle_path)
        if os.access(folder, os.W_OK):
            return os.path.join(folder, JOIN_FILE_NAME)
    return ctx.host.path(FALLBACK_JOIN_FILE)


def write_join_file(ctx, path, info):
    data = canonical_json(info)
    if ctx.dry_run:
        log.info("  would write %s (join file, mode 0600)", path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o755)
    write_file_atomic(path, data, 0o600)
    log.info("  join file written: %s (mode 0600: it holds a secret)", path)


def print_join_commands(ctx, path, info):
    tool = os.path.join(script_dir(), "k8s_offline.py")
    echo("\n")
    say("Join file: %s (keep it with the bundle, or copy it to each node)"
        % path)
    say("To add a worker, run on it:")
    say("  " + shell_line(["sudo", "python3", tool, "join", "--join-file",
                           path]))
    if info.get("certificate_key"):
        say("To add a control-plane node (within 2 hours), run there:")
        say("  " + shell_line(["sudo", "python3", tool, "join",
                               "--control-plane", "--join-file", path]))
    say("The plain kubeadm command is:")
    say("  " + shell_line([
        "kubeadm", "join", info["api_server_endpoint"], "--token",
        info["token"], "--discovery-token-ca-cert-hash",
        info["discovery_token_ca_cert_hash"]]))
    say("The token expires in 24 hours: run `k8s_offline.py token` on a "
        "master for a new one.")


def shell_line(argv):
    """argv as one line a shell reads back as the same words."""
    return " ".join(shlex.quote(str(part)) for part in argv)


def _der_item(data, pos):
    """(tag, start of content, end) of the DER item at pos."""
    tag, length, start = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7f
        length = int(binascii.hexlify(data[start:start + count]), 16)
        start += count
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def certificate_spki(der):
    """The DER SubjectPublicKeyInfo of a DER certificate: what kubeadm's
    --discovery-token-ca-cert-hash is the sha256 of."""
    _, cert, _ = _der_item(der, 0)
    _, pos, _ = _der_item(der, cert)          # inside tbsCertificate
    if _der_item(der, pos)[0] == 0xa0:        # [0] version
        pos = _der_item(der, pos)[2]
    for _ in range(5):   # serial, signature, issuer, validity, subject
        pos = _der_item(der, pos)[2]
    return der[pos:_der_item(der, pos)[2]]


def _api_get(endpoint, path, ca_pem=None, token=None):
    """JSON of a GET to the API server (no proxy): pinned to ca_pem, or,
    for the public cluster-info only, unverified as kubeadm's discovery.
    The whole request has one deadline (API_TIMEOUT): a server trickling
    a byte at a time is cut off, not only one that stops; a redirect is
    refused (it could send the token in clear, or the tool anywhere)."""
    import http.client
    import ssl
    if ca_pem:
        context = ssl.create_default_context(cadata=ca_pem)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    what = path.rsplit("/", 1)[1]
    timeout = API_TIMEOUT
    expired = threading.Event()
    connection = http.client.HTTPSConnection(endpoint, timeout=timeout,
                                             context=context)

    def cut_off():
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    watchdog = threading.Timer(timeout, cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        headers = {"Accept": "application/json", "Connection": "close"}
        if token:
            headers["Authorization"] = "Bearer " + token
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        if 300 <= answer.status < 400:
            raise UserError("the API server %s answered %s with a redirect "
                            "(HTTP %d to %s): refusing it" % (
                                endpoint, what, answer.status, _short_json(
                                    answer.getheader("Location", ""))))
        if answer.status != 200:
            raise UserError("the API server %s answered HTTP %d for %s"
                            % (endpoint, answer.status, what))
        data = answer.read(MAX_BUNDLE_JSON_BYTES + 1)
        if expired.is_set():
            raise OSError(errno.ETIMEDOUT, "cut off")
        if len(data) > MAX_BUNDLE_JSON_BYTES:
            raise UserError("the API server %s sent more than %s for %s"
                            % (endpoint, human_size(MAX_BUNDLE_JSON_BYTES),
                               what))
        return json.loads(data.decode("utf-8"))
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        if expired.is_set():
            raise UserError("the API server %s did not answer within %d s"
                            % (endpoint, timeout))
        raise UserError("cannot reach the API server %s (%s)" % (
            endpoint, getattr(exc, "reason", None) or getattr(
                exc, "strerror", None) or exc))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UserError("the API server %s sent no JSON for %s"
                        % (endpoint, what))
    finally:
        watchdog.cancel()
        connection.close()


def _configmap_value(doc, key):
    """data[key] of a ConfigMap as text, or '' when it is not there."""
    data = doc.get("data") if isinstance(doc, dict) else None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def cluster_image_repository(info):
    """The imageRepository of the cluster's ClusterConfiguration, read the
    way kubeadm join discovers the cluster: the CA from the public
    cluster-info, accepted only if its key matches the CA hash, then the
    kubeadm-config ConfigMap over TLS pinned to that CA, with the token."""
    endpoint = info["api_server_endpoint"]
    kubeconfig = _configmap_value(_api_get(endpoint, CLUSTER_INFO_PATH),
                                  "kubeconfig")
    match = re.search(r"certificate-authority-data:\s*([A-Za-z0-9+/=]+)",
                      kubeconfig)
    if not match:
        raise UserError("the cluster-info of %s names no CA" % endpoint)
    try:
        import ssl
        ca_pem = base64.b64decode(match.group(1)).decode("ascii")
        spki = certificate_spki(ssl.PEM_cert_to_DER_cert(ca_pem))
    except (ValueError, IndexError, UnicodeDecodeError):
        raise UserError("the cluster-info of %s holds no readable CA "
                        "certificate" % endpoint)
    if "sha256:" + sha256_bytes(spki) != info["discovery_token_ca_cert_hash"]:
        raise UserError("the CA of %s does not match "
                        "--discovery-token-ca-cert-hash: check the hash, or "
                        "this is not your cluster" % endpoint)
    text = _configmap_value(_api_get(endpoint, KUBEADM_CONFIG_PATH, ca_pem,
                                     info["token"]), "ClusterConfiguration")
    if not text:
        raise UserError("the kubeadm-config of %s has no ClusterConfiguration"
                        % endpoint)
    try:
        config = parse_yaml_document(text)
    except YamlSubsetError as exc:
        raise UserError("the ClusterConfiguration of %s is not readable (%s)"
                        % (endpoint, exc))
    repository = (config.get("imageRepository") if isinstance(config, dict)
                  else None) or KUBEADM_IMAGE_REPOSITORY
    if not is_image_repository(repository):
        raise UserError("the cluster %s names the image repository %r, which "
                        "is not a registry path" % (endpoint, repository))
    return repository


def adopt_cluster_image_repository(ctx):
    """A join by --apiserver/--token/--discovery-token-ca-cert-hash without
    --image-repository: load the images under the names the cluster uses
    (kubeadm join gives the kubelet <repo>/pause, kube-proxy's DaemonSet
    names <repo>/kube-proxy), read from the cluster itself."""
    try:
        repository = cluster_image_repository(ctx.join_info)
    except UserError as exc:
        raise UserError("cannot read the cluster's image repository: %s: give "
                        "--image-repository (the master's), or join with the "
                        "join file" % exc)
    ctx.found.image_repository = repository
    log.info("  the cluster's images are named under %s", repository)


def _utc(seconds):
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


# One finding of a check: what is wrong and how to fix it (fix None when the
# message came whole from a check elsewhere); warnings do not stop the run.
Problem = collections.namedtuple("Problem", "message fix warning")


def error(message, fix=None):
    return Problem(message, fix, False)


def warning(message, fix=None):
    return Problem(message, fix, True)


def problem_text(found):
    return found.message + (": " + found.fix if found.fix else "")


def is_control_plane(ctx):
    return ctx.role in ("master", "control-plane")


def check_privileged(ctx):
    if ctx.euid != 0:
        yield error("this must run as root", "run it with sudo")


def check_cpus(ctx):
    cpus = host_cpu_count(ctx.host)
    if is_control_plane(ctx) and cpus < 2:
        yield error("a control-plane node needs at least 2 CPUs, this host "
                    "has %d" % cpus, "use a bigger machine")


def check_memory(ctx):
    memory = host_memory_mb(ctx.host)
    master = is_control_plane(ctx)
    least = MIN_MASTER_MEMORY_MB if master else MIN_WORKER_MEMORY_MB
    if memory is not None and memory < least:
        yield Problem("this host has %d MB of memory, a %s needs %d MB" % (
            memory, "control-plane node" if master else "node", least),
            "add memory", not master)


def check_swap(ctx):
    swaps = active_swaps(ctx.host)
    if swaps and not ctx.disable_swap:
        yield error("swap is on (%s)" % ", ".join(swaps),
                    "the kubelet refuses to run with swap; rerun with "
                    "--disable-swap (turns it off now and in /etc/fstab)")


def check_no_cluster(ctx):
    existing = existing_cluster_files(ctx.host)
    if existing and not continuing_run(ctx):
        yield error("an existing cluster was found on this host (%s)"
                    % existing[0], "run `k8s_offline.py reset` first")


def check_ports(ctx):
    ports = WORKER_PORTS
    if is_control_plane(ctx):
        ports = MASTER_PORTS + profile(ctx.bundle.kubernetes_version)[
            "control_plane_ports"]
    if not continuing_run(ctx):
        busy = sorted(listening_ports(ctx.host) & set(ports))
        if busy:
            yield error("port %s is in use" % ", ".join(map(str, busy)),
                        "stop the program listening on it (see `ss -ltnp`)")


def check_tools(ctx):
    """What the bundle's kubeadm refuses to run without is an error, what it
    warns about a warning, so kubeadm itself never stops half way."""
    version = ctx.bundle.kubernetes_version
    required = profile(version)["required_tools"]
    for tool, since, package in KUBEADM_REQUIRED_TOOLS:
        if ctx.host.which(tool):
            continue
        users = TOOL_USERS.get(tool)
        if tool in required:
            yield error("%s is missing" % tool, "kubeadm %s refuses to run "
                        "without it%s; install the %s package" % (
                            version, " (%s)" % users if users else "",
                            package))
        else:
            yield warning("%s is missing" % tool, "%s, and kubeadm 1.%d and "
                          "later refuse to run without it; install the %s "
                          "package" % (users or "kubeadm needs it", since,
                                       package))
    for tool in KUBEADM_WARNED_TOOLS:
        if not ctx.host.which(tool):
            users = TOOL_USERS.get(tool)
            yield warning("%s is missing" % tool, "kubeadm warns without "
                          "it%s; install it if you can" % (
                              " and %s" % users if users else ""))


def check_hostname(ctx):
    name = node_name(ctx)
    hostname = host_hostname(ctx.host) or name
    if not full_match(NODE_NAME_RE, name):
        yield error("the node name %r is not a valid DNS name" % name,
                    "set the host name or use --node-name")
    elif name == "localhost":
        yield error("the host name is localhost", "give each host a unique "
                    "name (hostnamectl set-hostname NAME)")
    elif not hostname_resolves(ctx.host, hostname):
        yield warning("the host name %s does not resolve" % hostname,
                      "add it to /etc/hosts")


def check_unique_name(ctx):
    name = node_name(ctx)
    if ctx.join_info and name in (ctx.join_info.get("control_plane_nodes")
                                  or []):
        yield error("this host is named %s like a control-plane node of the "
                    "cluster" % name, "node names must be unique; rename "
                    "this host (hostnamectl set-hostname) or use --node-name")


def check_firewalld(ctx):
    """firewalld blocks a node unless --open-firewall opens its ports (the
    host phase then does)."""
    ctx.found.firewalld = firewalld_active(ctx)
    if ctx.found.firewalld and not ctx.open_firewall:
        yield warning("firewalld is active and blocks what a %s needs (%s)" % (
            "control-plane node" if is_control_plane(ctx) else "worker",
            " ".join(firewall_rules(ctx))), "rerun with --open-firewall to "
            "open exactly those, permanently, or stop firewalld")
    elif ctx.open_firewall and not ctx.found.firewalld:
        yield warning("--open-firewall", "firewalld is not active here, so "
                      "there is nothing to open")


def check_selinux(ctx):
    if selinux_enforcing(ctx.host) and not ctx.selinux_permissive:
        yield warning("SELinux is enforcing", "containers may be denied "
                      "access to host files; rerun with --selinux-permissive "
                      "(setenforce 0, and SELINUX=permissive in %s, as "
                      "kubeadm's install guide says)" % SELINUX_CONFIG)


def check_iptables_backend(ctx):
    """kube-proxy's image detects the backend from 1.17 on (kubernetes
    #82966); 1.16's writes legacy rules the nftables backend ignores."""
    backend = iptables_backend(ctx.runner)
    version = ctx.bundle.kubernetes_version
    if (backend and backend[1] == "nf_tables"
            and not profile(version)["iptables_backend_detected"]
            and not ctx.iptables_legacy):
        yield warning("iptables %s uses the nftables backend, which "
                      "kube-proxy of Kubernetes %s does not support (its "
                      "rules and the host's diverge)" % (backend[0], version),
                      "rerun with --iptables-legacy to switch to legacy mode")


def check_networks(ctx):
    """master: neither cluster network may overlap a network of the host."""
    if ctx.role != "master" or ctx.pod_network is None:
        return
    for iface, address in host_addresses(ctx.runner):
        if (iface in CLUSTER_LINKS or iface.startswith("flannel")
                or address.ip.is_loopback):
            continue
        for option, network in (("--pod-network-cidr", ctx.pod_network),
                                ("--service-cidr", ctx.service_network)):
            if network.overlaps(address.network):
                yield error("%s %s overlaps the host network %s on %s" % (
                    option, network, address.network, iface),
                    "choose another %s" % option)


def check_image_repository_of_cluster(ctx):
    """A join by flags without --image-repository takes the cluster's."""
    if (ctx.join_info and ctx.join_info.get("from_flags")
            and not ctx.image_repository_flag):
        try:
            adopt_cluster_image_repository(ctx)
        except UserError as exc:
            yield error(str(exc))


def check_runtime_config(ctx):
    """What the runtime phase will write, so it cannot fail there."""
    for found in ctx.adapter.config_problems(ctx):
        yield found


def host_cgroup_version(host):
    """2 when /sys/fs/cgroup is the unified hierarchy (cgroup2fs), 1 when
    it holds v1 controllers, None when /proc/mounts does not say."""
    found = None
    for line in host.read("/proc/mounts", "").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "/sys/fs/cgroup":
            found = 2 if fields[2] == "cgroup2" else 1
        elif (len(fields) >= 3 and fields[1].startswith("/sys/fs/cgroup/")
              and fields[2] == "cgroup" and found is None):
            found = 1
    return found


def check_cgroups(ctx):
    """Which cgroup version the host has; from 1.35 the kubelet refuses
    v1 unless --allow-cgroup-v1 (kubeadm's SystemVerification error)."""
    version = host_cgroup_version(ctx.host)
    log.info("  cgroup %s on this host", "v%d" % version if version
             else "version unknown (no /sys/fs/cgroup in /proc/mounts)")
    if (version == 1 and not ctx.allow_cgroup_v1 and
            profile(ctx.bundle.kubernetes_version)["fail_cgroup_v1"]):
        yield error("this host has cgroup v1, which the kubelet of Kubernetes "
                    "%s refuses: boot it with cgroup v2 "
                    "(systemd.unified_cgroup_hierarchy=1), or give "
                    "--allow-cgroup-v1 (the kubelet gets failCgroupV1: false "
                    "and kubeadm's %s check is ignored)" % (
                        ctx.bundle.kubernetes_version, CGROUP_V1_CHECK))


def check_kubelet_units(ctx):
    """From 1.24 the kubelet's units go to /usr/lib/systemd/system; a copy
    in /etc/systemd/system would override them.  One this tool wrote (the
    state file lists it) is removed by the install phase; any other (an
    old kubelet or kubeadm package's) is refused, never removed."""
    unit_dir = profile(ctx.bundle.kubernetes_version)["unit_dir"]
    ours = ctx.host.state().get("units") or []
    for folder in KUBELET_UNIT_DIRS[:KUBELET_UNIT_DIRS.index(unit_dir)]:
        for path in sorted(kubelet_unit_files(folder).values()):
            if ctx.host.exists(path) and path not in ours:
                yield error("%s would override the kubelet unit this tool "
                            "installs in %s" % (path, unit_dir),
                            "it is not this tool's (an older kubelet or "
                            "kubeadm package?): remove that package or the "
                            "file, then run again")


def check_runtime_supported(ctx):
    """A runtime this Kubernetes can use (Docker needs cri-dockerd from
    1.24): refused before anything on the host changes."""
    refusal = ctx.adapter.refusal(ctx)
    if refusal:
        yield error(refusal)


def check_runtime(ctx):
    try:
        plan = runtime_plan(ctx)
    except UserError as exc:
        yield error(str(exc))
    else:
        log.info("  container runtime %s: %s", ctx.cri, plan)


def _tool_checks():
    return tuple("FileExisting-" + tool for tool, _, _ in
                 KUBEADM_REQUIRED_TOOLS) + tuple(
        "FileExisting-" + tool for tool in KUBEADM_WARNED_TOOLS)


# The checks in the order they run: (what, kubeadm's names for the same
# check, or () where kubeadm has none, the check).  Each check yields a
# Problem per finding.
PreflightCheck = collections.namedtuple("PreflightCheck", "name kubeadm run")
PREFLIGHT_CHECKS = (
    PreflightCheck("root", ("IsPrivilegedUser",), check_privileged),
    PreflightCheck("runtime support", (), check_runtime_supported),
    PreflightCheck("cgroups", (CGROUP_V1_CHECK,), check_cgroups),
    PreflightCheck("cpus", ("NumCPU",), check_cpus),
    PreflightCheck("memory", ("Mem",), check_memory),
    PreflightCheck("swap", ("Swap",), check_swap),
    PreflightCheck("no cluster", (
        "FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml",
        "FileAvailable--etc-kubernetes-kubelet.conf",
        "DirAvailable--var-lib-etcd"), check_no_cluster),
    PreflightCheck("ports", tuple("Port-%d" % port for port in MASTER_PORTS +
                                  (10251, 10252, 10257, 10259)),
                   check_ports),
    PreflightCheck("tools", _tool_checks(), check_tools),
    PreflightCheck("hostname", ("Hostname",), check_hostname),
    PreflightCheck("unique name", (), check_unique_name),
    PreflightCheck("firewalld", ("Firewalld",), check_firewalld),
    PreflightCheck("selinux", (), check_selinux),
    PreflightCheck("iptables backend", (), check_iptables_backend),
    PreflightCheck("networks", (), check_networks),
    PreflightCheck("image repository", (), check_image_repository_of_cluster),
    PreflightCheck("runtime config", (), check_runtime_config),
    PreflightCheck("kubelet units", (), check_kubelet_units),
    PreflightCheck("runtime", ("CRI",), check_runtime),
)


# The checks no package of the bundle can make pass: run before the packages
# phase changes the host (the others, the tools above all, after it).
PREFLIGHT_BEFORE_PACKAGES = ("root", "runtime support", "cgroups", "cpus",
                             "memory",
                             "swap", "no cluster", "ports", "hostname")


def preflight_before_packages(ctx):
    """The first error of the checks no package can fix, as a UserError."""
    for check in PREFLIGHT_CHECKS:
        if check.name in PREFLIGHT_BEFORE_PACKAGES:
            for found in check.run(ctx):
                if not found.warning:
                    raise UserError(problem_text(found))


class NodeFound(Found):
    """What the phases of a command on a node (master, join, reset, day
    two) learn on the way."""

    __slots__ = (
        "warnings",            # every warning said, in order
        "firewalld",           # firewalld active, as preflight saw it
        "cgroup_driver",       # the runtime's, as the runtime phase read it
        "image_repository",    # the cluster's, read by a join by flags
        "hostname",            # this host's name, lower case (no --node-name)
        "advertise_address",   # the default route's address (no flag)
        "kubeadm_started",     # when this run started kubeadm init or join
        "kubeadm_started_by",  # which of the two
        "kube_dns_ip",         # the kube-dns Service address the wait asked
    )

    def __init__(self):
        super(NodeFound, self).__init__(warnings=[], firewalld=False)


class NodeContext(Context):
    """Everything one run of a command on a node (master, join, reset and
    the day-two commands) reads, built once, as kubeadm's initData is.

    Every flag is parsed and checked against its grammar here, exactly once
    and before the first change, so a refusal leaves the host as it was;
    the phases read these fields, never the command line.  settle, given
    by the command's slice, reads what the run decides before it starts
    (join's join file, reset's and day two's state file) and returns it as
    {field: value}.  Then the context is read-only: what the phases learn
    goes into .found, a NodeFound."""

    def __init__(self, args, role, settle=None):
        def flag(name, default=None):
            return getattr(args, name, default)
        self.found = NodeFound()
        self._bundle = None
        self.join_info = None             # the join facts (join only)
        self.reset_pod_cidr = None        # reset: the pod network to clean
        self.reset_kubeconfigs = []       # reset: admin.conf copies to remove
        # The run itself.
        self.command = flag("command")
        self.role = role                  # master, worker, control-plane, reset
        self.dry_run = bool(flag("dry_run", False))
        self.host = Host(flag("root") or "/", self.dry_run)
        self.runner = Runner(self.dry_run)
        self.euid = current_euid()
        self.progress = not flag("no_progress", False)
        self.bundle_path = flag("bundle")
        self.skip = parse_skip_phases(flag("skip_phases"))
        self._cri = flag("cri")           # None: default_cri decides
        # master's networks and extra kubeadm documents.
        self.pod_network = self.service_network = None
        if flag("pod_network_cidr") is not None:
            self.pod_network, self.service_network = valid_cidrs(
                flag("pod_network_cidr"), flag("service_cidr"))
        self.extra_config_path = flag("kubeadm_config_extra")
        self.extra_documents, self.extra_kinds = read_extra_config(
            self.extra_config_path)
        # The node: image names, runtime socket, name, address.
        self.image_repository_flag = valid_image_repository(
            flag("image_repository"))
        self._image_repository = self.image_repository_flag
        self.containerd_address = (valid_containerd_address(
            flag("containerd_address")) or CRI_SOCKETS["containerd"])
        self.node_name = valid_node_name(flag("node_name"))
        self.ignore_preflight_errors = valid_ignore_preflight_errors(
            flag("ignore_preflight_errors"))
        self.control_plane_endpoint = flag("control_plane_endpoint")
        if self.control_plane_endpoint is not None:
            valid_endpoint(self.control_plane_endpoint,
                           "--control-plane-endpoint")
        self.wait = not flag("no_wait", False)
        self.wait_timeout = flag("wait_timeout", DEFAULT_WAIT_TIMEOUT)
        if self.wait_timeout <= 0:
            raise UserError("--wait-timeout must be a positive number of "
                            "seconds")
        self.advertise_address = None
        if flag("apiserver_advertise_address"):
            self.advertise_address = valid_own_address(
                self, flag("apiserver_advertise_address"))
        # What the host phase fixes, and master's and join's own flags.
        self.disable_swap = bool(flag("disable_swap", False))
        self.iptables_legacy = bool(flag("iptables_legacy", False))
        self.allow_cgroup_v1 = bool(flag("allow_cgroup_v1", False))
        self.open_firewall = bool(flag("open_firewall", False))
        self.selinux_permissive = bool(flag("selinux_permissive", False))
        self.upload_certs = bool(flag("upload_certs", False))
        self.allow_pods_on_master = bool(flag("allow_pods_on_master", False))
        self.join_file = flag("join_file")
        self.join_flags = (flag("apiserver"), flag("token"),
                           flag("discovery_token_ca_cert_hash"))
        self.certificate_key = flag("certificate_key")
        # restore's own flags.
        self.backup_file = flag("file")
        self.replace = bool(flag("replace", False))
        for name, value in sorted((settle(self) if settle else {}).items()):
            if name not in vars(self) and not hasattr(type(self), name):
                raise AttributeError("%s settles no field %s" % (
                    type(self).__name__, name))
            setattr(self, name, value)
        self._seal()

    @property
    def bundle(self):
        if self._bundle is None:
            self._bundle = Bundle(resolve_bundle_path(self.bundle_path))
        return self._bundle

    @property
    def cri(self):
        """docker or containerd: --cri, else the runtime default_cri picks."""
        if self._cri is None:
            self._cri = default_cri(self)
        return self._cri

    @property
    def image_repository(self):
        """Where kubeadm's images are named: --image-repository, the join
        file's (settled by build_context), the cluster's (found by a join by
        flags), else the bundle's image_repository (so kubeadm looks for
        exactly the bundled refs)."""
        if self.found.image_repository is not None:
            return self.found.image_repository
        if self._image_repository is None:
            try:
                meta = self.bundle.meta
            except UserError:
                meta = {}
            self._image_repository = (meta.get("image_repository") or
                                      KUBEADM_IMAGE_REPOSITORY)
        return self._image_repository

    @image_repository.setter
    def image_repository(self, value):
        """Settled at build time only (the join file's)."""
        self._image_repository = value

    @property
    def adapter(self):
        """The runtime adapter of --cri at the bundle's Kubernetes."""
        return runtime_adapter(self.cri, self.bundle.kubernetes_version)

    @property
    def pod_cidr(self):
        return str(self.pod_network)

    def close(self):
        if self._bundle is not None:
            self._bundle.close()

    def refuse_what_no_package_fixes(self):
        """Before the packages phase's first change: the preflight checks
        that need no package (root, CPUs, swap, ports, ...)."""
        preflight_before_packages(self)

    def kubectl(self, *argv):
        return ["kubectl", "--kubeconfig", ADMIN_CONF] + list(argv)

    def warn(self, text):
        self.found.warnings.append(text)
        log.warning("warning: %s", text)


def default_cri(ctx):
    """The runtime when --cri is not given: containerd for master and join
    when the bundle carries upstream containerd (--with-containerd) and the
    host has no Docker, so a bare host needs no flag; Docker when the
    bundle carries Docker; otherwise the profile's (Docker up to 1.23,
    containerd from 1.24, which has no dockershim)."""
    if ctx.command not in ("master", "join"):
        return "docker"
    try:
        carried = bundled_runtime(ctx.bundle)
        preferred = profile(ctx.bundle.kubernetes_version)["default_cri"]
    except UserError:
        return "docker"
    if carried == "containerd" and not ctx.host.which("dockerd"):
        return "containerd"
    return carried if carried == "docker" else preferred


def valid_image_repository(repository):
    if repository is not None and not is_image_repository(repository):
        raise UserError("bad --image-repository %r: use a registry and path "
                        "such as k8s.gcr.io or registry.local:5000/k8s"
                        % (repository,))
    return repository


def valid_containerd_address(address):
    if address is not None and (not full_match(SOCKET_PATH_RE, address) or
                                ".." in address.split("/")):
        raise UserError("bad --containerd-address %r: give the absolute path "
                        "of containerd's socket" % (address,))
    return address


def valid_node_name(name):
    """--node-name in lower case, as the node is registered."""
    if name is None:
        return None
    if not full_match(NODE_NAME_RE, name.lower()):
        raise UserError("bad --node-name %r: use a DNS name (RFC 1123): "
                        "letters, digits, '-' and '.', such as node-1"
                        % (name,))
    return name.lower()


def valid_ignore_preflight_errors(value):
    if value is not None and not full_match(PREFLIGHT_ERRORS_RE, value):
        raise UserError("bad --ignore-preflight-errors %r: a comma-separated "
                        "list of kubeadm check names" % (value,))
    return value


def valid_own_address(ctx, text):
    """--apiserver-advertise-address: an IPv4 address of this host (a dry
    run only warns)."""
    given = valid_ipv4_address(text, "--apiserver-advertise-address")
    mine = [str(address.ip) for _, address in host_addresses(ctx.runner)]
    if given not in mine:
        message = ("--apiserver-advertise-address %s is not an address of "
                   "this host (it has %s): give one of them"
                   % (given, ", ".join(mine) or "none"))
        if not ctx.dry_run:
            raise UserError(message)
        ctx.warn(message)
    return given


def resolve_bundle_path(path):
    """--bundle, or the folder holding this script when it is a bundle."""
    if path:
        return path
    folder = script_dir()
    if os.path.isfile(os.path.join(folder, BUNDLE_JSON)):
        return folder
    raise UserError("no bundle given and %s has no %s: use --bundle PATH "
                    "(the bundle .tar or its extracted folder)"
                    % (folder, BUNDLE_JSON))


def _kubectl_json(ctx, argv, kubeconfig=ADMIN_CONF):
    result = ctx.runner.run(["kubectl", "--kubeconfig", kubeconfig] + argv +
                            ["-o", "json"], change=False, check=False,
                            timeout=60)
    if not result.ok:
        return None, last_line(result.output()) or "kubectl failed"
    try:
        return json.loads(result.stdout), None
    except ValueError:
        return None, "kubectl printed no JSON"


def node_ready(node):
    """(ready, reason) of a Node object."""
    for condition in node.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            if condition.get("status") == "True":
                return True, ""
            return (False, condition.get("message") or condition.get("reason")
                    or "not ready")
    return False, "no Ready condition yet"


def pod_problem(pod):
    """None when a pod is Running and ready (or Succeeded), else
    (reason, image or None)."""
    status = pod.get("status", {})
    phase = status.get("phase", "Unknown")
    if phase == "Succeeded":
        return None
    statuses = (status.get("initContainerStatuses", []) +
                status.get("containerStatuses", []))
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            reason = waiting.get("reason") or "waiting"
            message = waiting.get("message")
            text = "%s: %s" % (reason, message) if message else reason
            return (text, container.get("image") if reason in
                    IMAGE_PULL_REASONS else None)
    if phase == "Running" and all(c.get("ready") for c in
                                  status.get("containerStatuses", [])):
        return None
    for condition in status.get("conditions", []):
        if condition.get("status") == "False" and condition.get("reason"):
            return "%s %s: %s" % (phase, condition["reason"],
                                  condition.get("message", "")), None
    return phase if phase != "Running" else "Running, not ready", None


def heartbeat_seconds(node):
    """The Ready condition's lastHeartbeatTime in seconds, or None."""
    for condition in node.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            try:
                return calendar.timegm(time.strptime(
                    condition.get("lastHeartbeatTime") or "",
                    "%Y-%m-%dT%H:%M:%SZ"))
            except ValueError:
                return None
    return None


def node_pending(ctx, kubeconfig):
    """[(what, reason, None)]: this node, unless it is Ready by its own
    kubelet's report since this run's kubeadm (right after a reset the
    cluster may still hold the old Node, Ready)."""
    name = node_name(ctx)
    node, error = _kubectl_json(ctx, ["get", "node", name], kubeconfig)
    if node is None:
        return [("node %s" % name, error, None)]
    ready, reason = node_ready(node)
    beat = heartbeat_seconds(node)
    found = ctx.found
    if (ready and found.kubeadm_started and beat is not None and
            beat < found.kubeadm_started - HEARTBEAT_SLACK):
        ready, reason = False, ("its Ready status is from before this run's "
                                "%s (the kubelet has not reported yet)"
                                % found.kubeadm_started_by)
    if not ready:
        return [("node %s" % name, "NotReady: " + reason, None)]
    return []


def wait_profile(ctx):
    """The profile of the cluster this node is in: its state's Kubernetes
    version (restore waits without a bundle), else the bundle's."""
    version = ctx.host.state().get("kubernetes_version")
    return profile(version or ctx.bundle.kubernetes_version)


def is_static_pod(pod):
    """A mirror pod: the kubelet's copy of a static pod (the control plane's)."""
    return "kubernetes.io/config.mirror" in (
        pod.get("metadata", {}).get("annotations") or {})


def control_plane_health(ctx):
    """{component: problem or None} of this master's control plane: the API
    server's /readyz (which checks etcd too), the scheduler's and the
    controller-manager's /healthz on their profile ports."""
    prof = wait_profile(ctx)
    result = ctx.runner.run(ctx.kubectl("get", "--raw", "/readyz"),
                            change=False, check=False, timeout=30)
    readyz = None if result.ok else "failing /readyz (%s)" % (
        last_line(result.output()) or "no answer")
    health = {"kube-apiserver": readyz, "etcd": readyz}
    for component, port in zip(("kube-scheduler", "kube-controller-manager"),
                               prof["control_plane_ports"]):
        scheme = prof["control_plane_scheme"]
        problem = health_problem("127.0.0.1", port, "/healthz", scheme)
        health[component] = problem and (
            "failing %s://127.0.0.1:%d/healthz (%s)" % (scheme, port, problem))
    return health


COMPONENT_TITLES = {"kube-apiserver": "the API server"}


def static_component(pod):
    name = pod.get("metadata", {}).get("name", "")
    for component in ("etcd",) + CONTROL_PLANE_COMPONENTS:
        if name.startswith(component + "-"):
            return component
    return None


def coredns_pending(ctx, dns_pods):
    """([(what, reason, None)], lag): nothing pending when CoreDNS answers a
    query through the kube-dns Service (as a pod asks it), or, while the
    kubelet has not yet marked a CoreDNS pod ready (the Service sends
    queries only to ready pods), when that pod answers at its own address;
    lag is then [(pod, address)], reported and not waited for."""
    if ctx.found.kube_dns_ip is None:
        service, error = _kubectl_json(ctx, ["-n", "kube-system", "get", "svc",
                                             "kube-dns"])
        address = (service or {}).get("spec", {}).get("clusterIP")
        if not address or not _is_ipv4(address):
            return [("CoreDNS", "no kube-dns Service address yet%s" % (
                ": " + error if error else ""), None)], []
        ctx.found.kube_dns_ip = address
    if dns_answers(ctx.found.kube_dns_ip, DNS_PROBE_NAME):
        return [], []
    for pod in dns_pods:
        address = pod.get("status", {}).get("podIP")
        if (pod_problem(pod) and not _container_waiting(pod) and
                pod.get("status", {}).get("phase") == "Running" and
                isinstance(address, str) and _is_ipv4(address) and
                dns_answers(address, DNS_PROBE_NAME)):
            return [], [(pod["metadata"]["name"], address)]
    return [("CoreDNS", "no answer from %s for %s" % (ctx.found.kube_dns_ip,
                                                     DNS_PROBE_NAME), None)], []


def wait_pending(ctx, kubeconfig, worker):
    """([(what, reason, image)] still keeping what a user needs from working,
    [static pods the kubelet reports not Ready though their health passes],
    [(CoreDNS pod, address) answering though not Ready yet]).

    A worker: its node Ready, and the pods on it (flannel, kube-proxy)
    Running and ready, asked with the node's own credentials.  A master:
    that, every kube-system pod, the control plane's health, CoreDNS."""
    pending = node_pending(ctx, kubeconfig)
    if pending:
        return pending, [], []
    name = node_name(ctx)
    argv = ["get", "pods", "--all-namespaces"]
    if worker:     # a node may list only the pods bound to it
        argv += ["--field-selector", "spec.nodeName=" + name]
    listing, error = _kubectl_json(ctx, argv, kubeconfig)
    if listing is None:
        return [("pods", error, None)], [], []
    flannel_namespace = wait_profile(ctx)["flannel_namespace"]
    pods = [pod for pod in listing.get("items", [])
            if pod.get("metadata", {}).get("namespace") in (
                "kube-system", flannel_namespace)]
    here = [pod for pod in pods if pod.get("spec", {}).get("nodeName") == name]
    if not [pod for pod in here if (pod["metadata"].get("labels") or {})
            .get("app") == "flannel"]:
        pending.append(("flannel on node %s" % name, "no pod yet", None))
    if not worker and not [pod for pod in pods if pod["metadata"].get(
            "namespace") == "kube-system"]:
        pending.append(("kube-system pods", "none yet", None))
    health = {} if worker else control_plane_health(ctx)
    lagging = []
    # CoreDNS's pods: their Ready is not waited for, CoreDNS answering is.
    dns = [pod for pod in pods
           if (pod["metadata"].get("labels") or {}).get("k8s-app") == "kube-dns"]
    for pod in here if worker else pods:
        if pod in dns:
            continue
        problem = pod_problem(pod) or stale_pod(ctx, pod)
        component = static_component(pod) if is_static_pod(pod) else None
        if (problem and component and not worker and pod in here and
                health.get(component) is None and
                not _container_waiting(pod)):
            lagging.append(pod["metadata"]["name"])
        elif problem:
            reason = problem[0]
            if component and health.get(component):
                reason += "; it is %s" % health[component]
            pending.append(("pod %s" % pod["metadata"]["name"], reason,
                            problem[1]))
    for component in sorted(set(health)):
        if health[component] and component != "etcd":
            pending.append((COMPONENT_TITLES.get(component, component),
                            health[component], None))
    dns_lag = []
    if not worker and not pending:
        pending, dns_lag = coredns_pending(ctx, dns)
        if pending:
            pending += [("pod %s" % pod["metadata"]["name"],) + problem
                        for pod, problem in ((pod, pod_problem(pod))
                                             for pod in dns) if problem]
    return pending, lagging, dns_lag


def stale_pod(ctx, pod):
    """(reason, None) when a pod's running containers started before this
    run's kubeadm (a status from before a reset), else None; startedAt is
    the runtime's, this host's clock."""
    here = pod.get("spec", {}).get("nodeName") == node_name(ctx)
    found = ctx.found
    if not found.kubeadm_started or not here:
        return None
    for container in pod.get("status", {}).get("containerStatuses", []):
        started = ((container.get("state") or {}).get("running") or {}).get(
            "startedAt")
        try:
            seconds = calendar.timegm(time.strptime(started or "",
                                                    "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            continue
        if seconds < found.kubeadm_started - HEARTBEAT_SLACK:
            return ("its status is from before this run's %s"
                    % found.kubeadm_started_by, None)
    return None


def _container_waiting(pod):
    status = pod.get("status", {})
    return any((container.get("state") or {}).get("waiting")
               for container in (status.get("initContainerStatuses", []) +
                                 status.get("containerStatuses", [])))


def health_problem(host, port, path, scheme, timeout=2):
    """None when GET scheme://host:port/path answers 200, else why not.
    HTTPS is not verified: the scheduler's and controller-manager's serving
    certificates are self-signed, and only a status is read."""
    import http.client
    import ssl
    try:
        if scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            connection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                     context=context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            answer = connection.getresponse()
            answer.read(4096)
        finally:
            connection.close()
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        return str(getattr(exc, "strerror", None) or exc) or type(exc).__name__
    return None if answer.status == 200 else "HTTP %d" % answer.status


def dns_answers(server, name, port=53, timeout=1):
    """True when the DNS server answers an A query for name with NOERROR
    and at least one record (one UDP round trip, standard library only)."""
    ident = os.urandom(2)
    question = b"".join(bytes([len(label)]) + label.encode("ascii")
                        for label in name.rstrip(".").split(".")) + b"\0"
    query = (ident + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question +
             b"\x00\x01\x00\x01")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    try:
        sock.sendto(query, (server, port))
        deadline = time.time() + timeout
        while True:
            reply = sock.recv(4096)
            if reply[:2] == ident and len(reply) >= 12:
                break
            if time.time() >= deadline:
                return False
    except (OSError, socket.timeout):
        return False
    finally:
        sock.close()
    flags = (bytearray(reply)[2] << 8) | bytearray(reply)[3]
    answers = (bytearray(reply)[6] << 8) | bytearray(reply)[7]
    return bool(flags & 0x8000) and flags & 0x000f == 0 and answers > 0


def _is_ipv4(text):
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def timeout_message(pending, timeout):
    what, reason, image = pending[0]
    for item in pending:
        if item[2]:
            what, reason, image = item
            break
    text = "the cluster was not ready after %d s: %s is %s" % (timeout, what,
                                                                reason)
    if image:
        return text + (": the image %s is not on this node, so the bundle is "
                       "incomplete; rebuild it (with --extra-image for your "
                       "own images)" % image)
    return (text + ": look at `kubectl -n kube-system describe pod` and "
            "`journalctl -u kubelet`, or rerun with a longer --wait-timeout")


def phase_wait(ctx):
    """Wait until what a user needs works: the node Ready, flannel and the
    kube-system pods running; on a master also the API server's /readyz,
    the scheduler's and controller-manager's health and CoreDNS answering
    (--wait-timeout, --no-wait).  Static pods whose health passes are not
    waited for while the kubelet's Ready flag for them lags behind."""
    if not ctx.wait:
        log.info("  not waiting (--no-wait)")
        return
    if ctx.dry_run:
        log.info("  would wait up to %d s for the node, its pods and the "
                 "cluster's health", ctx.wait_timeout)
        return
    worker = ctx.role == "worker"
    kubeconfig = KUBELET_CONF if worker else ADMIN_CONF
    timeout = ctx.wait_timeout
    deadline = now() + timeout
    shown = None
    while True:
        round_started = now()
        pending, lagging, dns_lag = wait_pending(ctx, kubeconfig, worker)
        if not pending:
            log.info("  node %s is Ready%s", node_name(ctx),
                     ", flannel and kube-proxy run on it" if worker else
                     ", the control plane is healthy, flannel runs and "
                     "CoreDNS answers")
            if lagging:
                log.info("  the kubelet still reports %s not Ready, though "
                         "their health checks pass: not waiting for it",
                         ", ".join(sorted(lagging)))
            for pod, address in dns_lag:
                log.info("  CoreDNS answers at its pod %s (%s); the kube-dns "
                         "Service sends queries to it once the kubelet "
                         "reports it ready (its readiness probe): not "
                         "waiting for that", pod, address)
            return
        text = "; ".join("%s (%s)" % (what, reason)
                         for what, reason, _ in pending)
        if text != shown:
            log.info("  waiting for: %s", text)
            shown = text
        if now() >= deadline:
            raise UserError(timeout_message(pending, timeout))
        left = WAIT_POLL - (now() - round_started)    # the round counts
        if left > 0:
            sleep(left)


# ===========================================================================
# Slice bundle (bundle mode: registry client, writer, local images, OS packages)
# ===========================================================================

def valid_arch(arch):
    if arch not in ARCHES:
        raise UserError("unknown architecture %r: use one of %s"
                        % (arch, ", ".join(sorted(ARCHES))))
    return arch


def plan_images(kubernetes_version, arch, pull_repository=None, extra=(),
                kubeadm_lists=False):
    """Every image the bundle holds, with where it is pulled from.

    kubeadm's own images are recorded under the repository that version's
    kubeadm names them under by default (k8s.gcr.io, registry.k8s.io from
    1.25 and the late patches of 1.22-1.24), on the path it uses there
    (coredns/coredns from 1.21); they are pulled from the same path under
    --image-repository (registry.k8s.io: k8s.gcr.io is frozen).  A patch
    newer than the release table has no tags yet: only bundle, whose
    kubeadm lists them (kubeadm_lists), plans it."""
    facts = version_facts(kubernetes_version)
    if not facts["listed"] and not kubeadm_lists:
        raise UserError(
            "Kubernetes %s is newer than the release table (its newest %s "
            "release: %s): its image tags are what its own kubeadm lists, "
            "which only bundle runs: run bundle for it on a linux/%s host, "
            "or choose a listed release" % (
                kubernetes_version, kubernetes_version[1:].rsplit(".", 1)[0],
                facts["newest_listed"] or "none", arch))
    pull_repository = (pull_repository or DEFAULT_PULL_REPOSITORY).rstrip("/")
    repository = facts["image_repository"]
    images = []
    kubeadm_images = [(name, name, kubernetes_version) for name in
                      CONTROL_PLANE_COMPONENTS + ("kube-proxy",)]
    kubeadm_images += [("pause", "pause", facts["pause"]),
                       ("etcd", "etcd", facts["etcd"]),
                       ("coredns", facts["coredns_path"], facts["coredns"])]
    for name, path, tag in kubeadm_images:
        images.append({
            "name": name, "kubeadm": True, "extra": False,
            "repository": path, "tag": tag,
            "ref": "%s/%s:%s" % (repository, path, tag),
            "source": "%s/%s:%s" % (pull_repository, path, tag)})
    line = FLANNEL_LINES[profile(kubernetes_version)["flannel_line"]]
    for name, image_repository, tag in line["images"]:
        tag = tag.format(arch=arch, **facts)
        ref = "%s:%s" % (image_repository, tag)
        images.append({"name": name, "kubeadm": False, "extra": False,
                       "repository": image_repository, "tag": tag,
                       "ref": ref, "source": ref})
    seen = set(image["ref"] for image in images)
    for text in extra:
        origin, ref = image_ref_of(text)
        full = str(ref)
        if full in seen:
            continue
        seen.add(full)
        if origin != "registry":
            images.append(local_image_entry(origin, ref))
            continue
        images.append({"name": ref.repository.rsplit("/", 1)[-1],
                       "kubeadm": False, "extra": True,
                       "repository": "%s/%s" % (ref.registry, ref.repository),
                       "tag": ref.tag, "ref": full, "source": full})
    return images


# The flannel lines (profile key flannel_line): the manifest under
# manifests/ and the images it names, tags from the release table's minor
# entry.  v0.11: the manifest shape of flannel v0.11-v0.13 (PSP, kube-system,
# per-arch tags), for 1.16-1.20.  v0.28: the current line (namespace
# kube-flannel labelled privileged, RBAC v1, no PSP, multi-arch images, the
# flannel CNI binary from its own image), for 1.21+.  Its images come from
# ghcr.io/flannel-io, where flannel publishes from v0.27 on and where its own
# manifest points (Docker Hub's copies are pulled under a rate limit).
FLANNEL_LINES = {
    "v0.11": {"manifest": FLANNEL_MANIFEST,
              "images": (("flannel", "quay.io/coreos/flannel",
                          "{flannel}-{arch}"),)},
    "v0.28": {"manifest": "kube-flannel-v0.28.yml",
              "images": (("flannel", "ghcr.io/flannel-io/flannel", "{flannel}"),
                         ("flannel-cni-plugin",
                          "ghcr.io/flannel-io/flannel-cni-plugin",
                          "{flannel_cni_plugin}"))},
}


def image_ref_of(text):
    """(origin, ImageRef) of an --extra-image value: REF from a registry,
    or docker-daemon:REF from the local Docker daemon (by name, not by
    digest: the daemon names images by tag)."""
    if text.startswith(DOCKER_DAEMON_PREFIX):
        ref = parse_image_ref(text[len(DOCKER_DAEMON_PREFIX):])
        if ref.digest:
            raise UserError("bad image %r: name a docker-daemon image by "
                            "NAME:TAG, not by digest" % text)
        return "docker-daemon", ref
    return "registry", parse_image_ref(text)


def local_image_entry(origin, ref):
    """A plan entry for an image that comes from elsewhere than a registry;
    it is loaded on the hosts under ref."""
    full = str(ref)
    return {"name": ref.repository.rsplit("/", 1)[-1], "kubeadm": False,
            "extra": True, "origin": origin,
            "repository": "%s/%s" % (ref.registry, ref.repository),
            "tag": ref.tag, "ref": full, "source": full}


def extra_image_refs(args):
    """--extra-image values, then every --image-list's, in order."""
    refs = list(args.extra_image)
    for path in getattr(args, "image_list", None) or ():
        refs.extend(read_image_list(path))
    return refs


def read_image_list(path):
    """References from an image list file: one a line, `#` starts a
    comment, blank lines are skipped (kubespray's and Hauler's lists)."""
    raw = read_regular_file(path, "--image-list", 1024 * 1024)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("--image-list %s is not UTF-8 text: give one image "
                        "reference a line" % path)
    refs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line.split()) != 1:
            raise UserError("--image-list %s line %d holds more than one "
                            "word: give one image reference a line"
                            % (path, number))
        try:
            image_ref_of(line)
        except UserError as exc:
            raise UserError("--image-list %s line %d: %s" % (path, number, exc))
        refs.append(line)
    return refs


def is_registry_image(image):
    return image.get("origin", "registry") == "registry"


def parse_mapping(text, what):
    """Split 'SRC=DST' of --registry-mirror and --file-mirror."""
    src, sep, dst = (text or "").partition("=")
    if not sep or not src.strip() or not dst.strip():
        raise UserError("bad %s %r: use the form SOURCE=DESTINATION" % (what, text))
    return src.strip(), dst.strip()


#
# The packages kubeadm and the kubelet need on a bare host, straight from the
# distribution's archive: apt's InRelease (or Release and Release.gpg), its
# signature checked with gpgv where a keyring is at hand, then Packages,
# checked against the Release's sha256, then each .deb against the Packages'
# sha256; yum/dnf's repomd.xml (signature: repomd.xml.asc), primary.xml
# against repomd's sha256, then each .rpm against primary's.


def valid_os_ids(ids, arch):
    """The --os IDs in the order given, once each; a UserError for an
    unknown one or an architecture no distribution is bundled for."""
    chosen = []
    for os_id in ids:
        if os_id not in DISTROS:
            raise UserError("unknown --os %s: give one of %s" % (
                os_id, ", ".join(sorted(DISTROS))))
        if os_id not in chosen:
            chosen.append(os_id)
    if chosen and "rpm" not in ARCHES[arch]:
        raise UserError("--os needs --arch amd64 or arm64 (the distributions' "
                        "archives are bundled for those only), not %s" % arch)
    return chosen


def plan_files(kubernetes_version, arch, with_docker=False,
               with_containerd=False, with_cri_dockerd=False):
    """Every file download: key, URL, path in the bundle, the sha256 the
    release table pins for it (or None), and the publisher's checksum file
    beside it (checked for the binaries always, for the archives where
    nothing is pinned).  containerd and runc are the minor's (release
    table); cri-dockerd comes with Docker where the kubelet has no
    dockershim (with_cri_dockerd: without Docker itself)."""
    facts = version_facts(kubernetes_version)
    files = []
    pins = facts["binaries_sha256"].get(arch, {})
    for name in NODE_TARBALL_BINARIES:
        url = KUBE_RELEASE_URL.format(version=kubernetes_version, arch=arch,
                                      name=name)
        files.append({"key": name, "path": "%s/%s" % (BIN_DIR, name),
                      "url": url, "pinned": pins.get(name),
                      "publisher": url + ".sha256",
                      "always_publisher": True, "mode": 0o755})
    cni_template = cni_url_template(facts["cni"])
    cni_url = cni_template.format(cni=facts["cni"], arch=arch)
    if facts.get("cni_tarball", {}).get(arch):
        cni_url = cni_url.rsplit("/", 1)[0] + "/" + facts["cni_tarball"][arch]
    crictl_url = CRICTL_URL.format(crictl=facts["crictl"], arch=arch)
    if facts.get("crictl_tarball", {}).get(arch):
        crictl_url = (crictl_url.rsplit("/", 1)[0] + "/" +
                      facts["crictl_tarball"][arch])
    downloads = [("cni", cni_url, facts.get("cni_sha256", {}).get(arch)),
                 ("crictl", crictl_url, facts.get("crictl_sha256", {}).get(arch))]
    # Docker and Mirantis publish no checksum file: pinned or --checksum-file.
    publishers = {"docker": None, "cri-dockerd": None}
    if with_docker:
        downloads.append(("docker", DOCKER_STATIC_URL.format(
            docker_arch=ARCHES[arch]["docker_static"],
            docker=DOCKER_STATIC_VERSION), None))
    if cri_dockerd_version(kubernetes_version, with_docker, with_cri_dockerd):
        downloads.append(("cri-dockerd", CRI_DOCKERD_URL.format(
            cri_dockerd=facts["cri_dockerd"], arch=arch),
            facts.get("cri_dockerd_sha256", {}).get(arch)))
    if with_containerd:
        containerd_url = CONTAINERD_URL.format(containerd=facts["containerd"],
                                               arch=arch)
        runc_url = RUNC_URL.format(runc=facts["runc"], arch=arch)
        downloads += [("containerd", containerd_url, None),
                      ("runc", runc_url, None)]
        publishers.update({"containerd": containerd_url + ".sha256sum",
                           "runc": RUNC_SUMS_URL.format(runc=facts["runc"])})
    for key, url, pinned in downloads:
        files.append({"key": key, "url": url, "pinned": pinned,
                      "publisher": publishers.get(key, url + ".sha256"),
                      "always_publisher": False,
                      "path": "%s/%s" % (ARCHIVES_DIR, url.rsplit("/", 1)[1]),
                      "mode": 0o644})
    return files


def cri_dockerd_version(kubernetes_version, with_docker, with_cri_dockerd):
    """The cri-dockerd release a bundle carries, or None: with Docker
    (--with-docker, or --with-cri-dockerd for hosts that have Docker) on a
    minor whose kubelet has no dockershim."""
    if profile(kubernetes_version)["dockershim"]:
        if with_cri_dockerd:
            raise UserError("--with-cri-dockerd is for Kubernetes 1.24 and "
                            "later: the %s kubelet talks to Docker itself; "
                            "leave it out" % kubernetes_version)
        return None
    if not (with_docker or with_cri_dockerd):
        return None
    return version_facts(kubernetes_version)["cri_dockerd"]


def read_checksum_file(path):
    """({file name: sha256 hex}, {file name: sha512 hex}) from sha256sum- or
    sha512sum-format lines (told apart by the digest's length)."""
    table, table512 = {}, {}
    try:
        lines = (read_regular_file(path, "--checksum-file", 1024 * 1024)
                 .decode("utf-8").splitlines())
    except UnicodeDecodeError:
        raise UserError("--checksum-file %s is not text: give sha256sum's "
                        "output" % path)
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(
                r"%s|[0-9a-f]{128}" % SHA256_HEX_RE.pattern, parts[0],
                re.IGNORECASE):
            raise UserError("--checksum-file %s line %d is not 'SHA256  FILENAME': "
                            "fix it (sha256sum writes that form)" % (path, number))
        name = parts[1].lstrip("*").rsplit("/", 1)[-1]
        (table if len(parts[0]) == 64 else table512)[name] = parts[0].lower()
    return table, table512


def parse_split_size(text):
    """--split: bytes per part, from 4G, 700M, 1048576 or fat32 (the
    largest file FAT32 holds, 4 GiB - 1 byte)."""
    if text.strip().lower() == "fat32":
        return FAT32_MAX_FILE
    found = SPLIT_SIZE_RE.fullmatch(text.strip())
    if not found:
        raise UserError("bad --split %r: give a size such as 4G, 700M or "
                        "fat32" % text)
    unit = (found.group(2) or "").upper()
    size = int(found.group(1)) * 1024 ** (" KMGT".index(unit) if unit else 0)
    if size < MIN_PART_SIZE:
        raise UserError("bad --split %s: parts must be at least 1M" % text)
    if size > FAT32_MAX_FILE:
        log.warning("WARNING: parts of --split %s do not fit a FAT32 stick "
                    "(its largest file is 4 GiB - 1 byte): use --split fat32 "
                    "for one", text)
    return size


def _claim_output(output):
    """Create the output's .partial file now, so a bad --output fails before
    anything is downloaded."""
    folder = os.path.dirname(output)
    partial = "%s.partial-%d" % (output, os.getpid())
    try:
        if not os.path.isdir(folder):
            os.makedirs(folder)
        _remove_stale_partials(output)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
    except OSError as exc:
        raise UserError("cannot write the bundle at %s: %s: choose another "
                        "--output" % (output, exc.strerror))
    return partial


def _remove_stale_partials(output):
    """Delete .partial files a killed earlier run of this output left."""
    partial = re.compile(re.escape(os.path.basename(output)) +
                         r"(?:\.[0-9]{3,})?\.partial-([0-9]+)")
    folder = os.path.dirname(output)
    for name in os.listdir(folder):
        found = partial.fullmatch(name)
        if not found:
            continue
        pid = found.group(1)
        try:
            os.kill(int(pid), 0)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                log.info("removing %s, left by an interrupted run", name)
                os.unlink(os.path.join(folder, name))


class BlobCache(object):
    """Content-addressed store: <dir>/sha256/<hex>, written only once the
    bytes have been verified, so whatever is in it is right.  Beside it,
    <dir>/resolved/<key>.json: what an --os resolved to (resolution_key)."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        self.blobs = os.path.join(self.directory, "sha256")
        self.converted = os.path.join(self.directory, "schema1")
        self.resolved = os.path.join(self.directory, "resolved")
        self.fresh = set()   # verified by this run: no need to hash again
        try:
            for folder in (self.blobs, self.converted, self.resolved):
                if not os.path.isdir(folder):
                    os.makedirs(folder)
        except OSError as exc:
            raise UserError("cannot create the cache folder %s: %s: choose "
                            "another --cache-dir" % (self.directory, exc.strerror))

    def path(self, hex_digest):
        return os.path.join(self.blobs, hex_digest)

    def has(self, hex_digest):
        return os.path.isfile(self.path(hex_digest))

    def put_bytes(self, data):
        hex_digest = sha256_bytes(data)
        if not self.has(hex_digest):
            write_file_atomic(self.path(hex_digest), data)
            self.fresh.add(hex_digest)
        return hex_digest

    def put_stream(self, stream):
        """Store a stream's bytes under their sha256 (a temporary file first)."""
        fd, tmp = tempfile.mkstemp(prefix=".k8s-offline-", dir=self.blobs)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for block in iter(lambda: stream.read(CHUNK), b""):
                    digest.update(block)
                    out.write(block)
            os.rename(tmp, self.path(digest.hexdigest()))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.fresh.add(digest.hexdigest())
        return digest.hexdigest()

    def read(self, hex_digest):
        with open(self.path(hex_digest), "rb") as handle:
            return handle.read()

    def get_resolution(self, key):
        """The packages stored under key, or None (none, or unreadable: the
        resolution is then made again)."""
        path = os.path.join(self.resolved, key + ".json")
        try:
            with open(path, "rb") as handle:
                packages = json.loads(handle.read().decode("utf-8"))
        except (OSError, IOError, ValueError, UnicodeDecodeError):
            return None
        problem = schema_problem(packages, RESOLUTION_SCHEMA, "")
        if problem:
            log.debug("ignoring %s: %s %s", path, problem[0], problem[1])
            return None
        return packages

    def put_resolution(self, key, packages):
        write_file_atomic(os.path.join(self.resolved, key + ".json"),
                          json.dumps(packages, sort_keys=True).encode("utf-8"))


def default_cache_dir():
    base = (os.environ.get("XDG_CACHE_HOME") or
            os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "k8s-offline")


HTTP_TIMEOUT = 60                # seconds without a byte before a retry


class RegistryClient(object):
    """Pulls manifests and blobs over the registry HTTP API, no daemon.

    Mirrors map a registry name to another host (optionally with a path
    prefix).  Insecure hosts are tried over HTTPS without verification,
    then plain HTTP; every other host gets verified HTTPS only.  Bearer
    tokens are cached per host and scope.
    """

    def __init__(self, mirrors=None, insecure=(), credentials=None, jobs=8,
                 timeout=HTTP_TIMEOUT):
        try:
            import requests
            import urllib3
            from requests.adapters import HTTPAdapter
        except ImportError:
            raise UserError("bundle mode needs requests: pip install -r "
                            "requirements.txt")
        self.requests = requests
        self.stream_errors = (requests.exceptions.RequestException,
                              urllib3.exceptions.HTTPError)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=max(jobs, 8))
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.timeout = (min(10, timeout), timeout)
        self.mirrors = dict(mirrors or {})
        self.insecure = set(insecure)
        self.credentials = (credentials if credentials is not None
                            else load_docker_credentials())
        self.tokens = {}
        self.schemes = {}
        self.probe_locks = {}
        self.lock = threading.Lock()
        self.bytes_fetched = 0

    # -- addressing ---------------------------------------------------------
    def locate(self, ref):
        """(host, repository) to contact for an ImageRef, after mirrors."""
        host, repository = ref.registry, ref.repository
        if host in self.mirrors:
            target = self.mirrors[host]
            host, _, prefix = target.partition("/")
            if prefix:
                repository = prefix.strip("/") + "/" + repository
        if host == DOCKER_HUB:
            host = DOCKER_HUB_API
        return host, repository

    def _creds(self, host):
        if host == DOCKER_HUB_API:
            host = DOCKER_HUB
        return self.credentials.get(host)

    def _schemes(self, host):
        if host in self.schemes:
            return [self.schemes[host]]
        if host in self.insecure:
            return ["https", "http"]
        return ["https"]

    # -- HTTP with retries and auth -----------------------------------------
    def _with_retries(self, send, failure):
        """send() -> a response, tried up to HTTP_ATTEMPTS times while the
        connection fails, times out or the server answers 429 or 5xx (its
        Retry-After honoured).  failure(reason) is the UserError raised
        when every try failed; any other answer is returned as it is."""
        for attempt in range(HTTP_ATTEMPTS):
            wait = None
            try:
                response = send()
            except (self.requests.exceptions.ConnectionError,
                    self.requests.exceptions.Timeout) as exc:
                reason = _short_reason(exc)
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                reason = "HTTP %d" % response.status_code
                wait = _retry_after(response.headers.get("Retry-After"))
                response.close()
            if attempt + 1 < HTTP_ATTEMPTS:
                _backoff(attempt, wait)
        raise failure(reason)

    def request(self, host, path, repository, headers=None, stream=False):
        """GET a registry path, with auth, redirects and bounded retries.

        requests drops the Authorization header when a redirect leaves the
        host, as blob redirects to storage servers need.
        """
        scope = "repository:%s:pull" % repository

        def send():
            send_headers = dict(headers or {})
            token = self.tokens.get((host, scope))
            if token:
                send_headers["Authorization"] = token
            try:
                return self._get_any_scheme(host, path, send_headers, stream)
            except self.requests.exceptions.SSLError as exc:
                raise UserError("TLS to registry %s failed (%s): if it is a "
                                "plain-HTTP or self-signed registry, pass "
                                "--insecure-registry %s"
                                % (host, _short_reason(exc), host))
            except self.requests.exceptions.TooManyRedirects:
                raise UserError("registry %s redirects %s in a loop: check the "
                                "registry or --registry-mirror" % (host, path))

        def failure(reason):
            return UserError("cannot get %s from registry %s after %d tries "
                             "(%s): check the name, --registry-mirror and the "
                             "network" % (repository, host, HTTP_ATTEMPTS, reason))

        for authenticated in (False, True):
            response = self._with_retries(send, failure)
            if response.status_code != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            if not authenticated:
                self._authenticate(host, scope, challenge)
                if (host, scope) in self.tokens:
                    continue
            break
        if self._creds(host):
            raise UserError("registry %s rejected the credentials for %s: check "
                            "them with docker login %s" % (host, repository, host))
        raise UserError("registry %s requires credentials for %s: run docker "
                        "login %s (read from ~/.docker/config.json)"
                        % (host, repository, host))

    def _get_any_scheme(self, host, path, headers, stream):
        """GET over the host's scheme; for an insecure host whose scheme is
        not known yet, one thread probes HTTPS then HTTP while the others
        wait, instead of every thread failing its own TLS handshake."""
        if host in self.schemes or host not in self.insecure:
            return self._try_schemes(host, path, headers, stream)
        with self.lock:
            probe = self.probe_locks.setdefault(host, threading.Lock())
        with probe:
            return self._try_schemes(host, path, headers, stream)

    def _try_schemes(self, host, path, headers, stream):
        last = None
        for scheme in self._schemes(host):
            url = "%s://%s%s" % (scheme, host, path)
            try:
                response = self.session.get(
                    url, headers=headers, stream=stream, timeout=self.timeout,
                    verify=(host not in self.insecure))
            except (self.requests.exceptions.SSLError,
                    self.requests.exceptions.ConnectionError) as exc:
                last = exc
                continue
            if (scheme == "https" and host in self.insecure
                    and response.status_code == 400 and "http" in self._schemes(host)):
                # An HTTP server answering a TLS hello with 400: use plain HTTP.
                response.close()
                continue
            self.schemes[host] = scheme
            return response
        raise last

    def _authenticate(self, host, scope, header):
        """Answer a 401 challenge: fetch a bearer token, or use basic auth."""
        creds = self._creds(host)
        for scheme, params in sorted(parse_challenges(header),
                                     key=lambda c: c[0] != "bearer"):
            if scheme == "bearer" and params.get("realm"):
                query = {"service": params.get("service", host),
                         "scope": params.get("scope", scope)}
                try:
                    answer = self.session.get(params["realm"], params=query,
                                              auth=creds, timeout=self.timeout)
                except self.requests.exceptions.RequestException as exc:
                    raise UserError("cannot reach the token server of %s (%s)"
                                    % (host, _short_reason(exc)))
                if answer.status_code in (401, 403) and creds:
                    raise UserError("registry %s rejected the credentials: "
                                    "check them with docker login %s"
                                    % (host, host))
                if answer.status_code in (401, 403):
                    raise UserError("registry %s requires credentials: run "
                                    "docker login %s (read from "
                                    "~/.docker/config.json)" % (host, host))
                if answer.status_code != 200:
                    raise UserError("token server of %s answered HTTP %d"
                                    % (host, answer.status_code))
                try:
                    body = answer.json()
                except ValueError:
                    raise UserError("token server of %s sent no JSON" % host)
                token = body.get("token") or body.get("access_token")
                if token:
                    self.tokens[(host, scope)] = "Bearer " + token
                    return
            if scheme == "basic" and creds:
                raw = ("%s:%s" % creds).encode("utf-8")
                self.tokens[(host, scope)] = (
                    "Basic " + base64.b64encode(raw).decode("ascii"))
                return

    # -- manifests ----------------------------------------------------------
    def get_manifest(self, ref, reference=None, label=None):
        """(media type, body bytes, digest) of a manifest, digest verified."""
        host, repository = self.locate(ref)
        reference = reference or ref.reference
        label = label or str(ref)
        response = self.request(host, "/v2/%s/manifests/%s" % (repository, reference),
                                repository, headers={"Accept": MANIFEST_ACCEPT})
        with contextlib.closing(response):
            if response.status_code == 404:
                raise UserError("image %s not found on %s: check the name and tag "
                                "(or --image-repository / --registry-mirror)"
                                % (label, host))
            if response.status_code != 200:
                raise UserError("registry %s answered HTTP %d for %s"
                                % (host, response.status_code, label))
            body = response.content
            media_type = response.headers.get("Content-Type", "").split(";")[0]
        if media_type in ("", "application/json", "text/plain"):
            try:
                media_type = (json.loads(body.decode("utf-8")).get("mediaType")
                              or media_type)
            except ValueError:
                pass
        digest = manifest_digest(media_type, body)
        expected = (reference if reference.startswith("sha256:") else
                    response.headers.get("Docker-Content-Digest"))
        if expected and expected != digest:
            raise UserError("manifest of %s from %s does not match its digest "
                            "%s: the registry or a proxy altered it"
                            % (label, host, expected))
        return media_type, body, digest

    # -- blobs --------------------------------------------------------------
    def fetch_blob(self, ref, digest, dest, progress=None, label=None):
        """Download a blob to dest, resuming a partial file, digest verified.

        The bytes go to dest + '.partial' first and are renamed only after
        the digest matches, so the cache never holds a wrong blob.
        """
        host, repository = self.locate(ref)
        path = "/v2/%s/blobs/%s" % (repository, digest)
        return self._download(lambda headers: self.request(
            host, path, repository, headers=headers, stream=True),
            digest.split(":", 1)[1], dest, progress,
            label or "blob %s of %s" % (digest[:19], ref))

    def fetch_url(self, url, sha256_hex, dest, progress=None, insecure=False,
                  algorithm="sha256"):
        """Download a file URL to dest, checked against its digest (hex)."""
        def get(headers):
            def send():
                try:
                    return self.session.get(url, headers=headers, stream=True,
                                            timeout=self.timeout,
                                            verify=not insecure)
                except self.requests.exceptions.TooManyRedirects:
                    raise UserError("%s redirects in a loop: check the URL and "
                                    "--file-mirror" % url)
            return self._with_retries(send, lambda reason: UserError(
                "cannot download %s after %d tries (%s): check --file-mirror "
                "and the network" % (url, HTTP_ATTEMPTS, reason)))
        return self._download(get, sha256_hex, dest, progress, url, algorithm)

    def get_small(self, url, insecure=False, cap=64 * 1024 * 1024):
        """The bytes of a small file (repository metadata), None when the
        server says it is not there (404, 410); a UserError when it cannot
        be read at all or is larger than cap."""
        def send():
            return self.session.get(url, timeout=self.timeout, stream=True,
                                    verify=not insecure)
        response = self._with_retries(send, lambda reason: UserError(
            "cannot download %s after %d tries (%s): check --file-mirror and "
            "the network" % (url, HTTP_ATTEMPTS, reason)))
        with contextlib.closing(response):
            if response.status_code in (404, 410):
                return None
            if response.status_code != 200:
                raise UserError("%s: the server answered HTTP %d"
                                % (url, response.status_code))
            data = response.raw.read(cap + 1, decode_content=True)
        if len(data) > cap:
            raise UserError("%s is larger than %s: it is not repository "
                            "metadata; check --file-mirror" % (url,
                                                             human_size(cap)))
        with self.lock:
            self.bytes_fetched += len(data)
        return data

    def get_text(self, url, insecure=False):
        """Small text file (a published .sha256), or None if not there."""
        try:
            response = self.session.get(url, timeout=self.timeout,
                                        verify=not insecure)
        except self.requests.exceptions.RequestException:
            return None
        with contextlib.closing(response):
            if response.status_code != 200:
                return None
            return response.text

    def _download(self, get, expected_hex, dest, progress, label,
                  algorithm="sha256"):
        partial = dest + ".partial"
        for attempt in range(HTTP_ATTEMPTS):
            digest = hashlib.new(algorithm)
            have = 0
            if os.path.exists(partial):
                with open(partial, "rb") as handle:
                    for block in iter(lambda: handle.read(CHUNK), b""):
                        digest.update(block)
                        have += len(block)
            headers = {"Accept-Encoding": "identity"}
            if have:
                headers["Range"] = "bytes=%d-" % have
            response = get(headers)
            with contextlib.closing(response):
                if response.status_code == 416 or (
                        have and response.status_code == 200):
                    # The server cannot resume: start again from zero.
                    if progress:
                        progress.update(-have)
                    os.unlink(partial)
                    if response.status_code == 416:
                        continue
                    digest, have = hashlib.new(algorithm), 0
                elif response.status_code == 404:
                    raise NotFoundError("%s: not found (HTTP 404)" % label)
                elif response.status_code not in (200, 206):
                    raise UserError("%s: the server answered HTTP %d"
                                    % (label, response.status_code))
                try:
                    with open(partial, "ab") as out:
                        for block in response.raw.stream(DOWNLOAD_CHUNK,
                                                         decode_content=False):
                            out.write(block)
                            digest.update(block)
                            if progress:
                                progress.update(len(block))
                            with self.lock:
                                self.bytes_fetched += len(block)
                except self.stream_errors as exc:
                    log.debug("%s: interrupted (%s), resuming", label,
                              _short_reason(exc))
                    _backoff(attempt)
                    continue
            if digest.hexdigest() == expected_hex:
                os.rename(partial, dest)
                return dest
            log.warning("%s: %s mismatch, downloading it again", label, algorithm)
            if progress:
                progress.update(-os.path.getsize(partial))
            os.unlink(partial)
        raise UserError("%s failed its %s check %d times: the source or a "
                        "proxy is corrupting it" % (label, algorithm, HTTP_ATTEMPTS))


def load_docker_credentials():
    """{registry host: (user, password)} from the Docker client config.

    Credential helpers are not run.  The values never reach a log line,
    an error message or the bundle.
    """
    config_dir = (os.environ.get("DOCKER_CONFIG") or
                  os.path.join(os.path.expanduser("~"), ".docker"))
    path = os.path.join(config_dir, "config.json")
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (OSError, IOError):
        return {}
    except ValueError:
        raise UserError("%s is not valid JSON: fix or remove it" % path)
    found = {}
    for key, entry in (config.get("auths") or {}).items():
        host = re.sub(r"^https?://", "", key).split("/", 1)[0]
        if host in ("index.docker.io", "registry-1.docker.io"):
            host = DOCKER_HUB
        user = password = None
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(
                    entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise UserError("the auth entry for %s in %s is not base64 "
                                "user:password: run docker login again"
                                % (host, path))
        elif entry.get("username"):
            user, password = entry["username"], entry.get("password", "")
        if user is not None:
            found[host] = (user, password)
    return found


def _short_reason(exc):
    text = str(exc)
    for known in ("Connection refused", "Name or service not known",
                  "timed out", "Connection reset", "certificate verify failed",
                  "Temporary failure in name resolution", "Network is unreachable"):
        if known in text:
            return known.lower()
    return text.splitlines()[0][:120] if text else exc.__class__.__name__


def _retry_after(value):
    try:
        return min(float(value), 30.0)
    except (TypeError, ValueError):
        return None


def _backoff(attempt, wait=None):
    time.sleep(wait if wait is not None else min(0.2 * (2 ** attempt), 5.0))


def parse_challenges(header):
    """Parse a WWW-Authenticate header into [(scheme, {param: value})].

    quay.io may send a Basic and a Bearer challenge in one header.
    """
    challenges = []
    for match in re.finditer(r'(?:^|,)\s*(Basic|Bearer)\b((?:\s*,?\s*[a-zA-Z_]+='
                             r'(?:"[^"]*"|[^,\s]*))*)', header or "", re.I):
        params = dict((key.lower(), value.strip('"')) for key, value in
                      re.findall(r'([a-zA-Z_]+)=("[^"]*"|[^,\s]*)', match.group(2)))
        challenges.append((match.group(1).lower(), params))
    return challenges


def manifest_digest(media_type, body):
    if media_type in SCHEMA1_TYPES or (
            media_type not in INDEX_TYPES + MANIFEST_TYPES
            and b'"schemaVersion": 1' in body):
        return "sha256:" + sha256_bytes(schema1_payload(body))
    return "sha256:" + sha256_bytes(body)


def schema1_payload(body):
    """The bytes a schema1 manifest's digest covers: the JWS payload."""
    doc = json.loads(body.decode("utf-8"))
    signatures = doc.get("signatures")
    if not signatures:
        return body
    protected = json.loads(_b64url_decode(signatures[0]["protected"]).decode())
    return (body[:protected["formatLength"]] +
            _b64url_decode(protected["formatTail"]))


def _b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class NotFoundError(UserError):
    """A download the server does not have (HTTP 404)."""


def add_local_images(images, cache, arch, archive_paths, progress):
    """The plan with its docker-daemon: images exported and the images of
    the --extra-image-archive files added: done before any download, so a
    missing daemon, image or archive fails at once."""
    export_docker_daemon_images(images, cache, arch, progress)
    seen = set(image["ref"] for image in images)
    for image in import_archive_files(archive_paths, cache, arch):
        if image["ref"] in seen:
            raise UserError("image %s is bundled twice (--extra-image-archive "
                            "and another source): give it once" % image["ref"])
        seen.add(image["ref"])
        images.append(image)
    return images


def export_docker_daemon_images(images, cache, arch, progress):
    """Fill in every docker-daemon: image from the local daemon's export,
    streamed through the same archive reader into the cache."""
    local = [image for image in images if image.get("origin") == "docker-daemon"]
    if not local:
        return
    client = docker_daemon_client()
    import docker
    import requests
    broken = (docker.errors.DockerException, requests.exceptions.RequestException)
    for image in local:
        label = "docker-daemon:%s" % image["ref"]
        try:
            size = client.api.inspect_image(image["ref"]).get("Size") or 0
            chunks = client.api.get_image(image["ref"], chunk_size=CHUNK)
        except docker.errors.ImageNotFound:
            raise UserError("image %s is not in the local Docker daemon: "
                            "build or pull it first (docker images lists "
                            "what is there)" % image["ref"])
        except broken as exc:
            raise UserError("the Docker daemon cannot export %s: %s"
                            % (image["ref"], _short_reason(exc)))
        bar = Progress(size, "export %s" % image["ref"], enabled=progress)
        try:
            found = archive_images(ChunkReader(chunks, bar), label, cache, arch)
        except broken as exc:
            raise UserError("the Docker daemon failed exporting %s: %s"
                            % (image["ref"], _short_reason(exc)))
        finally:
            bar.close()
        if len(found) != 1:
            raise UserError("%s: the daemon exported %d images, expected one"
                            % (label, len(found)))
        record = found[0][1]
        record["origin"] = "docker-daemon"
        image.update(record)


def docker_daemon_client():
    """A docker SDK client whose daemon answers (imported here only: the
    rest of the tool never needs the SDK)."""
    try:
        import docker
    except ImportError:
        raise UserError("docker-daemon: images need the docker SDK: "
                        "pip install docker")
    try:
        client = docker.from_env(timeout=HTTP_TIMEOUT)
        client.ping()
    except Exception as exc:   # the SDK wraps requests', socket's and its own
        raise UserError("cannot reach the Docker daemon (%s): start Docker or "
                        "set DOCKER_HOST, or leave out the docker-daemon: "
                        "images" % _short_reason(exc))
    return client


def archive_images(stream, label, cache, arch):
    """[(names, record)] of every image in a docker-archive or OCI-archive
    tar read from stream."""
    documents, stored = store_archive_stream(stream, label, cache)
    if "manifest.json" in documents:
        return docker_archive_images(label, documents, stored, cache, arch)
    if "index.json" in documents:
        return oci_archive_images(label, documents, stored, cache, arch)
    raise UserError("%s has neither manifest.json nor index.json: give a "
                    "docker-archive (docker save) or an OCI archive" % label)


def store_archive_stream(stream, label, cache):
    """Read a docker-archive or OCI-archive tar as a stream: the few index
    documents (ARCHIVE_DOCUMENTS) into memory, every other file (a legacy
    layer's json too) into the cache, hashed on the way.  ({document name:
    bytes}, {member name: (sha256 hex, size)})."""
    documents, stored, links = {}, {}, {}
    try:
        # tarfile inflates one bufsize of compressed input at a time: 16 KiB
        # of gzip are at most 17 MiB, where 1 MiB of zeros are a gigabyte.
        tar = tarfile.open(fileobj=stream, mode="r|*",
                           bufsize=ARCHIVE_STREAM_BUFSIZE)
        for count, member in enumerate(tar):
            if count > MAX_ARCHIVE_MEMBERS:
                raise UserError("%s holds more than %d files: it is not an "
                                "image archive" % (label, MAX_ARCHIVE_MEMBERS))
            name = posixpath.normpath(member.name)
            if member.issym() or member.islnk():
                # docker save links a layer it holds twice to the first copy
                target = (member.linkname if member.islnk() else
                          posixpath.join(posixpath.dirname(name), member.linkname))
                links[name] = posixpath.normpath(target)
            elif not member.isfile():
                continue
            elif name in ARCHIVE_DOCUMENTS:
                if member.size > MAX_IMAGE_JSON_BYTES:
                    raise UserError("%s: %s is %s, too large for an image "
                                    "archive" % (label, name,
                                                 human_size(member.size)))
                documents[name] = tar.extractfile(member).read()
            else:
                stored[name] = (cache.put_stream(tar.extractfile(member)),
                                member.size)
        tar.close()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise UserError("%s is not a readable tar (%s): give a docker-archive "
                        "(docker save) or an OCI archive" % (label, exc))
    for name, target in links.items():
        if target in stored:
            stored[name] = stored[target]
    return documents, stored


def docker_archive_images(label, documents, stored, cache, arch):
    """[(names, record)] of a docker-archive: each image's config and its
    uncompressed layers, whose sha256 must be the config's diff_ids, under
    a schema2 manifest written here (Docker's rootfs.diff.tar media type)."""
    entries = _archive_document(label, "manifest.json",
                                documents["manifest.json"],
                                DOCKER_ARCHIVE_SCHEMA)
    if not isinstance(entries, list) or not entries:
        raise UserError("%s: manifest.json lists no images" % label)
    found = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Layers"), list):
            raise UserError("%s: manifest.json is not a docker-archive "
                            "manifest" % label)
        wanted = [entry.get("Config")] + entry["Layers"]
        missing = [name for name in wanted if name not in stored]
        if missing:
            raise UserError("%s: %s is named in manifest.json but not in the "
                            "archive" % (label, missing[0]))
        config_hex, config_size = stored[entry["Config"]]
        config = _archive_blob_json(label, cache, config_hex, "image config")
        require_image_platform(label, config, arch)
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        layers = [stored[name] for name in entry["Layers"]]
        if diff_ids != ["sha256:" + hexd for hexd, _ in layers]:
            raise UserError("%s: the layers are not the ones the image config "
                            "lists (rootfs.diff_ids): the archive is damaged"
                            % label)
        manifest = {
            "schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG, "size": config_size,
                       "digest": "sha256:" + config_hex},
            "layers": [{"mediaType": MT_DOCKER_LAYER_TAR, "size": size,
                        "digest": "sha256:" + hexd} for hexd, size in layers]}
        body = json.dumps(manifest, indent=3).encode("utf-8")
        record = {"manifest_digest": "sha256:" + cache.put_bytes(body),
                  "manifest_media_type": MT_DOCKER_MANIFEST,
                  "config_digest": manifest["config"]["digest"],
                  "layers": [layer["digest"] for layer in manifest["layers"]],
                  "origin": "docker-archive"}
        found.append((entry.get("RepoTags") or [], record))
    return found


def _archive_document(label, name, data, schema):
    """A JSON document of an archive, checked against its schema."""
    value = _archive_json(label, name, data)
    _archive_shape(label, name, value, schema)
    return value


def _archive_json(label, name, data):
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UserError("%s: %s is not valid JSON: the archive is damaged"
                        % (label, name))


def _archive_shape(label, name, value, schema):
    found = schema_problem(value, schema)
    if found:
        raise UserError("%s: %s field %s %s: %s" % (
            label, name, found[0], found[1], ARCHIVE_FIX))


def _archive_blob_json(label, cache, hex_digest, what):
    if os.path.getsize(cache.path(hex_digest)) > MAX_IMAGE_JSON_BYTES:
        raise UserError("%s: the %s is too large: the archive is damaged"
                        % (label, what))
    value = _archive_json(label, what, cache.read(hex_digest))
    if not isinstance(value, dict):
        raise UserError("%s: the %s is not a JSON object: the archive is "
                        "damaged" % (label, what))
    return value


def require_image_platform(label, config, arch):
    """The image's config says linux/ARCH, the bundle's architecture."""
    found = (config.get("os"), config.get("architecture"))
    if found != ("linux", arch):
        raise UserError("%s is for %s/%s, not linux/%s: build or pick the "
                        "image for the bundle's --arch" % (
                            label, found[0], found[1], arch))


def oci_archive_images(label, documents, stored, cache, arch):
    """[(names, record)] of an OCI archive: its blobs are checked against
    their names, its manifests kept as they are (a multi-platform index
    gives the bundle's architecture)."""
    blobs = {}
    for name, (hexd, _) in stored.items():
        if name.startswith("blobs/sha256/"):
            if name[len("blobs/sha256/"):] != hexd:
                raise UserError("%s: blob %s does not match its digest: the "
                                "archive is damaged" % (label, name))
            blobs["sha256:" + hexd] = hexd
    index = _archive_document(label, "index.json", documents["index.json"],
                              OCI_INDEX_SCHEMA)
    descriptors = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descriptors, list) or not descriptors:
        raise UserError("%s: index.json lists no images" % label)
    picker = ImageFetcher(None, cache, arch)
    found = []
    for descriptor in descriptors:
        if not isinstance(descriptor, dict):
            raise UserError("%s: index.json is not an OCI index" % label)
        annotations = descriptor.get("annotations") or {}
        names = [annotations.get("io.containerd.image.name") or
                 annotations.get("org.opencontainers.image.ref.name") or ""]
        digest, media_type = descriptor.get("digest"), descriptor.get("mediaType")
        for _ in range(2):
            if digest not in blobs:
                raise UserError("%s: manifest %s is not in the archive"
                                % (label, digest))
            if media_type not in INDEX_TYPES:
                break
            child = _archive_blob_json(label, cache, blobs[digest], "image index")
            _archive_shape(label, "image index " + digest, child,
                           OCI_INDEX_SCHEMA)
            digest = picker._pick_platform({"source": label}, child)
            media_type = [entry.get("mediaType") for entry in child["manifests"]
                          if entry.get("digest") == digest][0]
        manifest = _archive_blob_json(label, cache, blobs[digest], "manifest")
        _archive_shape(label, "manifest " + digest, manifest,
                       OCI_MANIFEST_SCHEMA)
        layers = manifest.get("layers")
        config = manifest.get("config")
        if (not isinstance(config, dict) or not isinstance(layers, list)
                or not all(isinstance(layer, dict) for layer in layers)):
            raise UserError("%s: %s is not an image manifest" % (label, digest))
        for needed in [config.get("digest")] + [layer.get("digest")
                                                for layer in layers]:
            if needed not in blobs:
                raise UserError("%s: blob %s is not in the archive"
                                % (label, needed))
        require_image_platform(label, _archive_blob_json(
            label, cache, blobs[config["digest"]], "image config"), arch)
        found.append((names, {
            "manifest_digest": digest,
            "manifest_media_type": manifest.get("mediaType") or MT_OCI_MANIFEST,
            "config_digest": config["digest"],
            "layers": [layer["digest"] for layer in layers],
            "origin": "oci-archive"}))
    return found


class ImageFetcher(object):
    """Resolves each planned image to one single-platform manifest and
    fetches its blobs into the cache, converting schema1 to schema2."""

    def __init__(self, client, cache, arch):
        self.client = client
        self.cache = cache
        self.arch = arch

    def resolve(self, image):
        """Fill image with manifest digest, config and layers (schema2/OCI)."""
        ref = parse_image_ref(image["source"])
        media_type, body, digest = self.client.get_manifest(ref)
        image["source_digest"] = digest
        if media_type in INDEX_TYPES:
            child = self._pick_platform(image, json.loads(body.decode("utf-8")))
            media_type, body, digest = self.client.get_manifest(
                ref, reference=child, label=image["source"])
        if media_type in INDEX_TYPES:
            raise UserError("image %s: a manifest list inside a manifest list "
                            "is not supported" % image["source"])
        if media_type in SCHEMA1_TYPES or b'"schemaVersion": 1' in body[:200]:
            image["schema1"] = body.decode("utf-8")
            image["manifest_media_type"] = MT_DOCKER_MANIFEST
            return image
        manifest = json.loads(body.decode("utf-8"))
        if not manifest.get("config") or "layers" not in manifest:
            raise UserError("image %s: unsupported manifest type %s"
                            % (image["source"], media_type))
        self.cache.put_bytes(body)
        self._record(image, digest, media_type, manifest)
        return image

    def _record(self, image, digest, media_type, manifest):
        image["manifest_digest"] = digest
        image["manifest_media_type"] = manifest.get("mediaType") or media_type
        image["config_digest"] = manifest["config"]["digest"]
        image["layers"] = [layer["digest"] for layer in manifest["layers"]]
        image["blob_sizes"] = dict(
            [(manifest["config"]["digest"], manifest["config"].get("size", 0))] +
            [(layer["digest"], layer.get("size", 0)) for layer in manifest["layers"]])

    def _pick_platform(self, image, index):
        wanted_variant = {"arm64": ("v8", None), "arm": ("v7",)}.get(self.arch)
        choices = []
        for entry in index.get("manifests", []):
            plat = entry.get("platform") or {}
            if plat.get("os") == "linux" and plat.get("architecture") == self.arch:
                choices.append(entry)
        if wanted_variant:
            preferred = [c for c in choices
                         if (c.get("platform") or {}).get("variant") in wanted_variant]
            choices = preferred or choices
        if not choices:
            offered = sorted(set("%s/%s" % ((e.get("platform") or {}).get("os"),
                                            (e.get("platform") or {}).get("architecture"))
                                 for e in index.get("manifests", [])))
            raise UserError("image %s has no linux/%s variant (it offers %s): "
                            "choose another --arch or image"
                            % (image["source"], self.arch, ", ".join(offered)))
        return choices[0]["digest"]

    def blob_jobs(self, images):
        """{digest: (ImageRef to fetch from, size, label)} of missing blobs."""
        wanted = {}
        for image in images:
            ref = parse_image_ref(image["source"])
            if "schema1" in image:
                doc = json.loads(image["schema1"])
                digests = [(layer["blobSum"], 0) for layer in doc["fsLayers"]]
            else:
                digests = [(d, image["blob_sizes"].get(d, 0))
                           for d in [image["config_digest"]] + image["layers"]]
            for digest, size in digests:
                if not DIGEST_RE.fullmatch(digest):
                    raise UserError("image %s names an unsupported digest %s"
                                    % (image["source"], digest))
                if digest not in wanted and not self.cache.has(digest[7:]):
                    wanted[digest] = (ref, size, "%s (%s)" % (image["source"],
                                                              digest[7:19]))
        return wanted

    def fetch(self, digest, ref, label, progress):
        self.client.fetch_blob(ref, digest, self.cache.path(digest[7:]),
                               progress=progress, label=label)
        self.cache.fresh.add(digest[7:])

    def convert_schema1(self, image):
        """Turn a schema1 image into a schema2 manifest and config, the way
        Docker does when it pulls one; the result is cached by the schema1
        digest so a warm run need not decompress the layers again."""
        record = os.path.join(self.cache.converted, "%s.v%d.json" % (
            image["source_digest"][7:], SCHEMA1_CONVERSION))
        if os.path.isfile(record):
            with open(record) as handle:
                digest = json.load(handle)["manifest_digest"]
            if self.cache.has(digest[7:]):
                manifest = json.loads(self.cache.read(digest[7:]).decode("utf-8"))
                if all(self.cache.has(d[7:]) for d in
                       [manifest["config"]["digest"]] +
                       [layer["digest"] for layer in manifest["layers"]]):
                    self._record(image, digest, MT_DOCKER_MANIFEST, manifest)
                    return
        doc = json.loads(image.pop("schema1"))
        history = [json.loads(entry["v1Compatibility"]) for entry in doc["history"]]
        blobs = [layer["blobSum"] for layer in doc["fsLayers"]]
        layers, diff_ids, steps = [], [], []
        for blob, v1 in reversed(list(zip(blobs, history))):
            steps.append(schema1_history_step(v1, image["source"]))
            if not v1.get("throwaway"):
                layers.append(blob)
                diff_ids.append("sha256:" + _gunzip_sha256(self.cache.path(blob[7:])))
        config = dict(history[0])
        if "created" in config:
            schema1_time(config["created"], image["source"])
        for key in ("id", "parent", "Size", "parent_id", "layer_id", "throwaway"):
            config.pop(key, None)
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        config["history"] = steps
        config_bytes = json.dumps(config, sort_keys=True,
                                  separators=(",", ":")).encode("utf-8")
        config_hex = self.cache.put_bytes(config_bytes)
        manifest = {
            "schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG, "size": len(config_bytes),
                       "digest": "sha256:" + config_hex},
            "layers": [{"mediaType": MT_DOCKER_LAYER,
                        "size": os.path.getsize(self.cache.path(blob[7:])),
                        "digest": blob} for blob in layers]}
        body = json.dumps(manifest, indent=3).encode("utf-8")
        digest = "sha256:" + self.cache.put_bytes(body)
        write_file_atomic(record, canonical_json({"manifest_digest": digest}))
        self._record(image, digest, MT_DOCKER_MANIFEST, manifest)


def schema1_history_step(v1, source):
    """One config history entry from a v1Compatibility entry, as Docker's
    pull makes it (moby image/v1 HistoryFromConfig): author, created (the
    zero time when absent), the container command joined by spaces,
    comment, empty_layer for throwaway entries; empty fields left out."""
    step = {"created": schema1_time(v1["created"], source) if "created" in v1
            else GO_ZERO_TIME}
    command = (v1.get("container_config") or {}).get("Cmd")
    if command:
        step["created_by"] = " ".join(command)
    for key in ("author", "comment"):
        if v1.get(key):
            step[key] = v1[key]
    if v1.get("throwaway"):
        step["empty_layer"] = True
    return step


def schema1_time(value, source):
    """A v1Compatibility time, checked: Docker and containerd refuse an
    image (and docker load the rest of its archive) over one they cannot
    parse."""
    if not isinstance(value, str) or not RFC3339_RE.match(value):
        raise UserError("image %s: its schema1 history has the time %r, which "
                        "Docker cannot read: use another image or tag"
                        % (source, value))
    return value


def _gunzip_sha256(path):
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                digest.update(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError("layer %s is not a gzip tar (%s): cannot convert a "
                        "schema1 image with it" % (os.path.basename(path), exc))
    return digest.hexdigest()


class ChunkReader(object):
    """A read()-able stream over an iterator of byte chunks (the docker
    SDK's export), holding at most one chunk."""

    def __init__(self, chunks, progress=None):
        self.chunks = iter(chunks)
        self.chunk = b""
        self.offset = 0
        self.progress = progress

    def read(self, size=-1):
        parts = []
        while size != 0:
            if self.offset >= len(self.chunk):
                self.chunk = next(self.chunks, None)
                self.offset = 0
                if self.chunk is None:
                    self.chunk = b""
                    break
                if self.progress:
                    self.progress.update(len(self.chunk))
                continue
            end = len(self.chunk) if size < 0 else min(len(self.chunk),
                                                        self.offset + size)
            parts.append(self.chunk[self.offset:end])
            if size > 0:
                size -= end - self.offset
            self.offset = end
        return b"".join(parts)


def import_archive_files(paths, cache, arch):
    """Plan entries, filled in, of every image in the --extra-image-archive
    files (one entry per image, under its first name)."""
    images = []
    for path in paths:
        label = "--extra-image-archive %s" % path
        with open_regular_file(path, "--extra-image-archive") as handle:
            for names, record in archive_images(handle, label, cache, arch):
                ref = archive_image_name(label, names)
                entry = local_image_entry(record["origin"], ref)
                entry.update(record)
                images.append(entry)
    return images


def archive_image_name(label, names):
    """The one reference an archived image is bundled under; an OCI ref.name
    that is only a tag is no name."""
    usable = [name for name in names if name and ("/" in name or ":" in name)]
    if not usable:
        raise UserError("%s holds an image without a name: save it by name "
                        "(docker save NAME:TAG, or skopeo copy ... "
                        "oci-archive:FILE:NAME:TAG)" % label)
    return parse_image_ref(usable[0])


def binaries_from_node_tarball(client, cache, version, arch, sha512, file_mirrors,
                               args, progress):
    """{name: sha256} of kubeadm, kubelet and kubectl taken out of the node
    release tarball, which is checked against the sha512 the release
    published.  The binaries land in the cache, so fetch_files finds them
    there; it still compares them with the .sha256 files beside the single
    binaries.  A warm run reuses the record of what was extracted."""
    url = apply_file_mirror(NODE_TARBALL_URL.format(version=version, arch=arch),
                            file_mirrors)
    folder = os.path.join(cache.directory, "sha512")
    if not os.path.isdir(folder):
        os.makedirs(folder)
    tarball = os.path.join(folder, sha512)
    record = tarball + ".json"
    if os.path.isfile(record):
        with open(record) as handle:
            found = json.load(handle)
        if all(cache.has(hexd) for hexd in found.values()):
            return found
    if not os.path.isfile(tarball):
        bar = Progress(0, "node tarball", enabled=progress)
        try:
            client.fetch_url(url, sha512, tarball, bar, algorithm="sha512",
                             insecure=_url_host(url) in set(args.insecure_registry))
        finally:
            bar.close()
    log.info("%s: checked against the sha512 the release published", url)
    found = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if (member.isfile() and name in NODE_TARBALL_BINARIES and
                        member.name.endswith("node/bin/" + name)):
                    found[name] = cache.put_stream(tar.extractfile(member))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UserError("%s is not a readable release tarball (%s)" % (url, exc))
    missing = sorted(set(NODE_TARBALL_BINARIES) - set(found))
    if missing:
        raise UserError("%s lacks %s" % (url, ", ".join(missing)))
    write_file_atomic(record, canonical_json(found))
    return found


def apply_file_mirror(url, mirrors):
    """Rewrite a URL by the longest matching --file-mirror prefix."""
    best = None
    for prefix, replacement in mirrors:
        if url.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, replacement)
    if best is None:
        return url
    return best[1] + url[len(best[0]):]


def _url_host(url):
    return re.sub(r"^[a-z]+://", "", url).split("/", 1)[0]


def fetch_files(client, cache, files, file_mirrors, vouched, args, progress):
    """Download every file, each checked against what vouches for it:
    vouched {file name: (sha256, source)} (--checksum-file, the node
    tarball), else the release table's pin (not under --checksum-file), and
    the publisher's checksum file beside it; any disagreement is fatal, no
    checksum at all too.  Each plan records its sources."""
    insecure_hosts = set(args.insecure_registry)

    def plan(entry):
        filename = entry["url"].rsplit("/", 1)[1]
        url = apply_file_mirror(entry["url"], file_mirrors)
        insecure = _url_host(url) in insecure_hosts
        expected, sources = None, []
        if filename in vouched:
            expected, source = vouched[filename]
            sources.append(source)
        elif entry["pinned"] and not args.checksum_file:
            expected = entry["pinned"]
            sources.append("pinned table (%s)" % RELEASE_TABLE_FILE)
        if entry["publisher"] and (entry["always_publisher"] or not expected):
            published = parse_published_sha256(client.get_text(
                apply_file_mirror(entry["publisher"], file_mirrors), insecure),
                filename)
            if expected and published and published != expected:
                raise UserError("%s: the publisher's %s (%s) differs from %s "
                                "(%s): refusing it" % (
                                    filename, entry["publisher"], published,
                                    sources[0], expected))
            if published:
                expected = expected or published
                sources.append("publisher's file %s" % entry["publisher"])
        if not expected:
            raise UserError("no checksum known for %s: pass a --checksum-file "
                            "with its sha256" % filename)
        return dict(entry, fetch_url=url, sha256=expected, insecure=insecure,
                    checksum_sources=sources)

    plans = run_pool(args.jobs, files, plan)
    missing = [p for p in plans if not cache.has(p["sha256"])]
    bar = Progress(0, "files", enabled=progress)
    try:
        run_pool(args.jobs, missing, lambda p: client.fetch_url(
            p["fetch_url"], p["sha256"], cache.path(p["sha256"]), bar,
            insecure=p["insecure"]))
        cache.fresh.update(p["sha256"] for p in missing)
    finally:
        bar.close()
    for plan in plans:
        plan["size"] = os.path.getsize(cache.path(plan["sha256"]))
    return plans


def parse_published_sha256(text, filename=None):
    """The digest of a publisher's .sha256 file (only the hex, as dl.k8s.io
    writes it, or `HEX  NAME` as sha256sum does, NAME being filename), or
    None when it is not such a file.  A file of several sha256sum lines
    (runc.sha256sum) gives the line naming filename."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if len(lines) > 1 and filename is not None:
        found = [parse_published_sha256(line, filename) for line in lines
                 if len(line.split()) == 2]
        found = [hexd for hexd in found if hexd]
        return found[0] if len(found) == 1 else None
    fields = (text or "").split()
    if not fields or not re.fullmatch(SHA256_HEX_RE.pattern, fields[0], re.IGNORECASE):
        return None
    if len(fields) > 2 or (len(fields) == 2 and filename is not None and
                           fields[1].lstrip("*").rsplit("/", 1)[-1] != filename):
        return None
    return fields[0].lower()


def run_pool(jobs, items, work):
    """Run work(item) for every item on up to `jobs` threads; re-raise the
    first error after cancelling what has not started."""
    from concurrent.futures import ThreadPoolExecutor
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items)))) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def fetch_os_packages(client, cache, os_ids, arch, file_mirrors, args,
                      progress):
    """{os_id: (packages, signature lines)} for every --os, each package's
    file in the cache, checked against its metadata's sha256.  The signed
    index is fetched and checked every run; the packages it resolves to are
    kept in the cache by the sha256 of the metadata it names, so a warm run
    reads no Packages or primary file."""
    insecure = set(args.insecure_registry)
    found, downloads = {}, []
    for os_id in os_ids:
        keyring = archive_keyring(os_id, getattr(args, "os_keyring", None))
        signed, read = ARCHIVE_FAMILIES[DISTROS[os_id]["family"]]
        signatures, sources = signed(client, os_id, arch, file_mirrors,
                                     keyring, insecure)
        wanted = wanted_packages(os_id)
        key = resolution_key(os_id, arch, wanted, sources)
        packages = cache.get_resolution(key)
        if packages is None:
            index = read(client, cache, os_id, arch, sources, insecure)
            packages = [resolved_record(p) for p in
                        resolve_packages(index, wanted)]
            cache.put_resolution(key, packages)
            how = "resolved from the signed index"
        else:
            how = "as resolved before from the same signed index"
        for package in packages:
            if not full_match(PACKAGE_FILE_RE, package["file"]):
                raise UserError("%s: the file name %r is not one bundle "
                                "accepts" % (os_id, package["file"]))
            package["path"] = "%s/%s/%s" % (PACKAGES_DIR, os_id,
                                            package["file"])
            package["fetch_url"] = apply_file_mirror(archive_url(
                package["base"], package["location"]), file_mirrors)
            if not cache.has(package["sha256"]):
                downloads.append(package)
        found[os_id] = (packages, signatures)
        log.info("--os %s: %d packages, %s (%s)", os_id, len(packages), how,
                 ", ".join(p["name"] for p in packages))
    unique = dict((p["sha256"], p) for p in downloads)
    bar = Progress(sum(p["size"] for p in unique.values()), "packages",
                   enabled=progress)
    try:
        run_pool(args.jobs, sorted(unique.values(), key=lambda p: p["path"]),
                 lambda p: client.fetch_url(
                     p["fetch_url"], p["sha256"], cache.path(p["sha256"]), bar,
                     insecure=_url_host(p["fetch_url"]) in insecure))
        cache.fresh.update(unique)
    finally:
        bar.close()
    return found


# What a resolved package keeps for the bundle (the resolver's record of
# it, its Packages stanza dropped), and the grammar it is read back with.
RESOLVED_FIELDS = ("name", "version", "arch", "wanted", "needs", "relations",
                   "pre_depends", "provides", "base", "location", "file",
                   "sha256", "size")
_RESOLVED_NAMES = ("list", (("match", PACKAGE_NAME_RE), 1000))
RESOLUTION_SCHEMA = ("list", (("record", ({
    "name": ("match", PACKAGE_NAME_RE), "version": ("match", PACKAGE_VERSION_RE),
    "arch": ("match", TEXT_RE), "wanted": ("bool", None),
    "needs": _RESOLVED_NAMES, "pre_depends": _RESOLVED_NAMES,
    "relations": ("list", (("list", (("match", DEB_RELATION_TEXT_RE), 20)),
                           200)),
    "provides": ("list", (("match", PRINTABLE_RE), 100000)),
    "base": ("match", PRINTABLE_RE), "location": ("match", PRINTABLE_RE),
    "file": ("match", PACKAGE_FILE_RE), "sha256": ("match", SHA256_HEX_RE),
    "size": ("int", None)}, RESOLVED_FIELDS)), 1000))


def resolved_record(package):
    """The fields of a resolved package the bundle uses (RESOLVED_FIELDS)."""
    record = dict((k, package.get(k)) for k in RESOLVED_FIELDS)
    record["relations"] = package.get("relations") or []
    record["pre_depends"] = package.get("pre_depends") or []
    return record


def resolution_key(os_id, arch, wanted, sources):
    """The sha256 naming one resolution: the distribution's row, the arch,
    the packages wanted and the sha256 of every metadata file the signed
    index names (a new index, a new key), under this tool version."""
    return sha256_bytes(json.dumps(
        [RESOLUTION_FORMAT, TOOL_VERSION, os_id, DISTROS[os_id], arch, wanted,
         [[url, sha] for source in sources for url, sha in source[1]]],
        sort_keys=True).encode("utf-8"))


def archive_keyring(os_id, given):
    """The keyring checking os_id's archive: --os-keyring, else the
    distribution's own where installed; None when there is none."""
    if given:
        if not os.path.isfile(given):
            raise UserError("--os-keyring %s is not a file: give a keyring "
                            "gpgv reads (gpg --export output)" % given)
        return given
    default = DISTROS[os_id].get("keyring")
    if default and os.path.isfile(default) and shutil.which("gpgv"):
        return default
    return None


def apt_sources(client, os_id, arch, file_mirrors, keyring, insecure):
    """([signature line], [(component, [(url, sha256)] by preference)]) of
    a Debian or Ubuntu suite, from its checked Release."""
    distro = DISTROS[os_id]
    release, base, line = apt_release(client, os_id, arch, file_mirrors,
                                      keyring, insecure)
    sums = _release_sha256(release)
    sources = []
    for component in distro["components"]:
        stem = "%s/binary-%s/Packages" % (component, arch)
        names = [stem + suffix for suffix in (".xz", ".gz", "")
                 if stem + suffix in sums]
        if not names:
            raise UserError("the Release of %s lists no %s: the archive does "
                            "not carry %s %s" % (distro["suite"], stem,
                                                 component, arch))
        sources.append((component, [(apply_file_mirror("%s/dists/%s/%s" % (
            base, distro["suite"], name), file_mirrors), sums[name][0])
            for name in names]))
    return [line], sources


def apt_index(client, cache, os_id, arch, sources, insecure):
    """The ArchiveIndex of a Debian or Ubuntu suite's Packages files."""
    base = DISTROS[os_id]["base"][arch]
    index = ArchiveIndex(os_id, arch)
    index.minimal = set()
    for _, candidates in sources:
        text = None
        for url, sha in candidates:     # a partial mirror may keep one form
            try:
                text = fetch_metadata(client, cache, url, sha,
                                      _url_host(url) in insecure)
                break
            except NotFoundError:
                if url == candidates[-1][0]:
                    raise
        for stanza in parse_deb822(text.decode("utf-8", "replace")):
            package = _deb_package(stanza, base, arch)
            if package is None:
                continue
            index.add(package, lambda a, b: False)
            if (stanza.get("Priority") == "required" or
                    stanza.get("Essential") == "yes"):
                index.minimal.add(package["name"])
    index.index_providers()
    return index


def apt_release(client, os_id, arch, file_mirrors, keyring, insecure):
    """(Release fields, base URL, signature line) of os_id's suite."""
    distro = DISTROS[os_id]
    base = distro["base"][arch]
    dists = "%s/dists/%s/" % (base, distro["suite"])

    def get(name):
        url = apply_file_mirror(dists + name, file_mirrors)
        return client.get_small(url, _url_host(url) in insecure,
                                MAX_RELEASE_BYTES)
    inrelease = get("InRelease")
    if inrelease is not None:
        signed, signature = inrelease, None
    else:
        signed = get("Release")
        if signed is None:
            raise UserError("%sInRelease and Release are not there: check "
                            "--file-mirror (the suite %s)" % (
                                apply_file_mirror(dists, file_mirrors),
                                distro["suite"]))
        signature = get("Release.gpg")
    if keyring:
        if inrelease is None and signature is None:
            raise UserError("%s has no InRelease and no Release.gpg, so the "
                            "keyring %s cannot check it: use a signed archive"
                            % (apply_file_mirror(dists, file_mirrors), keyring))
        text = gpgv_verified(keyring, signed, signature)
        if text is None:
            raise UserError("the signature of %s%s does not verify with %s: "
                            "refusing the archive (give its key with "
                            "--os-keyring)" % (apply_file_mirror(
                                dists, file_mirrors),
                                "InRelease" if signature is None else "Release",
                                keyring))
        line = "%s: signature checked with %s" % (base, keyring)
    else:
        text = signed
        line = ("%s: signature NOT checked (no keyring: give --os-keyring)"
                % base)
    fields = parse_deb822(clearsigned_text(text))
    if not fields:
        raise UserError("%sRelease is empty or not a Release file" % dists)
    release = fields[0]
    require_valid_until(release, dists)
    if distro["suite"] not in (release.get("Codename"), release.get("Suite")):
        raise UserError("%sRelease is for %s, not %s: check --file-mirror" % (
            dists, release.get("Codename") or release.get("Suite") or "?",
            distro["suite"]))
    return release, base, line


def gpgv_verified(keyring, signed, signature=None):
    """What gpgv vouches for with keyring: the text of a clearsigned file
    (signature None) or the signed file itself (a detached signature);
    a UserError when the signature does not verify."""
    gpgv = shutil.which("gpgv")
    if not gpgv:
        raise UserError("gpgv is not installed, so the keyring %s cannot "
                        "check the archive's signature: install gpgv"
                        % keyring)
    folder = tempfile.mkdtemp(prefix="k8s-offline-gpgv-")
    try:
        signed_path = os.path.join(folder, "signed")
        write_file_atomic(signed_path, signed)
        argv = [gpgv, "--quiet", "--keyring", os.path.abspath(keyring)]
        if signature is None:
            argv += ["--output", os.path.join(folder, "text"), signed_path]
        else:
            write_file_atomic(os.path.join(folder, "sig"), signature)
            argv += [os.path.join(folder, "sig"), signed_path]
        result = subprocess.run(argv, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                universal_newlines=True, timeout=120)
        if result.returncode != 0:
            return None
        if signature is None:
            with open(os.path.join(folder, "text"), "rb") as handle:
                return handle.read()
        return signed
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parse_deb822(text):
    """The stanzas of a Debian control file (Release, Packages) as dicts;
    a continuation line is joined to its field with a newline."""
    stanzas, current, field = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, field = {}, None
        elif line[0] in " \t":
            if field is not None:
                current[field] += "\n" + line.strip()
        elif ":" in line:
            field, _, value = line.partition(":")
            current[field] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def clearsigned_text(data):
    """The text an InRelease file signs, its armor and dash-escapes taken
    off (used only when no keyring checks it: gpgv gives it otherwise)."""
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or lines[0].strip() != "-----BEGIN PGP SIGNED MESSAGE-----":
        return data.decode("utf-8", "replace")
    start = lines.index("") + 1 if "" in lines else len(lines)
    body = []
    for line in lines[start:]:
        if line.strip() == "-----BEGIN PGP SIGNATURE-----":
            break
        body.append(line[2:] if line.startswith("- ") else line)
    return "\n".join(body) + "\n"


def require_valid_until(release, where):
    """Refuse a Release past its Valid-Until, as apt does: a mirror could
    replay an old signed index to keep fixed packages away."""
    text = release.get("Valid-Until")
    if not text:
        return
    from email.utils import parsedate_to_datetime
    try:
        until = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        raise UserError("%sRelease has an unreadable Valid-Until %r: the "
                        "archive is damaged" % (where, text))
    if until < time.time():
        raise UserError("%sRelease expired on %s (Valid-Until): the mirror "
                        "serves a stale index; use a current mirror"
                        % (where, text))


def _release_sha256(release):
    """{path: (sha256, size)} from a Release file's SHA256 field."""
    sums = {}
    for line in release.get("SHA256", "").splitlines():
        fields = line.split()
        if (len(fields) == 3 and full_match(SHA256_HEX_RE, fields[0]) and
                fields[1].isdigit()):
            sums[fields[2]] = (fields[0], int(fields[1]))
    return sums


class ArchiveIndex(object):
    """The packages one distribution's archive offers for one architecture,
    as the resolver sees them: name, version, what each provides and
    requires, and where and with which sha256 its file is."""

    def __init__(self, os_id, arch):
        self.os_id = os_id
        self.arch = arch
        self.packages = {}          # name -> package
        self.providers = {}         # capability -> [package names]

    def add(self, package, newer):
        """Keep one package per name: the newer by newer(a, b)."""
        old = self.packages.get(package["name"])
        if old is not None and not newer(package, old):
            return
        self.packages[package["name"]] = package

    def index_providers(self):
        self.providers = {}
        for name in sorted(self.packages):
            package = self.packages[name]
            for capability in [name] + package["provides"]:
                self.providers.setdefault(capability, []).append(name)

    def provider(self, capability, prefer=()):
        """The package to satisfy capability: itself, one already chosen,
        else the first provider by name; None when the archive lacks it."""
        names = self.providers.get(capability, [])
        if capability in names:
            return capability
        for name in names:
            if name in prefer:
                return name
        return names[0] if names else None


def fetch_metadata(client, cache, url, sha256_hex, insecure):
    """A metadata file the signed index lists, from the cache or the
    network, checked against that sha256."""
    if not cache.has(sha256_hex):
        client.fetch_url(url, sha256_hex, cache.path(sha256_hex),
                         insecure=insecure)
        cache.fresh.add(sha256_hex)
    return _decompress(cache.read(sha256_hex), url)


def _decompress(data, name):
    """The bytes of a metadata file by its compression suffix."""
    try:
        if name.endswith(".xz"):
            import lzma
            return lzma.decompress(data)
        if name.endswith(".gz"):
            return gzip.decompress(data)
        if name.endswith(".bz2"):
            import bz2
            return bz2.decompress(data)
    except (OSError, EOFError, ValueError) as exc:
        raise UserError("%s does not decompress (%s): the archive is damaged"
                        % (name, exc))
    if name.endswith((".zst", ".zck")):
        raise UserError("%s is compressed with %s, which bundle cannot read"
                        % (name, name.rsplit(".", 1)[1]))
    return data


def _deb_package(stanza, base, arch):
    """A Packages stanza as the resolver's package, None if unusable; its
    dependencies are read when the resolver asks (package_requires)."""
    name, filename = stanza.get("Package"), stanza.get("Filename")
    sha = stanza.get("SHA256", "")
    if (not name or not filename or not full_match(SHA256_HEX_RE, sha) or
            stanza.get("Architecture") not in (arch, "all")):
        return None
    provides = stanza.get("Provides")
    return {"name": name, "version": stanza.get("Version", ""),
            "arch": stanza.get("Architecture"), "stanza": stanza,
            "provides": [group[0][0] for group in parse_deb_relations(
                provides)] if provides else [], "base": base,
            "location": filename, "file": filename.rsplit("/", 1)[-1],
            "sha256": sha,
            "size": int(stanza.get("Size", "0") or 0)}


def rpm_sources(client, os_id, arch, file_mirrors, keyring, insecure):
    """([signature line], [(base, [(primary URL, sha256)])]) of an RPM
    distribution's repositories, from each checked repomd.xml."""
    from xml.etree import ElementTree
    signatures, sources = [], []
    for base in DISTROS[os_id]["repos"][arch]:
        url = apply_file_mirror(base + "/repodata/repomd.xml", file_mirrors)
        unsafe = _url_host(url) in insecure
        repomd = client.get_small(url, unsafe, MAX_RELEASE_BYTES)
        if repomd is None:
            raise UserError("%s is not there: check --file-mirror" % url)
        if keyring:
            signature = client.get_small(url + ".asc", unsafe, 1024 * 1024)
            if signature is None or gpgv_verified(keyring, repomd,
                                                  signature) is None:
                raise UserError("the signature of %s (repomd.xml.asc) %s %s: "
                                "refusing the repository" % (
                                    url, "is missing, so it cannot be checked "
                                    "with" if signature is None else
                                    "does not verify with", keyring))
            signatures.append("%s: signature checked with %s"
                              % (base, keyring))
        else:
            signatures.append("%s: signature NOT checked (no keyring: "
                              "give --os-keyring)" % base)
        try:
            root = ElementTree.fromstring(repomd)
        except ElementTree.ParseError as exc:
            raise UserError("%s is not XML (%s): check --file-mirror"
                            % (url, exc))
        primary = [data for data in root.findall(REPO_NS + "data")
                   if data.get("type") == "primary"]
        checksum = primary[0].find(REPO_NS + "checksum") if primary else None
        location = primary[0].find(REPO_NS + "location") if primary else None
        if (checksum is None or location is None or
                checksum.get("type") != "sha256" or
                not full_match(SHA256_HEX_RE, (checksum.text or "").strip())):
            raise UserError("%s names no primary metadata with a sha256: "
                            "bundle needs one" % url)
        href = location.get("href", "")
        sources.append((base, [(apply_file_mirror(base + "/" + href,
                                                  file_mirrors),
                                checksum.text.strip())]))
    return signatures, sources


def rpm_index(client, cache, os_id, arch, sources, insecure):
    """The ArchiveIndex of an RPM distribution's primary metadata."""
    index = ArchiveIndex(os_id, arch)
    for base, ((primary_url, sha),) in sources:
        data = fetch_metadata(client, cache, primary_url, sha,
                              _url_host(primary_url) in insecure)
        for package in _rpm_packages(data, base, ARCHES[arch]["rpm"],
                                     primary_url):
            index.add(package, lambda a, b: rpm_version_key(a["version"]) >
                      rpm_version_key(b["version"]))
    index.index_providers()
    index.minimal = set(name for name in DISTROS[os_id]["core"]
                        if name in index.packages)
    return index


# How each family's archive is read: its signed index (checked every
# run), then its package metadata (read only when the resolution is new).
ARCHIVE_FAMILIES = {"deb": (apt_sources, apt_index),
                    "rpm": (rpm_sources, rpm_index)}


def _rpm_packages(data, base, rpm_arch, where):
    """The packages of a primary.xml for rpm_arch (and noarch)."""
    from xml.etree import ElementTree
    try:
        for _, element in ElementTree.iterparse(io.BytesIO(data)):
            if element.tag != COMMON_NS + "package":
                continue
            package = _rpm_package(element, base, rpm_arch)
            element.clear()
            if package is not None:
                yield package
    except ElementTree.ParseError as exc:
        raise UserError("%s is not valid primary metadata (%s)" % (where, exc))


def _rpm_package(element, base, rpm_arch):
    def text(tag):
        found = element.find(COMMON_NS + tag)
        return (found.text or "").strip() if found is not None else ""
    arch = text("arch")
    checksum = element.find(COMMON_NS + "checksum")
    location = element.find(COMMON_NS + "location")
    version = element.find(COMMON_NS + "version")
    if (arch not in (rpm_arch, "noarch") or checksum is None or
            location is None or version is None or
            checksum.get("type") != "sha256"):
        return None
    fmt = element.find(COMMON_NS + "format")

    def entries(tag):
        found = fmt.find(RPM_NS + tag) if fmt is not None else None
        return [entry.get("name") for entry in
                (found.findall(RPM_NS + "entry") if found is not None else [])
                if entry.get("name")]
    files = [(f.text or "").strip() for f in
             (fmt.findall(COMMON_NS + "file") if fmt is not None else [])]
    size = element.find(COMMON_NS + "size")
    href = location.get("href", "")
    return {"name": text("name"), "arch": arch,
            "version": "%s:%s-%s" % (version.get("epoch") or "0",
                                     version.get("ver"), version.get("rel")),
            # rpmlib() features are rpm's own; rich (boolean) dependencies
            # are left to rpm's own check on the host.
            "requires": [[name] for name in entries("requires")
                         if not name.startswith(("rpmlib(", "("))],
            "provides": entries("provides") + [f for f in files if f],
            "base": base, "location": href, "file": href.rsplit("/", 1)[-1],
            "sha256": (checksum.text or "").strip(),
            "size": int(size.get("package", "0")) if size is not None else 0}


def rpm_version_key(version):
    """A sort key for an RPM epoch:version-release (rpmvercmp's rules
    for the usual cases: numeric and alphabetic segments, ~ sorts first)."""
    epoch, _, rest = version.partition(":")
    key = [int(epoch) if epoch.isdigit() else 0]
    for segment in re.findall(r"~|\d+|[A-Za-z]+", rest):
        key.append((-1, 0, "") if segment == "~" else
                   (1, int(segment), "") if segment.isdigit() else
                   (0, 0, segment))
    return key


def resolve_packages(index, wanted):
    """The packages to bundle, dependencies first: wanted and what they
    need that the minimal install (and its dependencies) lacks.  Each gets
    `needs`, the bundled packages it needs.  A UserError names a package or
    dependency the archive lacks."""
    minimal = set()
    pending = sorted(index.minimal)
    while pending:
        name = pending.pop()
        if name in minimal:
            continue
        minimal.add(name)
        for group in package_requires(index.packages[name]):
            found = [index.provider(c, minimal) for c in group]
            found = [n for n in found if n]
            if found and not any(n in minimal for n in found):
                pending.append(found[0])
    minimal_caps = set()
    for name in minimal:
        minimal_caps.update([name] + index.packages[name]["provides"])
    chosen, order = {}, []

    def visit(name, trail):
        if name in chosen:
            return
        chosen[name] = []
        package = index.packages[name]
        for group in package_requires(package):
            if any(c in minimal_caps for c in group):
                continue
            target = None
            for capability in group:
                target = index.provider(capability, chosen)
                if target:
                    break
            if target is None:
                raise UserError("%s needs %s, which the %s archive lacks: "
                                "check the archive or --file-mirror" % (
                                    " <- ".join([name] + trail[:3]),
                                    " | ".join(group), index.os_id))
            if target != name:
                chosen[name].append(target)
                visit(target, [name] + trail)
        order.append(name)
    for name in wanted:
        if name not in index.packages:
            raise UserError("%s is not in the %s archive for %s: check the "
                            "archive or --file-mirror" % (
                                name, index.os_id, index.arch))
        if name not in minimal:
            visit(name, [])
    return [dict(index.packages[name], needs=sorted(set(chosen[name])),
                 wanted=name in wanted) for name in order]


def package_requires(package):
    """A package's dependencies as groups of alternative names, read from
    its Packages stanza the first time (with the version constraints the
    packages phase checks on the host, and its Pre-Depends)."""
    if "requires" not in package:
        stanza = package["stanza"]
        pre = parse_deb_relations(stanza.get("Pre-Depends"))
        relations = pre + parse_deb_relations(stanza.get("Depends"))
        package["requires"] = [[alt[0] for alt in group]
                               for group in relations]
        package["relations"] = [[relation_text(alt) for alt in group]
                                for group in relations]
        package["pre_depends"] = sorted(set(alt[0] for group in pre
                                            for alt in group))
    return package["requires"]


def wanted_packages(os_id):
    distro = DISTROS[os_id]
    if distro["family"] == "deb":
        return list(DEB_PACKAGES)
    wanted = [distro.get("iptables", "iptables") if name == "iptables" else name
              for name in RPM_PACKAGES] + [distro["ebtables"]]
    return [name for position, name in enumerate(wanted)
            if name not in wanted[:position]]


def archive_url(base, path):
    """The URL of a file the metadata names by its path in the archive,
    quoted as apt quotes it (a pool name may hold a literal %3a)."""
    from urllib.parse import quote
    return base + "/" + quote(path, safe="/+~")


def cross_check_images(images, file_entries, version, arch, cache):
    """(images, image repository): the image table checked against what
    the downloaded kubeadm asks for; kubeadm is the authority, so its names
    win, loudly.  A release newer than the table takes kubeadm's list
    whole, and needs kubeadm to run here."""
    listed = version_facts(version)["listed"]
    repository = version_facts(version)["image_repository"]
    if not kubeadm_runs_here(arch):
        require_kubeadm_list_if_unlisted(version, arch, None)
        return images, repository
    kubeadm = [f for f in file_entries if f["key"] == "kubeadm"][0]
    wanted = kubeadm_image_list(cache.path(kubeadm["sha256"]), version)
    require_kubeadm_list_if_unlisted(version, arch, wanted)
    if not wanted:
        return images, repository
    apiserver = wanted.get("kube-apiserver")
    if not apiserver or not apiserver[0].endswith("/kube-apiserver"):
        raise UserError("kubeadm %s lists no kube-apiserver image: it is not "
                        "that release's kubeadm; check --file-mirror" % version)
    listed_repository = apiserver[0][:-len("/kube-apiserver")]
    if listed_repository != repository:
        log.warning("WARNING: kubeadm %s names its images under %s, the "
                    "release table says %s; bundling kubeadm's", version,
                    listed_repository, repository)
        repository = listed_repository
    for image in images:
        if not image["kubeadm"] or image["name"] not in wanted:
            continue
        name, tag = wanted[image["name"]]
        path = name[len(repository) + 1:] if name.startswith(
            repository + "/") else None
        if path is None:
            raise UserError("kubeadm %s names %s outside %s: it is not a "
                            "release kubeadm" % (version, name, repository))
        if listed and (path, tag) != (image["repository"], image["tag"]):
            log.warning("WARNING: kubeadm %s wants %s:%s, the version table "
                        "says %s:%s; bundling kubeadm's", version, path, tag,
                        image["repository"], image["tag"])
        pull = image["source"][:-len("%s:%s" % (image["repository"],
                                                 str(image["tag"])))]
        image.update({"repository": path, "tag": tag,
                      "ref": "%s:%s" % (name, tag),
                      "source": "%s%s:%s" % (pull, path, tag)})
    known = set(image["name"] for image in images if image["kubeadm"])
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise UserError("kubeadm %s wants images the table does not know: %s"
                        % (version, ", ".join(unknown)))
    return images, repository


def kubeadm_runs_here(arch):
    return host_arch() == arch and sys.platform.startswith("linux")


def require_kubeadm_list_if_unlisted(version, arch, wanted):
    """A release newer than the table is bundled with the images its
    kubeadm lists: refused when that kubeadm cannot run here."""
    facts = version_facts(version)
    if facts["listed"] or wanted:
        return
    raise UserError(
        "Kubernetes %s is newer than the release table (its newest %s release: "
        "%s), and its kubeadm (linux/%s) cannot list its images on this host "
        "(%s/%s): bundle it on a linux/%s host where that kubeadm runs, or "
        "choose a listed release" % (
            version, version[1:].rsplit(".", 1)[0],
            facts["newest_listed"] or "none", arch,
            sys.platform, host_arch(), arch))


def kubeadm_image_list(kubeadm_path, kubernetes_version):
    """{name: (name without tag, tag)} from `kubeadm config images list`,
    or None if it cannot run here (another arch, not Linux, or not a real
    kubeadm)."""
    os.chmod(kubeadm_path, 0o755)
    try:
        result = subprocess.run(
            [kubeadm_path, "config", "images", "list",
             "--kubernetes-version", kubernetes_version],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("kubeadm cannot run here (%s): image list not cross-checked", exc)
        return None
    if result.returncode != 0:
        log.debug("kubeadm config images list failed: %s", result.stderr.strip())
        return None
    found = {}
    for line in result.stdout.split():
        name, sep, tag = line.rpartition(":")
        if (not sep or "/" in tag or not full_match(IMAGE_NAME_RE, name) or
                not full_match(IMAGE_TAG_RE, tag)):
            log.debug("kubeadm listed %r, not an image name: ignored", line)
            continue
        found[name.rsplit("/", 1)[-1]] = (name, tag)
    return found or None


def fetch_images(client, cache, images, arch, jobs, progress):
    """Resolve every registry image's manifest, then fetch every missing
    blob once."""
    fetcher = ImageFetcher(client, cache, arch)
    pulled = [image for image in images if is_registry_image(image)]
    run_pool(jobs, pulled, fetcher.resolve)
    wanted = fetcher.blob_jobs(pulled)
    bar = Progress(sum(size for _, size, _ in wanted.values()), "images",
                   enabled=progress)
    try:
        run_pool(jobs, sorted(wanted.items()), lambda item: fetcher.fetch(
            item[0], item[1][0], item[1][2], bar))
    finally:
        bar.close()
    for image in images:
        if "schema1" in image:
            fetcher.convert_schema1(image)
    for image in images:
        image["manifest_size"] = os.path.getsize(
            cache.path(image["manifest_digest"][7:]))
        image["size"] = image["manifest_size"] + sum(
            os.path.getsize(cache.path(d[7:]))
            for d in [image["config_digest"]] + image["layers"])


def assemble_bundle(name, version, arch, images, file_entries, cache,
                    with_docker, with_containerd=False, os_found=None,
                    image_repository=None, cri_dockerd=None):
    """bundle.json and the list of members: (path, bytes or cache hex, mode).
    image_repository: what kubeadm names its images under (the cross-check's
    answer; the release table's without it)."""
    facts = version_facts(version)
    image_repository = image_repository or facts["image_repository"]
    members = []

    def add(path, mode, data=None, cached=None):
        if data is not None:
            members.append({"path": path, "mode": mode, "data": data,
                            "size": len(data), "sha256": sha256_bytes(data)})
        else:
            members.append({"path": path, "mode": mode, "file": cache.path(cached),
                            "size": os.path.getsize(cache.path(cached)),
                            "sha256": cached, "rehash": cached not in cache.fresh})

    line = FLANNEL_LINES[profile(version)["flannel_line"]]
    flannel_path = os.path.join(script_dir(), MANIFESTS_DIR, line["manifest"])
    try:
        with open(flannel_path, "rb") as handle:
            flannel = handle.read()
        with open(os.path.abspath(__file__), "rb") as handle:
            script = handle.read()
    except (OSError, IOError) as exc:
        raise UserError("cannot read %s: %s: run bundle from the k8s-offline "
                        "folder" % (exc.filename, exc.strerror))
    add("k8s_offline.py", 0o755, data=script)
    add("%s/%s" % (MANIFESTS_DIR, FLANNEL_MANIFEST), 0o644,
        data=render_flannel_line(flannel, images))
    units = [("kubelet.service", KUBELET_SERVICE), ("10-kubeadm.conf", KUBEADM_DROPIN)]
    if cri_dockerd:
        units += [("cri-docker.service", cri_docker_service(images)),
                  ("cri-docker.socket", CRI_DOCKER_SOCKET)]
    if with_docker:
        units += [("docker.service", DOCKER_SERVICE),
                  ("containerd.service", CONTAINERD_SERVICE)]
    if with_containerd:
        units += [("containerd.service", CONTAINERD_LOCAL_SERVICE)]
    for unit, text in units:
        add("%s/%s" % (SYSTEMD_DIR, unit), 0o644, data=text.encode("utf-8"))
    os_meta, os_entries = os_packages_meta(os_found or {})
    for entry in file_entries + os_entries:
        add(entry["path"], entry["mode"], cached=entry["sha256"])
    blobs = set()
    for image in images:
        blobs.update([image["manifest_digest"], image["config_digest"]] +
                     image["layers"])
    for path, data in sorted(image_store_documents(images).items()):
        add(path, 0o644, data=data)
    for digest in sorted(blobs):
        add(_blob_path(digest), 0o644, cached=digest[7:])
    files = dict((m["path"], {"size": m["size"], "sha256": m["sha256"]})
                 for m in members)
    keep = ("name", "kubeadm", "extra", "origin", "repository", "tag", "ref",
            "source", "source_digest", "manifest_digest", "manifest_media_type",
            "config_digest", "layers", "size")
    meta = {
        "format": BUNDLE_FORMAT, "name": name, "tool_version": TOOL_VERSION,
        "kubernetes_version": version, "arch": arch,
        "versions": {"kubernetes": version, "pause": _tag_of(images, "pause"),
                     "etcd": _tag_of(images, "etcd"),
                     "coredns": _tag_of(images, "coredns"),
                     "cni": facts["cni"], "crictl": facts["crictl"],
                     "flannel": facts["flannel"],
                     "flannel-cni-plugin": _tag_of(images, "flannel-cni-plugin",
                                                   kubeadm=False),
                     "docker": DOCKER_STATIC_VERSION if with_docker else None,
                     "cri-dockerd": cri_dockerd,
                     "containerd": facts["containerd"] if with_containerd
                     else None,
                     "runc": facts["runc"] if with_containerd else None},
        "image_repository": image_repository,
        "images": [dict((k, image[k]) for k in keep if k in image)
                   for image in images],
        "files": files,
        "binaries": dict((e["key"], e["path"]) for e in file_entries
                         if e["path"].startswith(BIN_DIR + "/")),
        "archives": dict((e["key"], e["path"]) for e in file_entries
                         if e["path"].startswith(ARCHIVES_DIR + "/")),
        "systemd": dict((unit, "%s/%s" % (SYSTEMD_DIR, unit)) for unit, _ in units),
        "flannel_manifest": "%s/%s" % (MANIFESTS_DIR, FLANNEL_MANIFEST),
        "script": "k8s_offline.py",
        # What vouched for each downloaded file's checksum: the pinned
        # table, the release notes, the publisher's file, --checksum-file.
        "checksum_sources": dict((e["path"], e["checksum_sources"])
                                 for e in file_entries + os_entries),
    }
    if os_meta:
        meta["os_packages"] = os_meta
    return meta, members


def os_packages_meta(found):
    """bundle.json's os_packages and the members and checksum sources of
    every package file."""
    meta, entries = {}, []
    for os_id, (packages, signatures) in sorted(found.items()):
        distro = DISTROS[os_id]
        meta[os_id] = {
            "id": distro["id"], "version_id": distro["version_id"],
            "family": distro["family"], "signatures": list(signatures),
            "packages": [{"name": p["name"], "version": p["version"],
                          "arch": p["arch"], "path": p["path"],
                          "wanted": p["wanted"], "needs": p["needs"],
                          "requires": p["relations"]
                          if distro["family"] == "deb" else [],
                          "pre_depends": p.get("pre_depends", []),
                          "provides": p["provides"]
                          if distro["family"] == "deb" else []}
                         for p in packages]}
        index_name = "Packages" if distro["family"] == "deb" else "primary.xml"
        for package in packages:
            entries.append({"path": package["path"], "sha256": package["sha256"],
                            "mode": 0o644, "checksum_sources": [
                                "%s of %s (signed index: %s)" % (
                                    index_name, os_id, "; ".join(signatures))]})
    return meta, entries


def image_store_documents(images):
    """The OCI index.json, oci-layout and docker manifest.json of images."""
    index = {"schemaVersion": 2, "manifests": []}
    docker = []
    for image in images:
        index["manifests"].append({
            "mediaType": image["manifest_media_type"],
            "digest": image["manifest_digest"], "size": image["manifest_size"],
            "annotations": {"io.containerd.image.name": image["ref"],
                            "org.opencontainers.image.ref.name": image["tag"]}})
        docker.append({"Config": _blob_path(image["config_digest"])[len(IMAGES_DIR) + 1:],
                       "RepoTags": [image["ref"]],
                       "Layers": [_blob_path(d)[len(IMAGES_DIR) + 1:]
                                  for d in image["layers"]]})
    return {
        IMAGES_DIR + "/oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        IMAGES_DIR + "/index.json": canonical_json(index),
        IMAGES_DIR + "/manifest.json": canonical_json(docker),
    }


def _tag_of(images, name, kubeadm=True):
    for image in images:
        if image["name"] == name and image["kubeadm"] == kubeadm:
            return image["tag"]
    return None


def render_flannel_line(text, images):
    """A flannel line's manifest (bytes) naming the bundled images: each
    `image:` line naming one of the line's images by its repository gets
    the bundled ref (one written, so no copy of the manifest goes stale)."""
    refs = dict((image["repository"], image["ref"]) for image in images
                if not image["kubeadm"] and not image.get("extra"))
    lines = text.decode("utf-8").split("\n")
    for number, line in enumerate(lines):
        found = _MANIFEST_IMAGE_RE.match(line)
        if found and found.group(2) in refs:
            lines[number] = found.group(1) + refs[found.group(2)]
    return "\n".join(lines).encode("utf-8")


_MANIFEST_IMAGE_RE = re.compile(r"(\s*(?:-\s*)?image:\s*)([^\s:@]+)\S*\s*\Z")


def cri_docker_service(images):
    """cri-dockerd's unit: Docker's CRI socket for a kubelet with no
    dockershim, its sandbox the bundled pause image."""
    pause = [image["ref"] for image in images
             if image["name"] == "pause" and image["kubeadm"]][0]
    return CRI_DOCKER_SERVICE.replace("{pause}", pause)


def require_bundle_before_writing(meta):
    """bundle.json through the checks verify runs on the hosts, before the
    bundle is written: what they would refuse is refused here, before the
    bundle crosses the air gap."""
    try:
        require_bundle_meta(meta)
    except BundleError as exc:
        raise UserError("verify on the hosts would refuse this bundle (%s): "
                        "change the images or flags that put it there" % exc)


def write_split_bundle(output, partial, name, meta_bytes, members, progress,
                       part_size):
    """(fresh, index path): the bundle as parts of part_size bytes and
    their index, unless those already are it."""
    index_path = output + PARTS_INDEX_SUFFIX
    os.unlink(partial)
    if (_up_to_date(index_path, name, meta_bytes)
            and read_parts_index(index_path)["part_size"] == part_size):
        return False, index_path
    writer = PartsWriter(output, part_size, partial[len(output):])
    try:
        write_bundle(None, name, meta_bytes, members, progress, handle=writer)
        remove_other_form(output, split=True)
        publish_parts(output, writer)
    except BaseException:
        writer.remove()
        raise
    log.info("%d parts of at most %s; `cat %s.[0-9]* > %s` gives the whole "
             "tar", len(writer.parts), human_size(part_size),
             os.path.basename(output), os.path.basename(output))
    return True, index_path


def _up_to_date(output, name, meta_bytes):
    """True if output already is this exact bundle (same bundle.json, every
    member present with its size): a warm re-run then writes nothing."""
    if not os.path.isfile(output):
        return False
    try:
        bundle = Bundle(output)
    except UserError:
        return False
    try:
        with bundle.open_raw(BUNDLE_JSON) as handle:
            if handle.read() != meta_bytes or bundle.top != name:
                return False
        files = bundle.meta["files"]
        return (set(bundle.members) - {BUNDLE_JSON, BUNDLE_JSON_SHA} ==
                set(files) and all(
                bundle.members[p].size == e["size"] for p, e in files.items()))
    finally:
        bundle.close()


class PartsWriter(object):
    """A file object writing a bundle as parts of part_size bytes, each
    hashed on the way, under temporary names until publish_parts()."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __init__(self, output, part_size, temporary_suffix):
        self.output = output
        self.part_size = part_size
        self.suffix = temporary_suffix
        self.parts = []          # [name, temporary path, size, sha256 object]
        self.handle = None
        self.position = 0

    def _next_part(self):
        self._finish_part()
        if len(self.parts) >= MAX_PARTS:
            raise UserError("the bundle needs more than %d parts of %s: give "
                            "a larger --split" % (MAX_PARTS,
                                                  human_size(self.part_size)))
        name = part_name(os.path.basename(self.output), len(self.parts))
        path = os.path.join(os.path.dirname(self.output), name + self.suffix)
        self.handle = open(path, "wb")
        self.parts.append([name, path, 0, hashlib.sha256()])

    def _finish_part(self):
        if self.handle is not None:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            self.handle = None

    def write(self, data):
        view = memoryview(data)
        while len(view):
            if self.handle is None or self.parts[-1][2] == self.part_size:
                self._next_part()
            part = self.parts[-1]
            block = view[:self.part_size - part[2]]
            self.handle.write(block)
            part[3].update(block)
            part[2] += len(block)
            self.position += len(block)
            view = view[len(block):]
        return len(data)

    def tell(self):
        return self.position

    def flush(self):
        if self.handle is not None:
            self.handle.flush()

    def close(self):
        self._finish_part()

    def remove(self):
        """Delete the temporary parts (a failed or unneeded run)."""
        self.close()
        for part in self.parts:
            with contextlib.suppress(OSError):
                os.unlink(part[1])

    def index(self):
        return {"format": PARTS_FORMAT,
                "bundle": os.path.basename(self.output),
                "size": self.position, "part_size": self.part_size,
                "parts": [{"name": name, "size": size, "sha256": digest.hexdigest()}
                          for name, _, size, digest in self.parts]}


def write_bundle(partial, name, meta_bytes, members, progress, handle=None):
    """Stream bundle.json first, then every member, into the .partial file
    (or into handle, such as a PartsWriter)."""
    total = sum(member["size"] for member in members)
    bar = Progress(total, "write", enabled=progress)
    try:
        with (handle or open(partial, "wb")) as handle:
            tar = TarWriter(handle, bar)
            tar.add_dir(name)
            tar.add_bytes("%s/%s" % (name, BUNDLE_JSON), meta_bytes)
            tar.add_bytes("%s/%s" % (name, BUNDLE_JSON_SHA),
                          bundle_json_sha_line(meta_bytes))
            for member in members:
                path = "%s/%s" % (name, member["path"])
                if "data" in member:
                    tar.add_bytes(path, member["data"], member["mode"])
                    bar.update(member["size"])
                else:
                    tar.add_file(path, member["file"], member["sha256"],
                                 member["mode"], rehash=member["rehash"])
            tar.close()
            handle.flush()
            if not isinstance(handle, PartsWriter):   # it syncs each part
                os.fsync(handle.fileno())
    finally:
        bar.close()


def bundle_json_sha_line(meta_bytes):
    return ("%s  %s\n" % (sha256_bytes(meta_bytes), BUNDLE_JSON)).encode("ascii")


def remove_other_form(output, split):
    """A bundle is one .tar or a set of parts, never both under one name:
    remove the other form an earlier run left."""
    if split:
        stale = [output] if os.path.lexists(output) else []
    else:
        stale = [output + PARTS_INDEX_SUFFIX] if os.path.lexists(
            output + PARTS_INDEX_SUFFIX) else []
        stale += existing_parts(output)
    for path in stale:
        log.info("removing %s, left by an earlier run of this output",
                 os.path.basename(path))
        os.unlink(path)


def existing_parts(output):
    """Paths of the parts NAME.tar.NNN beside output."""
    folder, base = os.path.split(output)
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.startswith(base) and
                  full_match(PART_NUMBER_RE, name[len(base):]))


def publish_parts(output, writer):
    """Give the parts their names and write the index last: the old index
    goes first, so no index ever lists parts that are not its own."""
    index_path = output + PARTS_INDEX_SUFFIX
    if os.path.lexists(index_path):
        os.unlink(index_path)
    names = set()
    for name, temporary, _, _ in writer.parts:
        os.rename(temporary, os.path.join(os.path.dirname(output), name))
        names.add(name)
    for path in existing_parts(output):
        if os.path.basename(path) not in names:
            log.info("removing %s, left by an earlier, longer bundle",
                     os.path.basename(path))
            os.unlink(path)
    write_file_atomic(index_path, canonical_json(writer.index()))
    return index_path


def write_whole_bundle(output, partial, name, meta_bytes, members, progress):
    """(fresh, path): the bundle as one .tar, unless output already is it."""
    if _up_to_date(output, name, meta_bytes):
        os.unlink(partial)
        return False, output
    write_bundle(partial, name, meta_bytes, members, progress)
    remove_other_form(output, split=False)
    os.rename(partial, output)
    return True, output


def bundle_output_size(path):
    if path.endswith(PARTS_INDEX_SUFFIX):
        return read_parts_index(path)["size"]
    return os.path.getsize(path)


def warn_if_too_large_for_fat32(output):
    size = os.path.getsize(output)
    if size >= large_bundle_bytes():
        log.warning("WARNING: %s is %s: a FAT32 stick cannot hold a file of "
                    "4 GiB or more, and the copy would fail; run bundle again "
                    "with --split fat32 to write it in parts that fit",
                    output, human_size(size))


def large_bundle_bytes():
    """The size from which bundle warns that a FAT32 stick cannot hold
    its output (K8SO_LARGE_BUNDLE_BYTES sets another, for tests)."""
    value = os.environ.get(LARGE_BUNDLE_ENV, "")
    return int(value) if value.isdigit() else LARGE_BUNDLE_BYTES


# Where images are pulled from when bundling, and the name kubeadm looks
# for them under on the hosts (k8s.gcr.io is kubeadm's default up to 1.24).
DEFAULT_PULL_REPOSITORY = "registry.k8s.io"

KUBE_RELEASE_URL = "https://dl.k8s.io/release/{version}/bin/linux/{arch}/{name}"
CRICTL_URL = ("https://github.com/kubernetes-sigs/cri-tools/releases/"
              "download/{crictl}/crictl-{crictl}-linux-{arch}.tar.gz")
DOCKER_STATIC_VERSION = "19.03.15"
DOCKER_STATIC_URL = ("https://download.docker.com/linux/static/stable/"
                     "{docker_arch}/docker-{docker}.tgz")

# containerd and runc from their upstream static releases (--with-containerd),
# checked against the .sha256sum files published beside them (or a
# --checksum-file naming them).  The unit is k8s-offline's own, written like
# upstream's containerd.service, since upstream publishes no checksum for it.
CONTAINERD_URL = ("https://github.com/containerd/containerd/releases/download/"
                  "v{containerd}/containerd-{containerd}-linux-{arch}.tar.gz")
RUNC_URL = ("https://github.com/opencontainers/runc/releases/download/"
            "v{runc}/runc.{arch}")
RUNC_SUMS_URL = ("https://github.com/opencontainers/runc/releases/download/"
                 "v{runc}/runc.sha256sum")
# cri-dockerd (Docker on 1.24+): Mirantis's release archive, pinned in the
# release table (Mirantis publishes no checksum file).
CRI_DOCKERD_URL = ("https://github.com/Mirantis/cri-dockerd/releases/download/"
                   "v{cri_dockerd}/cri-dockerd-{cri_dockerd}.{arch}.tgz")

# The distributions whose packages `bundle --os ID` carries.  For each: the
# os-release ID and VERSION_ID (its major part for RPM distributions) it
# serves, the package family, the archive's URL per architecture, the apt
# suite and components or the RPM repositories, what a minimal install has,
# and the packages kubeadm and the kubelet need.  The minimal install is
# taken from the metadata: for apt every Priority "required" or Essential
# package and what they depend on (debootstrap's minbase, the smallest
# Debian or Ubuntu: it has no "important" packages); for RPM the names below
# (part of the @core group's mandatory list in comps.xml), again with what
# they depend on.  A smaller minimal set only makes the bundle larger, never
# wrong: the install side installs just what the host lacks.
DEB_PACKAGES = ("conntrack", "socat", "ebtables", "ethtool", "ipset",
                "iptables", "iproute2", "kmod", "procps", "mount",
                "util-linux")
RPM_PACKAGES = ("conntrack-tools", "socat", "ethtool", "ipset", "iptables",
                "iproute", "kmod", "procps-ng", "util-linux")

# kubeadm, kubelet and kubectl are taken from the node release tarball
# where the release table pins its sha512 (as the release notes published
# it), so they are checked against a value the release itself published, and
# against the .sha256 files beside the single binaries.
NODE_TARBALL_URL = "https://dl.k8s.io/{version}/kubernetes-node-linux-{arch}.tar.gz"

MIN_PART_SIZE = 1024 * 1024
# FAT32 cannot hold a file of 4 GiB or more: its largest is 4 GiB - 1 byte.
FAT32_MAX_FILE = 4 * 1024 ** 3 - 1
# bundle warns when its unsplit output reaches this size; the environment
# variable (for tests) sets another threshold in bytes.
LARGE_BUNDLE_BYTES = FAT32_MAX_FILE + 1
LARGE_BUNDLE_ENV = "K8SO_LARGE_BUNDLE_BYTES"

# Images bundled from elsewhere than a registry (--extra-image
# docker-daemon:REF, --extra-image-archive FILE), by bundle.json "origin".
DOCKER_DAEMON_PREFIX = "docker-daemon:"

# Media types of image manifests.
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

MT_DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
MT_DOCKER_SCHEMA1_SIGNED = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws")
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# What `docker save` writes: uncompressed layers, digest = diff_id.
MT_DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"

INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)

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

# Units of the static Docker (--with-docker): its containerd runs as a unit
# of its own, so `--cri containerd` can use it too.  Install mode installs
# these files from the bundle, never from here.
DOCKER_SERVICE = """\
[Unit]
Description=Docker Application Container Engine (static binaries, k8s-offline)
After=network-online.target containerd.service
Wants=network-online.target containerd.service

[Service]
Type=notify
ExecStart=/usr/bin/dockerd --containerd=/run/containerd/containerd.sock
ExecReload=/bin/kill -s HUP $MAINPID
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
Delegate=yes
KillMode=process
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""
CONTAINERD_SERVICE = """\
[Unit]
Description=containerd container runtime (static binaries, k8s-offline)
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/bin/containerd
Type=simple
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
LimitNOFILE=1048576
TasksMax=infinity

[Install]
WantedBy=multi-user.target
"""
# --with-containerd: the unit upstream ships with containerd (its binaries in
# /usr/local/bin, runc in /usr/local/sbin), written here because upstream
# publishes no checksum for it.
# cri-dockerd's units (written here like Mirantis's packaging, which
# publishes no checksum for them): the socket is the kubelet's CRI endpoint
# unix:///var/run/cri-dockerd.sock (/var/run is /run); the service uses the
# bundled pause image as its sandbox ({pause}: its ref in bundle.json).
CRI_DOCKER_SERVICE = """\
[Unit]
Description=cri-dockerd, the CRI for Docker Engine (Mirantis release, k8s-offline)
Documentation=https://mirantis.github.io/cri-dockerd/
After=network-online.target docker.service
Wants=network-online.target
Requires=cri-docker.socket docker.service

[Service]
Type=notify
ExecStart=/usr/bin/cri-dockerd --container-runtime-endpoint fd:// --pod-infra-container-image={pause}
ExecReload=/bin/kill -s HUP $MAINPID
TimeoutSec=0
Restart=always
RestartSec=2
StartLimitBurst=3
StartLimitInterval=60s
LimitNOFILE=infinity
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
Delegate=yes
KillMode=process

[Install]
WantedBy=multi-user.target
"""
CRI_DOCKER_SOCKET = """\
[Unit]
Description=cri-dockerd's CRI socket (k8s-offline)
PartOf=cri-docker.service

[Socket]
ListenStream=/run/cri-dockerd.sock
SocketMode=0660
SocketUser=root
SocketGroup=root

[Install]
WantedBy=sockets.target
"""
CONTAINERD_LOCAL_SERVICE = """\
[Unit]
Description=containerd container runtime (upstream static release, k8s-offline)
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
LimitNOFILE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
"""

# Bumped whenever the conversion's output changes, so conversions cached by
# an older version (version 1 wrote "created": "") are not reused.
SCHEMA1_CONVERSION = 2
# What Go's time.Time reads from JSON (RFC 3339), and the zero time Docker's
# own schema1 pull writes where a v1Compatibility entry has no `created`.
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?"
                        r"(Z|[+-]\d\d:\d\d)\Z")
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
# bundle --os: the most a Release or repomd.xml may be, and primary.xml's
# XML namespaces.
MAX_RELEASE_BYTES = 16 * 1024 * 1024
RESOLUTION_FORMAT = 1            # bump when resolve_packages' answer changes
REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
RPM_NS = "{http://linux.duke.edu/metadata/rpm}"

# Small documents of docker-archive and OCI-archive tars, kept in memory;
# every other member (layers, configs, blobs) streams into the cache.
ARCHIVE_DOCUMENTS = ("manifest.json", "index.json", "oci-layout",
                     "repositories")
MAX_ARCHIVE_MEMBERS = 100000
ARCHIVE_STREAM_BUFSIZE = 16 * 1024         # compressed bytes inflated at once
# --split sizes: 4G, 700M, 1048576 (or fat32).
SPLIT_SIZE_RE = re.compile(r"([0-9]{1,15})([KMGT]?)(?:i?B)?", re.IGNORECASE)

# The documents of a docker-archive or OCI archive (--extra-image-archive),
# as the image-spec and docker save write them: checked before any is used.
MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#\$&^_.+-]{0,126}/"
                           r"[A-Za-z0-9][A-Za-z0-9!#\$&^_.+-]{0,126}")
_ARCHIVE_TEXT = ("match", re.compile(r"[^\x00]{0,4096}", re.S))
_ARCHIVE_NAME = ("match", re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:+-]{0,500}"))
_MEDIA_TYPE = ("match", MEDIA_TYPE_RE)
_ANNOTATIONS = ("map", (re.compile(r"[^\x00-\x1f]{1,256}"), _ARCHIVE_TEXT,
                        256))
_PLATFORM = ("record", ({
    "architecture": ("match", TEXT_RE), "os": ("match", TEXT_RE),
    "variant": ("match", TEXT_RE), "os.version": _ARCHIVE_TEXT,
    "os.features": ("list", (_ARCHIVE_TEXT, 64)),
    "features": ("list", (_ARCHIVE_TEXT, 64))}, ("architecture", "os")))
DESCRIPTOR_SCHEMA = ("record", ({
    "mediaType": _MEDIA_TYPE, "digest": _DIGEST, "size": ("int", None),
    "annotations": _ANNOTATIONS, "urls": ("list", (_ARCHIVE_TEXT, 16)),
    "platform": _PLATFORM, "artifactType": _MEDIA_TYPE,
    "data": _ARCHIVE_TEXT}, ("mediaType", "digest")))
DOCKER_ARCHIVE_SCHEMA = ("list", (("record", ({
    "Config": _ARCHIVE_NAME,
    "RepoTags": ("either", ("list", (("match", IMAGE_REF_RE), 256))),
    "Layers": ("list", (_ARCHIVE_NAME, 1000)),
    "LayerSources": ("map", (DIGEST_RE, DESCRIPTOR_SCHEMA, 1000))},
    ("Config", "Layers"))), 10000))
OCI_INDEX_SCHEMA = ("record", ({
    "schemaVersion": ("const", 2), "mediaType": _MEDIA_TYPE,
    "manifests": ("list", (DESCRIPTOR_SCHEMA, 10000)),
    "annotations": _ANNOTATIONS, "artifactType": _MEDIA_TYPE,
    "subject": DESCRIPTOR_SCHEMA}, ("manifests",)))
OCI_MANIFEST_SCHEMA = ("record", ({
    "schemaVersion": ("const", 2), "mediaType": _MEDIA_TYPE,
    "config": DESCRIPTOR_SCHEMA, "layers": ("list", (DESCRIPTOR_SCHEMA, 1000)),
    "annotations": _ANNOTATIONS, "artifactType": _MEDIA_TYPE,
    "subject": DESCRIPTOR_SCHEMA}, ("config", "layers")))
ARCHIVE_FIX = "give a docker-archive (docker save) or an OCI archive"

MANIFEST_ACCEPT = ", ".join((MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST,
                             MT_DOCKER_MANIFEST, MT_DOCKER_SCHEMA1_SIGNED,
                             MT_DOCKER_SCHEMA1))
RETRY_STATUSES = (429, 500, 502, 503, 504)
HTTP_ATTEMPTS = 5

DOWNLOAD_CHUNK = 1 << 16         # what a kill can lose of a download in flight

DOCKER_HUB_API = "registry-1.docker.io"


def cmd_images(args):
    version = normalize_version(args.kubernetes_version)
    valid_arch(args.arch)
    for image in plan_images(version, args.arch, args.image_repository,
                             extra_image_refs(args)):
        print(image["source"] if is_registry_image(image) else
              "%s:%s" % (image["origin"], image["source"]))
    return 0


class BundleContext(Context):
    """bundle's context, built once from the flags before a byte is fetched
    (every flag checked here): the version, arch, mirrors, the images and
    files planned, the checksums vouched for and the output.  What the
    phases fetch and make goes into .found, one record."""

    command = "bundle"

    def __init__(self, args):
        self.args, self.skip = args, set()
        self.dry_run = bool(getattr(args, "dry_run", False))
        # bundle's output stays what it always was: its phases are logged
        # under -v, and in a dry run, which shows nothing else.
        self.phase_log_level = logging.INFO if self.dry_run else logging.DEBUG
        self.started = time.time()
        self.version = version = normalize_version(args.kubernetes_version)
        self.arch = arch = valid_arch(args.arch)
        version_facts(version)
        self.registry_mirrors = dict(parse_mapping(m, "--registry-mirror")
                                     for m in args.registry_mirror)
        self.file_mirrors = [parse_mapping(m, "--file-mirror")
                             for m in args.file_mirror]
        if args.jobs < 1 or args.jobs > 64:
            raise UserError("bad --jobs %d: give a number from 1 to 64"
                            % args.jobs)
        if not 1 <= args.timeout <= 3600:
            raise UserError("bad --timeout %g: give 1 to 3600 seconds"
                            % args.timeout)
        if not kubeadm_runs_here(arch):
            require_kubeadm_list_if_unlisted(version, arch, None)
        images = plan_images(version, arch, args.image_repository,
                             extra_image_refs(args), kubeadm_lists=True)
        if args.with_docker and args.with_containerd:
            raise UserError("--with-docker and --with-containerd both carry "
                            "containerd: give one of them")
        self.os_ids = valid_os_ids(args.os, arch)
        if args.os_keyring and not os.path.isfile(args.os_keyring):
            raise UserError("--os-keyring %s is not a file: give a keyring "
                            "gpgv reads (gpg --export output)"
                            % args.os_keyring)
        self.cri_dockerd = cri_dockerd_version(version, args.with_docker,
                                               args.with_cri_dockerd)
        self.files = plan_files(version, arch, with_docker=args.with_docker,
                                with_containerd=args.with_containerd,
                                with_cri_dockerd=args.with_cri_dockerd)
        tarball = NODE_TARBALL_URL.format(version=version,
                                          arch=arch).rsplit("/", 1)[1]
        vouched = {}
        self.node_sha512 = version_facts(version)["node_sha512"].get(arch)
        self.node_source = ("release notes (sha512 of %s, pinned table)"
                            % tarball)
        if args.checksum_file:
            checksums, sha512s = read_checksum_file(args.checksum_file)
            self.node_sha512 = sha512s.get(tarball)
            self.node_source = "--checksum-file %s (sha512 of %s)" % (
                args.checksum_file, tarball)
            vouched = dict((name, (hexd, "--checksum-file %s"
                                   % args.checksum_file))
                           for name, hexd in checksums.items())
            log.warning("NOTE: checksums come from %s, not the built-in "
                        "table (%d entries)", args.checksum_file,
                        len(checksums) + len(sha512s))
        self.part_size = parse_split_size(args.split) if args.split else None
        self.name = bundle_name(version, arch)
        self.output = os.path.abspath(args.output or os.path.join(
            "bundle", self.name + ".tar"))
        self.progress = not args.no_progress
        self.found = BundleFound(images=images, vouched=dict(vouched))
        self._seal()

    def close(self):
        pass


class BundleFound(Found):
    """What bundle's phases fetch and make, one record: each phase reads
    what the ones before it found, the report at the end reads it all."""

    __slots__ = (
        "images",            # the images planned, then as pulled
        "vouched",           # {file: (sha256, who vouched for it)}
        "image_repository",  # the one kubeadm's own list names
        "partial",           # the output's partial file, claimed first
        "cache",             # the blob cache
        "client",            # the registry and file client
        "file_entries",      # the files fetched, checked
        "os_found",          # the OS packages fetched, checked
        "meta",              # bundle.json
        "meta_bytes",        # bundle.json as written
        "fresh",             # written now (not up to date already)
        "written",           # the path (or paths) written
    )


def phase_bundle_local(ctx):
    """The images of --extra-image-archive and docker-daemon: refs."""
    found, args = ctx.found, ctx.args
    if ctx.dry_run:
        log.info("  would bundle %s: %d images, %d files", ctx.name,
                 len(found.images), len(ctx.files))
        return
    found.cache = BlobCache(args.cache_dir or default_cache_dir())
    found.client = RegistryClient(
        mirrors=ctx.registry_mirrors, insecure=args.insecure_registry,
        jobs=args.jobs, timeout=args.timeout)
    found.images = add_local_images(found.images, found.cache, ctx.arch,
                                    args.extra_image_archive, ctx.progress)
    if len(found.images) > MAX_BUNDLE_IMAGES:
        raise UserError("%d images: a bundle holds at most %d images "
                        "(verify on the hosts refuses more): bundle the "
                        "rest in a second bundle" % (len(found.images),
                                                    MAX_BUNDLE_IMAGES))
    log.info("bundle %s: %d images, %d files", ctx.name, len(found.images),
             len(ctx.files))


def phase_bundle_binaries(ctx):
    """kubeadm, kubelet and kubectl from the node release tarball."""
    if ctx.dry_run:
        return
    found = ctx.found
    extracted = binaries_from_node_tarball(
        found.client, found.cache, ctx.version, ctx.arch, ctx.node_sha512,
        ctx.file_mirrors, ctx.args, ctx.progress)
    for binary, hexd in sorted(extracted.items()):
        if found.vouched.get(binary, (hexd,))[0] != hexd:
            raise UserError("%s in the release tarball (%s) differs from "
                            "the checksum table (%s): refusing it"
                            % (binary, hexd, found.vouched[binary][0]))
        found.vouched[binary] = (hexd, ctx.node_source)


def phase_bundle_files(ctx):
    """The binaries, archives and units, each checked against its sha256."""
    if ctx.dry_run:
        return
    found = ctx.found
    found.file_entries = fetch_files(found.client, found.cache, ctx.files,
                                     ctx.file_mirrors, found.vouched,
                                     ctx.args, ctx.progress)


def phase_bundle_os_packages(ctx):
    """The OS packages of --os, from the distributions' signed archives."""
    if ctx.dry_run:
        return
    found = ctx.found
    found.os_found = fetch_os_packages(found.client, found.cache, ctx.os_ids,
                                       ctx.arch, ctx.file_mirrors, ctx.args,
                                       ctx.progress)


def phase_bundle_images(ctx):
    """Every image, checked against kubeadm's own list and pulled."""
    if ctx.dry_run:
        return
    found = ctx.found
    found.images, found.image_repository = cross_check_images(
        found.images, found.file_entries, ctx.version, ctx.arch, found.cache)
    fetch_images(found.client, found.cache, found.images, ctx.arch,
                 ctx.args.jobs, ctx.progress)


def phase_bundle_write(ctx):
    """bundle.json and the tar (or its parts), under the final name when
    whole."""
    if ctx.dry_run:
        log.info("  would write %s", ctx.output)
        return
    found, args = ctx.found, ctx.args
    found.meta, members = assemble_bundle(
        ctx.name, ctx.version, ctx.arch, found.images, found.file_entries,
        found.cache, args.with_docker, args.with_containerd, found.os_found,
        image_repository=found.image_repository, cri_dockerd=ctx.cri_dockerd)
    require_bundle_before_writing(found.meta)
    found.meta_bytes = canonical_json(found.meta)
    if ctx.part_size:
        found.fresh, found.written = write_split_bundle(
            ctx.output, found.partial, ctx.name, found.meta_bytes, members,
            ctx.progress, ctx.part_size)
    else:
        found.fresh, found.written = write_whole_bundle(
            ctx.output, found.partial, ctx.name, found.meta_bytes, members,
            ctx.progress)


def cmd_bundle(args):
    """Pull, verify and pack everything; the bundle appears only when whole."""
    ctx = BundleContext(args)
    if ctx.dry_run:
        return run_workflow(ctx, BUNDLE_PHASES)
    found = ctx.found
    found.partial = _claim_output(ctx.output)
    try:
        run_workflow(ctx, BUNDLE_PHASES)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(found.partial)
        raise
    meta, images, written = found.meta, found.images, found.written
    total = sum(entry["size"] for entry in meta["files"].values())
    log.info("%s %s (%s, %d images) in %.1f s, fetched %s",
             "wrote" if found.fresh else "up to date, unchanged:", written,
             human_size(bundle_output_size(written)), len(images),
             time.time() - ctx.started, human_size(found.client.bytes_fetched))
    if not ctx.part_size:
        warn_if_too_large_for_fat32(ctx.output)
    log.debug("payload %d bytes", total)
    for os_id, entry in sorted(meta.get("os_packages", {}).items()):
        print("--os %s: %d packages; %s" % (os_id, len(entry["packages"]),
                                            "; ".join(entry["signatures"])))
    print("checksums of the downloaded files, and what vouched for them:")
    for path, sources in sorted(meta["checksum_sources"].items()):
        print("  %s: %s" % (path, "; ".join(sources)))
    print("bundle.json sha256: %s  (compare it with what verify prints on "
          "the far side)" % sha256_bytes(found.meta_bytes))
    return 0


def _node_tarball_pinned(ctx):
    return bool(ctx.node_sha512)


# Always whole: a bundle leaves out no phase (no --skip-phases, no `bundle
# phase NAME`); --dry-run prints them and fetches nothing.
BUNDLE_PHASES = (
    Phase("local", "images from archives and the local Docker daemon",
          phase_bundle_local),
    Phase("binaries", "kubeadm, kubelet, kubectl from the node tarball",
          phase_bundle_binaries, _node_tarball_pinned),
    Phase("files", "the binaries, archives and units", phase_bundle_files),
    Phase("os-packages", "the OS packages of --os", phase_bundle_os_packages),
    Phase("images", "every image, cross-checked and pulled",
          phase_bundle_images),
    Phase("write", "bundle.json and the tar, whole or not at all",
          phase_bundle_write),
)


# ===========================================================================
# Slice install (master and join)
# ===========================================================================

def build_context(args, role):
    """The run context of master or join: the flags, then join's join file
    and the image repository it names."""
    return NodeContext(args, role, settle=settle_join if role in (
        "worker", "control-plane") else None)


def settle_join(ctx):
    """What a join decides before it starts: the join facts, and the image
    repository the join file names (unless --image-repository is given)."""
    info = load_join_info(ctx, ctx.bundle)
    settled = {"join_info": info}
    if not ctx.image_repository_flag and info.get("image_repository"):
        settled["image_repository"] = info["image_repository"]
    return settled


def load_join_info(ctx, bundle):
    """The join facts from --apiserver/--token/--discovery-token-ca-cert-hash
    or a join file, checked against the bundle; UserError if unusable."""
    if any(ctx.join_flags):
        info, source = join_info_from_flags(ctx, bundle), "the command line"
    else:
        info, source = read_join_file(ctx, bundle)
    if ctx.certificate_key:
        info["certificate_key"] = ctx.certificate_key
    require_join_fields(info, source)
    expires = info.get("token_expires")
    if expires and expires < now():
        raise UserError("the join token in %s expired at %s: run `k8s_offline.py "
                        "token` on the master for a new join file" % (
                            source, _utc(expires)))
    if ctx.role == "control-plane":
        require_certificate_key(ctx, info, source)
    return info


def join_info_from_flags(ctx, bundle):
    """The join facts of --apiserver/--token/--discovery-token-ca-cert-hash."""
    if not all(ctx.join_flags):
        raise UserError("--apiserver, --token and "
                        "--discovery-token-ca-cert-hash go together: give "
                        "all three, or a join file")
    apiserver, token, ca_hash = ctx.join_flags
    return {"api_server_endpoint": apiserver, "token": token,
            "discovery_token_ca_cert_hash": ca_hash,
            "kubernetes_version": bundle.kubernetes_version,
            "arch": bundle.arch, "from_flags": True}


def read_join_file(ctx, bundle):
    """(join facts, path) of --join-file, or of the join file beside the
    bundle or in the fallback place, made for this bundle."""
    candidates = [ctx.join_file] if ctx.join_file else [
        os.path.join(bundle_folder(bundle.path), JOIN_FILE_NAME),
        ctx.host.path(FALLBACK_JOIN_FILE)]
    path = next((c for c in candidates if os.path.lexists(c)), None)
    if path is None:
        raise UserError("no join file at %s: copy %s from the master beside "
                        "the bundle, or give --join-file PATH, or --apiserver "
                        "--token --discovery-token-ca-cert-hash" % (
                            " or ".join(candidates), JOIN_FILE_NAME))
    raw = read_regular_file(path, "the join file", MAX_JOIN_FILE_BYTES)
    with contextlib.suppress(OSError):
        if os.stat(path).st_mode & stat.S_IWOTH:
            ctx.warn("the join file %s is world-writable (a FAT32 stick keeps "
                     "no file modes): anyone could have changed it, and its "
                     "token and key are readable to all; keep it off the "
                     "stick and give --join-file PATH" % path)
    try:
        info = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UserError("the join file %s is not valid JSON: copy it again "
                        "from the master or run `token` there" % path)
    if not isinstance(info, dict):
        raise UserError("the join file %s is not a join file: run `token` "
                        "on the master for a new one" % path)
    for field in ("kubernetes_version", "arch"):
        theirs, ours = info.get(field), bundle.meta.get(field)
        if theirs != ours:
            raise UserError("the join file %s is for %s %s but the bundle is "
                            "%s: use the bundle the master was made from" % (
                                path, field.replace("_", " "), theirs, ours))
    return info, path


def require_join_fields(info, source):
    """Every field of the join facts against its grammar, before use: they
    go into kubeadm's config and containerd's."""
    unknown = sorted(set(info) - set(JOIN_FIELDS))
    if unknown:
        raise UserError("the join file %s has the unknown field %s: run "
                        "`token` on the master for a new one" % (source,
                                                                 unknown[0]))
    try:
        valid_endpoint(info.get("api_server_endpoint"), "API server endpoint")
    except UserError as exc:
        raise UserError("%s in %s" % (exc, source))
    if not full_match(TOKEN_RE, info.get("token")):
        raise UserError("bad token %r in %s: a token looks like abcdef."
                        "0123456789abcdef; run `token` on the master for one"
                        % (info.get("token"), source))
    if not full_match(DIGEST_RE, info.get("discovery_token_ca_cert_hash")):
        raise UserError("bad CA hash %r in %s: it looks like sha256:<64 hex>; "
                        "run `token` on the master for one" % (
                            info.get("discovery_token_ca_cert_hash"), source))
    key = info.get("certificate_key")
    if key is not None and not full_match(SHA256_HEX_RE, key):
        raise UserError("bad certificate key %r in %s: it is 64 hex digits; "
                        "run `token` on the master for one" % (key, source))
    repository = info.get("image_repository")
    if repository is not None and not is_image_repository(repository):
        raise UserError("bad image repository %r in %s: use a registry and "
                        "path such as k8s.gcr.io; run `token` on the master "
                        "for a new join file" % (repository, source))
    nodes = info.get("control_plane_nodes")
    if nodes is not None and (not isinstance(nodes, list) or not all(
            full_match(NODE_NAME_RE, node) for node in nodes)):
        raise UserError("bad control_plane_nodes %s in %s: a list of node "
                        "names; run `token` on the master for a new join file"
                        % (_short_json(nodes), source))
    if not isinstance(info.get("from_flags", False), bool):
        raise UserError("bad from_flags in %s: run `token` on the master for "
                        "a new join file" % source)
    for field in ("format", "token_expires", "certificate_key_expires",
                  "created"):
        value = info.get(field)
        if value is not None and (type(value) is not int or value < 0):
            raise UserError("bad %s %s in %s: a whole number; run `token` on "
                            "the master for a new join file"
                            % (field, _short_json(value), source))


def require_certificate_key(ctx, info, source):
    """A control-plane join needs a well-formed, unexpired certificate key
    (one given by --certificate-key is taken as fresh)."""
    key = info.get("certificate_key")
    if not key:
        raise UserError("joining as a control-plane node needs a "
                        "certificate key: run `k8s_offline.py token` on the "
                        "master (or give --certificate-key)")
    if not full_match(SHA256_HEX_RE, key):
        raise UserError("bad certificate key %r: it is 64 hex digits; run "
                        "`token` on the master for one" % (key,))
    key_expires = info.get("certificate_key_expires")
    if key_expires and key_expires < now() and not ctx.certificate_key:
        raise UserError("the certificate key in %s expired at %s: run "
                        "`k8s_offline.py token` on the master for a new "
                        "join file" % (source, _utc(key_expires)))


# -- phase: verify ----------------------------------------------------------

def phase_verify(ctx):
    """Check every byte of the bundle and that it fits this host.

    Nothing on the host changes before the bundle is known to be whole.
    """
    bundle = ctx.bundle
    supported_version(bundle.kubernetes_version)
    arch = host_arch()
    if bundle.arch != arch:
        raise UserError("the bundle is for %s but this host is %s: use a "
                        "bundle made with --arch %s" % (bundle.arch, arch, arch))
    verify_bundle(bundle, progress=ctx.progress)
    for unit in units_needed(bundle):
        unit_path(bundle, unit)
    log.info("  bundle %s: Kubernetes %s %s, every file checked",
             bundle.path, bundle.kubernetes_version, bundle.arch)


def units_needed(bundle):
    """The unit files install mode may install from this bundle."""
    names = ["kubelet.service", "10-kubeadm.conf"]
    for adapter in RUNTIMES.values():
        if adapter.bundled(bundle):
            names += [unit for unit in adapter.units if unit not in names]
    if bundle.meta.get("archives", {}).get("cri-dockerd"):
        names += list(RUNTIMES["cri-dockerd"].binary_units)
    return names


def unit_path(bundle, name):
    """Where the bundle keeps a systemd unit; BundleError if it has none."""
    relpath = bundle.meta.get("systemd", {}).get(name)
    if not relpath:
        raise BundleError("the bundle has no %s: rebuild it with this version "
                          "of k8s_offline.py" % name)
    return relpath


# -- phase: packages --------------------------------------------------------

def phase_packages(ctx):
    """Install the OS packages kubeadm needs that this host lacks, from
    the bundle (dpkg -i or rpm -Uvh, dependencies first).

    Nothing installed is ever upgraded or removed; a bundle without
    packages for this distribution is refused only when the host lacks a
    tool they would have supplied.
    """
    carried = ctx.bundle.meta.get("os_packages") or {}
    if not carried:
        log.info("  the bundle carries no OS packages (bundle --os adds them)")
        return
    os_release = read_os_release(ctx.host)
    os_id = os_id_of(os_release)
    if os_id not in carried:
        lacking = host_lacks_tools(ctx.host)
        name = " ".join(part for part in os_release if part) or "unknown"
        if not lacking:
            log.info("  this host (%s) has every tool the packages supply; "
                     "the bundle's packages are for %s", name,
                     ", ".join(sorted(carried)))
            return
        if os_id is None:
            raise UserError("this host (%s in %s) lacks %s and no --os covers "
                            "it (the bundle has %s): install %s with the "
                            "host's own packages" % (
                                name, OS_RELEASE, ", ".join(lacking),
                                ", ".join(sorted(carried)), ", ".join(lacking)))
        raise UserError("this host is %s and lacks %s, but the bundle carries "
                        "packages only for %s: rebuild it with --os %s" % (
                            os_id, ", ".join(lacking),
                            ", ".join(sorted(carried)), os_id))
    entry = carried[os_id]
    family = entry["family"]
    installed, provided = host_packages(ctx, family)
    todo = packages_to_install(entry, installed, provided)
    if not todo:
        log.info("  every package of %s the bundle carries that kubeadm needs "
                 "is installed", os_id)
        return
    log.info("  installing %d package%s for %s: %s", len(todo),
             "" if len(todo) == 1 else "s", os_id,
             ", ".join("%s %s" % (p["name"], p["version"]) for p in todo))
    if not ctx.dry_run:
        ctx.refuse_what_no_package_fixes()
    stage = "%s/%s" % (PACKAGES_STAGE_DIR, os_id)
    made = [folder for folder in (STATE_DIR, PACKAGES_STAGE_DIR, stage)
            if not ctx.host.isdir(folder)]
    try:
        for folder in made:
            ctx.host.makedirs(folder, 0o700)
        install_staged(ctx, family, todo, stage)
    finally:
        ctx.host.remove(stage)
        for folder in reversed([f for f in made if f != stage]):
            if not ctx.host.listdir(folder):
                ctx.host.remove(folder)
    if ctx.dry_run:
        return
    installed, _ = host_packages(ctx, family)
    missing = [p["name"] for p in todo if p["name"] not in installed]
    if missing:
        raise UserError("%s is still not installed after %s: see its output "
                        "in %s" % (missing[0], "dpkg -i" if family == "deb"
                                   else "rpm -Uvh", INSTALL_LOG))


def read_os_release(host):
    """(ID, VERSION_ID) from /etc/os-release; empty strings if unknown."""
    fields = {}
    for line in (host.read(OS_RELEASE) or "").splitlines():
        key, sep, value = line.partition("=")
        if not sep or not re.match(r"^[A-Z_]+\Z", key.strip()):
            continue
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            continue
        fields[key.strip()] = words[0] if words else ""
    return fields.get("ID", ""), fields.get("VERSION_ID", "")


def os_id_of(os_release):
    """The --os ID that covers a host's (ID, VERSION_ID), or None: RPM
    distributions by their major version (Rocky 8.9 is rocky-8)."""
    distro_id, version = os_release
    for os_id, distro in sorted(DISTROS.items()):
        wanted = (version if distro["family"] == "deb"
                  else version.split(".", 1)[0])
        if distro["id"] == distro_id and distro["version_id"] == wanted:
            return os_id
    return None


def host_lacks_tools(host):
    return [tool for tool in PACKAGED_TOOLS if not host.which(tool)]


def host_packages(ctx, family):
    """({installed package: version}, names they and what they provide)."""
    if family == "deb":
        argv = ["dpkg-query"]
        if ctx.host.root != "/":
            argv.append("--admindir=" + ctx.host.path("/var/lib/dpkg"))
        argv += ["-W", "-f", "${Package}\t${Status}\t${Version}\t"
                 "${Provides}\n"]
    else:
        argv = (["rpm"] + _root_args(ctx, family) +
                ["-qa", "--qf", "%{NAME}\tinstalled\t%{EPOCHNUM}:%{VERSION}-"
                 "%{RELEASE}\t\n"])
    result = ctx.runner.run(argv, change=False, check=False)
    if not result.ok and family == "rpm":
        raise UserError("cannot list the installed packages (%s): %s" % (
            " ".join(argv[:2]), last_line(result.output()) or "no output"))
    versions, provided = {}, set()
    for line in (result.stdout or "").splitlines():
        fields = line.split("\t")
        if len(fields) < 4 or fields[1].split()[-1:] != ["installed"]:
            continue
        versions[fields[0]] = fields[2]
        provided.add(fields[0])
        provided.update(group[0][0] for group in parse_deb_relations(fields[3]))
    return versions, provided


def _root_args(ctx, family):
    """The package tools' options to work on --root instead of /."""
    if ctx.host.root == "/":
        return []
    if family == "deb":
        return ["--root=" + ctx.host.root]
    return ["--root", ctx.host.root]


def packages_to_install(entry, installed, provided):
    """The bundled packages this host lacks that the wanted ones need, in
    the bundle's dependency order; a UserError when a dependency (with its
    version) is met by neither the host nor the bundle, so dpkg never
    starts what it cannot finish.  (rpm checks its own: rpm --test.)"""
    packages = dict((p["name"], p) for p in entry["packages"])
    needed, pending = set(), [p["name"] for p in entry["packages"]
                              if p["wanted"] and p["name"] not in installed]
    while pending:
        name = pending.pop()
        if name in needed or name in installed or name not in packages:
            continue
        needed.add(name)
        pending.extend(packages[name]["needs"])
    todo = [p for p in entry["packages"] if p["name"] in needed]
    versions = dict(installed)
    versions.update((p["name"], p["version"]) for p in todo)
    coming = set(provided)
    for package in todo:
        coming.update([package["name"]] + package["provides"])
    for package in todo:
        for text in package["requires"]:
            group = [alt for relation in text
                     for found in parse_deb_relations(relation)[:1]
                     for alt in found]
            if group and not any(deb_relation_holds(versions[name], op, version)
                       if name in versions else (op is None and name in coming)
                       for name, op, version in group):
                raise UserError(
                    "%s needs %s, which neither this host nor the bundle has%s"
                    ": install it first, or rebuild the bundle with --os %s "
                    "from the archive this host uses" % (
                        package["name"], " | ".join(text),
                        " (this host has %s)" % ", ".join(
                            "%s %s" % (name, versions[name])
                            for name, _, _ in group if name in versions)
                        if any(name in versions for name, _, _ in group)
                        else "", os_id_of((entry["id"], entry["version_id"]))))
    return todo


def install_staged(ctx, family, todo, stage):
    """Copy each package to stage, hashed on the way (only the verified
    bytes are installed), then dpkg -i them (batches) or rpm -Uvh them
    (after rpm -Uvh --test, which changes nothing if a dependency fails)."""
    staged = {}
    for package in todo:
        target = "%s/%s" % (stage, package["path"].rsplit("/", 1)[1])
        ctx.host.install_member(target, ctx.bundle, package["path"], 0o600)
        staged[package["name"]] = ctx.host.path(target)
    if family == "deb":
        for batch in install_batches(todo):
            ctx.runner.run(["dpkg"] + _root_args(ctx, family) + ["-i"] +
                           [staged[p["name"]] for p in batch],
                           timeout=1800, what="dpkg -i")
        return
    argv = (["rpm"] + _root_args(ctx, family) + ["-Uvh"] +
            [staged[p["name"]] for p in todo])
    if not ctx.dry_run:
        ctx.runner.run(argv + ["--test"], change=False, timeout=600,
                       what="rpm -Uvh --test (the dependency check)")
    ctx.runner.run(argv, timeout=1800, what="rpm -Uvh")


def install_batches(todo):
    """todo (dependencies first) cut where a package pre-depends on one
    before it: dpkg must have configured that one, so it is installed by
    an earlier dpkg -i."""
    batches, current = [], []
    for package in todo:
        if set(package["pre_depends"]) & set(p["name"] for p in current):
            batches.append(current)
            current = []
        current.append(package)
    return batches + [current] if current else batches


# -- phase: preflight -------------------------------------------------------

def phase_preflight(ctx):
    """Check the host, giving the reason and the fix for each problem.

    Only checks: the fixes this tool makes itself (kernel modules, sysctls,
    swap with --disable-swap) happen in the host phase, after every check
    has passed.
    """
    errors = []
    for check in PREFLIGHT_CHECKS:
        log.debug("  preflight check %s (kubeadm: %s)", check.name,
                  ", ".join(check.kubeadm) or "none")
        for found in check.run(ctx):
            if found.warning:
                ctx.warn(problem_text(found))
            else:
                errors.append(problem_text(found))
    if errors:
        for text in errors[1:]:
            log.error("preflight: %s", text)
        if ctx.dry_run:
            log.error("preflight: %s", errors[0])
            log.info("  (dry run: continuing to show the remaining phases)")
            return
        raise UserError(errors[0])
    log.info("  preflight passed (%d warning%s)", len(ctx.found.warnings),
             "" if len(ctx.found.warnings) == 1 else "s")


# -- phase: host ------------------------------------------------------------

def phase_host(ctx):
    """Kernel modules, sysctls, swap, iptables mode, and with their flags
    the firewalld ports and SELinux's mode, now and at boot."""
    host, runner = ctx.host, ctx.runner
    if ctx.disable_swap:
        if active_swaps(host):
            runner.run(["swapoff", "-a"], what="swapoff")
        fstab = host.read(FSTAB)
        if fstab is not None:
            host.write(FSTAB, disable_swap_in_fstab(fstab), 0o644)
    host.write(MODULES_FILE, "".join(m + "\n" for m in KERNEL_MODULES))
    for module in KERNEL_MODULES:
        if not module_loaded(host, module):
            result = runner.run(["modprobe", module], check=False)
            if not result.ok:
                text = "cannot load the kernel module %s (%s)" % (
                    module, last_line(result.output()) or "modprobe failed")
                if module == "br_netfilter":
                    raise UserError(text + ": install the kernel's modules "
                                    "package or build it in, then run again")
                ctx.warn(text + ": Docker's overlay2 storage needs it")
    host.write(SYSCTL_FILE, "".join("%s = %s\n" % pair for pair in SYSCTLS))
    wrong = ["%s=%s" % (key, value) for key, value in SYSCTLS
             if read_sysctl(host, key) != value]
    if wrong:
        runner.run(["sysctl", "-w"] + wrong, what="sysctl")
    if ctx.open_firewall and (
            ctx.found.firewalld or firewalld_active(ctx)):
        for rule in firewall_rules(ctx):
            runner.run(["firewall-cmd", "--permanent", "--add-port=" + rule],
                       what="firewall-cmd --add-port=" + rule)
        runner.run(["firewall-cmd", "--reload"], what="firewall-cmd --reload")
    if ctx.selinux_permissive:
        if selinux_enforcing(host):
            runner.run(["setenforce", "0"], what="setenforce 0")
        config = host.read(SELINUX_CONFIG)
        if config is not None:
            host.write(SELINUX_CONFIG, selinux_config_permissive(config))
    if ctx.iptables_legacy:
        backend = iptables_backend(runner)
        if backend and backend[1] == "nf_tables":
            for tool in ("iptables", "ip6tables"):
                runner.run(["update-alternatives", "--set", tool,
                            "/usr/sbin/%s-legacy" % tool],
                           what="update-alternatives %s" % tool)


def disable_swap_in_fstab(text):
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if (len(fields) >= 3 and not line.lstrip().startswith("#") and
                fields[2] == "swap"):
            line = "#" + line + "  # disabled by k8s-offline"
        lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") or lines else "")


def module_loaded(host, name):
    """Loaded or built in: what the module provides is there."""
    if host.isdir("/sys/module/" + name):
        return True
    if name == "br_netfilter" and host.isdir("/proc/sys/net/bridge"):
        return True
    if name == "overlay" and re.search(r"\soverlay$",
                                       host.read("/proc/filesystems", ""), re.M):
        return True
    return bool(re.search(r"^%s\s" % re.escape(name),
                          host.read("/proc/modules", ""), re.M))


def read_sysctl(host, key):
    value = host.read(sysctl_path(key))
    return value.strip() if value is not None else None


def sysctl_path(key):
    return "/proc/sys/" + key.replace(".", "/")


def selinux_config_permissive(text):
    """/etc/selinux/config with SELINUX=permissive at boot: an `enforcing`
    (or unreadable) SELINUX line is replaced by a line written here, a
    `permissive` or `disabled` one is left alone, a missing one added;
    every other line is kept as it is."""
    lines, found = [], False
    for line in text.splitlines():
        match = re.match(r"^\s*SELINUX\s*=\s*[\"']?([A-Za-z]*)", line)
        if match:
            found = True
            if match.group(1).lower() not in ("permissive", "disabled"):
                line = "SELINUX=permissive"
        lines.append(line)
    if not found:
        lines.append("SELINUX=permissive")
    return "\n".join(lines) + "\n"


# -- phase: runtime ---------------------------------------------------------

def phase_runtime(ctx):
    """Have the container runtime running, with the kubelet's cgroup driver.

    Docker's driver is detected and the kubelet follows it; containerd's
    config (and cri-dockerd's unit) points the sandbox at the bundled pause
    image, and from 1.22 containerd uses the systemd driver.
    """
    plan = runtime_plan(ctx)
    host, runner, adapter = ctx.host, ctx.runner, ctx.adapter
    prof = profile(ctx.bundle.kubernetes_version)
    services = adapter.starts[plan]
    if plan == "install":
        log.info("  installing the bundled %s", adapter.name)
        install_static_runtime(ctx, [unit for unit in adapter.units
                                     if unit in units_needed(ctx.bundle)])
    extra = install_runtime_binaries(ctx, adapter)
    changed = adapter.configure(
        ctx, pause_image_name(ctx.bundle, ctx.image_repository), prof)
    if changed or extra:
        runner.run(["systemctl", "daemon-reload"])
    for service in services:
        runner.run(["systemctl", "enable", "--now", service],
                   what="starting " + service)
    if changed and adapter.services[-1] not in services:
        runner.run(["systemctl", "restart", adapter.services[-1]],
                   what="restarting " + adapter.services[-1])
    if services or changed:
        wait_for(ctx, lambda: adapter.running(ctx), adapter.name + " starting")
    endpoint = "unix://" + adapter.socket(ctx)
    host.write(CRICTL_CONFIG, yaml_mapping((
        ("runtime-endpoint", endpoint), ("image-endpoint", endpoint),
        ("timeout", 10))))
    driver = ctx.found.cgroup_driver = adapter.cgroup_driver(ctx)
    if prof["cgroup_driver"] and driver != prof["cgroup_driver"]:
        ctx.warn("%s uses the %s cgroup driver, Kubernetes %s expects %s: "
                 "the kubelet follows %s now; set %s in %s and restart it" % (
                     adapter.cri, driver,
                     ctx.bundle.kubernetes_version, prof["cgroup_driver"],
                     driver, adapter.driver_setting,
                     adapter.config_file))
    log.info("  %s running, cgroup driver %s (the kubelet uses the same)",
             adapter.name, driver)
    host.save_state(cri=ctx.cri, cgroup_driver=driver)


def install_runtime_binaries(ctx, adapter):
    """The binaries a runtime adds from the bundle (cri-dockerd) and their
    units; True when one changed."""
    archives = ctx.bundle.meta.get("archives", {})
    changed = False
    for key, target in adapter.binaries:
        if not archives.get(key):
            continue
        name = target.rsplit("/", 1)[1]
        files = _extract_files(ctx, archives[key], (name,))
        if name not in files:
            raise BundleError("%s has no %s: rebuild the bundle"
                              % (archives[key], name))
        changed = ctx.host.write(target, files[name], 0o755) or changed
        for unit in adapter.binary_units:
            changed = ctx.host.write(RUNTIME_UNITS[unit], bundled_unit(
                ctx.bundle, unit)) or changed
    return changed


def install_static_runtime(ctx, units):
    """Unpack the bundle's static runtime and install its units: Docker's
    binaries (dockerd, containerd, runc, ctr, ...) into /usr/bin, or
    upstream containerd's bin/ into /usr/local/bin with runc as
    /usr/local/sbin/runc, where the bundle's containerd unit runs them."""
    STATIC_RUNTIME_INSTALLERS[bundled_runtime(ctx.bundle)](ctx)
    for unit in units:
        ctx.host.write(RUNTIME_UNITS[unit], bundled_unit(ctx.bundle, unit))
    if "docker.service" in units and not ctx.host.exists(DOCKER_DAEMON_JSON):
        ctx.host.write(DOCKER_DAEMON_JSON, canonical_json({
            "exec-opts": ["native.cgroupdriver=systemd"],
            "log-driver": "json-file", "log-opts": {"max-size": "100m"},
            "storage-driver": "overlay2"}))
    ctx.runner.run(["systemctl", "daemon-reload"])


def install_upstream_containerd(ctx):
    archives = ctx.bundle.meta["archives"]
    for name, data in sorted(_extract_files(
            ctx, archives["containerd"], under="bin").items()):
        ctx.host.write(CONTAINERD_BIN_DIR + "/" + name, data, 0o755)
    ctx.host.install_member(RUNC_PATH, ctx.bundle, archives["runc"], 0o755)


def install_docker_binaries(ctx):
    for name, data in sorted(_extract_files(
            ctx, ctx.bundle.meta["archives"]["docker"]).items()):
        ctx.host.write(BIN_INSTALL_DIR + "/" + name, data, 0o755)


def _extract_files(ctx, relpath, wanted=None, under=None):
    """{basename: bytes} of the regular files in a bundled .tgz (only those
    in its folder `under`, when given).

    The archive is read whole through its hash check first and unpacked
    from memory, so only verified bytes are unpacked."""
    data = ctx.bundle.read_member(relpath)
    found = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                name = member.name.split("/")[-1]
                if not full_match(ARCHIVE_FILE_RE, name):
                    continue
                if (under is not None and
                        member.name.lstrip("./").split("/")[:-1] != [under]):
                    continue
                if wanted is None or name in wanted:
                    found[name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError("%s is not a readable .tgz (%s): rebuild the bundle"
                          % (relpath, exc))
    return found


def bundled_unit(bundle, name):
    """The bytes of a systemd unit the bundle carries, verified with the rest
    of the bundle: installed units are never a second copy from the code."""
    return bundle.read_member(unit_path(bundle, name), MAX_IMAGE_JSON_BYTES)


def pause_image_name(bundle, image_repository):
    for image in bundle.meta.get("images", []):
        if image.get("name") == "pause":
            return image_target(image, image_repository)
    return "%s/pause:%s" % (image_repository,
                            bundle.meta.get("versions", {}).get("pause", "3.1"))


def image_target(image, image_repository):
    """The name an image is loaded under: kubeadm's images move with
    --image-repository, the others keep the name they were bundled with."""
    if image.get("kubeadm"):
        return "%s/%s:%s" % (image_repository, image["repository"],
                             image["tag"])
    return image["ref"]


# -- phase: install ---------------------------------------------------------

def phase_install(ctx):
    """Install kubeadm, kubelet, kubectl, the CNI plugins, crictl and the
    kubelet's units, and enable the kubelet."""
    host, meta, bundle = ctx.host, ctx.bundle.meta, ctx.bundle
    changed = []
    for name, relpath in sorted(meta["binaries"].items()):
        target = BIN_INSTALL_DIR + "/" + name
        if host.install_member(target, bundle, relpath, 0o755):
            changed.append(target)
    archives = meta.get("archives", {})
    if archives.get("cni"):
        host.makedirs(CNI_BIN_DIR)
        for name, data in sorted(_extract_files(ctx, archives["cni"]).items()):
            if host.write(CNI_BIN_DIR + "/" + name, data, 0o755):
                changed.append(CNI_BIN_DIR + "/" + name)
    if archives.get("crictl"):
        files = _extract_files(ctx, archives["crictl"], ("crictl",))
        if "crictl" not in files:
            raise BundleError("%s has no crictl: rebuild the bundle"
                              % archives["crictl"])
        if host.write(BIN_INSTALL_DIR + "/crictl", files["crictl"], 0o755):
            changed.append(BIN_INSTALL_DIR + "/crictl")
    unit_changed = False
    targets = kubelet_unit_files(profile(bundle.kubernetes_version)["unit_dir"])
    for name, target in sorted(targets.items()):
        if host.write(target, bundled_unit(bundle, name)):
            unit_changed = True
            changed.append(target)
    for stale in host.state().get("units") or []:
        if stale not in targets.values() and host.exists(stale):
            log.info("  removing %s, this tool's copy for another "
                     "Kubernetes: it would override %s", stale,
                     targets["kubelet.service"])
            host.remove(stale)
            unit_changed = True
    host.save_state(units=sorted(targets.values()))
    host.makedirs(CNI_CONF_DIR)
    if unit_changed:
        ctx.runner.run(["systemctl", "daemon-reload"], what="systemctl "
                       "daemon-reload")
    ctx.runner.run(["systemctl", "enable", "kubelet"], what="enabling kubelet")
    log.info("  %d file%s installed or updated", len(changed),
             "" if len(changed) == 1 else "s")


# -- phase: images ----------------------------------------------------------

def phase_images(ctx):
    """Load the images this node's role needs from the bundle into the
    runtime, under the names kubeadm looks for; images already there with
    the same ID are left alone.  Where the runtime pins images (containerd's
    io.cri-containerd.pinned label), every bundled one is pinned, so the
    kubelet's image GC never removes what an air-gapped node cannot pull."""
    bundle, adapter = ctx.bundle, ctx.adapter
    role = "worker" if ctx.role == "worker" else "master"
    wanted = [(image, image_target(image, ctx.image_repository))
              for image in bundle.images_for_role(role)]
    missing = adapter.missing(ctx, wanted)
    if missing:
        load_images(ctx, adapter, wanted, missing)
    else:
        log.info("  all %d images are already loaded", len(wanted))
    if adapter.pins_images:
        pinned = adapter.pin(ctx, [target for _, target in wanted])
        log.info("  %d of %d images newly pinned (%s): the kubelet's image "
                 "GC keeps them", pinned, len(wanted), PINNED_LABEL)


def load_images(ctx, adapter, wanted, missing):
    """Load missing [(image, target)] in up to the adapter's load_streams
    streams at once: the runtime unpacks each on its own core."""
    bundle = ctx.bundle
    size = image_stream_size(bundle, [image for image, _ in missing])
    streams = image_streams(bundle, missing, adapter.load_streams,
                            not adapter.streams_share_layers)
    log.info("  loading %d of %d images (%s) into %s in %d stream%s: %s",
             len(missing), len(wanted), human_size(size), adapter.cri,
             len(streams), "" if len(streams) == 1 else "s",
             ", ".join(target for _, target in missing))
    progress = Progress(size, "images",
                        enabled=ctx.progress and not ctx.dry_run)
    failures, loaded = [], []

    def load(targets):
        try:
            load_stream(ctx, adapter, targets, progress)
            loaded.extend(target for _, target in targets)
        except BaseException as exc:          # raised again below
            failures.append(exc)
    try:
        threads = [threading.Thread(target=load, args=(targets,))
                   for targets in streams[1:]]
        for thread in threads:
            thread.daemon = True
            thread.start()
        load(streams[0])
        for thread in threads:
            thread.join()
    finally:
        progress.close()
    if failures:
        if loaded and not ctx.dry_run:
            # A refused bundle changes nothing: what the other streams
            # loaded in this run goes too.
            log.info("  removing the %d images the other streams loaded",
                     len(loaded))
            adapter.unload(ctx, loaded)
        raise failures[0]
    if ctx.dry_run:
        return
    wrong = [target for image, target in adapter.missing(ctx, missing)]
    if wrong:
        raise UserError("%s did not load %s from the bundle: check the "
                        "runtime's log" % (adapter.cri, wrong[0]))


def load_stream(ctx, adapter, targets, progress):
    """One stream of [(image, target)] into the runtime."""
    writer = IMAGE_WRITERS[adapter.image_format]
    ctx.runner.run_piped(
        adapter.load_argv(ctx),
        lambda stream: writer(stream, ctx.bundle, targets, progress),
        what=adapter.load_what)


def image_streams(bundle, targets, most, together=True):
    """[(image, target)] split into at most `most` lists, the largest
    groups first onto the least-loaded list (by the bytes of their layers).
    together: images that share a layer stay in one list (else each image
    is a group, and a shared layer may go in two streams)."""
    owner = {}
    groups = []
    for item in targets if together else ():
        found = [group for group in groups
                 if any(owner.get(layer) is group
                        for layer in item[0]["layers"])]
        group = found[0] if found else []
        if not found:
            groups.append(group)
        for other in found[1:]:       # the item joins groups: merge them
            group.extend(other)
            groups.remove(other)
            for image, _ in other:
                for layer in image["layers"]:
                    owner[layer] = group
        group.append(item)
        for layer in item[0]["layers"]:
            owner[layer] = group
    if not together:
        groups = [[item] for item in targets]

    def weight(items):
        return sum(bundle.size(_blob_path(layer))
                   for layer in set(l for image, _ in items
                                    for l in image["layers"]))
    streams = [[] for _ in range(max(1, min(most, len(groups))))]
    loads = [0] * len(streams)
    for group in sorted(groups, key=weight, reverse=True):
        least = loads.index(min(loads))
        streams[least].extend(group)
        loads[least] += weight(group)
    order = dict((id(item), n) for n, item in enumerate(targets))
    return [sorted(stream, key=lambda item: order[id(item)])
            for stream in streams if stream]


def image_stream_size(bundle, images):
    seen = set()
    total = 0
    for image in images:
        for digest in ([image["manifest_digest"], image["config_digest"]] +
                       list(image["layers"])):
            relpath = _blob_path(digest)
            if relpath not in seen:
                seen.add(relpath)
                total += bundle.size(relpath)
    return total


def write_docker_archive(stream, bundle, targets, progress):
    """A docker-archive of [(image, target)] onto stream, read from the
    bundle as it goes: manifest.json plus the blobs it names.  The gzip
    layers go as they are: inflating them here cost more CPU than
    dockerd's own inflate (tests/bench/bench_image_load.py)."""
    manifest = [{"Config": _blob_path(image["config_digest"])[len(IMAGES_DIR) + 1:],
                 "RepoTags": [target],
                 "Layers": [_blob_path(d)[len(IMAGES_DIR) + 1:]
                            for d in image["layers"]]}
                for image, target in targets]
    tar = tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT)
    with _broken_on_error(tar):
        seen = set()
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode("utf-8"))
        for image, _ in targets:
            for digest in [image["config_digest"]] + list(image["layers"]):
                _add_blob(tar, bundle, digest, progress, seen)
    tar.close()


@contextlib.contextmanager
def _broken_on_error(tar):
    """On an error mid-stream, mark the tar stream closed: nothing more (no
    end-of-archive blocks) is written, so the reader sees a cut archive."""
    try:
        yield
    except BaseException:
        tar.closed = True
        tar.fileobj.closed = True
        raise


def _add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _add_blob(tar, bundle, digest, progress, seen):
    relpath = _blob_path(digest)
    if relpath in seen:
        return
    seen.add(relpath)
    info = tarfile.TarInfo(relpath[len(IMAGES_DIR) + 1:])
    info.size = bundle.size(relpath)
    info.mode = 0o644
    info.mtime = 0
    with bundle.open(relpath) as handle:
        tar.addfile(info, _CountingReader(handle, progress))


class _CountingReader(object):
    def __init__(self, handle, progress):
        self.handle = handle
        self.progress = progress

    def read(self, size=-1):
        block = self.handle.read(size)
        self.progress.update(len(block))
        return block


def write_oci_layout(stream, bundle, targets, progress):
    """An OCI image layout of [(image, target)] onto stream, the index
    naming each manifest by its target (what containerd imports it as)."""
    index = {"schemaVersion": 2, "manifests": []}
    for image, target in targets:
        index["manifests"].append({
            "mediaType": image.get("manifest_media_type", MT_DOCKER_MANIFEST),
            "digest": image["manifest_digest"],
            "size": bundle.size(_blob_path(image["manifest_digest"])),
            "annotations": {"io.containerd.image.name": target,
                            "org.opencontainers.image.ref.name": target}})
    tar = tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT)
    with _broken_on_error(tar):
        seen = set()
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps(index).encode("utf-8"))
        for image, _ in targets:
            for digest in ([image["manifest_digest"], image["config_digest"]] +
                           list(image["layers"])):
                _add_blob(tar, bundle, digest, progress, seen)
    tar.close()


# The image stream each runtime loads, by the adapter's image_format.
IMAGE_WRITERS = {"docker-archive": write_docker_archive,
                 "oci-layout": write_oci_layout}


# -- phase: init ------------------------------------------------------------

def phase_init(ctx):
    """kubeadm init from a generated config file (output in
    /var/log/kubeadm-init.log).

    A finished init is left alone; one that failed half way is reset and
    run again, so a re-run continues.
    """
    host = ctx.host
    state = host.state()
    if state.get("init") == "done" and host.exists(ADMIN_CONF):
        log.info("  the control plane was initialised by an earlier run")
        return
    if state.get("init") == "started" or existing_cluster_files(host):
        reset_partial(ctx, "kubeadm init")
    key = None
    if ctx.upload_certs:
        key = binascii.hexlify(os.urandom(32)).decode("ascii")
    config = kubeadm_init_config(ctx, key)
    host.makedirs(STATE_DIR, 0o700)
    host.write(INIT_CONFIG, config, 0o600)
    host.save_state(role=ctx.role, init="started",
                    kubernetes_version=ctx.bundle.kubernetes_version,
                    arch=ctx.bundle.arch, pod_cidr=ctx.pod_cidr,
                    image_repository=ctx.image_repository, node=node_name(ctx),
                    certificate_key=key,
                    certificate_key_expires=(int(now()) + CERT_KEY_TTL_SECONDS)
                    if key else None)
    argv = ["kubeadm", "init", "--config", INIT_CONFIG]
    if key:
        argv.append("--upload-certs")
    argv += ignore_preflight_args(ctx)
    run_kubeadm_init(ctx, argv, kubeadm_error_line,
                     "; fix the cause and run master again")
    host.save_state(init="done")


def reset_partial(ctx, what):
    log.info("  an earlier %s did not finish: undoing it with kubeadm reset "
             "first", what)
    argv = ["kubeadm", "reset", "-f"]
    ctx.runner.run(argv, what="kubeadm reset")


def kubeadm_init_config(ctx, certificate_key=None):
    api = profile(ctx.bundle.kubernetes_version)["kubeadm_api"]
    docs, extra = CONFIG_RENDERERS[api]["init"](ctx, certificate_key)
    return json_documents(docs + extra)


def kubeadm_init_documents(ctx, certificate_key=None):
    """The kubeadm init config, as [dict] (plus the extra documents), in
    the shape of kubeadm.k8s.io/v1beta2 and v1beta3 (the same for every
    field written here)."""
    apis = profile(ctx.bundle.kubernetes_version)
    driver = ensure_cgroup_driver(ctx)
    address = advertise_address(ctx)
    init = {"apiVersion": apis["kubeadm_api"], "kind": "InitConfiguration",
            "localAPIEndpoint": {"advertiseAddress": address,
                                 "bindPort": API_PORT},
            "nodeRegistration": node_registration(ctx, driver)}
    if certificate_key:
        init["certificateKey"] = certificate_key
    cluster = {"apiVersion": apis["kubeadm_api"], "kind": "ClusterConfiguration",
               "kubernetesVersion": ctx.bundle.kubernetes_version,
               "imageRepository": ctx.image_repository,
               "networking": {"podSubnet": ctx.pod_cidr,
                              "serviceSubnet": str(ctx.service_network),
                              "dnsDomain": CLUSTER_DOMAIN},
               "apiServer": {"certSANs": sorted(set([address, node_name(ctx)]))}}
    dns_repository = coredns_image_repository(ctx)
    if dns_repository:
        cluster["dns"] = {"imageRepository": dns_repository}
    if ctx.control_plane_endpoint:
        cluster["controlPlaneEndpoint"] = ctx.control_plane_endpoint
    docs = [init, cluster]
    extra, kinds = ctx.extra_documents, ctx.extra_kinds
    if "KubeletConfiguration" in kinds:
        theirs = kinds["KubeletConfiguration"].get("cgroupDriver")
        if theirs is not None and theirs != driver:
            raise UserError("the KubeletConfiguration in %s sets cgroupDriver "
                            "%s but %s uses %s: remove it or set %s" % (
                                ctx.extra_config_path, theirs, ctx.cri,
                                driver, driver))
    else:
        kubelet = {"apiVersion": apis["kubelet_api"],
                   "kind": "KubeletConfiguration", "cgroupDriver": driver}
        kubelet.update(ctx.adapter.kubelet_settings())
        if cgroup_v1_allowed(ctx):
            kubelet["failCgroupV1"] = False
        docs.append(kubelet)
    return docs, extra


def node_registration(ctx, driver):
    """nodeRegistration of init and join: the node's name, the runtime's
    socket (a URL from 1.24) and the kubelet's flags: its cgroup driver,
    and the bundled pause image where the kubelet still has the flag."""
    prof = profile(ctx.bundle.kubernetes_version)
    args = {"cgroup-driver": driver}
    if prof["pod_infra_flag"]:
        args["pod-infra-container-image"] = pause_image_name(
            ctx.bundle, ctx.image_repository)
    return {"name": node_name(ctx),
            "criSocket": runtime_endpoint(ctx, ctx.adapter,
                                          ctx.bundle.kubernetes_version),
            "kubeletExtraArgs": args}


def coredns_image_repository(ctx):
    """ClusterConfiguration.dns.imageRepository, when the bundled CoreDNS
    lives in a sub-path (coredns/coredns from 1.21): kubeadm adds that
    sub-path under its default repository only, so it is named."""
    for image in ctx.bundle.meta.get("images", []):
        if image.get("name") == "coredns" and image.get("kubeadm"):
            folder = image["repository"].rpartition("/")[0]
            if folder:
                return ctx.image_repository + "/" + folder
    return None


def cgroup_v1_allowed(ctx):
    """--allow-cgroup-v1 where the kubelet refuses cgroup v1 (1.35 on)."""
    return (ctx.allow_cgroup_v1 and
            profile(ctx.bundle.kubernetes_version)["fail_cgroup_v1"])


def kubeadm_init_documents_v1beta4(ctx, certificate_key=None):
    docs, extra = kubeadm_init_documents(ctx, certificate_key)
    return [as_v1beta4(doc) for doc in docs], extra


def as_v1beta4(doc):
    """A kubeadm document in v1beta4's shape: every extraArgs and
    kubeletExtraArgs a list of {name, value}, the join discovery timeout
    under timeouts.  Other kinds are left as they are."""
    if not doc.get("apiVersion", "").startswith("kubeadm.k8s.io/"):
        return doc
    doc = json.loads(json.dumps(doc))
    registration = doc.get("nodeRegistration") or {}
    places = [(registration, "kubeletExtraArgs")] + [
        (doc.get(component) or {}, "extraArgs") for component in (
            "apiServer", "controllerManager", "scheduler")] + [
        ((doc.get("etcd") or {}).get("local") or {}, "extraArgs")]
    for holder, key in places:
        if isinstance(holder.get(key), dict):
            holder[key] = [{"name": name, "value": value} for name, value
                           in sorted(holder[key].items())]
    discovery = doc.get("discovery") or {}
    if "timeout" in discovery:
        doc.setdefault("timeouts", {})["discovery"] = discovery.pop("timeout")
    return doc


def ensure_cgroup_driver(ctx):
    """The runtime's cgroup driver, detected when the runtime phase was
    skipped (the kubelet must never use another)."""
    if not ctx.found.cgroup_driver:
        ctx.found.cgroup_driver = ctx.adapter.cgroup_driver(ctx)
    return ctx.found.cgroup_driver


def advertise_address(ctx):
    """--apiserver-advertise-address, or the default route's address."""
    if ctx.advertise_address:
        return ctx.advertise_address
    if ctx.found.advertise_address:
        return ctx.found.advertise_address
    iface = default_route_interface(ctx.host)
    for name, address in host_addresses(ctx.runner):
        if name == iface:
            ctx.found.advertise_address = str(address.ip)
            return ctx.found.advertise_address
    raise UserError("cannot find this host's address (no default route): use "
                    "--apiserver-advertise-address IP")


def default_route_interface(host):
    for line in host.read("/proc/net/route", "").splitlines()[1:]:
        fields = line.split()
        if (len(fields) > 7 and fields[1] == "00000000" and
                fields[7] == "00000000"):
            return fields[0]
    return None


def json_documents(docs):
    return "".join(("---\n" if index else "") +
                   json.dumps(doc, indent=2, sort_keys=True) + "\n"
                   for index, doc in enumerate(docs))


def ignore_preflight_args(ctx):
    """--ignore-preflight-errors: the user's list, and with
    --allow-cgroup-v1 on 1.35+ kubeadm's SystemVerification check (it
    refuses a cgroup v1 host)."""
    value = ctx.ignore_preflight_errors
    if cgroup_v1_allowed(ctx):
        log.info("  --allow-cgroup-v1: kubeadm's SystemVerification "
                 "preflight error is ignored and the kubelet gets "
                 "failCgroupV1: false")
        if not value:
            return ["--ignore-preflight-errors=" + CGROUP_V1_CHECK]
        value += "," + CGROUP_V1_CHECK
    return ["--ignore-preflight-errors", value] if value else []


def kubeadm_error_line(text):
    """The line of kubeadm's output that says what went wrong: its last
    [ERROR ...] or "error execution phase" line, not the footer that points
    to --v=5 for a stack trace."""
    lines = [line.strip() for line in (text or "").splitlines()
             if line.strip() and "to see the stack trace" not in line.lower()]
    for line in reversed(lines):
        if line.startswith("[ERROR") or line.lower().startswith("error"):
            return line
    return lines[-1] if lines else ""


# -- phase: network ---------------------------------------------------------

def phase_network(ctx):
    """Apply the bundled flannel manifest with the pod network filled in;
    with --allow-pods-on-master, remove the master taint."""
    meta = ctx.bundle.meta
    relpath = meta.get("flannel_manifest") or (MANIFESTS_DIR + "/" +
                                               FLANNEL_MANIFEST)
    try:
        text = ctx.bundle.read_member(relpath, MAX_IMAGE_JSON_BYTES).decode(
            "utf-8")
    except UnicodeDecodeError:
        raise BundleError("the bundled flannel manifest is not UTF-8 text: "
                          "rebuild the bundle")
    pod_cidr = ctx.pod_cidr
    rendered = render_flannel(text, pod_cidr, flannel_images(ctx.bundle))
    ctx.host.makedirs(STATE_DIR, 0o700)
    ctx.host.write(FLANNEL_RENDERED, rendered, 0o644)
    ctx.runner.run(ctx.kubectl("apply", "-f", FLANNEL_RENDERED),
                   what="kubectl apply (flannel)", timeout=120)
    if ctx.allow_pods_on_master:
        for taint in profile(ctx.bundle.kubernetes_version)["master_taint"]:
            result = ctx.runner.run(ctx.kubectl(
                "taint", "nodes", node_name(ctx), taint + "-"), check=False)
            if not result.ok and "not found" not in result.output():
                raise UserError("removing the master taint failed: %s"
                                % last_line(result.output()))


def render_flannel(text, pod_cidr, refs):
    """The bundled flannel manifest with our pod network and the bundled
    images: each `image:` line naming flannel gets the bundled ref of its
    image (refs: {image name: ref}; flannel-cni-plugin for the v0.28 line's
    init container, flannel for the rest); a line naming a bundled ref
    already is kept."""
    if FLANNEL_NETWORK_TOKEN not in text:
        raise BundleError("the bundled flannel manifest has no %s: rebuild the "
                          "bundle" % FLANNEL_NETWORK_TOKEN)
    network = str(ipaddress.ip_network(u"%s" % pod_cidr, strict=True))
    text = text.replace(FLANNEL_NETWORK_TOKEN, '"Network": %s'
                        % json.dumps(network))

    def bundled(match):
        named = match.group(2)
        if named in refs.values():
            return match.group(0)
        kind = ("flannel-cni-plugin" if "flannel-cni-plugin" in named and
                "flannel-cni-plugin" in refs else "flannel")
        return match.group(1) + refs[kind]
    text, count = re.subn(r"(?m)^(\s*(?:-\s*)?image:\s*)(\S*flannel\S*)[ \t]*$",
                          bundled, text)
    if not count:
        raise BundleError("the bundled flannel manifest names no flannel "
                          "image: rebuild the bundle")
    return text


def flannel_images(bundle):
    """{name: ref} of the bundled flannel images (flannel and, on the
    v0.28 line, flannel-cni-plugin)."""
    refs = dict((image["name"], image["ref"])
                for image in bundle.meta.get("images", [])
                if image.get("name") in ("flannel", "flannel-cni-plugin"))
    if "flannel" not in refs:
        raise BundleError("the bundle has no flannel image: rebuild it")
    return refs


# -- phase: join file -------------------------------------------------------

def phase_join_file(ctx):
    """Write the join file next to the bundle (mode 0600) and print the
    join commands for workers and control-plane nodes."""
    state = ctx.host.state()
    upload = bool(ctx.upload_certs or state.get("certificate_key"))
    info = make_join_info(ctx, upload, ctx.bundle.kubernetes_version,
                          ctx.bundle.arch)
    path = ctx.join_file or default_join_file(ctx, ctx.bundle.path)
    write_join_file(ctx, path, info)
    print_join_commands(ctx, path, info)


# -- phase: join ------------------------------------------------------------

def phase_join(ctx):
    """kubeadm join from a generated config file (output in
    /var/log/kubeadm-join.log); a half-done join is reset first."""
    host = ctx.host
    state = host.state()
    if state.get("join") == "done" and host.exists(KUBELET_CONF):
        log.info("  this node joined in an earlier run")
        return
    if state.get("join") == "started" or existing_cluster_files(host):
        reset_partial(ctx, "kubeadm join")
    config = kubeadm_join_config(ctx, ctx.join_info)
    host.makedirs(STATE_DIR, 0o700)
    host.write(JOIN_CONFIG, config, 0o600)
    host.save_state(role=ctx.role, join="started", node=node_name(ctx),
                    kubernetes_version=ctx.bundle.kubernetes_version,
                    arch=ctx.bundle.arch, image_repository=ctx.image_repository,
                    pod_cidr=None)
    argv = (["kubeadm", "join", "--config", JOIN_CONFIG] +
            ignore_preflight_args(ctx))
    host.makedirs(os.path.dirname(KUBEADM_JOIN_LOG))
    give_up = now() + STALE_NODE_WAIT
    while True:
        ctx.found.kubeadm_started = now()
        ctx.found.kubeadm_started_by = "kubeadm join"
        result = ctx.runner.run(argv, timeout=1800, check=False,
                                tee=host.path(KUBEADM_JOIN_LOG))
        if result.ok:
            break
        stale = stale_ready_node(result.output())
        if not stale or now() + STALE_NODE_RETRY > give_up:
            raise UserError(explain_join_failure(result.output()))
        log.info("  the cluster still lists node %s as Ready (reset moments "
                 "ago?): trying again in %d s, for at most %d s", stale,
                 STALE_NODE_RETRY, STALE_NODE_WAIT)
        sleep(STALE_NODE_RETRY)
        reset_partial(ctx, "kubeadm join")
    host.save_state(join="done")


def kubeadm_join_documents(ctx, info):
    """The kubeadm join config as [dict] (v1beta2 and v1beta3)."""
    driver = ensure_cgroup_driver(ctx)
    api = profile(ctx.bundle.kubernetes_version)["kubeadm_api"]
    join = {"apiVersion": api, "kind": "JoinConfiguration",
            "discovery": {"bootstrapToken": {
                "token": info["token"],
                "apiServerEndpoint": info["api_server_endpoint"],
                "caCertHashes": [info["discovery_token_ca_cert_hash"]]}},
            "nodeRegistration": node_registration(ctx, driver)}
    if ctx.role == "control-plane":
        join["controlPlane"] = {
            "localAPIEndpoint": {"advertiseAddress": advertise_address(ctx),
                                 "bindPort": API_PORT},
            "certificateKey": info["certificate_key"]}
    return [join]


def kubeadm_join_config(ctx, info):
    api = profile(ctx.bundle.kubernetes_version)["kubeadm_api"]
    return json_documents(CONFIG_RENDERERS[api]["join"](ctx, info))


def kubeadm_join_documents_v1beta4(ctx, info):
    return [as_v1beta4(doc) for doc in kubeadm_join_documents(ctx, info)]


def stale_ready_node(output):
    """The node name when kubeadm refused to join because the cluster still
    has a Ready Node of that name, else None."""
    match = re.search(r'a Node with name "([^"]+)" and status "Ready" already '
                      r'exists', output or "")
    return match.group(1) if match else None


def explain_join_failure(output):
    text = output or ""
    lowered = text.lower()
    if ("kubeadm-certs" in lowered or "certificate key" in lowered or
            "decrypt" in lowered):
        return ("the certificate key was refused (uploaded certificates expire "
                "after 2 hours): run `k8s_offline.py token` on the master for a "
                "new join file")
    if (("token id" in lowered and "invalid" in lowered) or
            "jws signature" in lowered or "unauthorized" in lowered):
        return ("the join token was refused (tokens expire after 24 hours): run "
                "`k8s_offline.py token` on the master for a new join file")
    node = stale_ready_node(text)
    if node:
        return ("the cluster still has a Ready node named %s (kubeadm refuses "
                "to join under its name): on a master run `k8s_offline.py "
                "remove-node %s`, then join again" % (node, node))
    return "kubeadm join failed: %s: the full output is in %s" % (
        kubeadm_error_line(text) or "no output", KUBEADM_JOIN_LOG)


KUBEADM_JOIN_LOG = "/var/log/kubeadm-join.log"

BIN_INSTALL_DIR = "/usr/bin"
# Where the runtime phase installs the bundle's runtime units.
RUNTIME_UNITS = dict((unit, "/etc/systemd/system/" + unit) for unit in (
    "docker.service", "containerd.service", "cri-docker.service",
    "cri-docker.socket"))
# What the bundle's static runtime unpacks, by what it carries.
STATIC_RUNTIME_INSTALLERS = {"docker": install_docker_binaries,
                             "containerd": install_upstream_containerd}
CONTAINERD_BIN_DIR = "/usr/local/bin"      # --with-containerd, as upstream
RUNC_PATH = "/usr/local/sbin/runc"
OS_RELEASE = "/etc/os-release"
PACKAGES_STAGE_DIR = STATE_DIR + "/packages"
# The commands the bundle's OS packages supply: a host that has them all
# needs none of the packages, whatever its distribution.
PACKAGED_TOOLS = ("conntrack", "socat", "ebtables", "ethtool", "ipset",
                  "iptables", "ip", "tc", "modprobe", "sysctl", "mount",
                  "nsenter")


CRICTL_CONFIG = "/etc/crictl.yaml"
MODULES_FILE = "/etc/modules-load.d/k8s-offline.conf"
SYSCTL_FILE = "/etc/sysctl.d/k8s-offline.conf"
FSTAB = "/etc/fstab"

API_PORT = 6443

KERNEL_MODULES = ("br_netfilter", "overlay")
SYSCTLS = (("net.bridge.bridge-nf-call-iptables", "1"),
           ("net.ipv4.ip_forward", "1"))

# Values that reach config files and command lines, each matched whole
# (re.fullmatch: a pattern ending in `$` would let a trailing newline in).
TOKEN_RE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")

ARCHIVE_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

JOIN_CONFIG = STATE_DIR + "/kubeadm-join.json"
FLANNEL_RENDERED = STATE_DIR + "/kube-flannel.yml"

FLANNEL_NETWORK_TOKEN = '"Network": "10.244.0.0/16"'

JOIN_FIELDS = ("format", "kubernetes_version", "arch", "token_expires",
               "image_repository", "control_plane_nodes", "certificate_key",
               "certificate_key_expires", "created", "api_server_endpoint",
               "token", "discovery_token_ca_cert_hash", "from_flags")

# kubeadm join refuses the name of a Node the cluster lists as Ready; a node
# reset moments ago stays Ready for the node monitor's grace period (40 s by
# default), so join tries again for a bounded while.
STALE_NODE_WAIT = 90
STALE_NODE_RETRY = 15

# The kubeadm config renderers, by the kubeadm config API of the run's
# profile: init's documents ([dict], plus the extra ones) and join's.
CONFIG_RENDERERS = {
    "kubeadm.k8s.io/v1beta2": {"init": kubeadm_init_documents,
                               "join": kubeadm_join_documents},
    "kubeadm.k8s.io/v1beta3": {"init": kubeadm_init_documents,
                               "join": kubeadm_join_documents},
    "kubeadm.k8s.io/v1beta4": {"init": kubeadm_init_documents_v1beta4,
                               "join": kubeadm_join_documents_v1beta4},
}

MASTER_PHASES = (
    Phase("verify", "check every byte of the bundle", phase_verify),
    Phase("packages", "install the OS packages this host lacks (bundle --os)",
          phase_packages),
    Phase("preflight", "check the host; the reason and fix of each problem",
          phase_preflight),
    Phase("host", "kernel modules, sysctls, swap, firewall, SELinux",
          phase_host),
    Phase("runtime", "have the container runtime running", phase_runtime),
    Phase("install", "kubeadm, kubelet, kubectl, CNI plugins, crictl, units",
          phase_install),
    Phase("images", "load the role's images from the bundle", phase_images),
    Phase("init", "kubeadm init", phase_init),
    Phase("kubeconfig", "admin.conf for root and the sudo user",
          phase_kubeconfig),
    Phase("network", "apply the bundled flannel manifest", phase_network),
    Phase("wait", "wait for a Ready node, its pods, the control plane's "
          "health and CoreDNS", phase_wait),
    Phase("join-file", "write the join file, print the join commands",
          phase_join_file),
)
JOIN_PHASES = MASTER_PHASES[:7] + (
    Phase("join", "kubeadm join", phase_join),
    Phase("kubeconfig", "admin.conf for root and the sudo user "
          "(control-plane nodes)", phase_kubeconfig, is_control_plane),
    Phase("wait", "wait for a Ready node and the pods on it (and a "
          "control plane's health)", phase_wait),
)


def cmd_master(args):
    only = only_phase(args)
    ctx = build_context(args, "master")
    return run_workflow(ctx, MASTER_PHASES, only)


def cmd_join(args):
    only = only_phase(args)
    ctx = build_context(args, "control-plane" if args.control_plane
                        else "worker")
    return run_workflow(ctx, JOIN_PHASES, only)


# ===========================================================================
# Slice reset
# ===========================================================================

def confirm_reset(args):
    if args.yes or args.dry_run:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise UserError("reset removes the cluster from this host and needs "
                        "confirmation: rerun with --yes")
    sys.stderr.write("This removes Kubernetes and its data from this host. "
                     "Type yes to go on: ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise UserError("reset cancelled: nothing was changed")


# -- phase: reset kubeadm ---------------------------------------------------

def phase_reset_kubeadm(ctx):
    """kubeadm reset -f: stops the kubelet, removes the static pods,
    etcd's data and the certificates.  A node that joined a cluster first
    reports itself NotReady with its own credentials, so a join under its
    name right after is neither refused nor fooled by the old Node."""
    if not ctx.host.which("kubeadm"):
        log.info("  kubeadm is not installed: nothing to reset")
        return
    argv = ["kubeadm", "reset", "-f"]
    state = ctx.host.state()
    if (state.get("role") in ("worker", "control-plane") and
            ctx.host.exists(KUBELET_CONF)):
        leave_cluster(ctx, state.get("node") or node_name(ctx))
    if state.get("cri"):
        version = state.get("kubernetes_version") or DEFAULT_KUBERNETES_VERSION
        argv += ["--cri-socket", runtime_endpoint(ctx, runtime_adapter(
            state["cri"], version), version)]
    result = ctx.runner.run(argv, check=False, timeout=600)
    if not result.ok:
        ctx.warn("kubeadm reset failed (%s): cleaning up the rest anyway"
                 % last_line(result.output()))


def leave_cluster(ctx, name):
    """Report this node NotReady with the kubelet's credentials (a node may
    update its own status, not delete itself), the kubelet stopped first:
    else the cluster keeps the old Node Ready for its grace period (40 s),
    kubeadm join (1.18 on) refuses the name and a wait could take the old
    Ready for the new one.  A warning when the cluster cannot be reached."""
    ctx.runner.run(["systemctl", "stop", "kubelet"], check=False,
                   what="systemctl stop kubelet")
    kubectl = ["kubectl", "--kubeconfig", KUBELET_CONF]
    if ctx.dry_run:
        log.info("  would report node %s NotReady (kubectl replace --raw "
                 "/api/v1/nodes/%s/status)", name, name)
        return
    node, error = _kubectl_json(ctx, ["get", "node", name], KUBELET_CONF)
    if node is not None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now()))
        for condition in node.get("status", {}).get("conditions", []):
            if condition.get("type") == "Ready":
                condition.update({
                    "status": "False", "reason": "KubeletStopped",
                    "message": "k8s-offline reset this node",
                    "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
        ctx.host.makedirs(STATE_DIR, 0o700)
        ctx.host.write(NODE_STATUS_FILE, json.dumps(node), 0o600)
        result = ctx.runner.run(kubectl + [
            "replace", "--raw", "/api/v1/nodes/%s/status" % name, "-f",
            ctx.host.path(NODE_STATUS_FILE), "--request-timeout=15s"],
            check=False, timeout=30, what="kubectl replace")
        error = None if result.ok else (last_line(result.output()) or
                                         "kubectl failed")
    if error is None:
        log.info("  node %s reported NotReady: a join under its name need "
                 "not wait for the cluster to notice", name)
        return
    ctx.warn("could not report node %s NotReady (%s): a join under its "
             "name waits until the cluster marks it NotReady (about 40 s), "
             "or run `k8s_offline.py remove-node %s` on a master"
             % (name, error, name))


NODE_STATUS_FILE = STATE_DIR + "/node-status.json"


# -- phase: reset network ---------------------------------------------------

def phase_reset_network(ctx):
    """Remove the CNI config and state, the cni0 and flannel.1 links and
    the iptables rules kube-proxy and flannel made."""
    host = ctx.host
    for name in host.listdir(CNI_CONF_DIR):
        host.remove(CNI_CONF_DIR + "/" + name)
    for path in ("/var/lib/cni", "/run/flannel"):
        host.remove(path)
    for link in ("cni0", "flannel.1"):
        if host.exists("/sys/class/net/" + link):
            ctx.runner.run(["ip", "link", "delete", link], check=False)
    pod_cidr = ctx.reset_pod_cidr
    for save, restore in (("iptables-save", "iptables-restore"),
                          ("ip6tables-save", "ip6tables-restore")):
        if not host.which(save):
            continue
        result = ctx.runner.run([save], change=False, check=False)
        if not result.ok:
            continue
        text, removed = filter_iptables_save(result.stdout, pod_cidr)
        if removed:
            log.info("  removing %d %s rules and chains", removed, save[:-5])
            ctx.runner.run([restore], input_text=text, what=restore)
    if host.which("ipvsadm"):
        ctx.runner.run(["ipvsadm", "--clear"], check=False)


def filter_iptables_save(text, pod_cidr):
    """iptables-save output without the chains and rules that kube-proxy,
    the CNI plugins and flannel made; (new text, number removed)."""
    markers = KUBE_IPTABLES_MARKERS + ((pod_cidr,) if pod_cidr else ())
    kept, removed = [], 0
    for line in text.splitlines():
        if ((line.startswith("-A ") or line.startswith(":")) and
                any(marker in line for marker in markers)):
            removed += 1
            continue
        kept.append(line)
    return "\n".join(kept) + "\n", removed


# -- phase: reset files -----------------------------------------------------

def phase_reset_files(ctx):
    """Remove /etc/kubernetes, the kubeconfig copies and this tool's
    state."""
    for path in ctx.reset_kubeconfigs:
        if not kubeconfig_copy_path(ctx.host, path):
            ctx.warn("%s is listed in %s but is no kubeconfig copy of this "
                     "tool: left alone" % (_short_json(path), STATE_FILE))
            continue
        fd, why = open_kube_folder(ctx, path, None, None, create=False)
        if fd is None:
            if why and "No such file" not in why:
                ctx.warn("%s: %s left alone" % (why, path))
            continue
        try:
            try:
                st = os.stat("config", dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                ctx.warn("%s is not a regular file: left alone" % path)
            elif ctx.dry_run:
                log.info("  would remove %s", path)
            else:
                os.unlink("config", dir_fd=fd)
                log.debug("removed %s", path)
        finally:
            os.close(fd)
    # The kubelet's binaries and units stay, as kubeadm reset leaves them:
    # restore on a reset master runs kubeadm init without a bundle.
    for path in ("/etc/kubernetes", "/var/lib/etcd", STATE_DIR):
        ctx.host.remove(path)


def kubeconfig_copy_path(host, path):
    """True for where this tool puts a kubeconfig copy: ~/.kube/config of a
    user of the host's /etc/passwd.  state.json may list other paths;
    reset never removes those."""
    homes = [line.split(":")[5] for line in host.read("/etc/passwd", "")
             .splitlines() if len(line.split(":")) >= 7]
    return isinstance(path, str) and path in [
        home.rstrip("/") + "/.kube/config" for home in homes
        if home.startswith("/") and ".." not in home.split("/")]


def read_reset_state(ctx):
    """What reset cleans, from the state file: the pod network and the
    kubeconfig copies, settled into the context."""
    return {"reset_pod_cidr": ctx.host.state().get("pod_cidr") or
            DEFAULT_POD_CIDR, "reset_kubeconfigs": reset_copies(ctx)}


def reset_copies(ctx):
    """The kubeconfig copies reset removes: those the state file records,
    and any other copy of admin.conf this tool would have made."""
    state = ctx.host.state()
    admin = ctx.host.read_bytes(ADMIN_CONF)
    copies = state.get("kubeconfigs")
    copies = list(copies) if isinstance(copies, list) else []
    for path, _, _ in kubeconfig_targets(ctx):
        if (path not in copies and admin is not None
                and ctx.host.read_bytes(path) == admin):
            copies.append(path)
    return copies


KUBE_IPTABLES_MARKERS = ("KUBE-", "CNI-", "FLANNEL", "flannel")

RESET_PHASES = (
    Phase("kubeadm-reset", "kubeadm reset -f", phase_reset_kubeadm),
    Phase("network", "CNI config, links and iptables rules",
          phase_reset_network),
    Phase("files", "/etc/kubernetes, kubeconfig copies, this tool's state "
          "(the kubelet stays installed, as kubeadm reset leaves it)",
          phase_reset_files),
)


def cmd_reset(args):
    def settle(ctx):
        if ctx.euid != 0:
            raise UserError("reset must run as root: run it with sudo")
        confirm_reset(args)
        return read_reset_state(ctx)
    ctx = NodeContext(args, "reset", settle)
    return run_workflow(ctx, RESET_PHASES, only_phase(args))


# ===========================================================================
# Slice day two (status, token, remove-node, certs, backup, restore)
# ===========================================================================

def cmd_status(args):
    ctx = NodeContext(args, "master")
    require_master(ctx, "status")
    nodes, error = _kubectl_json(ctx, ["get", "nodes"])
    if nodes is None:
        raise UserError("cannot reach the API server: %s: is the kubelet "
                        "running (systemctl status kubelet)?" % error)
    print(format_table(node_rows(nodes)))
    print("")
    pods, error = _kubectl_json(ctx, ["-n", "kube-system", "get", "pods"])
    if pods is not None:
        print(format_table(pod_rows(pods)))
    else:
        print("kube-system pods: %s" % error)
    print("")
    result = ctx.runner.run(cert_check_command(cluster_version(ctx)),
                            change=False, check=False)
    certs = parse_cert_expiration(result.stdout)
    if not certs:
        print("certificates: could not read their expiry (%s)"
              % (last_line(result.output()) or "no output"))
        return 0
    name, soonest = min(certs, key=lambda item: item[1])
    days = (soonest - now()) / 86400.0
    print("certificates: the first to expire is %s, on %s (%d days left)"
          % (name, _utc(soonest), days))
    if days < CERT_WARN_DAYS:
        log.warning("warning: cluster certificates expire in %d days: renew "
                    "them with `k8s_offline.py certs renew` before then", days)
    return 0


def require_master(ctx, command):
    if ctx.euid != 0:
        raise UserError("%s must run as root: run it with sudo" % command)
    if not ctx.host.exists(ADMIN_CONF):
        raise UserError("this host is not a master (no %s): run %s on a master"
                        % (ADMIN_CONF, command))


def format_table(rows):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in
                               zip(row, widths)).rstrip() for row in rows)


def node_rows(listing):
    rows = [("NODE", "STATUS", "ROLES", "VERSION", "AGE")]
    for node in listing.get("items", []):
        labels = node["metadata"].get("labels", {})
        roles = (sorted(key.split("/", 1)[1] for key in labels
                        if key.startswith("node-role.kubernetes.io/"))
                 or ["<none>"])
        ready, reason = node_ready(node)
        rows.append((node["metadata"]["name"], "Ready" if ready else
                     "NotReady (%s)" % reason, ",".join(roles),
                     node.get("status", {}).get("nodeInfo", {}).get(
                         "kubeletVersion", "?"),
                     _age(node["metadata"].get("creationTimestamp"))))
    return rows


def _age(timestamp):
    try:
        then = calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return "?"
    seconds = max(0, int(now() - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def pod_rows(listing):
    rows = [("POD", "STATUS", "NODE", "RESTARTS")]
    for pod in listing.get("items", []):
        problem = pod_problem(pod)
        restarts = sum(c.get("restartCount", 0) for c in
                       pod.get("status", {}).get("containerStatuses", []))
        rows.append((pod["metadata"]["name"],
                     problem[0] if problem else pod["status"].get("phase"),
                     pod.get("spec", {}).get("nodeName", "-"), restarts))
    return rows


def cert_check_command(kubernetes_version):
    return list(profile(kubernetes_version)["certs_command"]) + [
        "check-expiration"]


def cluster_version(ctx):
    state = ctx.host.state()
    if state.get("kubernetes_version"):
        return state["kubernetes_version"]
    result = ctx.runner.run(["kubeadm", "version", "-o", "short"],
                            change=False, check=False)
    text = result.stdout.strip()
    return (text if result.ok and re.match(r"^v\d+\.\d+\.\d+", text)
            else DEFAULT_KUBERNETES_VERSION)


def parse_cert_expiration(text):
    """[(name, expires epoch)] from kubeadm's check-expiration output."""
    found = []
    for line in (text or "").splitlines():
        match = CERT_LINE_RE.match(line.strip())
        if match:
            try:
                when = calendar.timegm(time.strptime(match.group(2),
                                                     "%b %d, %Y %H:%M UTC"))
            except ValueError:
                continue
            found.append((match.group(1), when))
    return found


def cmd_token(args):
    ctx = NodeContext(args, "master")
    require_master(ctx, "token")
    state = ctx.host.state()
    version, arch = state.get("kubernetes_version"), state.get("arch")
    bundle_path = None
    try:
        bundle_path = resolve_bundle_path(ctx.bundle_path)
        if not version or not arch:
            version = version or ctx.bundle.kubernetes_version
            arch = arch or ctx.bundle.arch
    except UserError:
        if not version:
            version = cluster_version(ctx)
        arch = arch or host_arch()
    info = make_join_info(ctx, True, version, arch)
    path = args.join_file or default_join_file(ctx, bundle_path)
    write_join_file(ctx, path, info)
    print_join_commands(ctx, path, info)
    ctx.close()
    return 0


def cmd_remove_node(args):
    ctx = NodeContext(args, "master")
    name = args.name.lower()
    if not full_match(NODE_NAME_RE, name):
        raise UserError("bad node name %r: give a name from `kubectl get "
                        "nodes`" % args.name)
    require_master(ctx, "remove-node")
    node, error = _kubectl_json(ctx, ["get", "node", name])
    if node is None:
        raise UserError("node %s not found (%s): see `k8s_offline.py status` "
                        "for the node names" % (name, error))
    ready, reason = node_ready(node)
    if ready:
        ctx.runner.run(ctx.kubectl("drain", name, "--ignore-daemonsets",
                                   "--delete-local-data", "--force",
                                   "--timeout=300s"), timeout=360,
                       what="kubectl drain")
    else:
        # No kubelet answers there to evict the pods: a drain would only
        # wait out its timeout.  Deleting the node lets the cluster
        # reschedule them.
        log.warning("warning: node %s is not Ready (%s): deleting it without "
                    "a drain", name, reason)
    ctx.runner.run(ctx.kubectl("delete", "node", name), what="kubectl delete")
    print("node %s removed; run `k8s_offline.py reset --yes` on it to clean "
          "it up" % name)
    return 0


def cmd_certs_check(args):
    ctx = day_two_context(args, "certs check")
    certs = cluster_certificates(ctx.host)
    if not certs:
        raise UserError("no kubeadm certificates on this host (nothing in %s "
                        "or /etc/kubernetes/*.conf): run certs check on a "
                        "cluster node" % PKI_DIR)
    rows, fewest = certificate_rows(certs)
    print(format_table(rows))
    unreadable = [name for name, _, expires, _ in certs if expires is None]
    if unreadable:
        log.error("error: cannot read the expiry of %s: look at the file"
                  % ", ".join(unreadable))
        return 1
    if fewest < CERT_FAIL_DAYS:
        log.error("error: a certificate expires in %d days (below %d): run "
                  "`k8s_offline.py certs renew` now" % (fewest, CERT_FAIL_DAYS))
        return 1
    if fewest < CERT_WARN_DAYS:
        log.warning("warning: a certificate expires in %d days (below %d): "
                    "run `k8s_offline.py certs renew`" % (fewest,
                                                          CERT_WARN_DAYS))
    return 0


def day_two_context(args, command):
    """The context of a day-two command, as root, with the node named as
    the install named it (the static pods carry that name)."""
    def settle(ctx):
        require_root(ctx, command)
        recorded = ctx.host.state().get("node")
        if recorded and full_match(NODE_NAME_RE, recorded):
            return {"node_name": recorded}
        return {}
    return NodeContext(args, "master", settle)


def require_root(ctx, command):
    if ctx.euid != 0:
        raise UserError("%s must run as root: run it with sudo" % command)


def cluster_certificates(host):
    """[(name, host path, notAfter or None, note)] of every certificate
    kubeadm made on this host: the PKI (etcd's included), the kubeconfigs'
    client certificates and the kubelet's client certificate."""
    found = []
    for folder, prefix in ((PKI_DIR, ""), (PKI_DIR + "/etcd", "etcd/")):
        for name in host.listdir(folder):
            if name.endswith(".crt"):
                path = folder + "/" + name
                der = first_pem_certificate(host.read(path, ""))
                note = "CA (kubeadm does not renew it)" if name.endswith(
                    "ca.crt") else ""
                found.append((prefix + name, path, _expiry_of(der), note))
    rotates = kubelet_rotates(host)
    for name in KUBEADM_KUBECONFIGS:
        path = "/etc/kubernetes/" + name
        text = host.read(path)
        if text is None:
            continue
        kind, value = kubeconfig_client_certificate(text)
        if kind == "file":
            der = first_pem_certificate(host.read(value, ""))
            note = "kubelet client, %s" % ("rotates itself" if rotates
                                           else "does NOT rotate")
            found.append((name + " -> " + value, value, _expiry_of(der), note))
        elif kind == "data":
            found.append((name, path, _expiry_of(value), "embedded"))
    if host.exists(KUBELET_CLIENT_CERT) and not any(
            item[1] == KUBELET_CLIENT_CERT for item in found):
        der = first_pem_certificate(host.read(KUBELET_CLIENT_CERT, ""))
        found.append(("kubelet client", KUBELET_CLIENT_CERT, _expiry_of(der),
                      "rotates itself" if rotates else "does NOT rotate"))
    return found


def first_pem_certificate(text):
    """DER bytes of the first certificate in PEM text, or None."""
    match = PEM_CERT_RE.search(text or "")
    if not match:
        return None
    try:
        return base64.b64decode("".join(match.group(1).split()))
    except (binascii.Error, ValueError):
        return None


def _expiry_of(der):
    if der is None:
        return None
    try:
        return certificate_not_after(der)
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def certificate_not_after(der):
    """notAfter of a DER certificate, in seconds since the epoch.

    Read with the DER walker the join discovery uses, so no openssl is needed
    on the host."""
    _, cert, _ = _der_item(der, 0)
    _, pos, _ = _der_item(der, cert)          # inside tbsCertificate
    if _der_item(der, pos)[0] == 0xa0:        # [0] version
        pos = _der_item(der, pos)[2]
    for _ in range(3):                        # serial, signature, issuer
        pos = _der_item(der, pos)[2]
    _, validity, _ = _der_item(der, pos)
    not_before_end = _der_item(der, validity)[2]
    tag, start, end = _der_item(der, not_before_end)
    return _der_time(der, tag, start, end)


def _der_time(der, tag, start, end):
    """Seconds since the epoch of a DER UTCTime (0x17) or GeneralizedTime."""
    text = der[start:end].decode("ascii")
    if tag == 0x17:
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    if tag not in (0x17, 0x18) or not re.fullmatch(r"\d{14}Z", text):
        raise ValueError("not an X.509 time")
    return calendar.timegm(time.strptime(text, "%Y%m%d%H%M%SZ"))


def kubelet_rotates(host):
    """True when the kubelet's config turns client certificate rotation on
    (kubeadm writes rotateCertificates: true)."""
    text = host.read(KUBELET_CONFIG, "")
    match = re.search(r'^\s*"?rotateCertificates"?\s*:\s*(\S+)', text, re.M)
    return bool(match) and match.group(1).strip("\",").lower() == "true"


def kubeconfig_client_certificate(text):
    """('data', DER) or ('file', path) of a kubeconfig's client certificate,
    or (None, None)."""
    match = re.search(r'^\s*"?client-certificate-data"?:\s*"?([A-Za-z0-9+/=]+)'
                      r'"?,?[ \t]*\n', (text or "") + "\n", re.M)
    if match:
        try:
            pem = base64.b64decode(match.group(1)).decode("ascii", "replace")
        except (binascii.Error, ValueError):
            return "data", None
        return "data", first_pem_certificate(pem)
    match = re.search(r'^\s*"?client-certificate"?:\s*(\S+?),?[ \t]*\n',
                      (text or "") + "\n", re.M)
    if match:
        return "file", match.group(1).strip("\"'")
    return None, None


def certificate_rows(certs):
    """Table rows and the fewest days left of any certificate."""
    rows = [("CERTIFICATE", "EXPIRES", "DAYS LEFT", "NOTE")]
    fewest = None
    for name, path, expires, note in certs:
        if expires is None:
            rows.append((name, "unreadable", "-", note or path))
            continue
        days = (expires - now()) / 86400.0
        fewest = days if fewest is None else min(fewest, days)
        rows.append((name, time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                         time.gmtime(expires)),
                     "%d" % days, note))
    return rows, fewest


def cmd_certs_usage(args):
    raise UserError("certs needs an action: `certs check` or `certs renew`")


class RenewalContext(Context):
    """certs renew's context, built once before anything changes: the
    day-two context (what it does not hold is read from there) and what
    renewal found: the kubeadm command, the admin.conf copies, the files to
    save and the backup holding them."""

    command = "certs renew"

    def __init__(self, ctx):
        self.ctx = ctx
        require_master(ctx, "certs renew")
        host = ctx.host
        if not host.exists(MANIFEST_DIR + "/kube-apiserver.yaml"):
            raise UserError("this host runs no control plane (no %s/kube-"
                            "apiserver.yaml): run certs renew on each master"
                            % MANIFEST_DIR)
        self.renew_command = cert_renew_command(installed_kubeadm_version(ctx))
        self.copies = kubeconfig_copies(ctx, host.read_bytes(ADMIN_CONF))
        self.saved = host_files_under(host, PKI_DIR) + [
            "/etc/kubernetes/" + name for name in KUBEADM_KUBECONFIGS
            if host.exists("/etc/kubernetes/" + name)]
        self.backup = "%s/certs-before-renew-%s.tar.gz" % (DAYTWO_DIR,
                                                          utc_stamp())
        self._seal()

    def __getattr__(self, name):
        return getattr(self.ctx, name)


def phase_renew_backup(ctx):
    """The old PKI and kubeconfigs, into a tar of mode 0600."""
    log.info("  the old PKI and kubeconfigs (%d files) to %s, mode 0600",
             len(ctx.saved), ctx.backup)
    if ctx.dry_run:
        log.info("  would write %s", ctx.backup)
        return
    ctx.host.makedirs(DAYTWO_DIR, 0o700)
    write_private_tar(ctx.host, ctx.backup, [(path.lstrip("/"), path)
                                             for path in ctx.saved])


def phase_renew(ctx):
    """kubeadm certs renew all (kubeadm alpha certs renew all up to 1.19)."""
    log.info("  %s", " ".join(ctx.renew_command))
    ctx.runner.run(ctx.renew_command, timeout=300, what="kubeadm certs renew")


def phase_renew_kubelet(ctx):
    """kubelet.conf on the kubelet's rotating client certificate.

    kubeadm init embeds the first control plane's kubelet client
    certificate in kubelet.conf up to 1.16 (and a cluster made then keeps
    it through upgrades); `certs renew all` does not renew it, so it
    expires a year after init.  From 1.17 kubeadm points kubelet.conf at
    kubelet-client-current.pem, which the kubelet rotates (kubernetes/
    kubeadm#2185): do the same here, only when that file holds a valid
    certificate and key and the kubelet rotates it, and restart the
    kubelet once so that it reads the new kubelet.conf."""
    host = ctx.host
    text = host.read(KUBELET_CONF)
    if kubeconfig_client_certificate(text)[0] != "data":
        log.info("  %s embeds no client certificate: nothing to do",
                 KUBELET_CONF)
        return
    problem = rotating_client_cert_problem(host)
    if problem:
        log.warning("warning: %s keeps its embedded client certificate, "
                    "which kubeadm does not renew (%s): renew it before it "
                    "expires", KUBELET_CONF, problem)
        return
    config = kubeconfig_on_file_credentials(text, KUBELET_CLIENT_CERT)
    if config is None:
        log.warning("warning: %s is not a kubeconfig this tool can rewrite: "
                    "point its user at %s by hand (client-certificate and "
                    "client-key)", KUBELET_CONF, KUBELET_CLIENT_CERT)
        return
    log.info("  %s: client-certificate and client-key -> %s (the kubelet "
             "rotates it)", KUBELET_CONF, KUBELET_CLIENT_CERT)
    host.write(KUBELET_CONF, canonical_json(config), 0o600)
    ctx.runner.run(["systemctl", "restart", "kubelet"],
                   what="restarting the kubelet")


def rotating_client_cert_problem(host):
    """Why the kubelet's kubelet-client-current.pem cannot stand in for an
    embedded client certificate, or None."""
    if not kubelet_rotates(host):
        return "the kubelet does not rotate its client certificate"
    text = host.read(KUBELET_CLIENT_CERT)
    if text is None:
        return "there is no %s" % KUBELET_CLIENT_CERT
    expires = _expiry_of(first_pem_certificate(text))
    if expires is None or "PRIVATE KEY-----" not in text:
        return "%s holds no certificate and key" % KUBELET_CLIENT_CERT
    if expires <= now():
        return "%s has expired" % KUBELET_CLIENT_CERT
    return None


def kubeconfig_on_file_credentials(text, path):
    """The kubeconfig (parsed) with every user's embedded client
    certificate and key replaced by path, or None when it is not a
    kubeconfig of the YAML subset."""
    try:
        config = parse_yaml_document(text)
    except YamlSubsetError:
        return None
    users = config.get("users") if isinstance(config, dict) else None
    if not isinstance(users, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("user"), dict)
            for entry in users):
        return None
    for entry in users:
        user = entry["user"]
        if "client-certificate-data" in user:
            user.pop("client-certificate-data")
            user.pop("client-key-data", None)
            user["client-certificate"] = path
            user["client-key"] = path
    return config


def phase_renew_restart(ctx):
    """The control-plane static pods, one at a time."""
    ctx.host.makedirs(DAYTWO_DIR, 0o700)
    for component in CONTROL_PLANE_PODS:
        restart_static_pod(ctx, component)


def phase_renew_kubeconfig(ctx):
    """The admin.conf copies, refreshed from the new admin.conf."""
    new_admin = ctx.host.read_bytes(ADMIN_CONF)
    for path, uid, gid in ctx.copies:
        if ctx.dry_run or new_admin is None:
            log.info("  would copy %s to %s", ADMIN_CONF, path)
            continue
        ctx.host.write(path, new_admin, 0o600, owner=(uid, gid))
        log.info("  kubeconfig %s refreshed", path)


def cmd_certs_renew(args):
    only = only_phase(args)
    ctx = RenewalContext(day_two_context(args, "certs renew"))
    run_workflow(ctx, CERTS_RENEW_PHASES, only)
    if ctx.dry_run or only is not None:
        return 0
    rows, fewest = certificate_rows(cluster_certificates(ctx.host))
    print(format_table(rows))
    print("renewed; the old certificates are in %s" % ctx.backup)
    return 0


def cert_renew_command(kubeadm_version):
    """kubeadm's renewal: under `alpha` up to 1.19, its own command from 1.20."""
    return list(profile(kubeadm_version)["certs_command"]) + ["renew", "all"]


def installed_kubeadm_version(ctx):
    """The version of the kubeadm on this host (vX.Y.Z)."""
    if not ctx.host.which("kubeadm"):
        raise UserError("kubeadm is not installed on this host: install the "
                        "cluster's version first (k8s_offline.py master runs "
                        "its install phase)")
    result = ctx.runner.run(["kubeadm", "version", "-o", "short"],
                            change=False, check=False)
    text = result.stdout.strip()
    if not result.ok or not re.fullmatch(r"v\d+\.\d+\.\d+", text):
        raise UserError("cannot tell the version of kubeadm (%s): is the "
                        "kubeadm in %s whole?" % (
                            last_line(result.output()) or "no output",
                            ctx.host.which("kubeadm")))
    return text


def kubeconfig_copies(ctx, admin):
    """[(path, uid, gid)] of the admin.conf copies this tool made: the ones
    its state lists and root's and the sudo user's when they hold admin."""
    copies = []
    for path in ctx.host.state().get("kubeconfigs") or []:
        full = ctx.host.path(path)
        if os.path.isfile(full):
            st = os.stat(full)
            copies.append((path, st.st_uid, st.st_gid))
    for path, uid, gid in kubeconfig_targets(ctx):
        if (path not in [c[0] for c in copies] and admin is not None and
                ctx.host.read_bytes(path) == admin):
            copies.append((path, uid, gid))
    return copies


def host_files_under(host, folder):
    """Host paths of the regular files under folder, sorted."""
    found = []
    for name in host.listdir(folder):
        path = folder + "/" + name
        full = host.path(path)
        if os.path.isdir(full) and not os.path.islink(full):
            found.extend(host_files_under(host, path))
        elif os.path.isfile(full) and not os.path.islink(full):
            found.append(path)
    return found


def utc_stamp():
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now()))


def write_private_tar(host, path, members):
    """Write members [(name, bytes or host path)] as one tar file with mode
    0600 from the start (it holds private keys); return its sha256.

    Written under a partial name and renamed, so a failure leaves no file
    under the final name."""
    full = host.path(path)
    partial = "%s.partial-%d" % (full, os.getpid())
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            writer = _HashingWriter(raw)
            gz = gzip.GzipFile(fileobj=writer, mode="wb", mtime=0)
            with tarfile.open(fileobj=gz, mode="w",
                              format=tarfile.PAX_FORMAT) as tar:
                for name, source in members:
                    info = tarfile.TarInfo(name)
                    info.mode = 0o600
                    info.mtime = int(now())
                    if isinstance(source, bytes):
                        info.size = len(source)
                        tar.addfile(info, io.BytesIO(source))
                        continue
                    with open(host.path(source), "rb") as handle:
                        info.size = os.fstat(handle.fileno()).st_size
                        tar.addfile(info, handle)
            gz.close()
        os.chmod(partial, 0o600)
        os.rename(partial, full)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return writer.digest.hexdigest()


class _HashingWriter(object):
    """A file object that hashes what passes through it."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data):
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self):
        self.handle.flush()


def restart_static_pod(ctx, component):
    """Move the pod's manifest out, wait until the kubelet has stopped it,
    move it back and wait until a new container is Running and ready (the
    restart kubeadm's certificate docs describe)."""
    manifest = "%s/%s.yaml" % (MANIFEST_DIR, component)
    if not ctx.host.exists(manifest):
        log.info("  %s: no static pod manifest here", component)
        return
    held = "%s/%s.yaml" % (DAYTWO_DIR, component)
    old, _ = ((None, False) if ctx.dry_run else
              static_pod_container(ctx, component))
    move_file(ctx, manifest, held)
    if ctx.dry_run:
        log.info("  would wait until the kubelet stops %s, then move it back "
                 "and wait until it is Running again", component)
        move_file(ctx, held, manifest)
        return
    try:
        wait_for(ctx, lambda: not container_running(ctx, old),
                 "the kubelet stopping %s" % component, RESTART_TIMEOUT,
                 WAIT_INTERVAL, logs="journalctl -u kubelet")
    finally:
        move_file(ctx, held, manifest)

    def restarted():
        cid, ready = static_pod_container(ctx, component)
        return ready and cid and cid != old
    wait_for(ctx, restarted, "%s Running again" % component, RESTART_TIMEOUT,
             WAIT_INTERVAL, logs="journalctl -u kubelet")
    log.info("  %s is Running again", component)


def static_pod_container(ctx, component):
    """(containerID, ready) of the static pod's container, from the API."""
    name = "%s-%s" % (component, node_name(ctx))
    pod, _ = _kubectl_json(ctx, ["-n", "kube-system", "get", "pod", name])
    if pod is None or pod.get("status", {}).get("phase") != "Running":
        return None, False
    for status in pod["status"].get("containerStatuses", []):
        if status.get("name") == component:
            return status.get("containerID"), bool(status.get("ready"))
    return None, False


def move_file(ctx, source, target):
    if ctx.dry_run:
        log.info("  would move %s to %s", source, target)
        return
    os.rename(ctx.host.path(source), ctx.host.path(target))
    log.info("  moved %s to %s", source, target)


def container_running(ctx, container_id):
    """Whether the runtime still runs a container (docker://ID or
    containerd://ID as the API names it)."""
    runtime, _, cid = (container_id or "").partition("://")
    if not cid or runtime not in RUNTIMES:
        return False
    return RUNTIMES[runtime].container_running(ctx, cid)


def cmd_backup(args):
    ctx = day_two_context(args, "backup")
    require_master(ctx, "backup")
    host = ctx.host
    facts = etcd_manifest_facts(host.read(ETCD_MANIFEST, ""))
    if "image" not in facts:
        raise UserError("this host runs no local etcd (no image in %s): run "
                        "backup on a master of a kubeadm cluster"
                        % ETCD_MANIFEST)
    runtime = day_two_runtime(ctx)
    require_etcd_image(ctx, runtime, facts["image"])
    version = installed_kubeadm_version(ctx)
    ca = host.read_bytes(PKI_DIR + "/ca.crt")
    if ca is None:
        raise UserError("%s/ca.crt is missing: this master's PKI is not whole"
                        % PKI_DIR)
    output = args.output or "%s/k8s-offline-backup-%s-%s.tar.gz" % (
        BACKUP_DIR, node_name(ctx), utc_stamp())
    if not output.endswith(".tar.gz"):
        raise UserError("bad --output %s: the name must end in .tar.gz" %
                        output)
    output = os.path.abspath(output)
    config_name, config = kubeadm_config_for_backup(ctx)
    pki = host_files_under(host, PKI_DIR)
    work = "%s/backup-%d" % (DAYTWO_DIR, os.getpid())
    snapshot_argv = etcdctl_argv(ctx, runtime, facts["image"], [
        (ETCD_PKI, ETCD_PKI, False), (work, "/backup", True)], [
        "--endpoints", facts["client_url"],
        "--cacert", ETCD_PKI + "/ca.crt",
        "--cert", ETCD_PKI + "/healthcheck-client.crt",
        "--key", ETCD_PKI + "/healthcheck-client.key",
        "snapshot", "save", "/backup/snapshot.db"])
    if ctx.dry_run:
        log.info("  would take an etcd snapshot with the etcdctl of %s:",
                 facts["image"])
        ctx.runner.run(snapshot_argv)
        log.info("  would write %s (mode 0600): the snapshot, %d files of %s "
                 "and %s, and %s.sha256", output, len(pki), PKI_DIR,
                 config_name, output)
        log.info("dry run: nothing was changed")
        return 0
    host.makedirs(DAYTWO_DIR, 0o700)
    host.makedirs(work, 0o700)
    try:
        log.info("  etcd snapshot with the etcdctl of %s", facts["image"])
        ctx.runner.run(snapshot_argv, timeout=600, what="etcdctl snapshot save")
        snapshot = work + "/snapshot.db"
        if not os.path.isfile(host.path(snapshot)):
            raise UserError("etcdctl wrote no snapshot: see %s" % INSTALL_LOG)
        members = [(SNAPSHOT_NAME, snapshot), (config_name, config)]
        members += [("pki/" + path[len(PKI_DIR) + 1:], path) for path in pki]
        state = host.read_bytes(STATE_FILE)
        if state is not None:
            members.append(("kubeadm/state.json", state))
        files = {}
        for name, source in members:
            files[name] = (sha256_bytes(source) if isinstance(source, bytes)
                           else sha256_file(host.path(source)))
        meta = {"format": BACKUP_FORMAT, "tool_version": TOOL_VERSION,
                "kubernetes_version": version, "created": int(now()),
                "node": node_name(ctx), "runtime": runtime.cri,
                "etcd": facts, "cluster_ca_sha256": sha256_bytes(ca),
                "files": files}
        host.makedirs(os.path.dirname(output), 0o700)
        digest = write_private_tar(host, output, [
            (BACKUP_JSON, canonical_json(meta))] + members)
        host.write(output + ".sha256", "%s  %s\n" % (
            digest, os.path.basename(output)), 0o600)
    finally:
        host.remove(work)
    print("backup %s" % output)
    print("sha256 %s (also in %s.sha256)" % (digest, output))
    return 0


def etcd_manifest_facts(text):
    """{image, name, peer_url} of kubeadm's etcd static pod manifest."""
    facts = {}
    match = re.search(r"^\s*\"?image\"?\s*:\s*\"?([^\s\"]+)", text or "", re.M)
    if match:
        facts["image"] = match.group(1)
    for key, flag in (("name", "name"),
                      ("peer_url", "initial-advertise-peer-urls")):
        match = re.search(r"--%s=([^\s\"',]+)" % flag, text or "")
        if match:
            facts[key] = match.group(1)
    match = re.search(r"--listen-client-urls=\S*?(https://127\.0\.0\.1:\d+)",
                      text or "")
    facts["client_url"] = (match.group(1) if match else
                           "https://127.0.0.1:2379")
    return facts


def day_two_runtime(ctx):
    """The adapter of the runtime the cluster uses: the one the install
    recorded, else --cri, at the cluster's Kubernetes version."""
    return runtime_adapter(ctx.host.state().get("cri") or ctx.cri,
                           cluster_version(ctx))


def require_etcd_image(ctx, runtime, image):
    if not runtime.has_image(ctx, image):
        raise UserError("the etcd image %s is not in %s on this host: load "
                        "the bundle's images first (k8s_offline.py master "
                        "--skip-phases init,kubeconfig,network,wait,join-file "
                        "does only that and the host setup)" % (image,
                                                                runtime.cri))


def kubeadm_config_for_backup(ctx):
    """(name, bytes) of the kubeadm config to keep: the one this tool wrote,
    else the cluster's ClusterConfiguration from the kubeadm-config map."""
    data = ctx.host.read_bytes(INIT_CONFIG)
    if data is not None:
        return "kubeadm/kubeadm-init.json", data
    cm, error = _kubectl_json(ctx, ["-n", "kube-system", "get", "configmap",
                                    "kubeadm-config"])
    text = ((cm or {}).get("data") or {}).get("ClusterConfiguration")
    if not text:
        raise UserError("cannot find the kubeadm config (no %s, and the "
                        "kubeadm-config map: %s): is the API server up?"
                        % (INIT_CONFIG, error or "no ClusterConfiguration"))
    return "kubeadm/kubeadm-config.yaml", text.encode("utf-8")


def etcdctl_argv(ctx, runtime, image, mounts, argv, tool="etcdctl"):
    """A one-off container of the cluster's etcd image running etcdctl (API
    v3), or etcdutl, on the host network with mounts [(host path, container
    path, rw)], in the runtime's way."""
    return runtime.etcd_argv(ctx, image, mounts, tool, argv)


def cmd_restore(args):
    only = only_phase(args)
    ctx = day_two_context(args, "restore")
    if not os.path.isfile(args.file):
        raise UserError("no backup file %s: give the .tar.gz backup wrote"
                        % args.file)
    expected = expected_backup_sha256(args.file, args.sha256)
    archive = BackupArchive(args.file, expected)
    try:
        run_workflow(RestoreContext(ctx, archive), RESTORE_PHASES, only)
        meta = archive.meta
    finally:
        archive.close()
    if not ctx.dry_run and only is None:
        print("restored %s: the cluster's objects of %s are back" % (
            ctx.backup_file, _utc(meta.get("created") or 0)))
    return 0


def expected_backup_sha256(path, given):
    """The sha256 the backup must have: --sha256, else the .sha256 beside."""
    if given:
        value = given.strip().lower()
        if not full_match(SHA256_HEX_RE, value):
            raise UserError("bad --sha256 %r: give the 64 hex digits backup "
                            "printed" % given)
        return value
    if not os.path.lexists(path + ".sha256"):
        raise UserError("no %s.sha256 beside the backup: copy it too, or give "
                        "--sha256 with the value backup printed" % path)
    raw = read_regular_file(path + ".sha256", "the checksum file",
                            MAX_CHECKSUM_FILE_BYTES)
    value = raw.decode("utf-8", "replace").split()[:1]
    if not value or not full_match(SHA256_HEX_RE, value[0].lower()):
        raise UserError("%s.sha256 holds no sha256: copy it again from the "
                        "master, or give --sha256" % path)
    return value[0].lower()


class BackupArchive(object):
    """A backup file, checked: sha256 of the whole file first, then every
    member against backup.json.  The file is read once, into a private copy
    that is hashed on the way, and only that copy is used afterwards."""

    def __init__(self, path, expected):
        self.folder = tempfile.mkdtemp(prefix="k8s-offline-restore-")
        try:
            self._load(path, expected)
        except BaseException:
            self.close()
            raise

    def _load(self, path, expected):
        copy = os.path.join(self.folder, "backup.tar.gz")
        digest = hashlib.sha256()
        with open_regular_file(path, "the backup") as source, open(
                copy, "wb") as target:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                target.write(block)
        if digest.hexdigest() != expected:
            raise UserError("%s is damaged: its sha256 is %s, not %s; nothing "
                            "was changed, copy the backup again"
                            % (path, digest.hexdigest(), expected))
        self.copy, self.files, self.blobs = copy, {}, {}
        try:
            with tarfile.open(copy, "r:*") as tar:
                for member in tar:
                    self._require_member(path, member)
                    self.files[member.name] = self._member_digest(
                        tar, member, keep=member.name != SNAPSHOT_NAME)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError("%s is not a readable backup (%s)" % (path, exc))
        if BACKUP_JSON not in self.files:
            raise UserError("%s has no %s: it is not a backup of this tool"
                            % (path, BACKUP_JSON))
        try:
            self.meta = json.loads(self.blobs[BACKUP_JSON].decode("utf-8"))
        except (ValueError, RecursionError):
            raise UserError("%s has an unreadable %s" % (path, BACKUP_JSON))
        meta = self.meta
        if not isinstance(meta, dict) or meta.get("format") != BACKUP_FORMAT:
            raise UserError("%s is a backup format this tool does not know: "
                            "restore it with the k8s_offline.py that made it"
                            % path)
        require_schema(meta, BACKUP_SCHEMA, "", BACKUP_JSON, fix=(
            "%s is damaged or not a backup of this tool; make a new backup"
            % path))
        listed = meta.get("files")
        if (not isinstance(listed, dict) or set(listed) !=
                set(self.files) - set([BACKUP_JSON])):
            raise UserError("%s: its files do not match its %s" % (
                path, BACKUP_JSON))
        for name, wanted in sorted(listed.items()):
            if self.files[name] != wanted:
                raise UserError("%s: %s does not match its sha256 in %s"
                                % (path, name, BACKUP_JSON))
        etcd = meta.get("etcd") or {}
        if (not isinstance(meta.get("kubernetes_version"), str) or
                not re.fullmatch(r"v\d+\.\d+\.\d+",
                                 meta["kubernetes_version"])):
            raise UserError("%s: bad kubernetes_version in %s" % (
                path, BACKUP_JSON))
        for key in ("image", "name", "peer_url"):
            if not isinstance(etcd.get(key), str):
                raise UserError("%s: %s has no etcd %s" % (path, BACKUP_JSON,
                                                           key))
        try:
            parse_image_ref(etcd["image"])
        except UserError:
            raise UserError("%s: bad etcd image %r" % (path, etcd["image"]))
        if (not full_match(ETCD_NAME_RE, etcd["name"]) or
                not full_match(ETCD_PEER_URL_RE, etcd["peer_url"])):
            raise UserError("%s: bad etcd name or peer URL in %s" % (
                path, BACKUP_JSON))
        if SNAPSHOT_NAME not in self.files or "pki/ca.crt" not in self.files:
            raise UserError("%s lacks the etcd snapshot or the cluster CA"
                            % path)
        self.config_name()
        for name in self.files:
            folder = posixpath.dirname(name)
            if folder in self.files:
                raise UserError("%s: %s is both a file and a folder: it is "
                                "not a backup of this tool" % (path, folder))

    def _require_member(self, path, member):
        """Refuse a member by its header alone, before a byte of it is
        read: a name of the backup's grammar, once, a file, within the
        member count and its size cap (a real PKI file is a few KiB, etcd
        keeps at most 8 GiB)."""
        if (not member.isfile() or not full_match(BACKUP_MEMBER_RE,
                                                  member.name) or
                member.name in self.files or
                set(member.name.split("/")) & set([".", ".."])):
            raise UserError("%s holds an unexpected entry %r: it is not a "
                            "backup of this tool" % (path, member.name))
        if len(self.files) >= BACKUP_MAX_MEMBERS:
            raise UserError("%s holds more than %d entries: it is not a "
                            "backup of this tool" % (path, BACKUP_MAX_MEMBERS))
        cap = (BACKUP_MAX_SNAPSHOT_BYTES if member.name == SNAPSHOT_NAME else
               BACKUP_MAX_PKI_BYTES if member.name.startswith("pki/") else
               BACKUP_MAX_DOCUMENT_BYTES)
        if member.size > cap:
            raise UserError("%s: %s is larger than %s: it is not a backup of "
                            "this tool" % (path, member.name, human_size(cap)))

    def _member_digest(self, tar, member, keep):
        """The sha256 of a member, read in blocks; its bytes are kept in
        memory when keep (the small members), never written anywhere."""
        digest, kept = hashlib.sha256(), []
        data = tar.extractfile(member)
        with contextlib.closing(data):
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
                if keep:
                    kept.append(block)
        if keep:
            self.blobs[member.name] = b"".join(kept)
        return digest.hexdigest()

    def data(self, name):
        return self.blobs[name]

    def copy_snapshot(self, target):
        """Write the checked etcd snapshot to target, from the private copy
        and hashed again on the way."""
        digest = hashlib.sha256()
        with tarfile.open(self.copy, "r:*") as tar:
            data = tar.extractfile(tar.getmember(SNAPSHOT_NAME))
            with contextlib.closing(data), open(target, "wb") as handle:
                for block in iter(lambda: data.read(1 << 20), b""):
                    digest.update(block)
                    handle.write(block)
        if digest.hexdigest() != self.files[SNAPSHOT_NAME]:
            raise UserError("the etcd snapshot changed while it was restored: "
                            "run restore again")

    def config_name(self):
        for name in ("kubeadm/kubeadm-init.json", "kubeadm/kubeadm-config.yaml"):
            if name in self.files:
                return name
        raise UserError("the backup holds no kubeadm config (%s): it is not "
                        "a whole backup of this tool" % " or ".join(
                            ("kubeadm/kubeadm-init.json",
                             "kubeadm/kubeadm-config.yaml")))

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)


class RestoreContext(Context):
    """restore's context, built once before anything changes: the day-two
    context (what it does not hold is read from there, .found too), the
    checked backup, the node it was made on, the runtime that runs etcdctl
    and the kubeadm config to restore."""

    command = "restore"

    def __init__(self, ctx, archive):
        self.ctx, self.archive = ctx, archive
        meta = archive.meta
        version = installed_kubeadm_version(ctx)
        if parse_version(version)[:2] != parse_version(
                meta["kubernetes_version"])[:2]:
            raise UserError("the backup is of Kubernetes %s but this host's "
                            "kubeadm is %s: restore with the same minor "
                            "version" % (meta["kubernetes_version"], version))
        refusal = restore_refusal(ctx, archive)
        if refusal:
            raise UserError(refusal)
        self.runtime = day_two_runtime(ctx)
        self.etcd = etcd = meta["etcd"]
        self.node_name = (meta["node"] if full_match(NODE_NAME_RE,
                                                     meta.get("node"))
                          else ctx.node_name)
        require_etcd_image(ctx, self.runtime, etcd["image"])
        log.info("  backup of %s made %s on %s (Kubernetes %s), every file "
                 "checked", meta.get("node"), _utc(meta.get("created") or 0),
                 etcd["name"], meta["kubernetes_version"])
        self.config = (INIT_CONFIG if archive.config_name().endswith(".json")
                       else STATE_DIR + "/kubeadm-config.yaml")
        self._seal()

    def __getattr__(self, name):
        return getattr(self.ctx, name)


def replacing(ctx):
    """restore --replace on a host still running a control plane."""
    return bool(existing_cluster_files(ctx.host))


def phase_restore_replace(ctx):
    """kubeadm reset -f, as --replace asks"""
    ctx.runner.run(["kubeadm", "reset", "-f"], timeout=600,
                   what="kubeadm reset")
    ctx.host.remove(ETCD_DATA_DIR)


def phase_restore_pki(ctx):
    """/etc/kubernetes/pki from the backup"""
    host, archive = ctx.host, ctx.archive
    for name in sorted(archive.files):
        if name.startswith("pki/"):
            target = PKI_DIR + "/" + name[4:]
            host.makedirs(os.path.dirname(target), 0o755)
            host.write(target, archive.data(name),
                       0o600 if name.endswith(".key") else 0o644)


def phase_restore_config(ctx):
    """the kubeadm config and this tool's state"""
    host, archive = ctx.host, ctx.archive
    host.makedirs(STATE_DIR, 0o700)
    host.write(ctx.config, archive.data(archive.config_name()), 0o600)
    if "kubeadm/state.json" in archive.files:
        try:
            restored = json.loads(archive.data("kubeadm/state.json").decode(
                "utf-8"))
        except (ValueError, RecursionError):
            restored = {}
        host.write(STATE_FILE, canonical_json(checked_state(restored)), 0o600)


def phase_restore_etcd(ctx):
    """restore the snapshot into /var/lib/etcd"""
    host, etcd = ctx.host, ctx.etcd
    work = "%s/restore-%d" % (DAYTWO_DIR, os.getpid())
    host.makedirs(DAYTWO_DIR, 0o700)
    host.makedirs(work, 0o700)
    try:
        if not ctx.dry_run:
            ctx.archive.copy_snapshot(host.path(work + "/snapshot.db"))
        tool = profile(cluster_version(ctx))["etcd_restore"]
        ctx.runner.run(etcdctl_argv(ctx, ctx.runtime, etcd["image"], [
            (work, "/restore", True)], [
            "snapshot", "restore", "/restore/snapshot.db",
            "--data-dir", "/restore/etcd", "--name", etcd["name"],
            "--initial-cluster", "%s=%s" % (etcd["name"], etcd["peer_url"]),
            "--initial-advertise-peer-urls", etcd["peer_url"]], tool),
            timeout=600, what=tool + " snapshot restore")
        host.makedirs(ETCD_DATA_DIR, 0o700)
        move_file(ctx, work + "/etcd/member", ETCD_DATA_DIR + "/member")
    finally:
        host.remove(work)


def phase_restore_init(ctx):
    """kubeadm init with the restored PKI, config and etcd data"""
    host = ctx.host
    argv = ["kubeadm", "init", "--config", ctx.config,
            "--ignore-preflight-errors", ",".join(
                ["DirAvailable--var-lib-etcd"] + [
                    part for part in (ctx.ignore_preflight_errors
                                      or "").split(",") if part])]
    run_kubeadm_init(ctx, argv, last_line)
    host.save_state(role="master", init="done", cri=ctx.runtime.cri)
    # Every node's flannel lost its API connection with the old control plane,
    # and flannel v0.11's client never gets a new one ("http2: no cached
    # connection was available"): workers keep the master's old VXLAN address.
    log.info("  restarting flannel on every node")
    namespace = profile(cluster_version(ctx)).get("flannel_namespace",
                                                  "kube-system")
    ctx.runner.run(ctx.kubectl("-n", namespace, "delete", "pods", "-l",
                               "app=flannel", "--wait=false"),
                   timeout=120, what="kubectl delete")


def restore_refusal(ctx, archive):
    """A reason this host cannot take the backup, or None."""
    host = ctx.host
    running = existing_cluster_files(host)
    if running and not ctx.replace:
        return ("this host still runs a control plane (%s): restore only on "
                "a reset or fresh master, or add --replace to reset it first"
                % ", ".join(running))
    ca = host.read_bytes(PKI_DIR + "/ca.crt")
    if (ca is not None and sha256_bytes(ca) !=
            archive.meta.get("cluster_ca_sha256") and not ctx.replace):
        return ("this host holds the CA of another cluster (%s/ca.crt differs "
                "from the backup's): run reset first, or add --replace"
                % PKI_DIR)
    return None


CERT_WARN_DAYS = 30

CERT_LINE_RE = re.compile(
    r"^(\S+)\s+([A-Z][a-z]{2} \d{2}, \d{4} \d{2}:\d{2} UTC)\s")

CERT_FAIL_DAYS = 7
PKI_DIR = "/etc/kubernetes/pki"
MANIFEST_DIR = "/etc/kubernetes/manifests"
KUBEADM_KUBECONFIGS = ("admin.conf", "controller-manager.conf",
                       "scheduler.conf", "kubelet.conf")
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBELET_CLIENT_CERT = "/var/lib/kubelet/pki/kubelet-client-current.pem"
# The static pods restarted after a renewal, the API server first so that
# it answers with its new certificate as early as possible.
CONTROL_PLANE_PODS = ("kube-apiserver", "kube-controller-manager",
                      "kube-scheduler", "etcd")
DAYTWO_DIR = STATE_DIR + "/day-two"
RESTART_TIMEOUT = 300
PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)"
                         r"-----END CERTIFICATE-----")

BACKUP_FORMAT = 1
BACKUP_JSON = "backup.json"
BACKUP_DIR = "/var/backups/k8s-offline"
ETCD_MANIFEST = MANIFEST_DIR + "/etcd.yaml"
ETCD_DATA_DIR = "/var/lib/etcd"
ETCD_PKI = PKI_DIR + "/etcd"
SNAPSHOT_NAME = "etcd/snapshot.db"
BACKUP_MEMBER_RE = re.compile(r"backup\.json|etcd/snapshot\.db|"
                              r"kubeadm/(kubeadm-init\.json|state\.json|"
                              r"kubeadm-config\.yaml)|"
                              r"pki/([A-Za-z0-9._-]+/)?[A-Za-z0-9._-]+")
MAX_CHECKSUM_FILE_BYTES = 64 * 1024        # the .sha256 beside a backup
BACKUP_MAX_MEMBERS = 128                   # a kubeadm master's backup: 26
BACKUP_MAX_PKI_BYTES = 256 * 1024          # a PKI file is a few KiB
BACKUP_MAX_DOCUMENT_BYTES = 1024 * 1024    # backup.json, kubeadm config, state
BACKUP_MAX_SNAPSHOT_BYTES = 8 << 30        # etcd's largest backend quota
ETCD_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")
ETCD_PEER_URL_RE = re.compile(r"https?://[A-Za-z0-9.:\[\]-]+:\d+")

RESTORE_PHASES = (
    Phase("replace", "kubeadm reset -f first (--replace)",
          phase_restore_replace, replacing),
    Phase("pki", "the PKI from the backup", phase_restore_pki),
    Phase("config", "the kubeadm config and this tool's state",
          phase_restore_config),
    Phase("etcd", "etcdctl snapshot restore into /var/lib/etcd",
          phase_restore_etcd),
    Phase("init", "kubeadm init on the restored data", phase_restore_init),
    Phase("kubeconfig", "admin.conf for root and the sudo user",
          phase_kubeconfig),
    Phase("wait", "wait for a Ready node and Running kube-system pods",
          phase_wait),
)
CERTS_RENEW_PHASES = (
    Phase("backup", "the old PKI and kubeconfigs to a 0600 tar",
          phase_renew_backup),
    Phase("renew", "kubeadm certs renew all", phase_renew),
    Phase("restart", "restart the control-plane static pods",
          phase_renew_restart),
    Phase("kubeconfig", "refresh the admin.conf copies",
          phase_renew_kubeconfig),
    # Last: its kubelet restart would race the static pods' restarts (a
    # restarted kubelet reports no container for a while).
    Phase("kubelet", "kubelet.conf on the kubelet's rotating client "
          "certificate", phase_renew_kubelet),
)
# backup.json, as backup writes it (see require_schema for the kinds).
BACKUP_SCHEMA = ("record", ({
    "format": ("const", BACKUP_FORMAT), "tool_version": ("match", TEXT_RE),
    "kubernetes_version": ("match", VERSION_RE),
    "created": ("int", 1 << 40), "node": ("match", NODE_NAME_RE),
    "runtime": ("match", re.compile("docker|containerd")),
    "etcd": ("record", ({
        "image": ("match", IMAGE_REF_RE), "name": ("match", ETCD_NAME_RE),
        "peer_url": ("match", ETCD_PEER_URL_RE),
        "client_url": ("match", ETCD_PEER_URL_RE)},
        ("image", "name", "peer_url"))),
    "cluster_ca_sha256": ("match", SHA256_HEX_RE),
    "files": ("map", (BACKUP_MEMBER_RE, ("match", SHA256_HEX_RE),
                      BACKUP_MAX_MEMBERS))},
    ("format", "kubernetes_version", "etcd", "files")))


# ===========================================================================
# Slice cluster (cluster up, add, status, remove, reset over SSH)
# ===========================================================================
# `cluster up` sets up every host of an inventory from the one machine that
# holds the bundle, with the system's OpenSSH client: it copies the bundle
# and this file to each host and runs verify, master and join there, as a
# user would by hand.  The phases run through the same runner as master's
# (the kernel's run_phases); each phase works on every host it concerns and
# records per host what happened, so that a failed host stops only what
# depends on it.

# Inventory groups, as kubespray (and its older names) and kubeasz call them.
CONTROL_PLANE_GROUPS = ("kube_control_plane", "kube-master", "kube_master")
WORKER_GROUPS = ("kube_node", "kube-node")
ETCD_GROUPS = ("etcd",)
INVENTORY_GROUP_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
INVENTORY_HOST_RE = re.compile(r"[A-Za-z0-9_.:-]{1,253}")
INVENTORY_RANGE_RE = re.compile(r"\[([0-9]{1,6}):([0-9]{1,6})\]")
SSH_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
SSH_ADDRESS_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                            r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                            r"[A-Za-z0-9])?)*")
REMOTE_PATH_RE = re.compile(r"[A-Za-z0-9._/-]{1,200}")
ANSIBLE_TRUE = ("true", "yes", "on", "1", "y", "t")
ANSIBLE_FALSE = ("false", "no", "off", "0", "n", "f")
# Host vars read, with the old ansible_ssh_* spellings Ansible still takes.
HOST_VAR_ALIASES = {"ansible_ssh_host": "ansible_host",
                    "ansible_ssh_port": "ansible_port",
                    "ansible_ssh_user": "ansible_user"}
CLUSTER_TOOL_ENV = "K8SO_CLUSTER_TOOL"   # tests: the program hosts run
CLUSTER_REMOTE_DIR = "k8s-offline"      # under the SSH user's home
CLUSTER_LOG_DIR = "k8s-offline-cluster-logs"
CLUSTER_EXTRA_CONFIG_NAME = "kubeadm-config-extra.yaml"
SSH_CONNECT_TIMEOUT = 10
SSH_CONNECT_ATTEMPTS = 3
SSH_BACKOFF = 1.0                        # seconds, doubled per attempt
SSH_CONNECT_ERRORS = ("connection refused", "connection timed out",
                      "no route to host", "network is unreachable",
                      "could not resolve", "connection reset",
                      "connection closed", "kex_exchange_identification",
                      "operation timed out", "temporary failure")
# The lines ssh itself prints when it fails (the command's own output is
# anything else), and those that say an established session ended.
SSH_CLIENT_MESSAGE_RE = re.compile(
    r"(?:ssh|kex_exchange_identification|client_loop|packet_write_wait|"
    r"mux_client_\w+|muxclient|Control socket|ControlSocket)\b|"
    r"(?:Connection|Shared connection|Timeout, server|Read from remote host|"
    r"Host key verification|Bad owner|Could not resolve|Permission denied)\b|"
    r"@@@|\S+@\S+: Permission denied")
SSH_SESSION_LOST_RE = re.compile(r"(?:Shared connection|Connection) to \S+ "
                                 r"closed( by remote host)?\.")
SSH_SESSION_BROKEN_RE = re.compile(r"client_loop|packet_write_wait|"
                                   r"Read from remote host|Broken pipe")
CLUSTER_DISK_MARGIN = 64 * 1024 * 1024   # beside the bundle: logs, state
CLUSTER_COMMAND_TIMEOUT = 3600
MIN_REMOTE_PYTHON = (3, 6)
MASTER_TAINT = "node-role.kubernetes.io/master-"


def ssh_never_connected(result):
    """True when ssh failed before the remote command could start: exit
    255, no output of the command's own, a connect error, and nothing that
    says an established session ended (a command cut off mid-way may still
    be running there, and is never run again)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return (result.returncode == 255 and not result.stdout.strip() and
            all(SSH_CLIENT_MESSAGE_RE.match(line) for line in lines) and
            not any(SSH_SESSION_LOST_RE.search(line) or
                    SSH_SESSION_BROKEN_RE.search(line) for line in lines) and
            any(word in result.stderr.lower() for word in SSH_CONNECT_ERRORS))


class ClusterHost(object):
    """One host of the inventory: how to reach it and what it becomes."""

    def __init__(self, name, line):
        self.name, self.line = name, line
        self.address, self.port, self.user, self.key = name, 22, None, None
        self.become, self.python = None, "python3"
        self.node_ip, self.node_name = None, None
        self.control_plane = self.worker = False
        self.home = None              # found by preflight
        self.uid = None               # the login's uid, found by preflight

    @property
    def role(self):
        if self.control_plane and self.worker:
            return "control-plane,worker"
        return "control-plane" if self.control_plane else "worker"

    def remote(self, path):
        """The absolute remote path of a file in the remote folder."""
        return posixpath.join(self.home or "~", path)


def _inventory_error(where, line, text):
    raise UserError("%s line %d: %s" % (where, line, text))


def expand_host_pattern(name, where, line):
    """node[01:03] is node01, node02, node03, as Ansible reads it."""
    match = INVENTORY_RANGE_RE.search(name)
    if not match:
        if "[" in name or "]" in name:
            _inventory_error(where, line, "%r is not a host name or a range "
                             "like node[01:10]: fix the line" % name)
        return [name]
    first, last = match.group(1), match.group(2)
    if int(first) > int(last) or int(last) - int(first) > 1000:
        _inventory_error(where, line, "the range [%s:%s] is empty or over "
                         "1000 hosts: fix the line" % (first, last))
    width = len(first) if first.startswith("0") else 0
    names = []
    for number in range(int(first), int(last) + 1):
        names.extend(expand_host_pattern(
            name[:match.start()] + str(number).zfill(width) +
            name[match.end():], where, line))
    return names


def _inventory_vars(fields, where, line):
    found = {}
    for field in fields:
        key, equals, value = field.partition("=")
        if not equals or not key:
            _inventory_error(where, line, "%r is not key=value: fix the line"
                             % field)
        found[HOST_VAR_ALIASES.get(key, key)] = (value, line)
    return found


def read_inventory_text(text, where):
    """Parse an Ansible INI inventory: {host: (line, vars)}, {group: hosts},
    {group: children}, {group: vars}; unused groups are kept, as Ansible
    keeps them, and never refused."""
    hosts = collections.OrderedDict()
    members = collections.OrderedDict([("all", []), ("ungrouped", [])])
    children, group_vars = {}, {}
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                _inventory_error(where, number, "%r is not a [group] header: "
                                 "close it with ]" % stripped)
            group, _, kind = stripped[1:-1].partition(":")
            kind = kind or "hosts"
            if (not full_match(INVENTORY_GROUP_RE, group)
                    or kind not in ("hosts", "vars", "children")):
                _inventory_error(where, number, "%r is not a group header "
                                 "([name], [name:vars] or [name:children])"
                                 % stripped)
            members.setdefault(group, [])
            continue
        try:
            fields = shlex.split(stripped, comments=True)
        except ValueError as exc:
            _inventory_error(where, number, "cannot split it (%s): close "
                             "its quotes" % exc)
        if not fields:
            continue
        if kind == "vars":
            group_vars.setdefault(group, {}).update(
                _inventory_vars(fields, where, number))
        elif kind == "children":
            if len(fields) != 1 or not full_match(INVENTORY_GROUP_RE,
                                                  fields[0]):
                _inventory_error(where, number, "a :children section lists "
                                 "one group name a line")
            children.setdefault(group, []).append(fields[0])
            members.setdefault(fields[0], [])
        else:
            host_vars = _inventory_vars(fields[1:], where, number)
            for name in expand_host_pattern(fields[0], where, number):
                if not full_match(INVENTORY_HOST_RE, name):
                    _inventory_error(where, number, "%r is not a host name "
                                     "or address: fix the line" % name)
                line, known = hosts.setdefault(name, (number, {}))
                known.update(host_vars)
                if name not in members[group]:
                    members[group].append(name)
    return hosts, members, children, group_vars


def _group_closure(group, children, seen=()):
    """group and every group below it through :children (cycles cut)."""
    found = [group]
    for child in children.get(group, ()):
        if child not in seen and child != group:
            found.extend(_group_closure(child, children, seen + (group,)))
    return found


def _ansible_bool(value, what, where, line):
    if value.lower() in ANSIBLE_TRUE:
        return True
    if value.lower() in ANSIBLE_FALSE:
        return False
    _inventory_error(where, line, "%s=%s is not a boolean: give true or false"
                     % (what, value))


def _valid_address(value, what, where, line):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not full_match(SSH_ADDRESS_RE, value):
        _inventory_error(where, line, "%s=%s is neither an IP address nor a "
                         "host name: fix it" % (what, value))
    return value


def _apply_host_vars(host, facts, where):
    """Set what the host vars say, each value checked against its grammar."""
    def value(key):
        entry = facts.get(key)
        return (None, host.line) if entry is None else entry
    address, line = value("ansible_host")
    if address is not None:
        host.address = _valid_address(address, "ansible_host", where, line)
    else:
        host.address = _valid_address(host.name, "the host name", where,
                                      host.line)
    port, line = value("ansible_port")
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            _inventory_error(where, line, "host %s: ansible_port=%s is not a "
                             "port number: give 1 to 65535" % (host.name, port))
        host.port = int(port)
    user, line = value("ansible_user")
    if user is not None:
        if not full_match(SSH_USER_RE, user):
            _inventory_error(where, line, "host %s: ansible_user=%s is not a "
                             "user name: fix it" % (host.name, user))
        host.user = user
    key, line = value("ansible_ssh_private_key_file")
    if key is not None:
        host.key = (os.path.expanduser(key), line)
    become, line = value("ansible_become")
    if become is not None:
        host.become = _ansible_bool(become, "ansible_become", where, line)
    become_user, line = value("ansible_become_user")
    if become_user is not None and become_user != "root":
        _inventory_error(where, line, "host %s: ansible_become_user=%s: the "
                         "install commands run as root: leave it out"
                         % (host.name, become_user))
    python, line = value("ansible_python_interpreter")
    if python is not None:
        if (not full_match(REMOTE_PATH_RE, python) or not python.startswith("/")
                or ".." in python.split("/")):
            _inventory_error(where, line, "host %s: ansible_python_interpreter="
                             "%s is not an absolute path: fix it"
                             % (host.name, python))
        host.python = python
    for var in ("ansible_password", "ansible_ssh_pass", "ansible_become_password",
                "ansible_become_pass"):
        if var in facts:
            _inventory_error(where, facts[var][1], "host %s: %s: cluster takes "
                             "no password from the inventory: log in with a "
                             "key (ssh-copy-id), give the sudo password with "
                             "-K or --become-password-file" % (host.name, var))
    ip, line = value("ip")
    if ip is not None:
        try:
            host.node_ip = str(ipaddress.ip_address(ip))
        except ValueError:
            _inventory_error(where, line, "host %s: ip=%s is not an IP "
                             "address: fix it" % (host.name, ip))
    for var in ("k8s_nodename", "node_name"):
        name, line = value(var)
        if name is not None:
            if not full_match(NODE_NAME_RE, name):
                _inventory_error(where, line, "host %s: %s=%s is not a node "
                                 "name (lower case letters, digits, - and .)"
                                 % (host.name, var, name))
            host.node_name = name


def hosts_from_inventory(text, where):
    """The hosts the cluster uses, in inventory order, first control plane
    first: kubespray's, its older and kubeasz's group names; a host in a
    control-plane and a worker group is both (its taint goes)."""
    hosts, members, children, group_vars = read_inventory_text(text, where)
    groups_of = {}
    for group in members:
        for sub in _group_closure(group, children):
            for name in members.get(sub, ()):
                groups_of.setdefault(name, []).append(group)
    cluster = collections.OrderedDict()
    for group in CONTROL_PLANE_GROUPS + WORKER_GROUPS:
        for sub in _group_closure(group, children) if group in members else ():
            for name in members.get(sub, ()):
                if name not in cluster:
                    cluster[name] = ClusterHost(name, hosts[name][0])
                setattr(cluster[name], "control_plane" if group in
                        CONTROL_PLANE_GROUPS else "worker", True)
    for name, host in cluster.items():
        facts = {}
        facts.update(group_vars.get("all", {}))
        # all, then the groups holding others before those they hold (a
        # child group's vars win, as in Ansible), then the host's own.
        groups = [group for group in groups_of.get(name, ())
                  if group not in ("all", "ungrouped")]
        for group in sorted(groups, key=lambda g: -len(_group_closure(
                g, children))):
            facts.update(group_vars.get(group, {}))
        facts.update(hosts[name][1])
        _apply_host_vars(host, facts, where)
        if host.node_name is None and full_match(NODE_NAME_RE, name):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                host.node_name = name    # kubespray names nodes so
    for group in ETCD_GROUPS:
        for name in members.get(group, ()):
            if not any(host.control_plane for host in cluster.values()):
                break
            if name not in cluster or not cluster[name].control_plane:
                log.warning("warning: %s: [%s] host %s is not a control "
                            "plane: kubeadm runs etcd on the control-plane "
                            "hosts, so it is left alone", where, group, name)
    return list(cluster.values())


def read_inventory(path):
    raw = read_regular_file(path, "the inventory", 4 * 1024 * 1024)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("the inventory %s is not UTF-8 text: give an Ansible "
                        "INI inventory" % path)
    return hosts_from_inventory(text, path)


def _flag_hosts(text, flag, port):
    """--masters/--workers IP[:PORT],...: sealos's way of naming hosts."""
    found = []
    for item in [part.strip() for part in (text or "").split(",")]:
        if not item:
            continue
        address, item_port = item, None
        if item.startswith("["):
            address, _, rest = item[1:].partition("]")
            item_port = rest[1:] if rest.startswith(":") else None
        elif item.count(":") == 1:
            address, item_port = item.split(":")
        host = ClusterHost(address, 0)
        where = "%s %s" % (flag, item)
        try:
            host.address = str(ipaddress.ip_address(address))
        except ValueError:
            if not full_match(SSH_ADDRESS_RE, address):
                raise UserError("%s: %r is not an IP address or a host name: "
                                "give IP[:PORT],..." % (flag, item))
        host.name = host.address
        host.port = port
        if item_port is not None:
            if not item_port.isdigit() or not 1 <= int(item_port) <= 65535:
                raise UserError("%s: the port of %s is not a number from 1 "
                                "to 65535: give IP[:PORT]" % (flag, where))
            host.port = int(item_port)
        found.append(host)
    return found


def hosts_from_flags(args):
    masters = _flag_hosts(args.masters, "--masters", args.port)
    workers = _flag_hosts(args.workers, "--workers", args.port)
    for host in masters:
        host.control_plane = True
    for host in workers:
        host.worker = True
        if any(m.address == host.address and m.port == host.port
               for m in masters):
            raise UserError("%s is in both --masters and --workers: a master "
                            "that runs pods is --allow-pods-on-master"
                            % host.name)
    return masters + workers


def require_cluster_hosts(hosts, where):
    """No control plane, one address for two hosts: refused in one line."""
    if not any(host.control_plane for host in hosts):
        raise UserError("%s names no control-plane host: list one under [%s] "
                        "(or --masters)" % (where, CONTROL_PLANE_GROUPS[0]))
    seen, endpoints = {}, {}
    for host in hosts:
        node = host.node_ip or host.address
        other = seen.setdefault(node, host)
        if other is not host:
            raise UserError("%s gives the address %s to two hosts, %s and %s: "
                            "give each host its own" % (where, node,
                                                        other.name, host.name))
        endpoint = (host.address, host.port)
        other = endpoints.setdefault(endpoint, host)
        if other is not host:
            raise UserError("%s reaches two hosts, %s and %s, at %s port %d: "
                            "give each host its own" % (
                                where, other.name, host.name, host.address,
                                host.port))


def require_ssh_key(path, what):
    """A private key ssh can read: a regular file holding a PEM/OpenSSH
    private key (an unreadable one is refused here, before any host)."""
    try:
        raw = read_regular_file(path, what, 1024 * 1024)
    except UserError as exc:
        raise UserError("%s: give a readable private key file (ssh -i)" % exc)
    if b"PRIVATE KEY-----" not in raw:
        raise UserError("%s %s holds no private key: give the private key "
                        "file (not the .pub)" % (what, path))


def read_become_password(args):
    """The sudo password: from --become-password-file, or asked on the
    terminal (-K); None when neither is given (sudo must not ask)."""
    if args.become_password_file:
        raw = read_regular_file(args.become_password_file,
                                "--become-password-file", 64 * 1024)
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            lines = []
        if not lines or not lines[0]:
            raise UserError("--become-password-file %s holds no password on "
                            "its first line: write the sudo password there"
                            % args.become_password_file)
        return lines[0]
    if args.ask_become_pass:
        if args.dry_run:
            return None
        if not sys.stdin or not sys.stdin.isatty():
            raise UserError("--ask-become-pass needs a terminal: give "
                            "--become-password-file FILE instead")
        import getpass
        password = getpass.getpass("BECOME password: ")
        if not password:
            raise UserError("no sudo password was given: type it, or leave "
                            "out --ask-become-pass")
        return password
    return None


class SSHTransport(object):
    """Every command a host runs goes through ssh here: BatchMode (no
    prompt), a ConnectTimeout, host keys checked against known_hosts, one
    ControlMaster connection per host reused by every later command, and
    bounded retries with backoff when the connection (only) fails.  The
    remote command line is built with shlex.quote from checked values;
    a sudo password only ever travels on standard input."""

    def __init__(self, args, password):
        self.connect_timeout = args.connect_timeout
        self.known_hosts = args.known_hosts
        self.accept_new = args.accept_new_host_keys
        self.password = password
        self.control_dir = None
        self.runner = Runner()
        self.opened = set()
        self.lock = threading.Lock()

    def control_path(self):
        with self.lock:
            if self.control_dir is None:
                self.control_dir = tempfile.mkdtemp(prefix="k8so-ssh-")
        return os.path.join(self.control_dir, "%C")

    def ssh_argv(self, host, control=True, extra=()):
        argv = ["ssh", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=%d" % self.connect_timeout,
                "-o", "StrictHostKeyChecking=%s" % (
                    "accept-new" if self.accept_new else "yes"),
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                "-p", str(host.port)]
        if control:
            argv += ["-o", "ControlMaster=auto", "-o", "ControlPersist=300",
                     "-o", "ControlPath=%s" % self.control_path()]
        if self.known_hosts:
            argv += ["-o", "UserKnownHostsFile=%s" % self.known_hosts]
        if host.key:
            argv += ["-i", host.key[0], "-o", "IdentitiesOnly=yes"]
        if host.user:
            argv += ["-l", host.user]
        return argv + list(extra) + ["--", host.address]

    def sudo(self, host):
        """How a command becomes root on host: nothing as root, else sudo
        reading the password from standard input (or never asking)."""
        if not self.needs_sudo(host):
            return []
        if self.password is not None:
            return ["sudo", "-S", "-p", "", "--"]
        return ["sudo", "-n", "--"]

    @staticmethod
    def needs_sudo(host):
        """sudo unless the login is root: as the host said (id -u), else
        as the inventory says (a dry run asks no host)."""
        if host.uid is not None:
            return host.uid != 0
        return host.user not in (None, "root") or host.become is True

    def command_line(self, host, argv, root=False):
        prefix = self.sudo(host) if root else []
        return " ".join(shlex.quote(str(part)) for part in prefix + list(argv))

    def run(self, host, argv, root=False, stdin=None, source=None,
            timeout=CLUSTER_COMMAND_TIMEOUT, logbook=None, secret=False,
            progress=None):
        """(exit status, stdout, stderr) of argv on host.  stdin: text sent
        after the sudo password; source: a local file streamed as standard
        input.  secret: the output is not written to the host's log."""
        line = self.command_line(host, argv, root)
        text = None
        if root and self.password is not None and self.needs_sudo(host):
            text = self.password + "\n"
        if stdin is not None:
            text = (text or "") + stdin
        attempt = 0
        while True:
            attempt += 1
            if logbook:
                logbook.write(host, "$ %s" % line)
            if source is not None:
                result = self._stream(host, line, source, timeout, progress)
            else:
                result = self.runner.execute(self.ssh_argv(host) + [line],
                                             timeout=timeout,
                                             input_text=text)
            if logbook:
                logbook.write(host, "exit %d\n%s" % (result.returncode,
                                                     "(output not logged: "
                                                     "it holds a token)\n"
                                                     if secret else
                                                     result.output()))
            if (attempt < SSH_CONNECT_ATTEMPTS and
                    ssh_never_connected(result)):
                sleep(SSH_BACKOFF * 2 ** (attempt - 1))
                continue
            with self.lock:
                self.opened.add(host)
            return result

    def start(self, host, argv, logbook=None):
        """argv on host, left running: its Popen (text stdout and stderr)."""
        line = self.command_line(host, argv)
        if logbook:
            logbook.write(host, "$ %s" % line)
        with self.lock:
            self.opened.add(host)
        return subprocess.Popen(self.ssh_argv(host) + [line],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)

    def _stream(self, host, line, source, timeout, progress):
        def produce(stream):
            with open(source, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    stream.write(block)
                    if progress is not None:
                        progress.update(len(block))
        return self.runner.execute_piped(self.ssh_argv(host) + [line],
                                         produce, timeout=timeout)

    def close(self):
        """End the ControlMaster connections and remove their sockets."""
        if self.control_dir is None:
            return
        for host in list(self.opened):
            self.runner.execute(self.ssh_argv(host, extra=("-O", "exit")),
                                timeout=30)
        shutil.rmtree(self.control_dir, ignore_errors=True)
        self.control_dir = None


def ssh_failure(host, result, what):
    """One line saying why a command on host failed, and what to do."""
    err = result.stderr or ""
    text = last_line(err) or last_line(result.stdout) or "no output"
    lower = err.lower()
    if result.returncode == 255:
        if "host key verification failed" in lower:
            return ("its host key is not in known_hosts (or changed): check "
                    "it and add it (ssh-keyscan -p %d %s >> ~/.ssh/known_hosts)"
                    ", or run with --accept-new-host-keys"
                    % (host.port, host.address))
        if "permission denied" in lower:
            return ("ssh refused the login of %s: %s: check the user and "
                    "--ssh-key/ansible_ssh_private_key_file"
                    % (host.user or "(ssh's default user)", text))
        said = last_line(err)
        if (not said or SSH_SESSION_LOST_RE.match(said) or
                not SSH_CLIENT_MESSAGE_RE.match(said)):
            # ssh said nothing of its own (the last line is the command's),
            # or that the session it had ended
            return ("lost the ssh connection (port %d) in the middle of %s: "
                    "check the host and its network" % (host.port, what))
        return "cannot reach it over ssh (port %d): %s" % (host.port,
                                                          last_line(err))
    if "incorrect password" in lower or "sorry, try again" in lower:
        return ("sudo refused the password: give the right one "
                "(--ask-become-pass or --become-password-file)")
    if "a password is required" in lower or "no password was provided" in lower:
        return ("sudo wants a password: give --ask-become-pass (-K) or "
                "--become-password-file FILE")
    if "not in the sudoers" in lower or "not allowed to" in lower:
        return "%s may not use sudo there: add it to sudoers" % (
            host.user or "the user")
    return "%s failed (exit %d): %s" % (what, result.returncode, text)


class HostFailed(Exception):
    """A host's step failed: recorded, and what depends on it stops."""


class ClusterLogbook(object):
    """Each host's full output in its own file (mode 0600), one per run."""

    def __init__(self, folder, enabled):
        self.folder, self.enabled = folder, enabled
        self.streams, self.lock = {}, threading.Lock()

    def path(self, host):
        return os.path.join(self.folder, "%s.log" % host.name)

    def write(self, host, text):
        if not self.enabled:
            return
        with self.lock:
            stream = self.streams.get(host.name)
            if stream is None:
                if not os.path.isdir(self.folder):
                    os.makedirs(self.folder, 0o700)
                stream = open_private_log(self.path(host), append=True)
                self.streams[host.name] = stream
            stream.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      text.rstrip("\n")))
            stream.flush()

    def close(self):
        with self.lock:
            for stream in self.streams.values():
                stream.close()
            self.streams.clear()


class ClusterFound(Found):
    """What a `cluster` run's phases learn on the way."""

    __slots__ = (
        "bundle_files",    # the local files the hosts get (.tar, or parts)
        "bundle_meta",     # the bundle's arch, Kubernetes version, sha256
        "bundle_name",     # the file name the hosts keep it under
        "join_text",       # the first control plane's join file
    )

    def __init__(self):
        super(ClusterFound, self).__init__(bundle_files=[])


class ClusterContext(Context):
    """What a `cluster` run knows: the hosts, the flags, the transport, and
    one record of what happened on each host (read by later phases); what
    the phases learn besides goes into .found, a ClusterFound."""

    def __init__(self, args, hosts, where):
        self.args, self.where = args, where
        self.command = "cluster " + args.cluster_action
        self.dry_run = args.dry_run
        self.skip = set()
        self.hosts = hosts
        self.parallel = args.parallel
        self.remote_dir = args.remote_dir
        self.tool = os.path.abspath(os.environ.get(CLUSTER_TOOL_ENV) or
                                    __file__)
        self.password = read_become_password(args)
        self.ssh = SSHTransport(args, self.password)
        self.logbook = ClusterLogbook(args.log_dir, not args.dry_run)
        self.found = ClusterFound()
        # Byte progress of the copies: bars on a terminal; elsewhere only
        # the one line per host and phase.
        self.show_bytes = (not getattr(args, "no_progress", True)
                           and sys.stderr.isatty())
        self.results = collections.OrderedDict(
            (host.name, {"result": "pending", "seconds": 0.0, "phase": ""})
            for host in hosts)
        self.state = {}               # host name -> its probe
        self.failed = collections.OrderedDict()
        self.say_lock = threading.Lock()
        self._seal()

    @property
    def first(self):
        return next(host for host in self.hosts if host.control_plane)

    def close(self):
        self.ssh.close()
        self.logbook.close()

    def remote_tool(self, host):
        return host.remote(posixpath.join(self.remote_dir, "k8s_offline.py"))

    def remote_bundle(self, host):
        return host.remote(posixpath.join(self.remote_dir,
                                          self.found.bundle_name))

    def remote_join_file(self, host):
        return host.remote(posixpath.join(self.remote_dir, JOIN_FILE_NAME))

    def remote_extra_config(self, host):
        return host.remote(posixpath.join(self.remote_dir,
                                          CLUSTER_EXTRA_CONFIG_NAME))

    def alive(self, hosts):
        return [host for host in hosts if host.name not in self.failed]

    def report(self, phase, host, result, seconds, failed=False):
        """The one progress line of a host in a phase."""
        entry = self.results[host.name]
        entry["seconds"] += seconds
        entry["phase"] = phase
        if failed:
            self.failed[host.name] = "%s: %s" % (phase, result)
            entry["result"] = "FAILED (%s): %s" % (phase, result)
        elif not entry["result"].startswith(("FAILED", "skipped")):
            entry["result"] = result
        with self.say_lock:
            (log.error if failed else log.info)(
                "[%s] %s (%s): %s%s", phase, host.name, host.role,
                "FAILED: " if failed else "", result if seconds < 0.05 else
                "%s in %.1f s" % (result, seconds))

    def skip_host(self, phase, host, why):
        entry = self.results[host.name]
        if host.name not in self.failed:
            self.failed[host.name] = "%s: skipped: %s" % (phase, why)
            entry["result"] = "skipped (%s): %s" % (phase, why)
        with self.say_lock:
            log.warning("[%s] %s (%s): skipped: %s", phase, host.name,
                        host.role, why)

    def run(self, host, argv, what, root=False, **kwargs):
        """stdout of argv on host; HostFailed with one line if it fails."""
        result = self.ssh.run(host, argv, root=root, logbook=self.logbook,
                              **kwargs)
        if result.returncode != 0:
            raise HostFailed(ssh_failure(host, result, what))
        return result.stdout

    def tool_argv(self, host, *argv):
        return [host.python, self.remote_tool(host)] + list(argv)

    def plan(self, phase, host, argv, root=False):
        """Under --dry-run: the command host would run, and no connection."""
        with self.say_lock:
            say("  [%s] %s (%s): would run: ssh %s%s %s" % (
                phase, host.name, host.role,
                "%s@" % host.user if host.user else "", host.address,
                self.ssh.command_line(host, argv, root)))


def on_hosts(ctx, phase, hosts, step, parallel=None):
    """step(host) -> note on each host, parallel at most N at a time (1: in
    order); each gets its progress line; a HostFailed or UserError is that
    host's failure, never the others'."""
    hosts = list(hosts)
    width = max(1, min(parallel or ctx.parallel, len(hosts) or 1))
    queue = collections.deque(hosts)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                host = queue.popleft()
            began = now()
            try:
                note = step(host)
            except (HostFailed, UserError, OSError) as exc:
                ctx.report(phase, host, str(exc), now() - began, failed=True)
            except Exception as exc:   # a bug: that host fails, named
                log.debug("details", exc_info=True)
                ctx.report(phase, host, "unexpected %s: %s (run again with "
                           "-v for details)" % (exc.__class__.__name__, exc),
                           now() - began, failed=True)
            else:
                if note is not None:
                    ctx.report(phase, host, note, now() - began)
    threads = [threading.Thread(target=worker) for _ in range(width)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()


# -- cluster phases, in run order -------------------------------------------

def cluster_bundle_files(ctx):
    """The local files the hosts get: the bundle .tar, or a --split bundle's
    index and parts; checked whole here before any host is reached."""
    path = os.path.abspath(ctx.args.bundle)
    if os.path.isdir(path):
        raise UserError("--bundle %s is a folder: cluster copies the bundle "
                        ".tar (or a --split bundle's parts): give --bundle "
                        "PATH.tar" % ctx.args.bundle)
    bundle = None
    try:
        bundle = Bundle(path)     # reads the tar's index: damage shows here
        if not ctx.dry_run:
            verify_bundle(bundle, progress=not ctx.args.no_progress)
        ctx.found.bundle_meta = {"arch": bundle.arch,
                           "kubernetes_version": bundle.kubernetes_version,
                           "sha256": bundle.meta_sha256}
    except BundleError as exc:
        raise UserError("the bundle on this machine is damaged, so no host "
                        "was changed: %s" % exc)
    finally:
        if bundle is not None:
            bundle.close()
    index = parts_index_path(path)
    if index is None:
        ctx.found.bundle_files = [path]
        ctx.found.bundle_name = os.path.basename(path)
    else:
        parts = read_parts_index(index)
        folder = os.path.dirname(index)
        ctx.found.bundle_files = [index] + [os.path.join(folder, part["name"])
                                      for part in parts["parts"]]
        ctx.found.bundle_name = os.path.basename(index)


def cluster_phase_preflight(ctx):
    """Check the bundle here, then every host at once: reach it, sudo, its
    arch against the bundle's, Python, free disk for the bundle.  A problem
    on any host stops the run before any host is changed."""
    cluster_bundle_files(ctx)
    found = ctx.found
    log.info("bundle %s: Kubernetes %s, %s, bundle.json sha256 %s",
             found.bundle_name, found.bundle_meta["kubernetes_version"],
             found.bundle_meta["arch"], found.bundle_meta["sha256"])
    sizes = dict((os.path.basename(path), os.path.getsize(path))
                 for path in found.bundle_files + [ctx.tool])
    sizes["k8s_offline.py"] = sizes.pop(os.path.basename(ctx.tool))
    if ctx.dry_run:
        for host in ctx.hosts:
            ctx.plan("preflight", host, ["uname", "-m"])
            if ctx.ssh.needs_sudo(host):
                ctx.plan("preflight", host, ["true"], root=True)
        return
    if ctx.ssh.accept_new:
        log.warning("WARNING: --accept-new-host-keys: the key of a host seen "
                    "for the first time is trusted without a check and "
                    "written to known_hosts; compare it out of band")
    wanted = ctx.found.bundle_meta["arch"]

    def check(host):
        names = " ".join(shlex.quote(posixpath.join(ctx.remote_dir, name))
                         for name in sorted(sizes))
        script = ("id -u; uname -m; pwd; %s -c %s 2>/dev/null || echo none; "
                  "df -Pk . | tail -n 1; for f in %s; do "
                  "stat -c %%s \"$f\" 2>/dev/null || echo -; done" % (
                      shlex.quote(host.python),
                      shlex.quote("import sys; print('%d.%d' % "
                                  "sys.version_info[:2])"), names))
        lines = ctx.run(host, ["sh", "-c", script], "the preflight "
                        "commands").splitlines()
        if len(lines) < 5 + len(sizes) or not lines[0].strip().isdigit():
            raise HostFailed("its shell answered %d lines, not %d: is it a "
                             "Linux host with sh, id, df and stat?"
                             % (len(lines), 5 + len(sizes)))
        host.uid = int(lines.pop(0))
        machine, home, python, df = lines[:4]
        arch = next((name for name, facts in ARCHES.items()
                     if machine.strip().lower() in facts["uname"]), machine)
        if arch != wanted:
            raise HostFailed("the bundle is for %s but this host is %s: make "
                             "a bundle with --arch %s for it" % (
                                 wanted, arch, arch))
        if not home.startswith("/"):
            raise HostFailed("its home folder %r is not an absolute path"
                             % home)
        host.home = home.strip()
        # A Python release, not a Kubernetes one (those are compared only
        # in the profiles).
        release = tuple(int(part) for part in python.split(".")
                        if part.isdigit())
        if len(release) != 2 or release < MIN_REMOTE_PYTHON:
            raise HostFailed("%s is missing or older than 3.6 (%s): install "
                             "Python 3.6+ or set ansible_python_interpreter"
                             % (host.python, python.strip()))
        try:
            free = int(df.split()[3]) * 1024
        except (IndexError, ValueError):
            raise HostFailed("cannot read its free disk space from %r" % df)
        have = lines[4:4 + len(sizes)]
        need = sum(size for (name, size), there in zip(sorted(sizes.items()),
                                                       have)
                   if there.strip() != str(size)) + CLUSTER_DISK_MARGIN
        if free < need:
            raise HostFailed("%s has %s free, the bundle needs %s: free some "
                             "space" % (host.home, human_size(free),
                                        human_size(need)))
        if ctx.ssh.needs_sudo(host):
            if host.become is False:
                raise HostFailed("ansible_become=false for user %s: master "
                                 "and join run as root: set ansible_become="
                                 "true or ansible_user=root" % host.user)
            ctx.run(host, ["true"], "sudo", root=True)
        return "%s, Python %s, %s free" % (arch, python.strip(),
                                           human_size(free))
    on_hosts(ctx, "preflight", ctx.hosts, check, parallel=len(ctx.hosts))
    if ctx.failed:
        raise UserError("preflight failed on %s: no host was changed; fix "
                        "what is said above and run again" % ", ".join(
                            host.name for host in ctx.hosts
                            if host.name in ctx.failed))


def cluster_phase_copy(ctx):
    """Copy this file and the bundle to each host's folder (the SSH user's
    ~/k8s-offline), streamed over ssh into a temporary name, then renamed;
    a file the host already holds with the same sha256 is not sent.  With
    --fan-out the hosts that hold the bundle pass it on to the others, so
    the copies double each round."""
    bundle = [(path, os.path.basename(path))
              for path in ctx.found.bundle_files]
    local = [(ctx.tool, "k8s_offline.py")] + bundle
    if ctx.dry_run:
        for host in ctx.hosts:
            for _, name in local:
                ctx.plan("copy", host, ["cat", ">", posixpath.join(
                    ctx.remote_dir, name)])
        return
    digests = dict((path, sha256_file(path)) for path, _ in local)
    missing = {}

    def check(host):
        folder = host.remote(ctx.remote_dir)
        ctx.run(host, ["mkdir", "-p", "-m", "0700", folder], "mkdir")
        sums = {}
        for line in ctx.run(host, ["sh", "-c", "cd %s && sha256sum -- %s "
                                   "2>/dev/null; true" % (shlex.quote(folder),
                                   " ".join(shlex.quote(name) for _, name
                                            in local))], "sha256sum").splitlines():
            fields = line.split()
            if len(fields) == 2:
                sums[fields[1]] = fields[0]
        if sums.get("k8s_offline.py") != digests[ctx.tool]:
            copy_from_here(ctx, host, ctx.tool, "k8s_offline.py",
                           digests[ctx.tool])
        missing[host.name] = [(path, name) for path, name in bundle
                              if sums.get(name) != digests[path]]
        if missing[host.name]:
            return None                   # its line comes with its copy
        if sums.get("k8s_offline.py") != digests[ctx.tool]:
            return "copied this file; the bundle is there already"
        return "skipped: holds the same bytes (%d files)" % len(local)
    on_hosts(ctx, "copy", ctx.alive(ctx.hosts), check)
    pending = [host for host in ctx.alive(ctx.hosts) if missing.get(host.name)]

    def send(source, host):
        sent, relayed = 0, False
        for path, name in missing[host.name]:
            if source is not None and relay_file(ctx, source, host, path, name,
                                                 digests[path]):
                relayed = True
            else:
                copy_from_here(ctx, host, path, name, digests[path])
            sent += os.path.getsize(path)
        return "copied %s from %s" % (human_size(sent), source.name if relayed
                                      else "this machine")
    if not ctx.args.fan_out:
        on_hosts(ctx, "copy", pending, lambda host: send(None, host))
        return
    # Each round every holder (this machine first) sends to one host that
    # lacks the bundle; the hosts served join the holders.
    holders = [None] + [host for host in ctx.alive(ctx.hosts)
                        if host.name in missing and not missing[host.name]]
    while pending:
        batch, pending = pending[:len(holders)], pending[len(holders):]
        source = dict((host.name, holder) for host, holder in zip(batch,
                                                                 holders))
        on_hosts(ctx, "copy", batch, lambda host: send(source[host.name],
                                                       host),
                 parallel=len(batch))
        holders += [host for host in batch if host.name not in ctx.failed]


def copy_from_here(ctx, host, path, name, digest):
    """One file from this machine to host over ssh, checked on arrival."""
    folder = host.remote(ctx.remote_dir)
    target = posixpath.join(folder, name)
    partial = posixpath.join(folder, ".%s.partial" % name)
    progress = Progress(os.path.getsize(path), "[copy] %s to %s" % (
        name, host.name), enabled=ctx.show_bytes)
    try:
        ctx.run(host, ["sh", "-c", "cat > %s && mv -f %s %s" % (
            shlex.quote(partial), shlex.quote(partial), shlex.quote(target))],
            "copying %s" % name, source=path, progress=progress)
    finally:
        progress.close()
    require_arrived(ctx, host, target, name, digest)


def require_arrived(ctx, host, target, name, digest):
    there = ctx.run(host, ["sha256sum", target], "sha256sum").split()[:1]
    if there != [digest]:
        raise HostFailed("%s arrived damaged (sha256 %s): copy again"
                         % (name, there))


# The two ends of a copy from one host to another (--fan-out), run there by
# their python3: a plain TCP stream on the hosts' own network, each byte
# checked against the sha256 on arrival; the receiver listens for this one
# transfer only and serves only the sending host's address.
RELAY_RECEIVER = """\
import hashlib, os, socket, sys
addr, peer, path, size, digest = sys.argv[1:6]
size = int(size)
srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
srv.settimeout(60)
srv.bind((addr, 0))
srv.listen(4)
print(srv.getsockname()[1])
sys.stdout.flush()
for _ in range(16):
    conn, where = srv.accept()
    if where[0] == peer:
        break
    conn.close()
else:
    sys.exit("no connection from %s" % peer)
conn.settimeout(60)
tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) +
                   ".partial")
digester, got = hashlib.sha256(), 0
with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
               "wb") as handle:
    while got < size:
        block = conn.recv(1 << 20)
        if not block:
            break
        handle.write(block)
        digester.update(block)
        got += len(block)
if got != size or digester.hexdigest() != digest:
    os.unlink(tmp)
    sys.exit("got %d bytes with sha256 %s" % (got, digester.hexdigest()))
os.rename(tmp, path)
print("ok")
"""
RELAY_SENDER = """\
import socket, sys
addr, port, own, path = sys.argv[1:5]
sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
sock.settimeout(60)
sock.bind((own, 0))
sock.connect((addr, int(port)))
with open(path, "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
        sock.sendall(block)
sock.shutdown(socket.SHUT_WR)
sock.close()
"""


def relay_address(host):
    """The IP address the other hosts reach host at, or None (a name)."""
    try:
        return str(ipaddress.ip_address(host.node_ip or host.address))
    except ValueError:
        return None


def relay_file(ctx, source, host, path, name, digest):
    """host gets name from source, which holds it already (--fan-out); False
    when that does not work out (a name, not an address; a firewall; a host
    that left), and this machine sends it instead."""
    to, own = relay_address(host), relay_address(source)
    if to is None or own is None:
        return False
    target = posixpath.join(host.remote(ctx.remote_dir), name)
    receiver = ctx.ssh.start(host, [host.python, "-c", RELAY_RECEIVER, to,
                                    own, target, str(os.path.getsize(path)),
                                    digest], logbook=ctx.logbook)
    try:
        port = receiver.stdout.readline().strip()
        if not port.isdigit():
            return False
        sent = ctx.ssh.run(source, [source.python, "-c", RELAY_SENDER, to,
                                    port, own, posixpath.join(source.remote(
                                        ctx.remote_dir), name)],
                           logbook=ctx.logbook)
        out, err = ("", "") if sent.returncode else receiver.communicate(
            timeout=120)
        if sent.returncode != 0 or receiver.returncode != 0 or "ok" not in out:
            why = last_line(sent.output()) or last_line(err)
            log.debug("fan-out %s -> %s failed: %s", source.name, host.name,
                      why)
            ctx.logbook.write(host, "fan-out from %s failed: %s" % (
                source.name, why))
            return False
    except subprocess.TimeoutExpired:
        return False
    finally:
        if receiver.poll() is None:
            receiver.kill()
        receiver.wait()
    require_arrived(ctx, host, target, name, digest)
    return True


def cluster_phase_verify(ctx):
    """On each host, its own `verify` of the bundle it now holds, and what
    it already runs (a control plane, a joined node) for a safe re-run."""
    hosts = ctx.alive(ctx.hosts)
    if ctx.dry_run:
        for host in hosts:
            ctx.plan("verify", host, ctx.tool_argv(host, "verify",
                                                   "--no-progress",
                                                   ctx.remote_bundle(host)))
            ctx.plan("verify", host, ctx.tool_argv(host, "cluster", "probe"),
                     root=True)
        return

    def verify(host):
        ctx.run(host, ctx.tool_argv(host, "verify", "--no-progress",
                                    ctx.remote_bundle(host)), "verify")
        ctx.state[host.name] = probe_host(ctx, host)
        state = ctx.state[host.name]
        if state.get("initialized"):
            return "OK; already a control plane"
        return "OK; already joined" if state.get("joined") else "OK"
    on_hosts(ctx, "verify", hosts, verify, parallel=len(hosts))


def probe_host(ctx, host, untaint=()):
    argv = ctx.tool_argv(host, "cluster", "probe")
    for name in untaint:
        argv += ["--untaint", name]
    out = ctx.run(host, argv, "cluster probe", root=True)
    try:
        state = json.loads(last_line(out))
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise HostFailed("cluster probe printed no state: %s" % last_line(out))
    return state


def node_name_of(ctx, host):
    return host.node_name or ctx.state.get(host.name, {}).get("hostname")


def master_argv(ctx, host):
    """The master command of the first control plane: the cluster's flags,
    given once, and what the inventory says of this host."""
    argv = ["master", "--bundle", ctx.remote_bundle(host), "--join-file",
            ctx.remote_join_file(host), "--no-progress"]
    argv += forwarded_flags(ctx, "master")
    if ctx.args.kubeadm_config_extra:
        argv += ["--kubeadm-config-extra", ctx.remote_extra_config(host)]
    if host.worker or ctx.args.allow_pods_on_master:
        argv.append("--allow-pods-on-master")
    if len([h for h in ctx.hosts if h.control_plane]) > 1:
        argv.append("--upload-certs")
    return argv + node_flags(host)


def node_flags(host):
    argv = []
    if host.node_name:
        argv += ["--node-name", host.node_name]
    if host.node_ip and host.control_plane:
        argv += ["--apiserver-advertise-address", host.node_ip]
    return argv


def forwarded_flags(ctx, command):
    argv = []
    for flag, dest, commands in CLUSTER_FORWARDED_FLAGS:
        value = getattr(ctx.args, dest)
        if command not in commands or value in (None, False):
            continue
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def cluster_phase_master(ctx):
    """`master` on the first control-plane host (not again on a host that
    already is one), then the join file the other hosts need."""
    host = ctx.first
    wanting = [h for h in ctx.alive(ctx.hosts) if h is not host and
               not ctx.state.get(h.name, {}).get("joined")]
    if ctx.dry_run:
        if ctx.args.kubeadm_config_extra:
            ctx.plan("master", host, ["cat", ">", ctx.remote_extra_config(
                host)])
        ctx.plan("master", host, ctx.tool_argv(host, *master_argv(ctx, host)),
                 root=True)
        return
    if host.name in ctx.failed:
        for other in ctx.alive(ctx.hosts):
            ctx.skip_host("master", other, "the first control plane %s failed"
                          % host.name)
        return

    def master(_):
        if ctx.state.get(host.name, {}).get("initialized"):
            note = "skipped: already a control plane"
            if wanting:
                ctx.run(host, ctx.tool_argv(
                    host, "token", "--bundle", ctx.remote_bundle(host),
                    "--join-file", ctx.remote_join_file(host)),
                    "token", root=True)
                note += "; a fresh join file"
        else:
            if ctx.args.kubeadm_config_extra:
                send_private_file(ctx, host, ctx.remote_extra_config(host),
                                  read_regular_file(
                                      ctx.args.kubeadm_config_extra,
                                      "--kubeadm-config-extra",
                                      MAX_EXTRA_CONFIG_BYTES).decode("utf-8"),
                                  "writing the --kubeadm-config-extra file")
            ctx.run(host, ctx.tool_argv(host, *master_argv(ctx, host)),
                    "master", root=True)
            note = "done"
        if wanting:
            ctx.found.join_text = ctx.run(
                host, ["cat", ctx.remote_join_file(host)],
                "reading the join file", root=True, secret=True)
        return note
    on_hosts(ctx, "master", [host], master)
    if host.name in ctx.failed:
        for other in ctx.alive(ctx.hosts):
            ctx.skip_host("master", other, "the first control plane %s failed"
                          % host.name)


def send_private_file(ctx, host, target, text, what, secret=False):
    """text into target on host (mode 0600), through a temporary name."""
    partial = target + ".partial"
    ctx.run(host, ["sh", "-c", "umask 077 && cat > %s && mv -f %s %s" % (
        shlex.quote(partial), shlex.quote(partial), shlex.quote(target))],
        what, stdin=text, secret=secret)


def join_argv(ctx, host):
    """The join command of host: the cluster's flags that join takes, the
    join file cluster puts there, and what the inventory says of host."""
    argv = ["join", "--bundle", ctx.remote_bundle(host), "--join-file",
            ctx.remote_join_file(host), "--no-progress"]
    argv += forwarded_flags(ctx, "join")
    if host.control_plane:
        argv.append("--control-plane")
    return argv + node_flags(host)


def join_host(ctx, host, phase):
    if ctx.state.get(host.name, {}).get("joined"):
        return "skipped: already joined"
    if ctx.found.join_text is None:
        raise HostFailed("no join file came from %s" % ctx.first.name)
    target = ctx.remote_join_file(host)
    send_private_file(ctx, host, target, ctx.found.join_text,
                      "writing the join file", secret=True)
    try:
        ctx.run(host, ctx.tool_argv(host, *join_argv(ctx, host)), phase,
                root=True)
    finally:
        with contextlib.suppress(HostFailed):     # the join's error wins
            ctx.run(host, ["rm", "-f", target], "removing the join file")
    return "done"


def cluster_phase_control_planes(ctx):
    """`join --control-plane` on the other control-plane hosts, one at a
    time (etcd grows by one member at a time); after a failure the later
    ones wait for the next run."""
    hosts = [h for h in ctx.hosts if h.control_plane and h is not ctx.first]
    for host in hosts:
        if ctx.dry_run:
            ctx.plan("control-planes", host, ctx.tool_argv(
                host, *join_argv(ctx, host)), root=True)
            continue
        if host.name in ctx.failed:
            continue
        broken = [h.name for h in hosts[:hosts.index(host)]
                  if h.name in ctx.failed]
        if broken:
            ctx.skip_host("control-planes", host, "control plane %s failed "
                          "before it: they join one at a time" % broken[0])
            continue
        on_hosts(ctx, "control-planes", [host],
                 lambda h: join_host(ctx, h, "join --control-plane"))


def cluster_phase_workers(ctx):
    """`join` on the workers, --parallel N at a time."""
    hosts = [h for h in ctx.hosts if not h.control_plane]
    if ctx.dry_run:
        for host in hosts:
            ctx.plan("workers", host, ctx.tool_argv(host, *join_argv(ctx,
                                                                   host)),
                     root=True)
        return
    on_hosts(ctx, "workers", ctx.alive(hosts),
             lambda h: join_host(ctx, h, "join"))


def cluster_phase_wait(ctx):
    """Wait until every node that joined is Ready (--wait-timeout), seen
    from the first control plane; control planes that also are workers lose
    their taint there."""
    host = ctx.first
    hosts = ctx.alive(ctx.hosts)
    if ctx.dry_run:
        ctx.plan("wait", host, ctx.tool_argv(host, "cluster", "probe"),
                 root=True)
        return
    if ctx.args.no_wait or not hosts:
        return
    names = dict((node_name_of(ctx, h), h) for h in hosts)
    untaint = [node_name_of(ctx, h) for h in hosts
               if h.control_plane and h.worker and h is not host]
    deadline = now() + ctx.args.wait_timeout
    began = now()
    while True:
        try:
            state = probe_host(ctx, host, untaint)
        except HostFailed as exc:
            for other in hosts:
                ctx.report("wait", other, "cannot ask %s: %s" % (host.name,
                                                                exc),
                           now() - began, failed=True)
            return
        untaint = ()
        nodes = state.get("nodes") or {}
        pending = sorted(name for name in names if not nodes.get(name))
        if not pending or now() >= deadline:
            break
        sleep(WAIT_INTERVAL)
    for name, other in names.items():
        if name in pending:
            ctx.report("wait", other, "node %s is not Ready after %d s: see "
                       "`cluster status` and its log" % (
                           name, ctx.args.wait_timeout), now() - began,
                       failed=True)
        else:
            ctx.report("wait", other, "Ready", 0)
            ctx.results[other.name]["result"] = "Ready"


def cluster_summary(ctx):
    """The table at the end: host, role, result, time."""
    rows = [("HOST", "ROLE", "RESULT", "TIME")] + [
        (host.name, host.role, ctx.results[host.name]["result"],
         "%.1f s" % ctx.results[host.name]["seconds"]) for host in ctx.hosts]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        say("  ".join(cell.ljust(width) for cell, width in
                      zip(row, widths)) + "  " + row[3])
    if ctx.logbook.streams or os.path.isdir(ctx.logbook.folder):
        say("each host's output: %s/HOST.log" % ctx.logbook.folder)


# Cluster flags given once and passed on, as master and join name them:
# (flag, argparse dest, the commands that take it).
CLUSTER_FORWARDED_FLAGS = (
    ("--image-repository", "image_repository", ("master", "join")),
    ("--cri", "cri", ("master", "join")),
    ("--pod-network-cidr", "pod_network_cidr", ("master",)),
    ("--service-cidr", "service_cidr", ("master",)),
    ("--control-plane-endpoint", "control_plane_endpoint", ("master",)),
    ("--disable-swap", "disable_swap", ("master", "join")),
    ("--iptables-legacy", "iptables_legacy", ("master", "join")),
    ("--allow-cgroup-v1", "allow_cgroup_v1", ("master", "join")),
    ("--open-firewall", "open_firewall", ("master", "join")),
    ("--selinux-permissive", "selinux_permissive", ("master", "join")),
    ("--ignore-preflight-errors", "ignore_preflight_errors", ("master", "join")),
    ("--wait-timeout", "wait_timeout", ("master", "join")),
)
CLUSTER_UP_PHASES = (
    ("preflight", "the bundle here; every host: ssh, sudo, arch, Python, disk",
     cluster_phase_preflight),
    ("copy", "this file and the bundle to each host (same bytes: skipped)",
     cluster_phase_copy),
    ("verify", "each host's own verify of its copy, and what it already runs",
     cluster_phase_verify),
    ("master", "master on the first control-plane host", cluster_phase_master),
    ("control-planes", "join --control-plane on the others, one at a time",
     cluster_phase_control_planes),
    ("workers", "join on the workers, --parallel N at a time",
     cluster_phase_workers),
    ("wait", "every node Ready, seen from the first control plane",
     cluster_phase_wait),
)


def require_cluster_flags(args, hosts):
    """Every flag checked before any host is reached."""
    if not 1 <= args.parallel <= 256:
        raise UserError("bad --parallel %d: give 1 to 256" % args.parallel)
    if not 1 <= args.connect_timeout <= 300:
        raise UserError("bad --connect-timeout %d: give 1 to 300 seconds"
                        % args.connect_timeout)
    if (not full_match(REMOTE_PATH_RE, args.remote_dir)
            or ".." in args.remote_dir.split("/")):
        raise UserError("bad --remote-dir %r: give a folder name of letters, "
                        "digits, . _ - and /" % args.remote_dir)
    if args.cluster_action not in ("up", "add"):
        args.control_plane_endpoint = None
    for dest in ("pod_network_cidr", "service_cidr"):
        value = getattr(args, dest, None)
        if value is not None:
            try:
                ipaddress.ip_network(value)
            except ValueError:
                raise UserError("bad --%s %s: give a network like 10.244.0.0"
                                "/16" % (dest.replace("_", "-"), value))
    if getattr(args, "image_repository", None) and not is_image_repository(args.image_repository):
        raise UserError("bad --image-repository %r: give a registry path like "
                        "registry.example:5000/k8s" % args.image_repository)
    if (getattr(args, "ignore_preflight_errors", None) and not full_match(
            PREFLIGHT_ERRORS_RE, args.ignore_preflight_errors)):
        raise UserError("bad --ignore-preflight-errors %r: give check names "
                        "separated by commas" % args.ignore_preflight_errors)
    endpoint = getattr(args, "control_plane_endpoint", None)
    if endpoint is not None:
        address, _, port = endpoint.rpartition(":")
        if not address or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UserError("bad --control-plane-endpoint %r: give HOST:PORT"
                            % endpoint)
    if (len([host for host in hosts if host.control_plane]) > 1
            and endpoint is None and args.cluster_action in ("up", "add")):
        raise UserError("%d control-plane hosts need --control-plane-endpoint "
                        "HOST:PORT (a load balancer or virtual IP in front of "
                        "their API servers on 6443)" % len(
                            [host for host in hosts if host.control_plane]))
    if getattr(args, "kubeadm_config_extra", None):
        read_extra_config(args.kubeadm_config_extra)     # master's checks
    if args.ssh_key:
        require_ssh_key(os.path.expanduser(args.ssh_key), "--ssh-key")
    for host in hosts:
        if host.key:
            require_ssh_key(host.key[0], "host %s: "
                            "ansible_ssh_private_key_file" % host.name)
        elif args.ssh_key:
            host.key = (os.path.expanduser(args.ssh_key), 0)
        if host.user is None and args.user:
            host.user = args.user


def cluster_hosts(args):
    if args.inventory and (args.masters or args.workers):
        raise UserError("give either -i INVENTORY or --masters/--workers, "
                        "not both")
    if args.inventory:
        hosts, where = read_inventory(args.inventory), args.inventory
    elif args.masters:
        hosts, where = hosts_from_flags(args), "--masters/--workers"
    else:
        raise UserError("no hosts: give -i inventory.ini (kubespray's) or "
                        "--masters IP,... [--workers IP,...]")
    if args.user is not None and not full_match(SSH_USER_RE, args.user):
        raise UserError("bad --user %r: give a user name" % args.user)
    require_cluster_hosts(hosts, where)
    require_cluster_flags(args, hosts)
    return hosts, where


def find_home(ctx, host):
    """The host's home folder (the remote folder lies under it)."""
    lines = ctx.run(host, ["sh", "-c", "id -u; pwd"], "id and pwd").split("\n")
    if len(lines) < 2 or not lines[0].isdigit() or not lines[1].startswith("/"):
        raise HostFailed("id -u; pwd answered %r, not a uid and a folder"
                         % lines[:2])
    host.uid, host.home = int(lines[0]), lines[1]


def cluster_status(ctx):
    """`status` of the first control-plane host, printed here."""
    host = ctx.first
    if ctx.dry_run:
        ctx.plan("status", host, ctx.tool_argv(host, "status"), root=True)
        return
    try:
        find_home(ctx, host)
        echo(ctx.run(host, ctx.tool_argv(host, "status"), "status",
                     root=True))
    except HostFailed as exc:
        raise UserError("%s: %s" % (host.name, exc))


def cluster_remove(ctx):
    """Drain and delete HOST's node from the first control plane, then
    reset HOST; it stays in no group of the inventory afterwards."""
    wanted = ctx.args.host
    host = next((h for h in ctx.hosts if wanted in (h.name, h.address)), None)
    if host is None:
        raise UserError("%s is not a host of %s: give its inventory name or "
                        "address" % (wanted, ctx.where))
    if host is ctx.first:
        raise UserError("%s is the first control plane, which the others "
                        "join: remove the others, or `cluster reset`"
                        % host.name)
    first = ctx.first
    if ctx.dry_run:
        ctx.plan("remove", first, ctx.tool_argv(first, "remove-node",
                                                host.node_name or "NODE"),
                 root=True)
        ctx.plan("remove", host, ctx.tool_argv(host, "reset", "--yes"),
                 root=True)
        return
    began = now()
    try:
        find_home(ctx, first)
        find_home(ctx, host)
        name = host.node_name or probe_host(ctx, host).get("hostname")
        if not name or not full_match(NODE_NAME_RE, name):
            raise HostFailed("its node name %r is not one: set k8s_nodename "
                             "in the inventory" % name)
        ctx.run(first, ctx.tool_argv(first, "remove-node", name),
                "remove-node", root=True)
        ctx.run(host, ctx.tool_argv(host, "reset", "--yes"), "reset",
                root=True)
    except HostFailed as exc:
        ctx.report("remove", host, str(exc), now() - began, failed=True)
        return
    ctx.report("remove", host, "removed and reset", now() - began)


def cluster_reset(ctx):
    """`reset --yes` on every host: the workers at once, then the other
    control planes one at a time, the first control plane last."""
    if not ctx.args.yes and not ctx.dry_run:
        raise UserError("cluster reset removes Kubernetes from every host of "
                        "%s: run it again with --yes" % ctx.where)
    first = ctx.first
    others = [h for h in ctx.hosts if h.control_plane and h is not first]
    workers = [h for h in ctx.hosts if not h.control_plane]

    def reset(host):
        if ctx.dry_run:
            ctx.plan("reset", host, ctx.tool_argv(host, "reset", "--yes"),
                     root=True)
            return None
        find_home(ctx, host)
        ctx.run(host, ctx.tool_argv(host, "reset", "--yes"), "reset",
                root=True)
        return "reset"
    on_hosts(ctx, "reset", workers, reset)
    on_hosts(ctx, "reset", others + [first], reset, parallel=1)


CLUSTER_ACTIONS = {"status": cluster_status, "remove": cluster_remove,
                   "reset": cluster_reset}


def cmd_cluster(args):
    """cluster up/add (the phases through the runner), status, remove,
    reset: from the machine holding the bundle, over ssh."""
    hosts, where = cluster_hosts(args)
    ctx = ClusterContext(args, hosts, where)
    try:
        action = CLUSTER_ACTIONS.get(args.cluster_action)
        if action is not None:
            action(ctx)
        else:
            workflow = [Phase(*row) for row in CLUSTER_UP_PHASES]
            try:
                run_phases(ctx, workflow)
            finally:
                if not ctx.dry_run and ctx.found.bundle_meta is not None:
                    cluster_summary(ctx)
    finally:
        ctx.close()
    if ctx.dry_run:
        log.info("dry run: no host was reached or changed")
        return 0
    if ctx.failed:
        log.error("error: %s failed on %d of %d hosts: %s: fix it and run the "
                  "same command again (done hosts are left as they are)",
                  ctx.command, len(ctx.failed), len(ctx.hosts), "; ".join(
                      "%s (%s)" % (host.name, ctx.failed[host.name])
                      for host in ctx.hosts if host.name in ctx.failed))
        return 1
    return 0


def cmd_cluster_probe(args):
    """On a host (run by cluster over ssh): one JSON line of its state."""
    root = args.root or "/"
    admin = os.path.join(root, ADMIN_CONF.lstrip("/"))
    # A run of this tool cut off mid-way (its ssh session gone) records
    # "started": kubeadm's files may be there (the kubelet finishes its TLS
    # bootstrap alone), yet the next cluster up must run it again.
    recorded = Host(root).state()
    half_done = "started" in (recorded.get("init"), recorded.get("join"))
    state = {"hostname": socket.gethostname().lower(),
             "initialized": os.path.exists(admin) and not half_done,
             "joined": os.path.exists(os.path.join(
                 root, KUBELET_CONF.lstrip("/"))) and not half_done}
    if state["initialized"]:
        runner, kubectl = Runner(), ["kubectl", "--kubeconfig", admin]
        for name in args.untaint:
            if not full_match(NODE_NAME_RE, name):
                raise UserError("bad --untaint %r: give a node name" % name)
            runner.run(kubectl + ["taint", "nodes", name, MASTER_TAINT],
                       check=False)
        result = runner.run(kubectl + ["get", "nodes", "-o", "json"],
                            change=False, check=False)
        nodes = {}
        if result.ok:
            try:
                items = json.loads(result.stdout).get("items", [])
            except (ValueError, AttributeError):
                items = []
            for item in items:
                conditions = item.get("status", {}).get("conditions", [])
                nodes[item.get("metadata", {}).get("name")] = any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in conditions)
        state["nodes"] = nodes
    print(json.dumps(state, sort_keys=True))
    return 0


def add_cluster_commands(sub):
    """cluster up/add/status/remove/reset (and probe, which cluster runs on
    each host)."""
    cluster = sub.add_parser("cluster", help="the whole cluster from one "
                             "machine over ssh (up, add, status, remove, "
                             "reset)")
    actions = cluster.add_subparsers(dest="cluster_action", metavar="ACTION")
    parsers = []
    for name, text in (("up", "set up every host of the inventory"),
                       ("add", "the same as up: add the new hosts of the "
                        "inventory, leave the others as they are"),
                       ("status", "status of the first control-plane host"),
                       ("remove", "drain and delete a host's node, then "
                        "reset the host"),
                       ("reset", "reset every host (workers first)")):
        parser = actions.add_parser(name, help=text)
        parser.set_defaults(func=cmd_cluster)
        parsers.append(parser)
    for parser in parsers:
        parser.add_argument("-i", "--inventory", metavar="FILE",
                            help="an Ansible INI inventory (kubespray's "
                            "inventory.ini or kubeasz's hosts)")
        parser.add_argument("--masters", metavar="IP[:PORT],...",
                            help="control-plane hosts (instead of -i)")
        parser.add_argument("--workers", "--nodes", metavar="IP[:PORT],...",
                            help="worker hosts (instead of -i)")
        parser.add_argument("-u", "--user", metavar="USER",
                            help="SSH user where the inventory names none")
        parser.add_argument("--ssh-key", "--private-key", metavar="FILE",
                            help="private key where the inventory names none")
        parser.add_argument("--port", type=int, default=22,
                            help="SSH port of --masters/--workers hosts")
        parser.add_argument("-K", "--ask-become-pass", action="store_true",
                            help="ask for the sudo password on the terminal")
        parser.add_argument("--become-password-file", metavar="FILE",
                            help="the sudo password on the first line of FILE")
        parser.add_argument("--known-hosts", metavar="FILE",
                            help="known_hosts file (default: ssh's own)")
        parser.add_argument("--accept-new-host-keys", action="store_true",
                            help="trust the key of a host not yet in "
                            "known_hosts (said loudly); a changed key is "
                            "always refused")
        parser.add_argument("--connect-timeout", type=int,
                            default=SSH_CONNECT_TIMEOUT, metavar="SECONDS")
        parser.add_argument("--dry-run", action="store_true",
                            help="print the whole plan; reach no host")
    parsers[3].add_argument("host", metavar="HOST", help="its inventory "
                            "name or address")
    parsers[4].add_argument("--yes", action="store_true", help="do not ask: "
                            "reset every host")
    up_parsers = parsers[:2]
    for parser in parsers:
        parser.add_argument("--remote-dir", default=CLUSTER_REMOTE_DIR,
                            help="the folder in the SSH user's home the "
                            "bundle goes to (default %(default)s)")
        parser.add_argument("--log-dir", default=CLUSTER_LOG_DIR,
                            help="a log per host here (default "
                            "%(default)s)")
        parser.add_argument("--parallel", type=int, default=5, metavar="N",
                            help="hosts copied and joined at once (default "
                            "%(default)s)")
    for parser in up_parsers:
        parser.add_argument("--bundle", required=True, metavar="PATH",
                            help="the bundle .tar (or a --split bundle's "
                            "index or parts) on this machine")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--fan-out", action="store_true",
                            help="hosts that hold the bundle pass it on to "
                            "the others (a TCP stream between them, checked "
                            "by sha256): the copies double each round")
        for flag, dest, commands in CLUSTER_FORWARDED_FLAGS:
            if dest in ("disable_swap", "iptables_legacy", "open_firewall",
                        "selinux_permissive", "allow_cgroup_v1"):
                parser.add_argument(flag, action="store_true",
                                    help="passed to master and join")
            elif dest == "wait_timeout":
                parser.add_argument(flag, type=int,
                                    default=DEFAULT_WAIT_TIMEOUT,
                                    metavar="SECONDS", help="how long each "
                                    "host and the cluster wait for Ready")
            elif dest == "cri":
                parser.add_argument(flag, choices=("docker", "containerd"),
                                    help="passed to master and join")
            else:
                parser.add_argument(flag, metavar="VALUE", help="passed to %s"
                                    % " and ".join(commands))
        parser.add_argument("--kubeadm-config-extra", metavar="FILE",
                            help="passed to master: this machine's file "
                            "goes to the first control plane")
        parser.add_argument("--allow-pods-on-master", action="store_true",
                            help="remove the taint of every control plane "
                            "(a host also in [kube_node] always loses it)")
        parser.add_argument("--no-wait", action="store_true",
                            help="do not wait for the nodes to be Ready")
    probe = actions.add_parser("probe", help="(run by cluster on each host) "
                               "this host's state as one JSON line")
    probe.add_argument("--untaint", action="append", default=[],
                       metavar="NODE", help="first remove the control-plane "
                       "taint of NODE")
    probe.add_argument("--root", default=None, help=argparse.SUPPRESS)
    probe.set_defaults(func=cmd_cluster_probe)
    cluster.set_defaults(func=lambda args: cluster.print_help() or 2)


# ===========================================================================
# Command line
# ===========================================================================

DEFAULT_ARCH = "amd64"

# A bootstrap token's secret half, and a certificate key where kubeadm or a
# kubeadm config names one (64 hex digits alone are also image digests).
_SECRET_TOKEN_RE = re.compile(r"\b([a-z0-9]{6})\.[a-z0-9]{16}\b")
_SECRET_KEY_RE = re.compile(r"(?i)(certificate[-_ ]?key\W{0,8}?\s*)%s"
                            r"(?![0-9a-f])" % SHA256_HEX_RE.pattern)


def redact_secrets(text):
    """text without the secrets a run log must not keep: the token's
    secret and the certificate key (the join file keeps them, 0600)."""
    text = _SECRET_TOKEN_RE.sub(r"\1.<redacted>", text)
    return _SECRET_KEY_RE.sub(r"\1<redacted certificate key>", text)


class _RedactingFormatter(logging.Formatter):
    def format(self, record):
        return redact_secrets(logging.Formatter.format(self, record))


class _OneLineHandler(logging.StreamHandler):
    """A log handler that, when it cannot write (a full disk, a closed
    terminal), says so in one line and drops out; the run goes on.  The
    standard handler would print a traceback for every record."""

    def __init__(self, stream, where):
        logging.StreamHandler.__init__(self, stream)
        self.where = where

    def handleError(self, record):
        exc = sys.exc_info()[1]
        log.removeHandler(self)
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        with contextlib.suppress(Exception):
            sys.stderr.write("warning: cannot write the log %s (%s): going on "
                             "without it\n" % (self.where, reason))
            sys.stderr.flush()


def setup_logging(verbose=False, log_file=None):
    """Log to stderr; with log_file, also a full debug log there (mode 0600)."""
    log.setLevel(logging.DEBUG)
    log.handlers[:] = []
    console = _OneLineHandler(sys.stderr, "on the terminal")
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if log_file:
        try:
            stream = open_private_log(log_file, append=True)
        except OSError as exc:
            log.warning("warning: cannot write the log %s: %s", log_file,
                        exc.strerror)
        else:
            handler = _OneLineHandler(stream, log_file)
            handler.setLevel(logging.DEBUG)
            handler.setFormatter(_RedactingFormatter(
                "%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)


def cmd_verify(args):
    bundle = Bundle(args.bundle)
    try:
        say("bundle.json sha256: %s" % bundle.meta_sha256)
        say("compare it with the value printed when the bundle was made")
        verify_bundle(bundle, progress=not args.no_progress)
    finally:
        bundle.close()
    say("OK: %s (Kubernetes %s, %s): %d files, %d images verified"
        % (args.bundle, bundle.kubernetes_version, bundle.arch,
           len(bundle.meta["files"]), len(bundle.meta["images"])))
    return 0


def offered_versions():
    """The versions bundle offers, for --help, from the release table."""
    try:
        table = release_table()
    except UserError:
        return "a release of Kubernetes %s to %s" % (SUPPORTED_MINORS[0],
                                                     SUPPORTED_MINORS[-1])
    usable = sorted((v for v, e in table["releases"].items()
                     if not e.get("do_not_use")), key=parse_version)
    withdrawn = sorted((v for v, e in table["releases"].items()
                        if e.get("do_not_use")), key=parse_version)
    text = "minors %s: any release from %s to %s" % (
        ", ".join(SUPPORTED_MINORS), usable[0], usable[-1])
    if withdrawn:
        text += " but %s (withdrawn upstream)" % ", ".join(withdrawn)
    open_minors = [minor for minor in SUPPORTED_MINORS
                   if table["minors"].get(minor, {}).get("open")]
    if open_minors:
        first = [minor for minor in open_minors if not any(
            v.startswith("v%s." % minor) for v in usable)]
        text += (", or a patch of %s newer than that%s when its kubeadm "
                 "runs here (bundle takes its image tags from it)" % (
                     ", ".join(open_minors),
                     " (v%s.0 on)" % first[0] if first else ""))
    return text


class _OfferedVersions(object):
    """offered_versions() when a --help is printed, never before: install
    mode never reads bundle/releases.json, bundle-mode data."""

    def __str__(self):
        return offered_versions()


def add_bundle_commands(sub):
    """bundle and images (bundle mode)."""
    bundle = sub.add_parser(
        "bundle", help="pull and verify everything into one tarball "
        "(connected machine)", epilog=phases_help("bundle", BUNDLE_PHASES,
                                                  runnable=False),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    images = sub.add_parser("images", help="print every image the bundle "
                            "will hold")
    for parser in (bundle, images):
        version = parser.add_argument(
            "--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
            help="%(offered)s (default %(default)s)")
        version.offered = _OfferedVersions()
        parser.add_argument("--arch", default=DEFAULT_ARCH,
                            help="%s (default %%(default)s)" % ", ".join(ARCHES))
        parser.add_argument("--image-repository", default=DEFAULT_PULL_REPOSITORY,
                            help="where kubeadm's images are pulled from "
                                 "(default %(default)s)")
        parser.add_argument("--extra-image", action="append", default=[],
                            metavar="REF", help="also bundle this image (from "
                            "its registry, or docker-daemon:REF from the local "
                            "Docker daemon)")
        parser.add_argument("--image-list", action="append", default=[],
                            metavar="FILE", help="also bundle the images FILE "
                            "lists, one a line (# comments)")
    bundle.add_argument("--extra-image-archive", action="append", default=[],
                        metavar="FILE", help="also bundle the images of a "
                        "docker-archive (docker save) or OCI-archive tar")
    bundle.add_argument("--registry-mirror", action="append", default=[],
                        metavar="SRC=DST", help="pull SRC's images from DST")
    bundle.add_argument("--insecure-registry", action="append", default=[],
                        metavar="HOST", help="plain HTTP or unverified TLS "
                        "for this host only")
    bundle.add_argument("--file-mirror", action="append", default=[],
                        metavar="PREFIX=NEWPREFIX", help="fetch file URLs "
                        "starting with PREFIX from NEWPREFIX")
    bundle.add_argument("--checksum-file", metavar="FILE",
                        help="sha256sum-format lines replacing the built-in table")
    bundle.add_argument("--with-docker", action="store_true",
                        help="add Docker static binaries and units (Docker "
                        "publishes no checksum for them: give their sha256 "
                        "in --checksum-file)")
    bundle.add_argument("--with-containerd", action="store_true",
                        help="add containerd and runc (upstream static "
                        "releases, checked against their .sha256sum files; "
                        "1.6.20/1.1.5 up to Kubernetes 1.28, 1.7.28/1.4.3 "
                        "for 1.29-1.34, 2.3.4/1.4.3 from 1.35) and a "
                        "containerd unit")
    bundle.add_argument("--with-cri-dockerd", action="store_true",
                        help="add cri-dockerd and its units, for hosts that "
                        "run Docker already (1.24 and later have no "
                        "dockershim; --with-docker adds it by itself there)")
    bundle.add_argument("--os", action="append", default=[], metavar="ID",
                        help="add the packages kubeadm needs that a minimal "
                        "install of this distribution lacks, with their "
                        "dependencies, from its archive (repeatable): %s"
                        % ", ".join(sorted(DISTROS)))
    bundle.add_argument("--os-keyring", metavar="FILE",
                        help="keyring (gpg --export) checking the --os "
                        "archives' signatures (default: the distribution's "
                        "keyring where installed; without one the signature "
                        "is not checked, and the output says so)")
    bundle.add_argument("--output", metavar="PATH",
                        help="default bundle/<name>.tar")
    bundle.add_argument("--split", metavar="SIZE",
                        help="write the bundle as PATH.000, PATH.001, ... of "
                        "at most SIZE bytes (4G, 700M, or fat32: 4 GiB - 1 "
                        "byte, the largest file FAT32 holds) plus the index "
                        "PATH%s" % PARTS_INDEX_SUFFIX)
    bundle.add_argument("--cache-dir", metavar="DIR",
                        help="default ~/.cache/k8s-offline")
    bundle.add_argument("--jobs", type=int, default=8, help="parallel downloads")
    bundle.add_argument("--timeout", type=float, default=HTTP_TIMEOUT,
                        help="seconds a download may stall before it is "
                        "retried (default %(default)s)")
    bundle.add_argument("--no-progress", action="store_true")
    bundle.add_argument("--dry-run", action="store_true", help="print the "
                        "phases and the plan; fetch and write nothing")
    bundle.set_defaults(func=cmd_bundle)
    images.set_defaults(func=cmd_images)


def _update_log_file(namespace):
    """The run's log goes to /var/log/k8s-offline.log under --root, except
    for a dry run (which changes nothing) and a non-root user."""
    if getattr(namespace, "dry_run", False) or current_euid() != 0:
        namespace.log_file = None
    else:
        root = getattr(namespace, "root", None) or "/"
        namespace.log_refused = None
        try:     # through the host's path check: no link out of --root
            namespace.log_file = Host(root).path(INSTALL_LOG)
        except UserError as exc:
            namespace.log_file, namespace.log_refused = None, str(exc)


class _LogFileAction(argparse.Action):
    """Stores the option, then re-derives where this run's log goes."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True if self.nargs == 0 else values)
        _update_log_file(namespace)


def _install_options(parser, bundle=True, cri=True, phases=False):
    """Options every install command shares; --skip-phases for those with
    phases."""
    if bundle:
        parser.add_argument("--bundle", metavar="PATH",
                            help="the bundle .tar or its extracted folder "
                            "(default: the folder holding k8s_offline.py)")
        parser.add_argument("--image-repository", metavar="REPO",
                            help="where kubeadm looks for its images (default "
                            "%s)" % KUBEADM_IMAGE_REPOSITORY)
        parser.add_argument("--no-progress", action="store_true",
                            help="no progress output")
    if cri:
        parser.add_argument("--cri", choices=("docker", "containerd"),
                            default=None,
                            help="container runtime (default up to 1.23: "
                            "docker, or containerd when the bundle carries "
                            "it (--with-containerd) and the host has no "
                            "Docker; from 1.24: containerd, docker only "
                            "through the bundle's cri-dockerd)")
        parser.add_argument("--containerd-address", metavar="SOCKET",
                            help=argparse.SUPPRESS)
    if phases:
        parser.add_argument("--skip-phases", metavar="A,B",
                            help="phases to leave out, comma separated")
    parser.add_argument("--dry-run", action=_LogFileAction, nargs=0,
                        default=False, help="print every phase, file and "
                        "command; change nothing")
    parser.add_argument("--root", action=_LogFileAction, default=None,
                        help=argparse.SUPPRESS)
    parser.set_defaults(log_file=None if current_euid() != 0 else INSTALL_LOG)


def _node_options(parser):
    parser.add_argument("--node-name", metavar="NAME",
                        help="the node's name (default: the host name)")
    parser.add_argument("--disable-swap", action="store_true",
                        help="turn swap off now and in /etc/fstab")
    parser.add_argument("--iptables-legacy", action="store_true",
                        help="switch iptables to legacy mode (needed for 1.16 "
                        "on iptables 1.8+ with the nftables backend)")
    parser.add_argument("--allow-cgroup-v1", action="store_true",
                        help="Kubernetes 1.35+ on a cgroup v1 host: set the "
                        "kubelet's failCgroupV1: false and ignore kubeadm's "
                        "SystemVerification preflight error")
    parser.add_argument("--open-firewall", action="store_true",
                        help="firewalld: open this role's ports (and UDP "
                        "8472 for flannel) permanently, then reload")
    parser.add_argument("--selinux-permissive", action="store_true",
                        help="SELinux: setenforce 0 and SELINUX=permissive "
                        "in /etc/selinux/config")
    parser.add_argument("--ignore-preflight-errors", metavar="LIST",
                        help="passed to kubeadm")
    parser.add_argument("--apiserver-advertise-address", metavar="IP",
                        help="this node's API server address (default: the "
                        "default route's address)")
    _wait_options(parser)


def _wait_options(parser):
    """--wait-timeout and --no-wait: how long to wait for a Ready node."""
    parser.add_argument("--wait-timeout", type=int,
                        default=DEFAULT_WAIT_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for the node to be Ready "
                        "(default %d)" % DEFAULT_WAIT_TIMEOUT)
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for the node to be Ready")


def _workflow_parser(sub, name, text, workflow, command=None):
    """A command made of phases: its --help lists them, and `NAME phase
    PHASE` runs one (as `kubeadm init phase` does)."""
    parser = sub.add_parser(name, help=text,
                            epilog=phases_help(command or name, workflow),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _phase_arguments(parser, workflow, command or name)
    return parser


def _phase_arguments(parser, workflow, command):
    """`COMMAND phase NAME`: one phase of the workflow alone."""
    parser.add_argument("phase_action", nargs="?", choices=("phase",),
                        metavar="phase", help="run one phase alone (after "
                        "verify and preflight, which every change needs)")
    parser.add_argument("phase_name", nargs="?", metavar="NAME",
                        choices=[phase.name for phase in workflow],
                        help="the phase to run: one of those listed below")
    parser.set_defaults(phase_command=command)


def add_install_commands(sub):
    """master, join, token, reset, status, remove-node: install mode."""
    master = _workflow_parser(sub, "master", "set up the first control-plane "
                              "node from a bundle", MASTER_PHASES)
    _install_options(master, phases=True)
    _node_options(master)
    master.add_argument("--pod-network-cidr", default=DEFAULT_POD_CIDR,
                        metavar="CIDR", help="pod network (default %s)"
                        % DEFAULT_POD_CIDR)
    master.add_argument("--service-cidr", default=DEFAULT_SERVICE_CIDR,
                        metavar="CIDR", help="service network (default %s)"
                        % DEFAULT_SERVICE_CIDR)
    master.add_argument("--control-plane-endpoint", metavar="HOST:PORT",
                        help="shared endpoint for several masters")
    master.add_argument("--upload-certs", action="store_true",
                        help="upload the control-plane certificates so more "
                        "masters can join")
    master.add_argument("--kubeadm-config-extra", metavar="FILE",
                        help="more kubeadm config documents (for example a "
                        "KubeProxyConfiguration)")
    master.add_argument("--allow-pods-on-master", action="store_true",
                        help="remove the master taint")
    master.add_argument("--join-file", metavar="PATH",
                        help="where to write the join file (default: beside "
                        "the bundle)")
    master.set_defaults(func=cmd_master)

    join = _workflow_parser(sub, "join", "join this host to a cluster",
                            JOIN_PHASES)
    _install_options(join, phases=True)
    _node_options(join)
    join.add_argument("--join-file", metavar="PATH",
                      help="the join file from the master (default: beside "
                      "the bundle)")
    join.add_argument("--apiserver", metavar="HOST:PORT")
    join.add_argument("--token", metavar="TOKEN")
    join.add_argument("--discovery-token-ca-cert-hash", metavar="sha256:HASH")
    join.add_argument("--control-plane", action="store_true",
                      help="join as another control-plane node")
    join.add_argument("--certificate-key", metavar="KEY",
                      help="for --control-plane (default: from the join file)")
    join.set_defaults(func=cmd_join)

    token = sub.add_parser("token", help="on a master: a fresh join file and "
                           "join command")
    _install_options(token, cri=False)
    token.add_argument("--join-file", metavar="PATH",
                       help="where to write the join file")
    token.set_defaults(func=cmd_token)

    reset = _workflow_parser(sub, "reset", "remove Kubernetes from this host",
                             RESET_PHASES)
    _install_options(reset, bundle=False, phases=True)
    reset.add_argument("--yes", action="store_true",
                       help="do not ask for confirmation")
    reset.set_defaults(func=cmd_reset)

    status = sub.add_parser("status", help="nodes, kube-system pods and "
                            "certificate expiry")
    _install_options(status, bundle=False, cri=False)
    status.set_defaults(func=cmd_status)

    remove = sub.add_parser("remove-node", help="on a master: drain and "
                            "delete a node")
    remove.add_argument("name", metavar="NAME")
    _install_options(remove, bundle=False, cri=False)
    remove.set_defaults(func=cmd_remove_node)


def add_day_two_commands(sub):
    """certs check, certs renew, backup, restore: day two on a master."""
    certs = sub.add_parser("certs", help="on a node: certificate expiry "
                           "(check) and renewal (renew)")
    certs_sub = certs.add_subparsers(dest="certs_command", metavar="ACTION")
    check = certs_sub.add_parser("check", help="every kubeadm certificate "
                                 "with its expiry; exit 1 below %d days"
                                 % CERT_FAIL_DAYS)
    _install_options(check, bundle=False, cri=False)
    check.set_defaults(func=cmd_certs_check)
    certs.set_defaults(func=cmd_certs_usage)
    renew = _workflow_parser(certs_sub, "renew", "on a master: renew with "
                             "kubeadm, restart the control plane, refresh "
                             "admin.conf copies", CERTS_RENEW_PHASES,
                             command="certs renew")
    _install_options(renew, bundle=False, phases=True)
    renew.set_defaults(func=cmd_certs_renew)

    backup = sub.add_parser("backup", help="on a master: etcd snapshot, PKI "
                            "and kubeadm config in one 0600 file")
    _install_options(backup, bundle=False)
    backup.add_argument("--output", metavar="FILE", help="default %s/"
                        "k8s-offline-backup-NODE-TIME.tar.gz" % BACKUP_DIR)
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser(
        "restore", help="on a reset or fresh master: bring a cluster back "
        "from a backup", epilog=phases_help("restore FILE", RESTORE_PHASES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    restore.add_argument("file", metavar="FILE", help="the backup .tar.gz")
    _phase_arguments(restore, RESTORE_PHASES, "restore")
    _install_options(restore, bundle=False, phases=True)
    restore.add_argument("--sha256", metavar="HEX", help="the sha256 backup "
                         "printed (default: from FILE.sha256)")
    restore.add_argument("--replace", "--force", dest="replace",
                         action="store_true", help="reset a control plane "
                         "still on this host first")
    restore.add_argument("--ignore-preflight-errors", metavar="LIST",
                         help="passed to kubeadm init")
    _wait_options(restore)
    restore.set_defaults(func=cmd_restore)


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
    add_day_two_commands(sub)
    add_cluster_commands(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    root = getattr(args, "root", None)
    if root is not None and not os.path.isdir(root):
        sys.stderr.write("error: --root %r is not a folder: give the folder "
                         "holding the host's files, or leave --root out\n"
                         % (root,))
        return 2
    setup_logging(verbose=args.verbose, log_file=getattr(args, "log_file", None))
    if getattr(args, "log_refused", None):
        log.warning("warning: cannot write the log %s (%s): going on without "
                    "it", INSTALL_LOG, args.log_refused)
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
        hint = ": free some space and run again" if exc.errno == errno.ENOSPC else ""
        log.error("error: %s%s%s", exc.strerror or exc, where, hint)
        log.debug("details", exc_info=True)
        return 1
    except Exception as exc:  # a bug: one line, the traceback only with -v
        log.error("error: unexpected %s: %s (run again with -v for details)",
                  exc.__class__.__name__, exc)
        log.debug("details", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

