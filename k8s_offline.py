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
import zlib

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
BUNDLE_JSON_SHA = "bundle.json.sha256"   # sha256sum format: `sha256sum -c` works
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

MANIFEST_ACCEPT = ", ".join((MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST,
                             MT_DOCKER_MANIFEST, MT_DOCKER_SCHEMA1_SIGNED,
                             MT_DOCKER_SCHEMA1))
RETRY_STATUSES = (429, 500, 502, 503, 504)
HTTP_ATTEMPTS = 5
HTTP_TIMEOUT = 60                # seconds without a byte before a retry
CHUNK = 1 << 20
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                      r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


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
    text = (text or "").strip()
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise UserError("bad image reference %r: the digest must be "
                            "sha256:<64 hex digits>" % original)
    tag = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG_RE.match(tag):
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
    if not _REPO_RE.match(repository):
        raise UserError("bad image reference %r: use the form "
                        "[registry/]repository[:tag][@sha256:digest]" % original)
    return ImageRef(registry, repository, tag, digest)


def _b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def schema1_payload(body):
    """The bytes a schema1 manifest's digest covers: the JWS payload."""
    doc = json.loads(body.decode("utf-8"))
    signatures = doc.get("signatures")
    if not signatures:
        return body
    protected = json.loads(_b64url_decode(signatures[0]["protected"]).decode())
    return body[:protected["formatLength"]] + \
        _b64url_decode(protected["formatTail"])


def manifest_digest(media_type, body):
    if media_type in SCHEMA1_TYPES or (
            media_type not in INDEX_TYPES + MANIFEST_TYPES
            and b'"schemaVersion": 1' in body):
        return "sha256:" + sha256_bytes(schema1_payload(body))
    return "sha256:" + sha256_bytes(body)


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


def load_docker_credentials():
    """{registry host: (user, password)} from the Docker client config.

    Credential helpers are not run.  The values never reach a log line,
    an error message or the bundle.
    """
    config_dir = os.environ.get("DOCKER_CONFIG") or \
        os.path.join(os.path.expanduser("~"), ".docker")
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


