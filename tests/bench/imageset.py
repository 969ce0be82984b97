"""The benchmark's image set: kubeadm v1.16.0's seven images plus flannel,
at their real uncompressed sizes, generated deterministically and pushed once
into a registry storage folder that later runs reuse.

Shape (uncompressed MB, 10^6 bytes, as `docker images` shows them):

    kube-apiserver          217.0   base 21 + binary
    kube-controller-manager 163.0   base 21 + binary
    kube-scheduler           87.3   base 21 + binary
    kube-proxy               86.1   base 21 + iptables + binary
    pause                     0.742
    etcd                    247.0   busybox + etcd + etcdctl/migrate
    coredns                  44.1   ca-certs + binary
    coreos/flannel           52.6   alpine + apk + flanneld (Docker schema1)

The 21 MB base layer (debian-base in the real images) is shared by the four
kube-* images, so the unique uncompressed bytes are about 835 MB.  Layer
content is 1/3 seeded pseudo-random bytes and 2/3 zeros in 64 KiB blocks, so
gzip (level 6, as registries get it) shrinks it about 3x: about 278 MB of
unique compressed blobs.  kube-* are Docker manifest lists, pause/etcd/coredns
OCI indexes (each with a tiny arm64 sibling), flannel is Docker schema1 as
quay.io served it.  An optional "big" image (one incompressible layer of
--big-mb MB) checks that peak memory does not grow with the layer size.
"""

import hashlib
import json
import os
import random
import shutil
import subprocess
import tarfile
import zlib
from concurrent.futures import ProcessPoolExecutor

from fixtures import images as fx_images      # tests/ is on the path (bench_bundle.py)

GENERATOR_VERSION = 3          # bump when the set's shape or bytes change
SEED = 20190918                # v1.16.0 release day
MB = 1000 * 1000
BLOCK = 64 * 1024
RANDOM_PART = BLOCK // 3       # bytes of each block that are random
MTIME = 1568592000
CREATED = "2019-09-18T00:00:00Z"

OCI_MANIFEST = fx_images.OCI_MANIFEST
OCI_CONFIG = fx_images.OCI_CONFIG
OCI_LAYER = fx_images.OCI_LAYER

# layer name -> (uncompressed bytes of its one file, path in the layer)
LAYERS = {
    "debian-base": (21 * MB, "usr/lib/base.bin"),
    "apiserver": (196 * MB, "usr/local/bin/kube-apiserver"),
    "controller-manager": (142 * MB, "usr/local/bin/kube-controller-manager"),
    "scheduler": (int(66.3 * MB), "usr/local/bin/kube-scheduler"),
    "iptables": (25 * MB, "usr/sbin/iptables.bin"),
    "proxy": (int(40.1 * MB), "usr/local/bin/kube-proxy"),
    "pause": (742 * 1000, "pause"),
    "busybox": (int(1.2 * MB), "bin/busybox"),
    "etcd": (160 * MB, "usr/local/bin/etcd"),
    "etcdctl": (int(85.8 * MB), "usr/local/bin/etcdctl"),
    "ca-certs": (300 * 1000, "etc/ssl/certs/ca-certificates.crt"),
    "coredns": (int(43.8 * MB), "coredns"),
    "alpine": (int(5.5 * MB), "lib/alpine.bin"),
    "apk": (4 * MB, "usr/lib/apk.bin"),
    "flanneld": (int(43.1 * MB), "opt/bin/flanneld"),
}

# (repository, tag, kind, layers base first); kind as in fixtures.images
IMAGES = (
    ("kube-apiserver", "v1.16.0", "docker-list", ("debian-base", "apiserver")),
    ("kube-controller-manager", "v1.16.0", "docker-list",
     ("debian-base", "controller-manager")),
    ("kube-scheduler", "v1.16.0", "docker-list", ("debian-base", "scheduler")),
    ("kube-proxy", "v1.16.0", "docker-list", ("debian-base", "iptables", "proxy")),
    ("pause", "3.1", "oci-index", ("pause",)),
    ("etcd", "3.3.15-0", "oci-index", ("busybox", "etcd", "etcdctl")),
    ("coredns", "1.6.2", "oci-index", ("ca-certs", "coredns")),
    ("coreos/flannel", "v0.11.0-amd64", "schema1", ("alpine", "apk", "flanneld")),
)
BIG_IMAGE = ("bench/big", "1.0")


class _Content(object):
    """File-like source of a layer file's bytes: 64 KiB blocks, the first
    third of each seeded random, the rest zeros (or all random if dense)."""

    def __init__(self, name, size, dense=False):
        self.rng = random.Random("%d/%s" % (SEED, name))
        self.left = size
        self.dense = dense
        self.buf = b""

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left + len(self.buf)
        while len(self.buf) < n and self.left > 0:
            take = min(BLOCK, self.left)
            if self.dense:
                block = self.rng.randbytes(take)
            else:
                block = (self.rng.randbytes(RANDOM_PART) + bytes(BLOCK - RANDOM_PART))[:take]
            self.left -= take
            self.buf += block
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _GzipHashWriter(object):
    """Write-only stream: hashes the raw tar (diff_id), gzips it and hashes
    and stores the compressed bytes (the blob)."""

    def __init__(self, path, level):
        self.out = open(path, "wb")
        self.raw = hashlib.sha256()
        self.gz = hashlib.sha256()
        self.size = 0
        self.z = zlib.compressobj(level, zlib.DEFLATED, 31)   # gzip, mtime 0

    def write(self, data):
        self.raw.update(data)
        self._emit(self.z.compress(data))
        return len(data)

    def _emit(self, data):
        if data:
            self.gz.update(data)
            self.out.write(data)
            self.size += len(data)

    def close(self):
        self._emit(self.z.flush())
        self.out.close()


