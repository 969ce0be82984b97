"""Images from the connected machine itself: --extra-image docker-daemon:REF
(an image built here with docker build, exported through the docker SDK),
--extra-image-archive (docker-archive and OCI-archive tars written by
skopeo) and --image-list.  The bundle's images load into a standalone
containerd and a fresh dockerd of their own, and run."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid

import pytest

import install_support as sup
from install_support import ko
from fixtures import daemons

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "echo {message} > /message"]
CMD ["/bin/busybox", "cat", "/message"]
"""


def docker(*args, host=None, timeout=300):
    argv = ["docker"] + (["-H", host] if host else []) + list(args)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


@pytest.fixture(scope="module")
def app_image(dockerd, tmp_path_factory):
    """(ref, message) of an image built here FROM scratch with busybox and a
    layer of its own; removed afterwards (only that tag)."""
    tag = uuid.uuid4().hex[:10]
    ref = "k8so-test.local/app-%s:1" % tag
    message = "hello-from-%s" % tag
    context = tmp_path_factory.mktemp("app")
    shutil.copy(sup.BUSYBOX, str(context / "busybox"))
    (context / "Dockerfile").write_text(DOCKERFILE.format(message=message))
    built = docker("build", "--network", "none", "-q", "-t", ref, str(context))
    assert built.returncode == 0, built.stderr
    yield ref, message
    docker("rmi", ref)


