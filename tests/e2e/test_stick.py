"""Scenario "stick": what a user carries on a FAT32 stick, on air-gapped Docker nodes.

    make e2e SCENARIO=stick       (or: python3 -m pytest -s tests/e2e/test_stick.py)

A workload image built on this (connected) machine with `docker build` (FROM scratch, busybox,
a layer of its own) goes into a bundle through `--extra-image docker-daemon:`, written with
`--split 1M`. The stick holds only the parts, their index and the tool taken out of the first part
(`tar --occurrence`): nothing is joined. On a fresh node, `master` runs from the parts up to its
images phase, and the workload image runs there with no network. On another fresh node, the
same stick with two parts renamed out of order is refused, naming the part, before the node
changes.
"""

import shutil
import subprocess
import uuid

import pytest

from . import cluster as c
from .conftest import BUNDLE_TOP, tool_host
from .test_seed import snapshot
from .upstream import SEED_IMAGE_REPOSITORY

NAME = BUNDLE_TOP + ".tar"
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "echo {message} > /message"]
CMD ["/bin/busybox", "cat", "/message"]
"""


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """(ref, message) of an image built here; removed afterwards (that tag only)."""
    tag = uuid.uuid4().hex[:10]
    ref = "k8so-lab.local/stick-app-%s:1" % tag
    message = "stick-%s" % tag
    context = tmp_path_factory.mktemp("workload")
    shutil.copy("/bin/busybox", str(context / "busybox"))
    (context / "Dockerfile").write_text(DOCKERFILE.format(message=message))
    c.run(["docker", "build", "--network", "none", "-q", "-t", ref, str(context)], quiet=True)
    yield ref, message
    subprocess.call(["docker", "rmi", ref], stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def stick(tool, upstream, workdir, workload):
    """A folder as the stick holds it: NAME.tar.000 ..., NAME.tar.parts.json, k8s_offline.py."""
    ref, _ = workload
    dest = workdir / "usb-split"
    if dest.exists():
        shutil.rmtree(str(dest))
    dest.mkdir()
    args = (["bundle"] + upstream.bundle_args(SEED_IMAGE_REPOSITORY)
            + ["--extra-image", "docker-daemon:" + ref, "--split", "1M",
               "--output", str(dest / NAME), "--cache-dir", str(workdir / "bundle-cache"),
               "--no-progress"])
    p = tool_host(args)
    assert p.returncode == 0, "bundle --split failed:\n%s" % p.stderr[-3000:]
    parts = sorted(n.name for n in dest.iterdir() if n.name.startswith(NAME + ".0"))
    assert len(parts) > 10, parts
    assert not (dest / NAME).exists()
    c.run(["tar", "-xf", str(dest / (NAME + ".000")), "--occurrence",
           BUNDLE_TOP + "/k8s_offline.py"], cwd=str(dest), quiet=True)
    (dest / BUNDLE_TOP / "k8s_offline.py").rename(dest / "k8s_offline.py")
    (dest / BUNDLE_TOP).rmdir()
    return dest


def images_only(node):
    """master up to its images phase, from the parts on the stick."""
    return ["master", "--apiserver-advertise-address", node.ip(),
            "--image-repository", SEED_IMAGE_REPOSITORY, "--bundle", c.USB + "/" + NAME,
            "--skip-phases", "init,kubeconfig,network,wait,join-file"]


def test_1_master_reads_the_parts_and_the_workload_runs(lab, stick, workload, workdir):
    ref, message = workload
    try:
        n, = c.boot(lab, stick, "stick1")
        p = c.tool_node(n, images_only(n), workdir, "stick-master.log")
        assert p.returncode == 0, "master from the parts failed"
        ran = n.exec(["docker", "run", "--rm", "--network", "none", ref], check=False)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == message
        c.log("stick: master read %s in parts, the docker-daemon image ran" % NAME)
    finally:
        if "stick1" in lab.nodes:
            lab.remove_node("stick1")


def test_2_parts_out_of_order_are_refused_before_the_node_changes(lab, stick, workdir):
    bad = workdir / "usb-split-swapped"
    if bad.exists():
        shutil.rmtree(str(bad))
    shutil.copytree(str(stick), str(bad))
    first, second = bad / (NAME + ".001"), bad / (NAME + ".002")
    first.rename(bad / "swap")
    second.rename(first)
    (bad / "swap").rename(second)
    try:
        n, = c.boot(lab, bad, "stick2")
        before = snapshot(n)
        p = c.tool_node(n, images_only(n), workdir, "stick-swapped.log")
        after = snapshot(n)
        assert p.returncode == 2, "master accepted parts out of order"
        assert "part %s.001 fails its sha256 check" % NAME in p.stderr, p.stderr[-2000:]
        assert "Traceback" not in p.stdout + p.stderr
        assert before == after, "master changed the node before refusing the parts"
    finally:
        if "stick2" in lab.nodes:
            lab.remove_node("stick2")
        shutil.rmtree(str(bad), ignore_errors=True)
