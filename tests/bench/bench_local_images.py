#!/usr/bin/env python3
"""Local images and split bundles: time and peak memory.

    python3 tests/bench/bench_local_images.py [--mib 300] [--reps 3] [--workdir DIR]

1. Export: --extra-image docker-daemon:REF (export_docker_daemon_images, the
   code bundle runs: the docker SDK's streamed export into the blob cache,
   each layer hashed on the way) against `docker save -o FILE REF`, of the
   same image: FROM scratch, busybox and one layer of --mib MiB of random
   data, built here with docker build (removed afterwards).
2. verify: the same bundle (the small test bundle of install_support plus
   that image) as one .tar and split into 100 MiB parts read in place.

Each contender runs --reps times, interleaved; the table gives medians of
wall time and of peak RSS, both from /usr/bin/time -v of the process (the
Docker daemon's own work is the same for both exports and not counted).
The page cache is warm for every run after the first: this measures the
tools, not a stick.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
SCRIPT = os.path.join(REPO, "k8s_offline.py")
sys.path.insert(0, TESTS)
import install_support as sup  # noqa: E402
from install_support import ko  # noqa: E402

EXPORT = ("import sys; sys.path.insert(0, %r); import k8s_offline as k; "
          "cache = k.BlobCache(sys.argv[2]); "
          "images = [k.local_image_entry('docker-daemon', "
          "k.parse_image_ref(sys.argv[1]))]; "
          "k.export_docker_daemon_images(images, cache, 'amd64', False)" % REPO)
PART_SIZE = 100 * 1024 * 1024


def timed(argv):
    """(seconds, peak RSS MiB) of argv under /usr/bin/time -v."""
    result = subprocess.run(["/usr/bin/time", "-v"] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    if result.returncode != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(argv), result.stderr[-2000:]))
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)",
                     result.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + \
        float(wall.group(3))
    return seconds, int(rss.group(1)) / 1024.0


def build_image(workdir, mib):
    ref = "k8so-bench.local/big-%s:1" % uuid.uuid4().hex[:10]
    context = os.path.join(workdir, "context")
    os.makedirs(context)
    shutil.copy(sup.BUSYBOX, os.path.join(context, "busybox"))
    with open(os.path.join(context, "Dockerfile"), "w") as handle:
        handle.write('FROM scratch\nCOPY busybox /bin/busybox\n'
                     'RUN ["/bin/busybox", "dd", "if=/dev/urandom", "of=/data", '
                     '"bs=1048576", "count=%d"]\n' % mib)
    subprocess.run(["docker", "build", "--network", "none", "-q", "-t", ref,
                    context], check=True, stdout=subprocess.DEVNULL)
    return ref


def bundle_with(workdir, cache, ref):
    """The small test bundle plus the exported image, as one .tar and as
    parts: (tar path, index path, size)."""
    folder = sup.make_bundle(os.path.join(workdir, "bundle"), busybox=True,
                             extra_images=())
    bundle = ko.Bundle(folder)
    meta = bundle.meta
    bundle.close()
    images = [ko.local_image_entry("docker-daemon", ko.parse_image_ref(ref))]
    ko.export_docker_daemon_images(images, ko.BlobCache(cache), "amd64", False)
    image = images[0]
    for digest in [image["manifest_digest"], image["config_digest"]] + image["layers"]:
        relpath = ko._blob_path(digest)
        shutil.copy(os.path.join(cache, "sha256", digest[7:]),
                    os.path.join(folder, relpath))
        meta["files"][relpath] = {"size": os.path.getsize(
            os.path.join(folder, relpath)), "sha256": digest[7:]}
    meta["images"].append(dict((k, v) for k, v in image.items()
                               if k in ko.IMAGE_SCHEMA[1][0]))
    raw = ko.canonical_json(meta)
    with open(os.path.join(folder, ko.BUNDLE_JSON), "wb") as handle:
        handle.write(raw)
    with open(os.path.join(folder, ko.BUNDLE_JSON_SHA), "wb") as handle:
        handle.write(ko.bundle_json_sha_line(raw))
    whole_dir = os.path.join(workdir, "whole")
    split_dir = os.path.join(workdir, "split")
    os.makedirs(whole_dir)
    os.makedirs(split_dir)
    tar_path = os.path.join(whole_dir, os.path.basename(folder) + ".tar")
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname=os.path.basename(folder))
    shutil.rmtree(folder)
    output = os.path.join(split_dir, os.path.basename(tar_path))
    writer = ko.PartsWriter(output, PART_SIZE, ".partial-bench")
    with open(tar_path, "rb") as source:
        shutil.copyfileobj(source, writer, 1 << 20)
    writer.close()
    index = ko.publish_parts(output, writer)
    return tar_path, index, os.path.getsize(tar_path), len(writer.parts)


def median_row(name, runs):
    return "| %s | %.2f s | %.0f MiB |" % (
        name, statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/k8so-bench-local")
    args = parser.parse_args()
    workdir = os.path.join(args.workdir, uuid.uuid4().hex[:8])
    os.makedirs(workdir)
    ref = build_image(workdir, args.mib)
    try:
        size = json.loads(subprocess.check_output(
            ["docker", "image", "inspect", ref]))[0]["Size"]
        runs = {"docker save": [], "docker-daemon: export": []}
        for rep in range(args.reps):
            saved = os.path.join(workdir, "save.tar")
            runs["docker save"].append(timed(["docker", "save", "-o", saved, ref]))
            os.unlink(saved)
            cache = os.path.join(workdir, "cache-%d" % rep)
            runs["docker-daemon: export"].append(timed(
                [sys.executable, "-c", EXPORT, ref, cache]))
            if rep < args.reps - 1:
                shutil.rmtree(cache)
        tar_path, index, tar_size, parts = bundle_with(
            workdir, os.path.join(workdir, "cache-%d" % (args.reps - 1)), ref)
        verify = {"verify, one .tar": [], "verify, parts": []}
        for _ in range(args.reps):
            verify["verify, one .tar"].append(timed(
                [sys.executable, SCRIPT, "verify", tar_path, "--no-progress"]))
            verify["verify, parts"].append(timed(
                [sys.executable, SCRIPT, "verify", index, "--no-progress"]))
    finally:
        subprocess.call(["docker", "rmi", ref], stdout=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)
    print("image: %s of %d MiB random data + busybox, %.0f MiB in all; "
          "medians of %d runs" % (ref, args.mib, size / 1048576.0, args.reps))
    print("\n| export of the same image | wall | peak RSS |\n| --- | --- | --- |")
    for name, result in runs.items():
        print(median_row(name, result))
    print("\nbundle: %.0f MiB; split: %d parts of at most 100 MiB\n"
          % (tar_size / 1048576.0, parts))
    print("| verify | wall | peak RSS |\n| --- | --- | --- |")
    for name, result in verify.items():
        print(median_row(name, result))


if __name__ == "__main__":
    main()