def skopeo(src, dst):
    result = subprocess.run(["skopeo", "copy", "--quiet", src, dst],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def local_bundle(run_cli, bundle_args, app_image, tmp_path_factory):
    """A bundle with the image three ways: docker-daemon:, and skopeo's
    docker-archive and OCI archive of it under two other names."""
    ref, message = app_image
    out = tmp_path_factory.mktemp("local")
    as_docker = ref.replace(":1", "-archive:2")
    as_oci = ref.replace(":1", "-oci:3")
    skopeo("docker-daemon:" + ref, "docker-archive:%s:%s" % (out / "d.tar", as_docker))
    skopeo("docker-daemon:" + ref, "oci-archive:%s:%s" % (out / "o.tar", as_oci))
    path = str(out / "k8s-offline-v1.16.0-linux-amd64.tar")
    rc, _, err = run_cli("bundle", *bundle_args, "--extra-image",
                         "docker-daemon:" + ref, "--extra-image-archive",
                         str(out / "d.tar"), "--extra-image-archive",
                         str(out / "o.tar"), "--output", path,
                         "--cache-dir", str(out / "cache"))
    assert rc == 0, err
    refs = {"docker-daemon": ref,
            "docker-archive": as_docker, "oci-archive": as_oci}
    return path, refs, message


def bundle_meta(path):
    bundle = ko.Bundle(path)
    try:
        manifests = dict((image["ref"], bundle.read_json(ko._blob_path(
            image["manifest_digest"]))) for image in bundle.meta["images"])
        return bundle.meta, manifests
    finally:
        bundle.close()


def test_docker_daemon_image_is_bundled_as_uncompressed_layers(
        local_bundle, app_image, run_cli):
    path, refs, _ = local_bundle
    meta, manifests = bundle_meta(path)
    by_origin = dict((i.get("origin"), i) for i in meta["images"] if i["extra"])
    assert sorted(by_origin) == ["docker-archive", "docker-daemon", "oci-archive"]
    image = by_origin["docker-daemon"]
    assert image["ref"] == refs["docker-daemon"]
    inspect = json.loads(docker("image", "inspect", app_image[0]).stdout)[0]
    assert image["config_digest"] == inspect["Id"]
    assert image["layers"] == inspect["RootFS"]["Layers"]     # the diff_ids
    manifest = manifests[image["ref"]]
    assert manifest["mediaType"] == ko.MT_DOCKER_MANIFEST
    assert set(layer["mediaType"] for layer in manifest["layers"]) == {
        "application/vnd.docker.image.rootfs.diff.tar"}
    # The same layers, stored once: the docker-archive copy shares them.
    assert by_origin["docker-archive"]["layers"] == image["layers"]
    assert manifests[by_origin["oci-archive"]["ref"]]["mediaType"] == \
        ko.MT_OCI_MANIFEST
    rc, out, err = run_cli("verify", path, "--no-progress")
    assert rc == 0, err


def test_local_images_load_into_a_fresh_containerd_and_run(local_bundle,
                                                           containerd,
                                                           tmp_path):
    path, refs, message = local_bundle
    ctx = sup.install_context(path, str(tmp_path), "containerd", "worker",
                              containerd.sock)
    try:
        ko.phase_images(ctx)       # a worker loads the extra images too
        have = ko.containerd_images(ctx)
        for image in ctx.bundle.meta["images"]:
            if image["extra"]:
                name = ko._normalize_image_name(image["ref"])
                assert have.get(name) == image["manifest_digest"], name
    finally:
        ctx.close()
    for origin, ref in sorted(refs.items()):
        name = ko._normalize_image_name(ref)
        task = "k8so-%s" % uuid.uuid4().hex[:8]
        ran = containerd.ctr("-n", "k8s.io", "run", "--rm", name, task)
        assert ran.returncode == 0, (origin, ran.stderr)
        assert ran.stdout.strip() == message, origin


@pytest.fixture
def fresh_dockerd(dockerd):
    folder = "/tmp/k8so-fd-%s" % uuid.uuid4().hex[:8]
    os.makedirs(folder)
    try:
        daemon = daemons.FreshDockerd(folder).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield daemon
    daemon.cleanup()


def test_local_images_load_into_a_fresh_dockerd_and_run(local_bundle,
                                                        fresh_dockerd,
                                                        tmp_path, monkeypatch):
    path, refs, message = local_bundle
    monkeypatch.setenv("DOCKER_HOST", fresh_dockerd.sock)
    assert docker("images", "-q").stdout.strip() == ""      # fresh indeed
    ctx = sup.install_context(path, str(tmp_path), "docker", "worker")
    try:
        ko.phase_images(ctx)
        for image in ctx.bundle.images_for_role("worker"):
            target = ko.image_target(image, "k8s.gcr.io")
            assert ko.docker_image_id(ctx.runner, target) == \
                image["config_digest"], target
    finally:
        ctx.close()
    for origin, ref in sorted(refs.items()):
        ran = docker("run", "--rm", "--network", "none", ref)
        assert ran.returncode == 0, (origin, ran.stderr)
        assert ran.stdout.strip() == message, origin


def bundle_fails(run_cli, tmp_path, *args, env=None):
    rc, out, err = run_cli("bundle", *args, "--output",
                           str(tmp_path / "out" / "b.tar"), "--cache-dir",
                           str(tmp_path / "cache"), "--no-progress", env=env)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    out_dir = str(tmp_path / "out")
    assert not os.path.exists(out_dir) or os.listdir(out_dir) == []  # no partial
    return lines[0]


def test_no_docker_daemon_is_one_line(run_cli, tmp_path):
    line = bundle_fails(run_cli, tmp_path, "--extra-image",
                        "docker-daemon:k8so-test.local/app:1",
                        env={"DOCKER_HOST": "unix://%s/none.sock" % tmp_path})
    assert "cannot reach the Docker daemon" in line


def test_an_image_the_daemon_lacks_is_one_line(run_cli, tmp_path, dockerd):
    ref = "k8so-test.local/absent-%s:1" % uuid.uuid4().hex[:10]
    line = bundle_fails(run_cli, tmp_path, "--extra-image", "docker-daemon:" + ref)
    assert "image %s is not in the local Docker daemon" % ref in line


def test_a_docker_daemon_image_by_digest_is_refused(run_cli, tmp_path):
    line = bundle_fails(run_cli, tmp_path, "--extra-image",
                        "docker-daemon:app@sha256:" + "a" * 64)
    assert "not by digest" in line


def test_an_archive_that_is_not_one_is_one_line(run_cli, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    line = bundle_fails(run_cli, tmp_path, "--extra-image-archive", str(junk))
    assert "is not a readable tar" in line
    empty = tmp_path / "empty.tar"
    with tarfile.open(str(empty), "w"):
        pass
    line = bundle_fails(run_cli, tmp_path, "--extra-image-archive", str(empty))
    assert "neither manifest.json nor index.json" in line


def test_an_archive_with_a_changed_layer_is_refused(run_cli, tmp_path,
                                                    app_image, local_bundle):
    """A docker-archive whose layer is not the diff_id its config lists."""
    source = os.path.join(os.path.dirname(local_bundle[0]), "d.tar")
    changed = str(tmp_path / "changed.tar")
    with tarfile.open(source) as tar, tarfile.open(changed, "w") as out:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else None
            if data is not None and len(data) > 100000:
                data = data[:-1] + bytes([data[-1] ^ 1])
            out.addfile(member, None if data is None else io.BytesIO(data))
    line = bundle_fails(run_cli, tmp_path, "--extra-image-archive", changed)
    assert "rootfs.diff_ids" in line


def test_image_list_reads_one_ref_a_line_with_comments(run_cli, tmp_path):
    listing = tmp_path / "images.txt"
    listing.write_text("# workload images\n\n"
                       "quay.io/example/app:1.2   # the app\n"
                       "  redis:6  \n"
                       "docker-daemon:k8so-test.local/built:1\n")
    rc, out, err = run_cli("images", "--image-list", str(listing),
                           "--extra-image", "busybox")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[-4:] == ["docker.io/library/busybox:latest",
                          "quay.io/example/app:1.2",
                          "docker.io/library/redis:6",
                          "docker-daemon:k8so-test.local/built:1"]


@pytest.mark.parametrize("text, expected", [
    ("ok:1\nbad ref with spaces\n", "line 2 holds more than one word"),
    ("# fine\nUPPER/Case:1\n", "line 2: bad image reference"),
])
def test_a_bad_image_list_line_is_named(run_cli, tmp_path, text, expected):
    listing = tmp_path / "images.txt"
    listing.write_text(text)
    rc, out, err = run_cli("images", "--image-list", str(listing))
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err


def test_the_docker_sdk_is_imported_only_for_docker_daemon_images(tmp_path):
    bundle = sup.make_bundle(str(tmp_path))
    probe = ("import sys; sys.path.insert(0, %r); import k8s_offline as k; "
             "k.main(['images', '--extra-image', 'docker-daemon:app:1']); "
             "k.main(['verify', %r, '--no-progress']); "
             "print('docker' in sys.modules)" % (sup.REPO, bundle))
    result = subprocess.run([sys.executable, "-c", probe], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


class Zeros(object):
    """A read()-able stream of size zero bytes, never all in memory."""

    def __init__(self, size):
        self.left = size

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def test_an_archive_streams_into_the_store_in_bounded_memory(tmp_path):
    """A 64 MiB layer passes through a peak of far less than its size:
    the export is streamed chunk by chunk, each layer hashed on the way."""
    import hashlib
    import tracemalloc
    layer_path = str(tmp_path / "layer.tar")
    with tarfile.open(layer_path, "w") as layer:
        info = tarfile.TarInfo("data")
        info.size = 64 * 1024 * 1024
        layer.addfile(info, Zeros(info.size))
    digest = hashlib.sha256()
    with open(layer_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    config = json.dumps({"os": "linux", "architecture": "amd64", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + digest.hexdigest()]}}).encode()
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["big:1"],
                            "Layers": ["l/layer.tar"]}]).encode()
    archive = str(tmp_path / "archive.tar")
    with tarfile.open(archive, "w") as tar:
        for name, data in (("c.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer_path, "l/layer.tar")
    cache = ko.BlobCache(str(tmp_path / "cache"))

    def chunks():
        with open(archive, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                yield block
    tracemalloc.start()
    try:
        found = ko.archive_images(ko.ChunkReader(chunks()), "test", cache, "amd64")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * 1024 * 1024, peak
    (names, record), = found
    assert names == ["big:1"]
    assert record["layers"] == ["sha256:" + digest.hexdigest()]
    assert cache.has(digest.hexdigest())


# -- hostile archives (issue 22) ------------------------------------------------

def test_an_archive_that_is_a_fifo_or_a_folder_is_one_line(run_cli, tmp_path):
    """open() of a FIFO blocks until a writer comes: the archive is opened
    without blocking and must be a regular file."""
    fifo = tmp_path / "a.tar"
    os.mkfifo(str(fifo))
    for path in (str(fifo), str(tmp_path)):
        rc, out, err = run_cli("bundle", "--extra-image-archive", path,
                               "--output", str(tmp_path / "out" / "b.tar"),
                               "--cache-dir", str(tmp_path / "cache"),
                               "--no-progress", timeout=30)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "is not a regular file" in lines[0], err


def archive_tar(files):
    """A tar (bytes) of {name: bytes}."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def docker_archive(change=None):
    """A one-image docker-archive: a layer, its config, manifest.json, with
    change(entry, files) applied to its manifest.json entry."""
    layer = sup._tar_bytes({"etc/x": (b"x", 0o644)})
    diff = "sha256:" + sup.sha256(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff]}}
                        ).encode()
    files = {"%s.json" % sup.sha256(config): config, "l1/layer.tar": layer}
    entry = {"Config": "%s.json" % sup.sha256(config),
             "RepoTags": ["k8so-test.local/app:1"], "Layers": ["l1/layer.tar"]}
    if change:
        change(entry, files)
    files["manifest.json"] = json.dumps([entry]).encode()
    return archive_tar(files)


def oci_archive(change=None):
    """A one-image OCI archive, with change(index, files) applied."""
    layer = sup._tar_bytes({"etc/x": (b"x", 0o644)})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + sup.sha256(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": ko.MT_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + sup.sha256(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + sup.sha256(layer),
                    "size": len(layer)}]}).encode()
    files = dict(("blobs/sha256/" + sup.sha256(data), data)
                 for data in (layer, config, manifest))
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": ko.MT_OCI_MANIFEST, "size": len(manifest),
        "digest": "sha256:" + sup.sha256(manifest), "annotations": {
            "org.opencontainers.image.ref.name": "k8so-test.local/app:1"}}]}
    if change:
        change(index, files)
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    files["index.json"] = json.dumps(index).encode()
    return archive_tar(files)


def refused(tmp_path, data):
    """The one-line refusal of an archive with these bytes (never a crash)."""
    cache = ko.BlobCache(str(tmp_path / "cache"))
    with pytest.raises(ko.UserError) as caught:
        ko.archive_images(io.BytesIO(data), "--extra-image-archive a.tar",
                          cache, "amd64")
    text = str(caught.value)
    assert "\n" not in text and text.startswith("--extra-image-archive"), text
    return text


def test_good_archives_are_read(tmp_path):
    cache = ko.BlobCache(str(tmp_path / "cache"))
    for data in (docker_archive(), oci_archive()):
        found = ko.archive_images(io.BytesIO(data), "a.tar", cache, "amd64")
        assert [names for names, _ in found] == [["k8so-test.local/app:1"]]


def _set_entry(key, value):
    return lambda entry, files: entry.update({key: value})


def _descriptor(key, value):
    return lambda index, files: index["manifests"][0].update({key: value})


@pytest.mark.parametrize("data", [
    lambda: docker_archive(_set_entry("Config", ["a.json"])),
    lambda: docker_archive(_set_entry("Layers", [{"a": 1}])),
    lambda: docker_archive(_set_entry("RepoTags", [1])),
    lambda: docker_archive(_set_entry("RepoTags", "app:1")),
    lambda: oci_archive(_descriptor("annotations", ["x"])),
    lambda: oci_archive(_descriptor("digest", ["sha256:1"])),
    lambda: oci_archive(_descriptor("mediaType", {"a": 1})),
    lambda: oci_archive(lambda index, files: index.update(manifests={})),
], ids=["config-a-list", "layer-a-dict", "repotags-int", "repotags-a-string",
        "annotations-a-list", "digest-a-list", "media-type-a-dict",
        "manifests-a-map"])
def test_archive_json_of_the_wrong_shape_is_one_line(data, tmp_path):
    refused(tmp_path, data())


def test_an_archive_keeps_only_its_index_documents_in_memory(tmp_path):
    """64 members named */json of 4 MiB each (a 1 MB compressed archive):
    only manifest.json, index.json and the like are read into memory,
    every other member streams into the cache."""
    import gzip
    import tracemalloc
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w") as tar:
            block = bytes(4 << 20)
            for number in range(64):
                info = tarfile.TarInfo("l%02d/json" % number)
                info.size = len(block)
                tar.addfile(info, io.BytesIO(block))
    data = raw.getvalue()
    assert len(data) < 2 << 20
    tracemalloc.start()
    try:
        text = refused(tmp_path, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "neither manifest.json nor index.json" in text
    assert peak < 64 << 20, peak
