"""Schema1 images (as quay.io served flannel v0.11.0) converted at bundle
time and loaded into the real dockerd and the real containerd: with
`created` in every history entry (skopeo --format v2s1), and without it in
some or all entries (a hand-signed variant, as old registries served)."""

import argparse
import json
import re
import subprocess

import pytest

import install_support as sup
from install_support import ko
from fixtures import schema1

FLANNEL = "coreos/flannel"
# What Go's time.Time accepts in JSON (RFC 3339).
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _drop_created(which):
    def edit(history):
        for index, entry in enumerate(history):
            if which == "all" or index == len(history) - 1:
                entry.pop("created", None)
    return edit


@pytest.fixture(scope="module")
def schema1_bundle(run_cli, bundle_args, test_images, tmp_path_factory):
    host = test_images.host
    refs = []
    for which in ("all", "oldest"):
        tag = "v0.11.0-amd64-nocreated-%s" % which
        schema1.push_variant(host, FLANNEL, "v0.11.0-amd64", tag,
                             _drop_created(which))
        refs.append("%s/%s:%s" % (host, FLANNEL, tag))
    out = tmp_path_factory.mktemp("schema1")
    path = str(out / "s1.tar")
    extra = []
    for ref in refs:
        extra += ["--extra-image", ref]
    rc, _, err = run_cli("bundle", *bundle_args, "--output", path,
                         "--cache-dir", str(out / "cache"), *extra)
    assert rc == 0, err
    return path, refs


def _context(bundle, root, cri, address=None):
    args = argparse.Namespace(bundle=bundle, root=root, cri=cri,
                              image_repository="k8s.gcr.io", skip_phases=None,
                              dry_run=False, no_progress=True,
                              containerd_address=address, command="master")
    return sup.with_runner(ko.NodeContext(args, "master"))


def _schema1_images(bundle):
    return [image for image in bundle.meta["images"]
            if image["repository"].endswith(FLANNEL)]


def test_converted_history_holds_only_parsable_times(schema1_bundle):
    bundle = ko.Bundle(schema1_bundle[0])
    try:
        images = _schema1_images(bundle)
        assert len(images) == 3
        for image in images:
            config = bundle.read_json(ko._blob_path(image["config_digest"]))
            for step in config["history"]:
                assert "created" in step, step
                assert RFC3339.match(step["created"]), step
    finally:
        bundle.close()


def test_schema1_images_load_into_dockerd(schema1_bundle, dockerd, tmp_path):
    ctx = _context(schema1_bundle[0], str(tmp_path), "docker")
    targets = []
    try:
        ko.phase_images(ctx)
        for image in _schema1_images(ctx.bundle):
            target = ko.image_target(image, "k8s.gcr.io")
            targets.append(target)
            assert ko.docker_image_id(ctx.runner, target) == \
                image["config_digest"], target
            history = subprocess.run(
                ["docker", "image", "history", "--no-trunc", target],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                universal_newlines=True, timeout=60)
            assert history.returncode == 0, history.stderr
    finally:
        ctx.close()
        subprocess.call(["docker", "rmi", "-f"] + targets,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_schema1_images_load_into_containerd(schema1_bundle, containerd,
                                             tmp_path):
    ctx = _context(schema1_bundle[0], str(tmp_path), "containerd",
                   containerd.sock)
    try:
        ko.phase_images(ctx)
        have = ko.containerd_images(ctx)
        for image in _schema1_images(ctx.bundle):
            name = ko._normalize_image_name(image["ref"])
            assert have.get(name) == image["manifest_digest"], name
            config = containerd.ctr("-n", "k8s.io", "content", "get",
                                    image["config_digest"])
            assert config.returncode == 0, config.stderr
            assert json.loads(config.stdout)["history"]
    finally:
        ctx.close()
