"""Helpers for the install-mode tests: a tiny valid bundle, a fixture host
tree for --root, and a recording command runner with canned answers.

The runner (FakeRunner) answers only what it knows: the commands of the
fake host it models, plus what a test declares with runner.expect(...).
Anything else, and a kubeadm --config that kubeadm would refuse
(fake_kubeadm.py), fails the test."""

import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

import k8s_offline as ko
import fake_kubeadm
from fixtures import K8S_VERSION

BUSYBOX = "/bin/busybox"
CA_HASH = "sha256:" + "ab" * 32
TOKEN = "abcdef.0123456789abcdef"
CERT_KEY = "cd" * 32
HOST_IP = "192.168.50.10"


PY36_PLACES = ("~/.pyenv/versions/3.6.*/bin/python3", "python3.6 on PATH")
_PY36 = []


def find_python36():
    """A Python 3.6 interpreter of any patch level (the newest pyenv
    3.6.*, else python3.6 on PATH) that really is 3.6, or None."""
    if not _PY36:
        pattern = os.path.expanduser("~/.pyenv/versions/3.6.*/bin/python3")
        found = sorted(glob.glob(pattern), key=lambda path: [
            int(part) if part.isdigit() else -1 for part in
            path.split(os.sep)[-3].split(".")], reverse=True)
        on_path = shutil.which("python3.6")
        found += [on_path] if on_path else []
        _PY36.append(next((path for path in found if _is_python36(path)),
                          None))
    return _PY36[0]