class RegistryClient(object):
    """Pulls manifests and blobs over the registry HTTP API, no daemon.

    Mirrors map a registry name to another host (optionally with a path
    prefix).  Insecure hosts are tried over HTTPS without verification,
    then plain HTTP; every other host gets verified HTTPS only.  Bearer
    tokens are cached per host and scope.
    """

    def __init__(self, mirrors=None, insecure=(), credentials=None, jobs=8,
                 timeout=HTTP_TIMEOUT):
        import requests
        import urllib3
        from requests.adapters import HTTPAdapter
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
        self.credentials = credentials if credentials is not None \
            else load_docker_credentials()
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
    def request(self, host, path, repository, headers=None, stream=False):
        """GET a registry path, with auth, redirects and bounded retries.

        requests drops the Authorization header when a redirect leaves the
        host, as blob redirects to storage servers need.
        """
        scope = "repository:%s:pull" % repository
        authenticated = False
        failures = []
        while True:
            send = dict(headers or {})
            token = self.tokens.get((host, scope))
            if token:
                send["Authorization"] = token
            try:
                response = self._get_any_scheme(host, path, send, stream)
            except self.requests.exceptions.SSLError as exc:
                raise UserError("TLS to registry %s failed (%s): if it is a "
                                "plain-HTTP or self-signed registry, pass "
                                "--insecure-registry %s"
                                % (host, _short_reason(exc), host))
            except self.requests.exceptions.TooManyRedirects:
                raise UserError("registry %s redirects %s in a loop: check the "
                                "registry or --registry-mirror" % (host, path))
            except (self.requests.exceptions.ConnectionError,
                    self.requests.exceptions.Timeout) as exc:
                response, reason = None, _short_reason(exc)
            else:
                reason = "HTTP %d" % response.status_code
            if response is not None and response.status_code == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                if not authenticated:
                    authenticated = True
                    self._authenticate(host, scope, challenge)
                    if (host, scope) in self.tokens:
                        continue
                if self._creds(host):
                    raise UserError("registry %s rejected the credentials for "
                                    "%s: check them with docker login %s"
                                    % (host, repository, host))
                raise UserError("registry %s requires credentials for %s: run "
                                "docker login %s (read from "
                                "~/.docker/config.json)" % (host, repository, host))
            if response is not None and \
                    response.status_code not in RETRY_STATUSES:
                return response
            wait = None
            if response is not None:
                wait = _retry_after(response.headers.get("Retry-After"))
                response.close()
            failures.append(reason)
            if len(failures) >= HTTP_ATTEMPTS:
                raise UserError("cannot get %s from registry %s after %d tries "
                                "(%s): check the name, --registry-mirror and "
                                "the network" % (repository, host,
                                                 HTTP_ATTEMPTS, reason))
            _backoff(len(failures) - 1, wait)

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
            if scheme == "https" and host in self.insecure \
                    and response.status_code == 400 and "http" in self._schemes(host):
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
                self.tokens[(host, scope)] = \
                    "Basic " + base64.b64encode(raw).decode("ascii")
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
                media_type = json.loads(body.decode("utf-8")).get("mediaType") \
                    or media_type
            except ValueError:
                pass
        digest = manifest_digest(media_type, body)
        expected = reference if reference.startswith("sha256:") else \
            response.headers.get("Docker-Content-Digest")
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

    def fetch_url(self, url, sha256_hex, dest, progress=None, insecure=False):
        """Download a file URL to dest, checked against sha256_hex."""
        def get(headers):
            errors = []
            for attempt in range(HTTP_ATTEMPTS):
                try:
                    response = self.session.get(url, headers=headers, stream=True,
                                                timeout=self.timeout,
                                                verify=not insecure)
                except self.requests.exceptions.TooManyRedirects:
                    raise UserError("%s redirects in a loop: check the URL and "
                                    "--file-mirror" % url)
                except (self.requests.exceptions.ConnectionError,
                        self.requests.exceptions.Timeout) as exc:
                    errors.append(_short_reason(exc))
                    _backoff(attempt)
                    continue
                if response.status_code in RETRY_STATUSES:
                    errors.append("HTTP %d" % response.status_code)
                    wait = _retry_after(response.headers.get("Retry-After"))
                    response.close()
                    _backoff(attempt, wait)
                    continue
                return response
            raise UserError("cannot download %s after %d tries (%s): check "
                            "--file-mirror and the network"
                            % (url, HTTP_ATTEMPTS, errors[-1]))
        return self._download(get, sha256_hex, dest, progress, url)

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

    def _download(self, get, sha256_hex, dest, progress, label):
        partial = dest + ".partial"
        for attempt in range(HTTP_ATTEMPTS):
            digest = hashlib.sha256()
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
                    digest, have = hashlib.sha256(), 0
                elif response.status_code == 404:
                    raise UserError("%s: not found (HTTP 404)" % label)
                elif response.status_code not in (200, 206):
                    raise UserError("%s: the server answered HTTP %d"
                                    % (label, response.status_code))
                try:
                    with open(partial, "ab") as out:
                        for block in response.raw.stream(CHUNK, decode_content=False):
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
            if digest.hexdigest() == sha256_hex:
                os.rename(partial, dest)
                return dest
            log.warning("%s: sha256 mismatch, downloading it again", label)
            if progress:
                progress.update(-os.path.getsize(partial))
            os.unlink(partial)
        raise UserError("%s failed its sha256 check %d times: the source or a "
                        "proxy is corrupting it" % (label, HTTP_ATTEMPTS))


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


# ===========================================================================
# Bundle writer (bundle mode)
# ===========================================================================

