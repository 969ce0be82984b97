"""--with-docker: the Docker static tarball and its units ride along, checked
against the checksum file like every other download."""

import hashlib
import io
import json
import os
import tarfile

import k8s_offline as ko

DOCKER_URL = ko.DOCKER_STATIC_URL.format(docker_arch="x86_64",
                                         docker=ko.DOCKER_STATIC_VERSION)
DOCKER_NAME = DOCKER_URL.rsplit("/", 1)[1]


def _serve_docker_tgz(file_server):
    """Put a small docker-X.tgz where the mirror maps DOCKER_URL."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name in ("docker/dockerd", "docker/docker", "docker/containerd"):
            data = ("#!/bin/sh\necho %s\n" % name).encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    path = os.path.join(file_server.root, DOCKER_URL.split("://", 1)[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(raw.getvalue())
    return hashlib.sha256(raw.getvalue()).hexdigest()


def _args(bundle_args, file_server, checksum_path, sha):
    args = list(bundle_args)
    i = args.index("--checksum-file")
    with open(args[i + 1]) as handle:
        lines = handle.read()
    if sha:
        lines += "%s  %s\n" % (sha, DOCKER_NAME)
    with open(checksum_path, "w") as handle:
        handle.write(lines)
    args[i + 1] = checksum_path
    return args + ["--with-docker", "--file-mirror", "https://download.docker.com/=%s/%s/"
                   % (file_server.base_url, "download.docker.com")]


def test_with_docker_bundles_the_static_binaries_and_units(run_cli, bundle_args,
                                                           file_server, tmp_path):
    sha = _serve_docker_tgz(file_server)
    output = tmp_path / "b.tar"
    rc, out, err = run_cli("bundle", *_args(bundle_args, file_server,
                                             str(tmp_path / "sums"), sha),
                           "--output", output, "--cache-dir", tmp_path / "c")
    assert rc == 0, err
    with tarfile.open(str(output)) as tar:
        top = tar.getnames()[0].split("/")[0]
        meta = json.loads(tar.extractfile(top + "/bundle.json").read())
        archive = tar.extractfile("%s/archives/%s" % (top, DOCKER_NAME)).read()
        names = tar.getnames()
    assert hashlib.sha256(archive).hexdigest() == sha
    assert meta["archives"]["docker"] == "archives/" + DOCKER_NAME
    assert meta["versions"]["docker"] == ko.DOCKER_STATIC_VERSION
    for unit in ("docker.service", "containerd.service"):
        assert "%s/systemd/%s" % (top, unit) in names
        assert meta["systemd"][unit] == "systemd/" + unit
    assert run_cli("verify", output)[0] == 0


def test_with_docker_needs_a_checksum(run_cli, bundle_args, file_server, tmp_path):
    _serve_docker_tgz(file_server)
    output = tmp_path / "b.tar"
    rc, out, err = run_cli("bundle", *_args(bundle_args, file_server,
                                             str(tmp_path / "sums"), None),
                           "--output", output, "--cache-dir", tmp_path / "c")
    assert rc != 0
    assert "error: no checksum known for %s: pass a --checksum-file" % DOCKER_NAME in err
    assert not output.exists()