def write_layer(args):
    """Write one layer's gzip blob into blob_dir; returns its facts."""
    name, size, path, blob_dir, dense = args
    tmp = os.path.join(blob_dir, "tmp-%s-%d" % (name, os.getpid()))
    writer = _GzipHashWriter(tmp, 1 if dense else 6)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        parts = path.split("/")
        for i in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:i]))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = size, 0o755, MTIME
        tar.addfile(info, _Content(name, size, dense))
    writer.close()
    digest = "sha256:" + writer.gz.hexdigest()
    os.rename(tmp, os.path.join(blob_dir, digest[7:]))
    return {"name": name, "digest": digest, "diff_id": "sha256:" + writer.raw.hexdigest(),
            "size": writer.size, "uncompressed": size}


def _config(arch, diff_ids, steps, name):
    return {"architecture": arch, "os": "linux", "created": CREATED,
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                       "Entrypoint": ["/" + name.rsplit("/", 1)[-1]],
                       "Labels": {"k8s-offline.bench": name}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": CREATED, "created_by": "ADD %s /" % s}
                        for s in steps]}


def build_layout(layout_dir, big_mb, log):
    """Write the OCI layout of the whole set; returns {refname: (repo, tag, kind)}."""
    layout = fx_images.Layout(layout_dir)
    blob_dir = os.path.join(layout_dir, "blobs", "sha256")
    jobs = [(name, size, path, blob_dir, False) for name, (size, path) in LAYERS.items()]
    if big_mb:
        jobs.append(("big", big_mb * MB, "big.bin", blob_dir, True))
    jobs.sort(key=lambda j: -j[1])                 # biggest first: better packing
    log("generating %d layers (%.0f MB uncompressed) on %d processes"
        % (len(jobs), sum(j[1] for j in jobs) / MB, os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        layers = dict((facts["name"], facts) for facts in pool.map(write_layer, jobs))
    arm_base = fx_images.base_layer("arm64")        # tiny arm64 sibling, KBs
    arm_desc = layout.add_blob(arm_base[0], OCI_LAYER)
    refs = {}
    specs = list(IMAGES)
    if big_mb:
        specs.append(BIG_IMAGE + ("oci", ("big",)))
    for i, (repo, tag, kind, names) in enumerate(specs):
        manifests = []
        for arch in (("amd64", "arm64") if kind in fx_images.MULTI_ARCH_KINDS
                     else ("amd64",)):
            if arch == "amd64":
                lay = [layers[n] for n in names]
                layer_descs = [{"mediaType": OCI_LAYER, "digest": l["digest"],
                                "size": l["size"]} for l in lay]
                cfg = _config(arch, [l["diff_id"] for l in lay], names, repo)
            else:
                layer_descs = [arm_desc]
                cfg = _config(arch, [arm_base[1]], ["arm64-placeholder"], repo)
            cfg_desc = layout.add_json(cfg, OCI_CONFIG)
            manifests.append((arch, layout.add_json(
                {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "config": cfg_desc, "layers": layer_descs}, OCI_MANIFEST)))
        refname = "img%d" % i
        layout.tag_image(manifests, kind, refname)
        refs[refname] = (repo, tag, kind)
    layout.write_index()
    return refs, layers


def ensure(workdir, registry_cls, big_mb, log):
    """Make sure workdir/storage holds the pushed set (generate + push once).

    Returns the facts recorded at generation time (layers, sizes)."""
    stamp_path = os.path.join(workdir, "imageset.json")
    want = {"generator": GENERATOR_VERSION, "seed": SEED, "big_mb": big_mb}
    storage = os.path.join(workdir, "storage")
    if os.path.isfile(stamp_path):
        with open(stamp_path) as handle:
            stamp = json.load(handle)
        if stamp.get("key") == want and os.path.isdir(storage):
            log("image set: cached in %s (generator v%d, seed %d)"
                % (workdir, GENERATOR_VERSION, SEED))
            return stamp
        log("image set: cache is stale, regenerating")
    for stale in (storage, os.path.join(workdir, "layout")):
        if os.path.isdir(stale):
            shutil.rmtree(stale)
    if os.path.exists(stamp_path):
        os.unlink(stamp_path)
    os.makedirs(storage)
    layout_dir = os.path.join(workdir, "layout")
    refs, layers = build_layout(layout_dir, big_mb, log)
    reg = registry_cls(workdir, storage_dir=storage, name="push")
    reg.start()
    try:
        for refname, (repo, tag, kind) in sorted(refs.items()):
            log("pushing %s:%s (%s)" % (repo, tag, kind))
            fx_images.push_image(layout_dir, refname, reg.host, repo, tag, kind,
                                 timeout=900)
    finally:
        reg.stop()
        shutil.rmtree(reg.dir, ignore_errors=True)
    shutil.rmtree(layout_dir)                       # the registry has the blobs
    stamp = {"key": want, "layers": layers,
             "images": [list(spec) for spec in IMAGES]}
    tmp = stamp_path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(stamp, handle, indent=1, sort_keys=True)
    os.rename(tmp, stamp_path)
    return stamp


def skopeo_version():
    try:
        return subprocess.run(["skopeo", "--version"], stdout=subprocess.PIPE,
                              universal_newlines=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