BUNDLE_MTIME = 1577836800        # fixed member time: same input, same bytes
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


def plan_images(kubernetes_version, arch, pull_repository=None, extra=()):
    """Every image the bundle holds, with where it is pulled from.

    kubeadm's own images are recorded under k8s.gcr.io, where kubeadm
    looks for them; install mode retags them for --image-repository.
    """
    facts = version_facts(kubernetes_version)
    pull_repository = (pull_repository or DEFAULT_PULL_REPOSITORY).rstrip("/")
    images = []
    kubeadm_images = [(name, kubernetes_version) for name in
                      CONTROL_PLANE_COMPONENTS + ("kube-proxy",)]
    kubeadm_images += [("pause", facts["pause"]), ("etcd", facts["etcd"]),
                       ("coredns", facts["coredns"])]
    for name, tag in kubeadm_images:
        images.append({
            "name": name, "kubeadm": True, "extra": False,
            "repository": name, "tag": tag,
            "ref": "%s/%s:%s" % (KUBEADM_IMAGE_REPOSITORY, name, tag),
            "source": "%s/%s:%s" % (pull_repository, name, tag)})
    flannel = "%s:%s-%s" % (FLANNEL_REPOSITORY, facts["flannel"], arch)
    images.append({"name": "flannel", "kubeadm": False, "extra": False,
                   "repository": FLANNEL_REPOSITORY,
                   "tag": "%s-%s" % (facts["flannel"], arch),
                   "ref": flannel, "source": flannel})
    seen = set(image["ref"] for image in images)
    for text in extra:
        ref = parse_image_ref(text)
        full = str(ref)
        if full in seen:
            continue
        seen.add(full)
        images.append({"name": ref.repository.rsplit("/", 1)[-1],
                       "kubeadm": False, "extra": True,
                       "repository": "%s/%s" % (ref.registry, ref.repository),
                       "tag": ref.tag, "ref": full, "source": full})
    return images


def plan_files(kubernetes_version, arch, with_docker=False):
    """Every file download: key, URL, path in the bundle, and whether the
    release publishes a .sha256 beside it."""
    facts = version_facts(kubernetes_version)
    files = []
    for name in ("kubeadm", "kubelet", "kubectl"):
        files.append({"key": name, "path": "%s/%s" % (BIN_DIR, name),
                      "url": KUBE_RELEASE_URL.format(version=kubernetes_version,
                                                     arch=arch, name=name),
                      "published_sha256": True, "mode": 0o755})
    cni_template = CNI_URL_OLD if parse_version(facts["cni"]) < (0, 8, 0) \
        else CNI_URL
    cni_url = cni_template.format(cni=facts["cni"], arch=arch)
    crictl_url = CRICTL_URL.format(crictl=facts["crictl"], arch=arch)
    downloads = [("cni", cni_url), ("crictl", crictl_url)]
    if with_docker:
        downloads.append(("docker", DOCKER_STATIC_URL.format(
            docker_arch=ARCHES[arch]["docker_static"],
            docker=DOCKER_STATIC_VERSION)))
    for key, url in downloads:
        files.append({"key": key, "url": url, "published_sha256": False,
                      "path": "%s/%s" % (ARCHIVES_DIR, url.rsplit("/", 1)[1]),
                      "mode": 0o644})
    return files


def read_checksum_file(path):
    """{file name: sha256 hex} from sha256sum-format lines."""
    table = {}
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (OSError, IOError) as exc:
        raise UserError("cannot read --checksum-file %s: %s" % (path, exc.strerror))
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not re.match(r"^[0-9a-fA-F]{64}$", parts[0]):
            raise UserError("--checksum-file %s line %d is not 'SHA256  FILENAME'"
                            % (path, number))
        table[parts[1].lstrip("*").rsplit("/", 1)[-1]] = parts[0].lower()
    return table


