"""The images phase's streams (issue 21): images split into streams that
load at once (for containerd images that share a layer stay in one), the
streams read one .tar bundle at once and still hash every byte on the way
in, and Docker's images are listed once before and once after, not
inspected one by one.  The real dockerd and
containerd loads are tests/install/test_install_images.py."""

import gzip
import hashlib
import io
import json
import tarfile
import threading


import install_support as sup
from install_support import ko, run


class BlobBundle(object):
    """What the writers read of a bundle: blobs by digest."""

    def __init__(self):
        self.blobs = {}
        self.opened = []

    def add(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[ko._blob_path(digest)] = data
        return digest

    def size(self, relpath):
        return len(self.blobs[relpath])

    def open(self, relpath, data=None):
        self.opened.append(relpath)
        data = self.blobs[relpath] if data is None else data
        return ko.VerifiedReader(io.BytesIO(data), relpath, self.size(relpath),
                                 hashlib.sha256(self.blobs[relpath]).hexdigest())


def _image(bundle, layers):
    config = bundle.add(json.dumps({"rootfs": {"diff_ids": [
        "sha256:" + hashlib.sha256(gzip.decompress(bundle.blobs[ko._blob_path(d)]))
        .hexdigest() for d in layers]}}).encode())
    return {"config_digest": config, "layers": list(layers),
            "manifest_digest": bundle.add(b"{}")}


def _layer(bundle, text):
    raw = sup._tar_bytes({"f": (text.encode() * 50, 0o644)})
    return bundle.add(gzip.compress(raw, mtime=0)), raw


class NullProgress(object):
    def update(self, amount):
        pass


def _members(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return dict((m.name, tar.extractfile(m).read()) for m in tar.getmembers())


def test_streams_keep_images_that_share_a_layer_together():
    bundle = BlobBundle()
    base, _ = _layer(bundle, "base")
    a, _ = _layer(bundle, "a" * 30)
    b, _ = _layer(bundle, "b")
    c, _ = _layer(bundle, "c")
    images = [(_image(bundle, [base, a]), "x/api"), (_image(bundle, [c]), "x/c"),
              (_image(bundle, [base, b]), "x/proxy"), (_image(bundle, [b]), "x/b")]
    streams = ko.image_streams(bundle, images, 2)
    assert len(streams) == 2
    names = [[target for _, target in stream] for stream in streams]
    assert sorted(sum(names, [])) == sorted(t for _, t in images)
    together = [n for n in names if "x/api" in n][0]
    # api and proxy share base, proxy and b share b: one group, in order
    assert together == ["x/api", "x/proxy", "x/b"]
    assert ko.image_streams(bundle, images, 1) == [images]
    assert ko.image_streams(bundle, images[:1], 4) == [images[:1]]


def test_parallel_streams_from_one_tar_bundle_read_whole_verified_blobs(
        tmp_path):
    """The members of a .tar bundle share one file: streams that read at
    once must each get their own bytes (each is hashed on the way)."""
    path = sup.make_bundle(str(tmp_path), as_tar=True, busybox=True)
    bundle = ko.Bundle(path)
    try:
        targets = [(image, image["ref"]) for image in bundle.meta["images"]]
        streams = ko.image_streams(bundle, targets, 4, together=False)
        assert len(streams) > 1
        outs = [io.BytesIO() for _ in streams]
        failures = []

        def write(n):
            try:
                for _ in range(20):
                    outs[n].seek(0)
                    outs[n].truncate()
                    ko.write_docker_archive(outs[n], bundle, streams[n],
                                            NullProgress())
            except Exception as exc:
                failures.append(exc)
        threads = [threading.Thread(target=write, args=(n,))
                   for n in range(len(streams))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        for out in outs:
            for name, data in _members(out.getvalue()).items():
                if name.startswith("blobs/"):
                    assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    finally:
        bundle.close()


def test_master_lists_dockers_images_once_before_and_once_after(
        host, bundle_dir):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait") == 0
    assert not runner.ran("docker", "image", "inspect")
    assert len(runner.ran("docker", "images")) == 2
    loads = runner.ran("docker", "load")
    assert 1 <= len(loads) <= ko.RUNTIMES["docker"].load_streams
    assert "docker.io/library/nginx:1.17" in runner.cluster.docker_images
    # a re-run lists once and loads nothing
    before = len(runner.commands())
    assert run(root, bundle_dir, "master", "--no-wait") == 0
    again = runner.commands()[before:]
    assert [a[:2] for a in again].count(["docker", "images"]) == 1
    assert not [a for a in again if a[:2] == ["docker", "load"]]


def test_an_image_there_under_another_name_is_tagged_not_loaded(
        host, bundle_dir):
    root, runner = host
    bundle = ko.Bundle(bundle_dir)
    try:
        pause = [i for i in bundle.meta["images"] if i["name"] == "pause"][0]
    finally:
        bundle.close()
    runner.cluster.docker_images["other/pause:old"] = pause["config_digest"]
    assert run(root, bundle_dir, "master", "--no-wait") == 0
    assert runner.ran("docker", "tag", pause["config_digest"],
                      "k8s.gcr.io/pause:3.1")
