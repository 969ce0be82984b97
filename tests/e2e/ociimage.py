"""Write small container images in skopeo's dir: layout, in pure Python.

The images use Docker media types (manifest list -> schema2 manifest), the way registry.k8s.io
serves its multi-arch images, and `skopeo copy --all` pushes them to the lab registry unchanged.
Layers are gzip tars written with the tarfile module: device nodes never enter them.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from .common import run

MT_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Layer(object):
    """Collects files for one layer: regular files from the host or from bytes, symlinks, dirs."""

    def __init__(self):
        self.entries = {}  # path in image (no leading /) -> (kind, payload, mode)

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            self.entries.setdefault(d, ("dir", None, 0o755))

    def add_dir(self, path, mode=0o755):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("dir", None, mode)

    def add_file(self, path, src, mode=None):
        """Copy host file src (symlinks followed) to path."""
        path = path.strip("/")
        self._parents(path)
        if mode is None:
            mode = stat.S_IMODE(os.stat(str(src)).st_mode)
        self.entries[path] = ("file", str(src), mode)

    def add_bytes(self, path, data, mode=0o644):
        path = path.strip("/")
        self._parents(path)
        if isinstance(data, str):
            data = data.encode()
        self.entries[path] = ("bytes", data, mode)

    def add_symlink(self, path, target):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("symlink", target, 0o777)

    def add_host_file_with_libs(self, src, dest=None, mode=None):
        """Add a host binary (or shared object) plus its shared-library closure (from ldd)."""
        self.add_file(dest or src, src, mode)
        for lib in ldd_closure(src):
            if lib.strip("/") not in self.entries:
                self.add_file(lib, lib, 0o755)
            real = os.path.realpath(lib)
            if real != lib and real.strip("/") not in self.entries:
                self.add_file(real, real, 0o755)

    def write_tar_gz(self, fileobj):
        """Write the layer as gzip tar (mtime 0, uid/gid 0) and return the uncompressed sha256."""
        raw = _HashingWriter()
        gz = gzip.GzipFile(fileobj=fileobj, mode="wb", mtime=0, compresslevel=6)
        tee = _Tee(gz, raw)
        with tarfile.open(fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, payload, mode = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = mode
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = payload
                    tar.addfile(info)
                elif kind == "bytes":
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                else:
                    info.size = os.stat(payload).st_size
                    with open(payload, "rb") as f:
                        tar.addfile(info, f)
        gz.close()
        return raw.hexdigest()


class _HashingWriter(object):
    def __init__(self):
        self.h = hashlib.sha256()

    def write(self, data):
        self.h.update(data)

    def hexdigest(self):
        return self.h.hexdigest()


class _Tee(object):
    def __init__(self, *targets):
        self.targets = targets

    def write(self, data):
        for t in self.targets:
            t.write(data)
        return len(data)

    def flush(self):
        pass


def ldd_closure(path):
    """Shared libraries (absolute paths, loader included) a dynamic ELF file needs; [] if static."""
    proc = subprocess.run(["ldd", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    if proc.returncode != 0:  # "not a dynamic executable"
        return []
    libs = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
            if target.startswith("/"):
                libs.append(target)
        elif line.startswith("/"):
            libs.append(line.split(" (")[0].strip())
    return libs


def write_image_layout(out_dir, layers, entrypoint=None, cmd=None, env=None, labels=None,
                       workdir=None, arch="amd64"):
    """Write a skopeo dir: layout at out_dir with one image (one manifest list -> one manifest).

    Returns the manifest list digest.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(str(out_dir))
    out_dir.mkdir(parents=True)

    def put_bytes(data):
        digest = hashlib.sha256(data).hexdigest()
        (out_dir / digest).write_bytes(data)
        return "sha256:" + digest, len(data)

    layer_descs = []
    diff_ids = []
    for layer in layers:
        tmp = out_dir / "tmp-layer"
        with open(str(tmp), "wb") as f:
            diff = layer.write_tar_gz(f)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        size = tmp.stat().st_size
        tmp.rename(out_dir / digest)
        layer_descs.append({"mediaType": MT_LAYER, "digest": "sha256:" + digest, "size": size})
        diff_ids.append("sha256:" + diff)

    container_config = {"Env": env or ["PATH=" + DEFAULT_PATH]}
    if entrypoint:
        container_config["Entrypoint"] = entrypoint
    if cmd:
        container_config["Cmd"] = cmd
    if labels:
        container_config["Labels"] = labels
    if workdir:
        container_config["WorkingDir"] = workdir
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "k8s-offline air-gap lab"}
                    for _ in layers],
    }
    cdigest, csize = put_bytes(json.dumps(config, sort_keys=True).encode())
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": csize},
        "layers": layer_descs,
    }, indent=3).encode()
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (out_dir / (mdigest[len("sha256:"):] + ".manifest.json")).write_bytes(manifest)
    mlist = json.dumps({
        "schemaVersion": 2,
        "mediaType": MT_LIST,
        "manifests": [{"mediaType": MT_MANIFEST, "digest": mdigest, "size": len(manifest),
                       "platform": {"architecture": arch, "os": "linux"}}],
    }, indent=3).encode()
    (out_dir / "manifest.json").write_bytes(mlist)
    (out_dir / "version").write_text("Directory Transport Version: 1.1\n")
    return "sha256:" + hashlib.sha256(mlist).hexdigest()


def push_layout(layout_dir, dest_ref, schema1=False):
    """Push an image layout to a registry with skopeo (plain HTTP, 127.0.0.1 only).

    schema1=True pushes the single image as a signed Docker schema1 manifest (as quay.io served
    flannel v0.11.0); otherwise the manifest list is pushed as it is.
    """
    argv = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--retry-times", "0"]
    if schema1:
        argv += ["--format", "v2s1"]
    else:
        argv += ["--all", "--preserve-digests"]
    argv += ["dir:%s" % layout_dir, "docker://" + dest_ref]
    run(argv, capture=True)
