"""The images phase's streams (issue 21): images that share a layer go in
one stream, the streams load at once, Docker gets gzip layers inflated on
the way (hashed on the way in all the same), a layer whose gzip trailer
lies is sent again as the bundle holds it, and Docker's images are listed
once before and once after, not inspected one by one.  The real dockerd and
containerd loads are tests/test_install_images.py."""

import gzip
import hashlib
import io
import json
import tarfile

import pytest

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

    def peek(self, relpath, offset, size):
        return self.blobs[relpath][offset:offset + size]

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


def _layer(bundle, text, members=1):
    raw = sup._tar_bytes({"f": (text.encode() * 50, 0o644)})
    cut = len(raw) // members
    parts = [raw[i * cut:(i + 1) * cut if i < members - 1 else len(raw)]
             for i in range(members)]
    return bundle.add(b"".join(gzip.compress(p, mtime=0) for p in parts)), raw


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


def test_docker_archive_inflates_gzip_layers_and_still_hashes_them():
    bundle = BlobBundle()
    layer, raw = _layer(bundle, "layer")
    image = _image(bundle, [layer])
    out = io.BytesIO()
    ko.write_docker_archive(out, bundle, [(image, "x/y:1")], NullProgress(),
                            inflate=True)
    members = _members(out.getvalue())
    name = ko._blob_path(layer)[len(ko.IMAGES_DIR) + 1:]
    assert members[name] == raw       # as `docker save` holds it
    assert ko._blob_path(layer) in bundle.opened   # read through its hash
    plain = io.BytesIO()
    ko.write_docker_archive(plain, bundle, [(image, "x/y:1")], NullProgress())
    assert _members(plain.getvalue())[name] == bundle.blobs[ko._blob_path(layer)]


def test_a_layer_changed_after_verify_cuts_the_inflated_stream(monkeypatch):
    bundle = BlobBundle()
    layer, _ = _layer(bundle, "layer")
    image = _image(bundle, [layer])
    relpath = ko._blob_path(layer)
    changed = bytearray(bundle.blobs[relpath])
    changed[len(changed) // 2] ^= 1
    original = bundle.open
    monkeypatch.setattr(bundle, "open", lambda rel: original(
        rel, bytes(changed) if rel == relpath else None))
    out = io.BytesIO()
    with pytest.raises(ko.BundleError):
        ko.write_docker_archive(out, bundle, [(image, "x/y:1")], NullProgress(),
                                inflate=True)
    # the archive is cut: no end-of-archive blocks, the layer not whole
    with pytest.raises(tarfile.TarError):
        _members(out.getvalue())


def test_a_multi_member_gzip_layer_is_sent_again_as_the_bundle_holds_it(
        host, caplog):
    """Its trailer gives the last member's size only: the inflated stream
    is cut, and the images go again with the layer gzip'd for dockerd."""
    root, runner = host
    bundle = BlobBundle()
    layer, _ = _layer(bundle, "two members", members=2)
    image = _image(bundle, [layer])
    with pytest.raises(ko.InflateMismatch):
        ko.write_docker_archive(io.BytesIO(), bundle, [(image, "x/y:1")],
                                NullProgress(), inflate=True)

    class Ctx(object):
        pass
    ctx = Ctx()
    ctx.runner, ctx.bundle = runner, bundle
    caplog.set_level("INFO", logger="k8s-offline")
    ko.load_stream(ctx, ko.RUNTIMES["docker"], [(image, "x/y:1")],
                   NullProgress())
    assert len(runner.streams) == 1
    name = ko._blob_path(layer)[len(ko.IMAGES_DIR) + 1:]
    assert _members(runner.streams[0])[name] == bundle.blobs[ko._blob_path(layer)]
    assert runner.cluster.docker_images["x/y:1"] == image["config_digest"]
    assert "sending those images again" in caplog.text


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