def apply_file_mirror(url, mirrors):
    """Rewrite a URL by the longest matching --file-mirror prefix."""
    best = None
    for prefix, replacement in mirrors:
        if url.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, replacement)
    if best is None:
        return url
    return best[1] + url[len(best[0]):]


def parse_published_sha256(text):
    """First field of a .sha256 file if it is 64 hex digits, else None."""
    fields = (text or "").split()
    if fields and re.match(r"^[0-9a-fA-F]{64}$", fields[0]):
        return fields[0].lower()
    return None


class BlobCache(object):
    """Content-addressed store: <dir>/sha256/<hex>, written only once the
    bytes have been verified, so whatever is in it is right."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        self.blobs = os.path.join(self.directory, "sha256")
        self.converted = os.path.join(self.directory, "schema1")
        self.fresh = set()   # verified by this run: no need to hash again
        try:
            for folder in (self.blobs, self.converted):
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

    def read(self, hex_digest):
        with open(self.path(hex_digest), "rb") as handle:
            return handle.read()


class ImageFetcher(object):
    """Resolves each planned image to one single-platform manifest and
    fetches its blobs into the cache, converting schema1 to schema2."""

    def __init__(self, client, cache, arch, jobs, progress):
        self.client = client
        self.cache = cache
        self.arch = arch
        self.jobs = jobs
        self.progress = progress

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
                if not _DIGEST_RE.match(digest):
                    raise UserError("image %s names an unsupported digest %s"
                                    % (image["source"], digest))
                if digest not in wanted and not self.cache.has(digest[7:]):
                    wanted[digest] = (ref, size, "%s (%s)" % (image["source"],
                                                              digest[7:19]))
        return wanted

    def fetch(self, digest, ref, label):
        self.client.fetch_blob(ref, digest, self.cache.path(digest[7:]),
                               progress=self.progress, label=label)
        self.cache.fresh.add(digest[7:])

    def convert_schema1(self, image):
        """Turn a schema1 image into a schema2 manifest and config, the way
        Docker does when it pulls one; the result is cached by the schema1
        digest so a warm run need not decompress the layers again."""
        record = os.path.join(self.cache.converted,
                              image["source_digest"][7:] + ".json")
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
            step = {"created": v1.get("created", "")}
            command = (v1.get("container_config") or {}).get("Cmd")
            if command:
                step["created_by"] = " ".join(command)
            for key in ("author", "comment"):
                if v1.get(key):
                    step[key] = v1[key]
            if v1.get("throwaway"):
                step["empty_layer"] = True
            else:
                layers.append(blob)
                diff_ids.append("sha256:" + _gunzip_sha256(self.cache.path(blob[7:])))
            steps.append(step)
        config = dict(history[0])
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


def kubeadm_image_list(kubeadm_path, kubernetes_version):
    """{name: tag} from `kubeadm config images list`, or None if it cannot
    run here (another arch, not Linux, or not a real kubeadm)."""
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
        name, _, tag = line.rsplit("/", 1)[-1].partition(":")
        if tag:
            found[name] = tag
    return found or None


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


def script_dir():
    return os.path.dirname(os.path.abspath(__file__))


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or \
        os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "k8s-offline")


def cmd_images(args):
    version = normalize_version(args.kubernetes_version)
    check_arch(args.arch)
    for image in plan_images(version, args.arch, args.image_repository,
                             args.extra_image):
        print(image["source"])
    return 0


def cmd_bundle(args):
    """Pull, verify and pack everything; the bundle appears only when whole."""
    started = time.time()
    version = normalize_version(args.kubernetes_version)
    arch = check_arch(args.arch)
    version_facts(version)
    registry_mirrors = dict(parse_mapping(m, "--registry-mirror")
                            for m in args.registry_mirror)
    file_mirrors = [parse_mapping(m, "--file-mirror") for m in args.file_mirror]
    if args.jobs < 1 or args.jobs > 64:
        raise UserError("--jobs must be between 1 and 64")
    if not 1 <= args.timeout <= 3600:
        raise UserError("--timeout must be between 1 and 3600 seconds")
    images = plan_images(version, arch, args.image_repository, args.extra_image)
    files = plan_files(version, arch, with_docker=args.with_docker)
    checksums = PINNED_SHA256
    if args.checksum_file:
        checksums = read_checksum_file(args.checksum_file)
        log.warning("NOTE: checksums come from %s, not the built-in table "
                    "(%d entries)", args.checksum_file, len(checksums))
    name = bundle_name(version, arch)
    output = os.path.abspath(args.output or os.path.join("bundle", name + ".tar"))
    partial = _claim_output(output)
    try:
        try:
            import requests  # noqa: F401  (bundle mode only)
        except ImportError:
            raise UserError("bundle mode needs requests: pip install -r "
                            "requirements.txt")
        cache = BlobCache(args.cache_dir or default_cache_dir())
        client = RegistryClient(mirrors=registry_mirrors,
                                insecure=args.insecure_registry, jobs=args.jobs,
                                timeout=args.timeout)
        progress = not args.no_progress
        log.info("bundle %s: %d images, %d files", name, len(images), len(files))
        file_entries = fetch_files(client, cache, files, file_mirrors,
                                   checksums, args, progress)
        images = cross_check_images(images, file_entries, version, arch, args)
        fetch_images(client, cache, images, arch, args.jobs, progress)
        meta, members = assemble_bundle(name, version, arch, images,
                                        file_entries, cache, args.with_docker)
        meta_bytes = canonical_json(meta)
        fresh = not _up_to_date(output, name, meta_bytes)
        if fresh:
            write_bundle(partial, name, meta_bytes, members, progress)
            os.rename(partial, output)
        else:
            os.unlink(partial)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    total = sum(entry["size"] for entry in meta["files"].values())
    log.info("%s %s (%s, %d images) in %.1f s, fetched %s",
             "wrote" if fresh else "up to date, unchanged:", output,
             human_size(os.path.getsize(output)), len(images),
             time.time() - started, human_size(client.bytes_fetched))
    log.debug("payload %d bytes", total)
    print("bundle.json sha256: %s  (compare it with what verify prints on "
          "the far side)" % sha256_bytes(meta_bytes))
    return 0


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
    prefix = os.path.basename(output) + ".partial-"
    folder = os.path.dirname(output)
    for name in os.listdir(folder):
        pid = name[len(prefix):]
        if not name.startswith(prefix) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                log.info("removing %s, left by an interrupted run", name)
                os.unlink(os.path.join(folder, name))


def fetch_files(client, cache, files, file_mirrors, checksums, args, progress):
    """Download every file, each checked against the pinned table and, where
    the release publishes one, its .sha256 file; a mismatch is fatal."""
    insecure_hosts = set(args.insecure_registry)

    def plan(entry):
        filename = entry["url"].rsplit("/", 1)[1]
        url = apply_file_mirror(entry["url"], file_mirrors)
        insecure = _url_host(url) in insecure_hosts
        pinned = checksums.get(filename)
        published = None
        if entry["published_sha256"]:
            published = parse_published_sha256(client.get_text(url + ".sha256",
                                                               insecure))
        if pinned and published and pinned != published:
            raise UserError("%s: the published .sha256 (%s) differs from the "
                            "pinned checksum (%s): refusing it"
                            % (filename, published, pinned))
        expected = pinned or published
        if not expected:
            raise UserError("no checksum known for %s: pass a --checksum-file "
                            "with its sha256" % filename)
        if not pinned:
            log.info("%s: checked against the published .sha256 only", filename)
        return dict(entry, fetch_url=url, sha256=expected, insecure=insecure)

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


def _url_host(url):
    return re.sub(r"^[a-z]+://", "", url).split("/", 1)[0]


def cross_check_images(images, file_entries, version, arch, args):
    """Compare the image table with what the downloaded kubeadm asks for;
    kubeadm is the authority, so its tags win, loudly."""
    if host_arch() != arch or not sys.platform.startswith("linux"):
        return images
    kubeadm = [f for f in file_entries if f["key"] == "kubeadm"][0]
    cache_path = os.path.join(args.cache_dir or default_cache_dir(), "sha256",
                              kubeadm["sha256"])
    wanted = kubeadm_image_list(cache_path, version)
    if not wanted:
        return images
    for image in images:
        if image["kubeadm"] and wanted.get(image["name"], image["tag"]) != image["tag"]:
            log.warning("WARNING: kubeadm %s wants %s:%s, the version table says "
                        ":%s; bundling kubeadm's", version, image["name"],
                        wanted[image["name"]], image["tag"])
            replanned = dict(image, tag=wanted[image["name"]])
            replanned["ref"] = image["ref"].rsplit(":", 1)[0] + ":" + replanned["tag"]
            replanned["source"] = image["source"].rsplit(":", 1)[0] + ":" + \
                replanned["tag"]
            image.update(replanned)
    known = set(image["name"] for image in images if image["kubeadm"])
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise UserError("kubeadm %s wants images the table does not know: %s"
                        % (version, ", ".join(unknown)))
    return images


def fetch_images(client, cache, images, arch, jobs, progress):
    """Resolve every manifest, then fetch every missing blob once."""
    fetcher = ImageFetcher(client, cache, arch, jobs, None)
    run_pool(jobs, images, fetcher.resolve)
    wanted = fetcher.blob_jobs(images)
    bar = Progress(sum(size for _, size, _ in wanted.values()), "images",
                   enabled=progress)
    fetcher.progress = bar
    try:
        run_pool(jobs, sorted(wanted.items()), lambda item: fetcher.fetch(
            item[0], item[1][0], item[1][2]))
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


def assemble_bundle(name, version, arch, images, file_entries, cache, with_docker):
    """bundle.json and the list of members: (path, bytes or cache hex, mode)."""
    members = []

    def add(path, mode, data=None, cached=None):
        if data is not None:
            members.append({"path": path, "mode": mode, "data": data,
                            "size": len(data), "sha256": sha256_bytes(data)})
        else:
            members.append({"path": path, "mode": mode, "file": cache.path(cached),
                            "size": os.path.getsize(cache.path(cached)),
                            "sha256": cached, "rehash": cached not in cache.fresh})

    flannel_path = os.path.join(script_dir(), MANIFESTS_DIR, FLANNEL_MANIFEST)
    try:
        with open(flannel_path, "rb") as handle:
            flannel = handle.read()
        with open(os.path.abspath(__file__), "rb") as handle:
            script = handle.read()
    except (OSError, IOError) as exc:
        raise UserError("cannot read %s: %s: run bundle from the k8s-offline "
                        "folder" % (exc.filename, exc.strerror))
    add("k8s_offline.py", 0o755, data=script)
    add("%s/%s" % (MANIFESTS_DIR, FLANNEL_MANIFEST), 0o644, data=flannel)
    units = [("kubelet.service", KUBELET_SERVICE), ("10-kubeadm.conf", KUBEADM_DROPIN)]
    if with_docker:
        units += [("docker.service", DOCKER_SERVICE),
                  ("containerd.service", CONTAINERD_SERVICE)]
    for unit, text in units:
        add("%s/%s" % (SYSTEMD_DIR, unit), 0o644, data=text.encode("utf-8"))
    for entry in file_entries:
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
    facts = version_facts(version)
    keep = ("name", "kubeadm", "extra", "repository", "tag", "ref", "source",
            "source_digest", "manifest_digest", "manifest_media_type",
            "config_digest", "layers", "size")
    meta = {
        "format": BUNDLE_FORMAT, "name": name, "tool_version": TOOL_VERSION,
        "kubernetes_version": version, "arch": arch,
        "versions": {"kubernetes": version, "pause": _tag_of(images, "pause"),
                     "etcd": _tag_of(images, "etcd"),
                     "coredns": _tag_of(images, "coredns"),
                     "cni": facts["cni"], "crictl": facts["crictl"],
                     "flannel": facts["flannel"],
                     "docker": DOCKER_STATIC_VERSION if with_docker else None},
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
    }
    return meta, members


def bundle_json_sha_line(meta_bytes):
    return ("%s  %s\n" % (sha256_bytes(meta_bytes), BUNDLE_JSON)).encode("ascii")


def _tag_of(images, name):
    for image in images:
        if image["name"] == name and image["kubeadm"]:
            return image["tag"]
    return None


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
        with bundle.open(BUNDLE_JSON) as handle:
            if handle.read() != meta_bytes or bundle.top != name:
                return False
        files = bundle.meta["files"]
        return set(bundle.members) - {BUNDLE_JSON, BUNDLE_JSON_SHA} == \
            set(files) and all(
            bundle.members[p].size == e["size"] for p, e in files.items())
    finally:
        bundle.close()


def write_bundle(partial, name, meta_bytes, members, progress):
    """Stream bundle.json first, then every member, into the .partial file."""
    total = sum(member["size"] for member in members)
    bar = Progress(total, "write", enabled=progress)
    try:
        with open(partial, "wb") as handle:
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
            os.fsync(handle.fileno())
    finally:
        bar.close()


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
        if self.size(BUNDLE_JSON) > MAX_BUNDLE_JSON_BYTES:
            raise BundleError("%s is too large: this is not a k8s-offline "
                              "bundle" % BUNDLE_JSON)
        try:
            with self.open(BUNDLE_JSON) as handle:
                raw = handle.read()
            with self.open(BUNDLE_JSON_SHA) as handle:
                recorded = handle.read(200).decode("ascii", "replace").split()
        except BundleError:
            raise BundleError("%s or %s is missing: this is not a complete "
                              "k8s-offline bundle" % (BUNDLE_JSON, BUNDLE_JSON_SHA))
        if not recorded or recorded[0] != sha256_bytes(raw):
            raise BundleError("bundle member %s fails its sha256 check (%s): "
                              "the bundle is damaged; recopy it"
                              % (BUNDLE_JSON, BUNDLE_JSON_SHA))
        try:
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
    present = set(bundle.names()) - {BUNDLE_JSON, BUNDLE_JSON_SHA}
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
    """bundle and images (bundle mode)."""
    bundle = sub.add_parser("bundle", help="pull and verify everything into "
                            "one tarball (connected machine)")
    images = sub.add_parser("images", help="print every image the bundle "
                            "will hold")
    for parser in (bundle, images):
        parser.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
                            help="default %(default)s")
        parser.add_argument("--arch", default=DEFAULT_ARCH, help="default %(default)s")
        parser.add_argument("--image-repository", default=DEFAULT_PULL_REPOSITORY,
                            help="where kubeadm's images are pulled from "
                                 "(default %(default)s)")
        parser.add_argument("--extra-image", action="append", default=[],
                            metavar="REF", help="also bundle this image")
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
                        help="add Docker static binaries and units")
    bundle.add_argument("--output", metavar="PATH",
                        help="default bundle/<name>.tar")
    bundle.add_argument("--cache-dir", metavar="DIR",
                        help="default ~/.cache/k8s-offline")
    bundle.add_argument("--jobs", type=int, default=8, help="parallel downloads")
    bundle.add_argument("--timeout", type=float, default=HTTP_TIMEOUT,
                        help="seconds a download may stall before it is "
                        "retried (default %(default)s)")
    bundle.add_argument("--no-progress", action="store_true")
    bundle.set_defaults(func=cmd_bundle)
    images.set_defaults(func=cmd_images)


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