def _is_python36(path):
    try:
        out = subprocess.run([path, "-S", "-c", "import sys; "
                              "print(sys.version_info[:2] == (3, 6))"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=60, universal_newlines=True).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.strip() == "True"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def _tar_bytes(files, gz=False):
    """files: {name: (bytes, mode)} -> tar (or tar.gz) bytes, reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data, mode = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    if gz:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as handle:
            handle.write(data)
        return out.getvalue()
    return data


class ImageStore(object):
    """Blobs of OCI/Docker images made here, by digest."""

    def __init__(self):
        self.blobs = {}

    def add(self, data):
        digest = "sha256:" + sha256(data)
        self.blobs[digest] = data
        return digest

    def layer(self, files):
        tar = _tar_bytes(files)
        compressed = _tar_bytes(files, gz=True)
        return self.add(compressed), "sha256:" + sha256(tar), len(compressed)

    def image(self, name, busybox=False):
        """A one- or two-layer image; the busybox layer is shared."""
        layers = []
        if busybox and os.path.exists(BUSYBOX):
            with open(BUSYBOX, "rb") as handle:
                layers.append(self.layer({"bin/busybox": (handle.read(), 0o755)}))
        layers.append(self.layer({"etc/image-name": (name.encode(), 0o644)}))
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Cmd": ["/bin/busybox", "sleep", "3600"],
                             "Labels": {"k8s-offline-test": name}},
                  "rootfs": {"type": "layers",
                             "diff_ids": [diff for _, diff, _ in layers]}}
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = self.add(config_bytes)
        manifest = {"schemaVersion": 2, "mediaType": ko.MT_DOCKER_MANIFEST,
                    "config": {"mediaType": ko.MT_DOCKER_CONFIG,
                               "size": len(config_bytes),
                               "digest": config_digest},
                    "layers": [{"mediaType": ko.MT_DOCKER_LAYER, "size": size,
                                "digest": digest}
                               for digest, _, size in layers]}
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_digest = self.add(manifest_bytes)
        return {"manifest_digest": manifest_digest,
                "manifest_media_type": ko.MT_DOCKER_MANIFEST,
                "config_digest": config_digest,
                "layers": [digest for digest, _, _ in layers],
                "size": sum(size for _, _, size in layers)}


KUBEADM_IMAGES = (("kube-apiserver", K8S_VERSION),
                  ("kube-controller-manager", K8S_VERSION),
                  ("kube-scheduler", K8S_VERSION), ("kube-proxy", K8S_VERSION),
                  ("pause", "3.1"), ("etcd", "3.3.15-0"), ("coredns", "1.6.2"))


def make_bundle(where, arch="amd64", version=K8S_VERSION, as_tar=False,
                busybox=False, extra_images=("docker.io/library/nginx:1.17",),
                with_docker=False, image_prefix="",
                unit_mark="# as bundled\n", kubeadm_images=None,
                image_repository=None, cri_dockerd=False):
    """Write a small valid bundle under where; return its path.

    kubeadm_images: [(repository under the image repository, tag)] instead
    of 1.16's; image_repository: bundle.json's image_repository (the refs
    are named under it; absent: k8s.gcr.io and no such field);
    cri_dockerd: the bundle carries cri-dockerd and its units."""
    name = "k8s-offline-%s-linux-%s" % (version, arch)
    top = os.path.join(where, name)
    files = {}

    def put(rel, data, mode=0o644):
        path = os.path.join(top, rel)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path))
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
        files[rel] = {"size": len(data), "sha256": sha256(data)}

    with open(os.path.join(REPO, "k8s_offline.py"), "rb") as handle:
        put("k8s_offline.py", handle.read(), 0o755)
    for binary in ("kubeadm", "kubelet", "kubectl"):
        # The fake kubeadm tells its version from this line (see
        # FakeRunner.kubeadm_version).
        put("bin/" + binary, ("#!/bin/sh\necho fake %s %s\n"
                              % (binary, version)).encode(), 0o755)
    plugins = {"./" + plugin: (("#!/bin/sh\n# %s\n" % plugin).encode(), 0o755)
               for plugin in ("flannel", "bridge", "host-local", "portmap",
                              "loopback")}
    cni = "archives/cni-plugins-%s-v0.7.5.tgz" % arch
    put(cni, _tar_bytes(plugins, gz=True))
    crictl = "archives/crictl-v1.16.1-linux-%s.tar.gz" % arch
    put(crictl, _tar_bytes({"crictl": (b"#!/bin/sh\necho crictl\n", 0o755)},
                           gz=True))
    archives = {"cni": cni, "crictl": crictl}
    if with_docker:
        docker = {"docker/" + b: (("#!/bin/sh\n# %s\n" % b).encode(), 0o755)
                  for b in ("docker", "dockerd", "containerd", "runc", "ctr")}
        archives["docker"] = "archives/docker-19.03.15.tgz"
        put(archives["docker"], _tar_bytes(docker, gz=True))
    units = {"kubelet.service": ko.KUBELET_SERVICE,
             "10-kubeadm.conf": ko.KUBEADM_DROPIN}
    if with_docker:
        units.update({"docker.service": ko.DOCKER_SERVICE,
                      "containerd.service": ko.CONTAINERD_SERVICE})
    if cri_dockerd:
        archives["cri-dockerd"] = "archives/cri-dockerd-0.3.26.amd64.tgz"
        put(archives["cri-dockerd"], _tar_bytes({
            "cri-dockerd/cri-dockerd": (b"#!/bin/sh\n# cri-dockerd\n", 0o755)},
            gz=True))
        units.update({"cri-docker.service": CRI_DOCKER_SERVICE,
                      "cri-docker.socket": CRI_DOCKER_SOCKET})
    for unit, text in sorted(units.items()):
        # The mark tells the bundle's copy from the text in the code.
        put("systemd/" + unit, (text + unit_mark).encode())
    with open(os.path.join(REPO, "manifests", "kube-flannel.yml"), "rb") as h:
        put("manifests/kube-flannel.yml", h.read())

    store = ImageStore()
    images = []
    repository = image_repository or "k8s.gcr.io"
    for repo, tag in kubeadm_images or KUBEADM_IMAGES:
        entry = store.image(image_prefix + repo + ":" + tag, busybox=busybox)
        entry.update({"name": repo.rsplit("/", 1)[-1], "kubeadm": True,
                      "repository": repo, "tag": tag,
                      "ref": "%s/%s:%s" % (repository, repo, tag),
                      "extra": False})
        images.append(entry)
    entry = store.image(image_prefix + "flannel", busybox=busybox)
    entry.update({"name": "flannel", "kubeadm": False,
                  "repository": "quay.io/coreos/flannel",
                  "tag": "v0.11.0-" + arch,
                  "ref": "quay.io/coreos/flannel:v0.11.0-" + arch,
                  "extra": False})
    images.append(entry)
    for ref in extra_images:
        entry = store.image(image_prefix + ref, busybox=busybox)
        repository, _, tag = ref.rpartition(":")
        entry.update({"name": repository.rsplit("/", 1)[-1], "kubeadm": False,
                      "repository": repository, "tag": tag, "ref": ref,
                      "extra": True})
        images.append(entry)
    for digest, data in store.blobs.items():
        put("images/blobs/sha256/" + digest.split(":")[1], data)
    put("images/oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": image["manifest_media_type"],
         "digest": image["manifest_digest"],
         "size": len(store.blobs[image["manifest_digest"]]),
         "annotations": {"org.opencontainers.image.ref.name": image["ref"]}}
        for image in images]}
    put("images/index.json", json.dumps(index).encode())
    manifest = [{"Config": "blobs/sha256/" + image["config_digest"][7:],
                 "RepoTags": [image["ref"]],
                 "Layers": ["blobs/sha256/" + d[7:] for d in image["layers"]]}
                for image in images]
    put("images/manifest.json", json.dumps(manifest).encode())
    meta = {"format": 1, "name": name, "tool_version": ko.TOOL_VERSION,
            "kubernetes_version": version, "arch": arch,
            "versions": {"kubernetes": version, "pause": "3.1",
                         "etcd": "3.3.15-0", "coredns": "1.6.2",
                         "cni": "v0.7.5", "crictl": "v1.16.1",
                         "flannel": "v0.11.0",
                         "docker": "19.03.15" if with_docker else None},
            "images": images, "files": files,
            "binaries": {b: "bin/" + b for b in ("kubeadm", "kubelet",
                                                 "kubectl")},
            "archives": archives,
            "systemd": dict((unit, "systemd/" + unit) for unit in units),
            "flannel_manifest": "manifests/kube-flannel.yml"}
    tags = dict((entry["name"], entry["tag"]) for entry in images
                if entry["kubeadm"])
    meta["versions"].update((name, tags[name]) for name in
                            ("pause", "etcd", "coredns"))
    if image_repository:
        meta["image_repository"] = image_repository
    meta_bytes = ko.canonical_json(meta)
    with open(os.path.join(top, ko.BUNDLE_JSON), "wb") as handle:
        handle.write(meta_bytes)
    with open(os.path.join(top, ko.BUNDLE_JSON_SHA), "wb") as handle:
        handle.write(ko.bundle_json_sha_line(meta_bytes))
    if not as_tar:
        return top
    tar_path = top + ".tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(top, arcname=name)
    shutil.rmtree(top)
    return tar_path


# The newest patch of each minor in bundle/releases.json (1.16-1.20), of
# each minor in kubeadm-images-by-version.tsv (1.21-1.36; its pause, etcd
# and CoreDNS tags) and the release the lab proves (1.37), with the image
# repository its bundle names.
RELEASES = {
    "v1.16.15": None, "v1.17.17": None, "v1.18.20": None, "v1.19.16": None,
    "v1.20.15": None,
    "v1.21.14": ("k8s.gcr.io", "3.4.1", "3.4.13-0", "v1.8.0"),
    "v1.22.17": ("registry.k8s.io", "3.5", "3.5.6-0", "v1.8.4"),
    "v1.23.17": ("registry.k8s.io", "3.6", "3.5.6-0", "v1.8.6"),
    "v1.24.17": ("registry.k8s.io", "3.7", "3.5.6-0", "v1.8.6"),
    "v1.25.16": ("registry.k8s.io", "3.8", "3.5.9-0", "v1.9.3"),
    "v1.26.15": ("registry.k8s.io", "3.9", "3.5.10-0", "v1.9.3"),
    "v1.27.16": ("registry.k8s.io", "3.9", "3.5.12-0", "v1.10.1"),
    "v1.28.15": ("registry.k8s.io", "3.9", "3.5.15-0", "v1.10.1"),
    "v1.29.15": ("registry.k8s.io", "3.9", "3.5.16-0", "v1.11.1"),
    "v1.30.14": ("registry.k8s.io", "3.9", "3.5.15-0", "v1.11.3"),
    "v1.31.14": ("registry.k8s.io", "3.10", "3.5.24-0", "v1.11.3"),
    "v1.32.13": ("registry.k8s.io", "3.10", "3.5.24-0", "v1.11.3"),
    "v1.33.13": ("registry.k8s.io", "3.10", "3.5.24-0", "v1.12.0"),
    "v1.34.10": ("registry.k8s.io", "3.10.1", "3.6.5-0", "v1.12.1"),
    "v1.35.7": ("registry.k8s.io", "3.10.1", "3.6.6-0", "v1.13.1"),
    "v1.36.3": ("registry.k8s.io", "3.10.2", "3.6.8-0", "v1.14.2"),
    "v1.37.2": ("registry.k8s.io", "3.10.2", "3.7.0-0", "v1.14.6"),
}


def release_bundle(folder, version, **options):
    """A fixture bundle of VERSION as bundle writes one (for 1.21 on:
    bundle.json's image_repository, CoreDNS at coredns/coredns)."""
    facts = RELEASES[version]
    if facts is None:
        return make_bundle(folder, version=version, **options)
    repository, pause, etcd, coredns = facts
    images = [(name, version) for name in (
        "kube-apiserver", "kube-controller-manager", "kube-scheduler",
        "kube-proxy")] + [("pause", pause), ("etcd", etcd),
                          ("coredns/coredns", coredns)]
    return make_bundle(folder, version=version, kubeadm_images=images,
                           image_repository=repository, **options)


# cri-dockerd's units as its release packages them (packaging/systemd).
CRI_DOCKER_SERVICE = """\
[Unit]
Description=CRI Interface for Docker Application Container Engine
After=network-online.target firewalld.service docker.service
Wants=network-online.target
Requires=cri-docker.socket

[Service]
Type=notify
ExecStart=/usr/bin/cri-dockerd --container-runtime-endpoint fd://
Restart=always

[Install]
WantedBy=multi-user.target
"""
CRI_DOCKER_SOCKET = """\
[Unit]
Description=CRI Docker Socket for the API
PartOf=cri-docker.service

[Socket]
ListenStream=%t/cri-dockerd.sock
SocketMode=0660
SocketUser=root
SocketGroup=docker

[Install]
WantedBy=sockets.target
"""


def install_context(bundle, root, cri, role="master", address=None,
                    repo="k8s.gcr.io"):
    """A NodeContext for ROLE on BUNDLE with a RecordingRunner."""
    args = argparse.Namespace(bundle=bundle, root=root, cri=cri,
                              image_repository=repo, skip_phases=None,
                              dry_run=False, no_progress=True,
                              containerd_address=address,
                              command="join" if role == "worker" else "master")
    return with_runner(ko.NodeContext(args, role))


def with_runner(ctx):
    """ctx, built and so read-only, with a RecordingRunner in its Runner's
    place: a test's swap of one part, past the freeze on purpose."""
    object.__setattr__(ctx, "runner", RecordingRunner())
    return ctx


class RecordingRunner(ko.Runner):
    """The real runner, remembering what it ran."""

    def __init__(self):
        ko.Runner.__init__(self)
        self.seen = []

    def _execute(self, argv, **kwargs):
        self.seen.append(list(argv))
        return ko.Runner._execute(self, argv, **kwargs)

    def _execute_piped(self, argv, producer, **kwargs):
        self.seen.append(list(argv))
        return ko.Runner._execute_piped(self, argv, producer, **kwargs)


def write_join_file(tmp_path, **changes):
    """A valid join file (as master writes it) with CHANGES applied."""
    info = {"api_server_endpoint": HOST_IP + ":6443", "token": TOKEN,
            "discovery_token_ca_cert_hash": CA_HASH,
            "kubernetes_version": K8S_VERSION, "arch": "amd64",
            "token_expires": 1600000000 + 3600}
    info.update(changes)
    path = str(tmp_path / "join.json")
    with open(path, "w") as handle:
        json.dump(info, handle)
    return path


# -- a fixture host --------------------------------------------------------

TOOLS = ("ip", "iptables", "iptables-save", "iptables-restore", "mount",
         "nsenter", "socat", "conntrack", "ebtables", "ethtool", "tc", "touch",
         "modprobe", "sysctl", "swapoff", "systemctl")


def write(root, path, text, mode=0o644):
    full = os.path.join(root, path.lstrip("/"))
    if not os.path.isdir(os.path.dirname(full)):
        os.makedirs(os.path.dirname(full))
    with open(full, "w") as handle:
        handle.write(text)
    os.chmod(full, mode)
    return full


def run(root, bundle, *argv):
    """ko.main(COMMAND --root ROOT --bundle BUNDLE --no-progress ARGS...)."""
    return ko.main(list(argv[:1]) + ["--root", root, "--bundle", bundle,
                                     "--no-progress"] + list(argv[1:]))


def ran_phases(err):
    """The phases a run's log says were done, in order."""
    return [line.split("]")[0][1:] for line in err.splitlines()
            if line.startswith("[") and "] done in" in line]


def rpath(root, path):
    """Where the host path PATH lies in the --root tree ROOT."""
    return os.path.join(root, path.lstrip("/"))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def tcp_line(port, state="0A"):
    return ("   0: 00000000:%04X 00000000:0000 %s 00000000:00000000 00:00000000 "
            "00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n"
            % (port, state))


def make_root(root, cpus=2, mem_kb=4000000, swap=False, listening=(),
              modules=("br_netfilter", "overlay"), sysctls_on=True,
              hostname="node-a", tools=TOOLS, selinux=None):
    """A fixture host tree for --root."""
    write(root, "/proc/cpuinfo", "".join(
        "processor\t: %d\nmodel name\t: test\n\n" % i for i in range(cpus)))
    write(root, "/proc/meminfo", "MemTotal:       %d kB\nMemFree: 1 kB\n"
          % mem_kb)
    swaps = "Filename\tType\tSize\tUsed\tPriority\n"
    if swap:
        swaps += "/swapfile                               file\t\t1048572\t0\t-2\n"
    write(root, "/proc/swaps", swaps)
    header = ("  sl  local_address rem_address   st tx_queue rx_queue tr "
              "tm->when retrnsmt   uid  timeout inode\n")
    write(root, "/proc/net/tcp", header + tcp_line(22) + tcp_line(8080, "01")
          + "".join(tcp_line(p) for p in listening))
    write(root, "/proc/net/tcp6", header)
    write(root, "/proc/net/route",
          "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
          "eth0\t00000000\t0132A8C0\t0003\t0\t0\t0\t00000000\n"
          "eth0\t0032A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n")
    write(root, "/proc/sys/kernel/hostname", hostname + "\n")
    value = "1\n" if sysctls_on else "0\n"
    write(root, "/proc/sys/net/bridge/bridge-nf-call-iptables", value)
    write(root, "/proc/sys/net/ipv4/ip_forward", value)
    write(root, "/proc/modules", "".join("%s 28672 0 - Live 0x0\n" % m
                                         for m in modules))
    for module in modules:
        os.makedirs(os.path.join(root, "sys/module", module))
    if selinux is not None:
        write(root, "/sys/fs/selinux/enforce", selinux)
    write(root, "/etc/hosts", "127.0.0.1 localhost\n%s %s\n" % (HOST_IP,
                                                               hostname))
    write(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"
          "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n")
    write(root, "/etc/fstab", "UUID=1 / ext4 defaults 0 1\n"
          "/swapfile none swap sw 0 0\n")
    os.makedirs(os.path.join(root, "root"))
    os.makedirs(os.path.join(root, "home/alice"))
    os.makedirs(os.path.join(root, "var/log"))
    for tool in tools:
        write(root, "/usr/sbin/" + tool, "#!/bin/sh\nexit 0\n", 0o755)
    return root


def snapshot(root):
    """{relpath: (mode, sha256, link target or None)} of a tree, the run
    log left out (see tree)."""
    return tree(root)


# Host paths of the real machine that a run under --root must never touch.
REAL_PATHS = ("/var/log/k8s-offline.log", "/var/log/kubeadm-init.log",
              "/var/log/kubeadm-join.log", "/var/lib/k8s-offline",
              "/etc/kubernetes", "/etc/containerd/config.toml",
              "/etc/crictl.yaml", "/usr/bin/kubeadm", "/tmp/x", "/tmp/evil")


def real_state():
    found = {}
    for path in REAL_PATHS:
        try:
            st = os.lstat(path)
            found[path] = (st.st_mode, st.st_size, st.st_mtime)
        except OSError:
            found[path] = None
    return found


def tree(path):
    """Every file, folder, FIFO and link below path with its mode and
    content (sha256 of a file, target of a link): links and FIFOs are
    listed, never read or followed.  The run log is left out."""
    found = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, path)
            if rel.endswith("var/log/k8s-offline.log"):
                continue
            st = os.lstat(full)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as handle:
                    digest = sha256(handle.read())
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(full)
            found[rel] = (st.st_mode, digest)
    return found


# -- the recording runner --------------------------------------------------

def docker_familiar(name):
    """docker.io/library/x:1 as Docker lists it (x:1)."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def node_json(name, ready=True, heartbeat=None):
    condition = {"type": "Ready", "status": "True" if ready else "False",
                 "reason": "KubeletNotReady",
                 "message": "cni config uninitialized"}
    if heartbeat is not None:          # the kubelet's clock, seconds
        condition["lastHeartbeatTime"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(heartbeat))
    return {"metadata": {"name": name, "creationTimestamp":
                         "2020-01-01T00:00:00Z",
                         "labels": {"node-role.kubernetes.io/master": ""}},
            "status": {"conditions": [condition],
                       "nodeInfo": {"kubeletVersion": K8S_VERSION}}}


def pod_json(name, phase="Running", waiting=None, image=None,
             namespace="kube-system", labels=None, static=False,
             ready=None, node="node-a"):
    """A pod as kubectl lists it; static: a mirror pod of the kubelet's
    static pods; ready: its containers' ready flag (default: Running and
    not waiting)."""
    if ready is None:
        ready = phase == "Running" and not waiting
    container = {"name": "c", "ready": ready,
                 "restartCount": 0, "image": image or "k8s.gcr.io/x:1",
                 "state": {"waiting": {"reason": waiting, "message": "back-off"}}
                 if waiting else {"running": {}}}
    metadata = {"name": name, "namespace": namespace, "labels": labels or {}}
    if static:
        metadata["annotations"] = {"kubernetes.io/config.mirror": "0123abcd"}
    status = {"phase": phase, "containerStatuses": [container]}
    if phase == "Running" and not ready:
        status["conditions"] = [{"type": "Ready", "status": "False",
                                 "reason": "ContainersNotReady",
                                 "message": "containers with unready status: [c]"}]
    return {"metadata": metadata, "spec": {"nodeName": node}, "status": status}


def coredns_pod_json(name, ready, pod_ip="10.244.0.3", node="node-a"):
    """A CoreDNS pod (k8s-app=kube-dns), Running, with its pod address."""
    pod = pod_json(name, labels={"k8s-app": "kube-dns"}, ready=ready,
                   node=node)
    if pod_ip is not None:
        pod["status"]["podIP"] = pod_ip
    return pod


def flannel_pod_json(node="node-a", namespace="kube-system", **kwargs):
    return pod_json("kube-flannel-ds-" + node, namespace=namespace,
                    labels={"app": "flannel"}, node=node, **kwargs)


class FakeCluster(object):
    """The state the canned answers come from."""

    def __init__(self):
        self.docker_running = True
        self.cgroup_driver = "cgroupfs"
        self.docker_images = {}          # tag -> id
        self.containerd_images = {}      # name -> manifest digest
        self.containerd_labels = {}      # name -> {key=value}
        self.node_ready = True
        self.node_heartbeat = None       # the kubelet's last report, seconds
        self.pods = [pod_json("etcd-node-a", static=True), pod_json("coredns-1"),
                     flannel_pod_json()]
        self.readyz = (0, "ok")          # kubectl get --raw /readyz
        self.health = {}                 # port -> False: its /healthz fails
        self.dns_answers = True          # CoreDNS answers (bool, callable,
                                         # or {server address: bool})
        self.kube_dns_ip = "10.96.0.10"
        self.health_asked = []           # (host, port, path, scheme)
        self.dns_asked = []              # (server, name)
        self.kubectl_seconds = 0         # the fake clock's time per kubectl
        self.iptables = "iptables v1.8.9 (legacy)"
        self.firewalld = "inactive"
        self.cert_output = ""
        self.containerd_version = "v1.6.20"
        self.kubeadm_version = K8S_VERSION   # without a kubeadm under root
        self.daemon_reloads = 0
        self.started = []                # (enable|restart, [--now], unit)
        self.applied = []                # manifests kubectl applied
        self.iptables_restored = []      # what iptables-restore was given


class FakeCommandError(BaseException):
    """The fake host was asked something it has no answer for, or its
    kubeadm was given a config that kubeadm would refuse.  A BaseException,
    so the tool's `except Exception` cannot turn it into an exit code; the
    suite's teardown check (conftest.py) fails the test even if it is
    caught."""


# Every FakeRunner made during the running test (conftest.py checks them).
LIVE = []


class FakeRunner(ko.Runner):
    """Records every command; answers from FakeCluster; fails on demand.

    ``calls``: [(argv, executed)] (executed is False for a change printed
    under --dry-run).  ``fail``: {argv prefix tuple: times left}.
    A command it has no answer for is a test failure (FakeCommandError):
    a test whose run makes other commands declares them with expect().
    ``problems``: what went wrong that way, in order.
    """

    def __init__(self, root, cluster=None):
        super(FakeRunner, self).__init__()
        self.root = root
        self.cluster = cluster or FakeCluster()
        self.calls = []
        self.fail = {}
        self.streams = []
        self.expected = []
        self.matched = set()
        self.problems = []
        self.slept = []                  # every sleep(seconds), in order
        LIVE.append(self)

    def expect(self, *prefix, **answer):
        """Declare that the run makes commands starting with PREFIX; they
        answer (rc, out) (default 0, "").  A declaration no command used
        by the end of the test fails it too (see unused).  Returns the
        runner."""
        self.expected.append((tuple(prefix), answer.get("rc", 0),
                              answer.get("out", "")))
        return self

    def unused(self):
        """The declared prefixes no command has matched."""
        return [prefix for prefix, _, _ in self.expected
                if prefix not in self.matched]

    def refuse(self, problem):
        """The test fails: record PROBLEM and raise FakeCommandError."""
        self.problems.append(problem)
        raise FakeCommandError(problem)

    def unknown(self, argv):
        self.refuse("the fake host has no answer for %r: declare it with "
                    "runner.expect(...) if the run should make it" % (argv,))

    def bind(self, dry_run=False):
        self.dry_run = dry_run
        return self

    def run(self, argv, change=True, **kwargs):
        if argv[:1] == ["kubectl"] and hasattr(self, "clock"):
            self.clock["t"] += self.cluster.kubectl_seconds
        if change and self.dry_run:
            self.calls.append((list(argv), False))
        return super(FakeRunner, self).run(argv, change=change, **kwargs)

    def run_piped(self, argv, producer, **kwargs):
        if self.dry_run:
            self.calls.append((list(argv), False))
        return super(FakeRunner, self).run_piped(argv, producer, **kwargs)

    def commands(self, executed_only=True):
        return [argv for argv, executed in self.calls
                if executed or not executed_only]

    def ran(self, *prefix):
        return [argv for argv in self.commands()
                if tuple(argv[:len(prefix)]) == prefix]

    def _failing(self, argv):
        for prefix, left in list(self.fail.items()):
            if tuple(argv[:len(prefix)]) == prefix and left:
                self.fail[prefix] = left - 1
                return True
        return False

    def _execute_piped(self, argv, producer, timeout=3600):
        self.calls.append((list(argv), True))
        stream = io.BytesIO()
        producer(stream)
        self.streams.append(stream.getvalue())
        if self._failing(argv):
            return ko.CommandResult(argv, 1, "", "load failed")
        tar = tarfile.open(fileobj=io.BytesIO(stream.getvalue()))
        names = tar.getnames()
        if argv[:2] == ["docker", "load"]:
            manifest = json.loads(tar.extractfile("manifest.json").read())
            for entry in manifest:
                config = entry["Config"].rsplit("/", 1)[1]
                for tag in entry["RepoTags"]:
                    self.cluster.docker_images[tag] = "sha256:" + config
        elif argv[0] == "ctr" and "import" in argv:
            assert "oci-layout" in names
            index = json.loads(tar.extractfile("index.json").read())
            for entry in index["manifests"]:
                name = entry["annotations"]["io.containerd.image.name"]
                self.cluster.containerd_images[
                    ko._normalize_image_name(name)] = entry["digest"]
        else:
            self.unknown(argv)
        return ko.CommandResult(argv, 0, "Loaded", "")

    def _execute(self, argv, timeout=300, tee=None, input_text=None):
        self.calls.append((list(argv), True))
        self.check_kubeadm_config(argv)
        if self._failing(argv):
            self._side_effect_on_failure(argv)
            return ko.CommandResult(argv, 1, "", "simulated failure of %s"
                                    % argv[0])
        if argv in (["iptables-restore"], ["ip6tables-restore"]):
            # The pair of the fake's iptables-save: keeps what it is given.
            self.cluster.iptables_restored.append(input_text)
            return ko.CommandResult(argv, 0, "", "")
        rc, out = self.answer(argv)
        if tee:
            tee.write(out)
        return ko.CommandResult(argv, rc, out, "")

    def installed_kubeadm_version(self):
        """The version of the kubeadm installed under the root (the
        bundle's, see make_bundle), else FakeCluster.kubeadm_version."""
        try:
            with open(rpath(self.root, ko.BIN_INSTALL_DIR + "/kubeadm"),
                      "rb") as h:
                words = h.read(200).decode("utf-8", "replace").split()
        except (IOError, OSError):
            words = []
        versions = [w for w in words if w.startswith("v1.")]
        return versions[-1] if versions else self.cluster.kubeadm_version

    def check_kubeadm_config(self, argv):
        """`kubeadm init|join --config PATH`: the file is one that kubeadm
        takes (fake_kubeadm.check_config), else the test fails."""
        if argv[:1] != ["kubeadm"] or "--config" not in argv or \
                "phase" in argv or argv[1] not in ("init", "join"):
            return
        path = argv[argv.index("--config") + 1]
        try:
            with open(rpath(self.root, path), "rb") as handle:
                text = handle.read().decode("utf-8")
        except (IOError, OSError, UnicodeDecodeError) as exc:
            self.refuse("kubeadm %s --config %s: cannot read it: %s"
                        % (argv[1], path, exc))
        problems = fake_kubeadm.check_config(argv[1], text,
                                             self.installed_kubeadm_version())
        if problems:
            self.refuse("kubeadm %s --config %s would be refused: %s"
                        % (argv[1], path, "; ".join(problems)))

    def _side_effect_on_failure(self, argv):
        if argv[:2] == ["kubeadm", "init"]:
            # kubeadm init that fails half way leaves manifests behind.
            write(self.root, "/etc/kubernetes/manifests/kube-apiserver.yaml", "x")

    def answer(self, argv):
        cluster = self.cluster
        head = tuple(argv[:3])
        if argv[:2] == ["docker", "info"]:
            if not cluster.docker_running:
                return 1, ""
            return 0, json.dumps({"ServerVersion": "20.10.24",
                                  "CgroupDriver": cluster.cgroup_driver})
        if argv[:3] == ["docker", "image", "inspect"]:
            name = argv[-1]
            if name in cluster.docker_images:
                return 0, cluster.docker_images[name] + "\n"
            if name in cluster.docker_images.values():
                return 0, name + "\n"
            return 1, ""
        if argv[:2] == ["docker", "images"] and "--format" in argv:
            # as Docker lists them: short names for Docker Hub's
            return 0, "".join("%s %s\n" % (docker_familiar(tag), image_id)
                              for tag, image_id in sorted(
                                  cluster.docker_images.items()))
        if argv[:2] == ["docker", "rmi"]:
            for name in argv[2:]:
                cluster.docker_images.pop(name, None)
            return 0, "".join("Untagged: %s\n" % name for name in argv[2:])
        if argv[:2] == ["docker", "tag"]:
            cluster.docker_images[argv[3]] = argv[2]
            return 0, ""
        if argv[0] == "ctr" and "ls" in argv:
            lines = ["REF TYPE DIGEST SIZE PLATFORMS LABELS"]
            for name, digest in sorted(cluster.containerd_images.items()):
                lines.append("%s application/x %s 1.0 MiB linux/amd64 %s"
                             % (name, digest, ",".join(sorted(
                                 cluster.containerd_labels.get(name, ())))
                                or "-"))
            return 0, "\n".join(lines) + "\n"
        if argv[0] == "ctr" and argv[-4:-2] == ["images", "label"]:
            # ctr images label NAME KEY=VALUE, as the real ctr takes it
            # (tests/install/test_containerd_config.py runs that one).
            if argv[-2] not in cluster.containerd_images:
                return 1, "ctr: image %r: not found\n" % argv[-2]
            cluster.containerd_labels.setdefault(argv[-2], set()).add(argv[-1])
            return 0, argv[-2] + "\n"
        if argv[0] == "ctr" and "version" in argv:
            return 0, "Client:\n  Version: 1.6\nServer:\n  Version: 1.6\n"
        if argv[:2] == ["containerd", "config"]:
            return 0, ('version = 2\n[plugins]\n  [plugins."io.containerd.grpc.'
                       'v1.cri"]\n    sandbox_image = "k8s.gcr.io/pause:3.6"\n')
        if argv[:2] == ["iptables", "--version"]:
            return 0, cluster.iptables + "\n"
        if argv[:3] == ["systemctl", "is-active", "firewalld"]:
            return (0 if cluster.firewalld == "active" else 3), \
                cluster.firewalld + "\n"
        if argv[:2] == ["ip", "-o"]:
            return 0, ("1: lo    inet 127.0.0.1/8 scope host lo\n"
                       "2: eth0    inet %s/24 brd 192.168.50.255 scope global "
                       "eth0\n3: docker0    inet 172.17.0.1/16 scope global "
                       "docker0\n" % HOST_IP)
        if argv[:2] == ["kubeadm", "init"] and "phase" not in argv:
            for path in ("/etc/kubernetes/admin.conf",
                         "/etc/kubernetes/kubelet.conf",
                         "/etc/kubernetes/manifests/kube-apiserver.yaml"):
                write(self.root, path, "apiVersion: v1\nkind: Config\n", 0o600)
            return 0, "Your Kubernetes control-plane has initialized " \
                      "successfully!\n"
        if argv[:2] == ["kubeadm", "join"]:
            write(self.root, "/etc/kubernetes/kubelet.conf", "kind: Config\n")
            if "controlPlane" in open(os.path.join(
                    self.root, ko.JOIN_CONFIG.lstrip("/"))).read():
                write(self.root, "/etc/kubernetes/admin.conf", "kind: Config\n")
            return 0, "This node has joined the cluster\n"
        if argv[:2] == ["kubeadm", "reset"]:
            for path in ("etc/kubernetes/manifests", "etc/kubernetes/pki",
                         "etc/kubernetes/admin.conf",
                         "etc/kubernetes/kubelet.conf", "var/lib/etcd"):
                full = os.path.join(self.root, path)
                if os.path.isdir(full):
                    shutil.rmtree(full)
                elif os.path.exists(full):
                    os.unlink(full)
            return 0, "[reset] done\n"
        if head == ("kubeadm", "token", "create"):
            return 0, ("kubeadm join %s:6443 --token %s     "
                       "--discovery-token-ca-cert-hash %s \n" % (
                           HOST_IP, TOKEN, CA_HASH))
        if argv[:4] == ["kubeadm", "init", "phase", "upload-certs"]:
            return 0, "[upload-certs] Using certificate key:\n%s\n" % CERT_KEY
        if argv[0] == "kubeadm" and "check-expiration" in argv:
            return 0, cluster.cert_output
        if argv[0] == "kubectl" and argv[-2:] == ["--raw", "/readyz"]:
            return cluster.readyz
        if argv[0] == "kubectl" and "get" in argv and "svc" in argv:
            return 0, json.dumps({"metadata": {"name": "kube-dns"}, "spec": {
                "clusterIP": cluster.kube_dns_ip}})
        if argv[0] == "kubectl" and "get" in argv:
            if "pods" in argv:
                pods = cluster.pods
                if "--field-selector" in argv:
                    key, value = argv[argv.index("--field-selector") +
                                      1].split("=", 1)
                    assert key == "spec.nodeName", key
                    pods = [p for p in pods if p["spec"].get("nodeName") == value]
                if "-n" in argv:
                    namespace = argv[argv.index("-n") + 1]
                    pods = [p for p in pods if p["metadata"].get(
                        "namespace", "kube-system") == namespace]
                return 0, json.dumps({"items": pods})
            if "node" in argv or "nodes" in argv:
                if "nodes" in argv:
                    return 0, json.dumps({"items": [node_json(
                        "node-a", cluster.node_ready)]})
                name = argv[argv.index("node") + 1]
                if name not in ("node-a", "node-b"):
                    return 1, 'Error from server (NotFound): nodes "%s" not ' \
                              'found' % name
                return 0, json.dumps(node_json(name, cluster.node_ready,
                                               cluster.node_heartbeat))
        if argv[0] == "iptables-save":
            return 0, ("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n"
                       "-A PREROUTING -j KUBE-SERVICES\n"
                       "-A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j "
                       "RETURN\n-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE\n"
                       "COMMIT\n")
        if argv == ["kubeadm", "version", "-o", "short"]:
            return 0, self.installed_kubeadm_version() + "\n"
        if argv[:2] == ["containerd", "--version"]:
            return 0, ("containerd github.com/containerd/containerd %s "
                       "1e1ea6e\n" % cluster.containerd_version)
        if argv == ["systemctl", "disable", "kubelet"]:
            cluster.started.append(tuple(argv[1:]))
            return 0, ""
        if argv == ["systemctl", "daemon-reload"]:
            cluster.daemon_reloads += 1
            return 0, ""
        if argv[:2] in (["systemctl", "enable"], ["systemctl", "restart"]):
            unit = argv[-1]
            if unit == "kubelet" and not any(os.path.exists(rpath(
                    self.root, folder + "/kubelet.service"))
                    for folder in ko.KUBELET_UNIT_DIRS):
                return 1, ("Failed to enable unit: Unit file kubelet.service "
                           "does not exist.\n")
            if unit in ("kubelet", "containerd", "docker",
                        "cri-docker.socket", "cri-docker.service"):
                cluster.started.append(tuple(argv[1:]))
                return 0, ""
        if argv[0] == "kubectl" and argv[-5:] == ["delete", "pods", "-l", "app=flannel",
                                                   "--wait=false"]:
            if not os.path.exists(rpath(self.root, ko.ADMIN_CONF)):
                return 1, "error: the path %s does not exist\n" % ko.ADMIN_CONF
            return 0, 'pod "kube-flannel-ds-amd64-x7k2p" deleted\n'
        if argv[0] == "kubectl" and "apply" in argv:
            manifest = argv[argv.index("-f") + 1]
            for path in (ko.ADMIN_CONF, manifest):
                if not os.path.exists(rpath(self.root, path)):
                    return 1, "error: the path %s does not exist\n" % path
            cluster.applied.append(manifest)
            return 0, "daemonset.apps/kube-flannel-ds-amd64 created\n"
        for prefix, rc, out in self.expected:
            if tuple(argv[:len(prefix)]) == prefix:
                self.matched.add(prefix)
                return rc, out
        self.unknown(argv)


def install_fake(monkeypatch, root, cluster=None):
    """Replace the Runner, the clock and the uid; return the FakeRunner."""
    runner = FakeRunner(root, cluster)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: runner.bind(dry_run))
    clock = {"t": 1600000000.0}
    monkeypatch.setattr(ko, "now", lambda: clock["t"])

    def fake_sleep(seconds):
        runner.slept.append(seconds)
        clock["t"] += seconds
    monkeypatch.setattr(ko, "sleep", fake_sleep)
    monkeypatch.setattr(ko, "current_euid", lambda: 0)
    monkeypatch.setattr(ko, "host_arch", lambda: "amd64")
    monkeypatch.delenv("SUDO_USER", raising=False)
    fake = runner.cluster

    def health_ok(host, port, path, scheme, timeout=2):
        fake.health_asked.append((host, port, path, scheme))
        return None if fake.health.get(port, True) else "connection refused"

    def dns_answers(server, name, port=53, timeout=1):
        fake.dns_asked.append((server, name))
        answers = fake.dns_answers
        if isinstance(answers, dict):
            return answers.get(server, False)
        return answers() if callable(answers) else answers
    monkeypatch.setattr(ko, "health_problem", health_ok)
    monkeypatch.setattr(ko, "dns_answers", dns_answers)
    runner.clock = clock
    return runner


def read_config_documents(path):
    with open(path) as handle:
        text = handle.read()
    return [json.loads(doc) for doc in text.split("---\n") if doc.strip()
            and doc.lstrip().startswith("{")], text
