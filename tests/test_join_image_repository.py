"""A join by --apiserver/--token/--discovery-token-ca-cert-hash loads the
worker's images under the cluster's image repository, read from the
cluster (CA pinned by the hash), as a join file would carry it."""


import pytest

import install_support as sup
from install_support import ko
from fixtures.apiserver import FakeAPIServer

REPO = "registry.local:5000/k8s"


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    server = FakeAPIServer(str(tmp_path_factory.mktemp("api")), sup.TOKEN, REPO)
    server.start()
    yield server
    server.stop()


def join(root, bundle, endpoint, ca_hash, *extra):
    return ["join", "--root", root, "--bundle", bundle, "--no-progress",
            "--no-wait", "--apiserver", endpoint, "--token", sup.TOKEN,
            "--discovery-token-ca-cert-hash", ca_hash] + list(extra)


def test_join_by_flags_uses_the_clusters_image_repository(apiserver, bundle_dir,
                                                          tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    assert ko.main(join(root, bundle_dir, apiserver.endpoint,
                        apiserver.ca_hash)) == 0
    tags = set(runner.cluster.docker_images)
    assert REPO + "/kube-proxy:" + sup.K8S_VERSION in tags
    assert REPO + "/pause:3.1" in tags
    assert not any(tag.startswith("k8s.gcr.io/") for tag in tags)
    # The token went only to the pinned kubeadm-config request.
    assert [auth for path, auth in apiserver.requests
            if path.endswith("cluster-info")] == [None]


def test_a_cluster_with_the_default_repository(apiserver, bundle_dir, tmp_path,
                                               monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    monkeypatch.setattr(apiserver, "image_repository", None)
    assert ko.main(join(root, bundle_dir, apiserver.endpoint,
                        apiserver.ca_hash)) == 0
    assert "k8s.gcr.io/kube-proxy:" + sup.K8S_VERSION in runner.cluster.docker_images


def test_a_ca_unlike_the_hash_is_refused_before_the_host_changes(
        apiserver, bundle_dir, tmp_path, monkeypatch, capsys):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    before = sup.snapshot(root)
    assert ko.main(join(root, bundle_dir, apiserver.endpoint,
                        "sha256:" + "0" * 64)) == 2
    err = capsys.readouterr().err
    assert "does not match --discovery-token-ca-cert-hash" in err
    assert "--image-repository" in err.strip().splitlines()[-1]
    assert sup.snapshot(root) == before
    assert not runner.ran("kubeadm")


def test_explicit_image_repository_asks_the_cluster_nothing(
        apiserver, bundle_dir, tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    asked = len(apiserver.requests)
    assert ko.main(join(root, bundle_dir, apiserver.endpoint, apiserver.ca_hash,
                        "--image-repository", "other.local/k8s")) == 0
    assert len(apiserver.requests) == asked
    assert "other.local/k8s/kube-proxy:" + sup.K8S_VERSION in runner.cluster.docker_images


def test_spki_of_a_certificate_is_what_kubeadm_hashes(apiserver):
    import hashlib
    import ssl
    der = ssl.PEM_cert_to_DER_cert(apiserver.ca_pem.decode())
    assert "sha256:" + hashlib.sha256(ko.certificate_spki(der)).hexdigest() == \
        apiserver.ca_hash


@pytest.mark.parametrize("body", [[], {"data": []}, {"data": {"kubeconfig": 7}},
                                  {"data": {"kubeconfig": "clusters: []\n"}}])
def test_a_cluster_info_without_a_ca_is_one_line(body, apiserver, bundle_dir,
                                                 tmp_path, monkeypatch, capsys):
    root = sup.make_root(str(tmp_path / "root"))
    sup.install_fake(monkeypatch, root)
    monkeypatch.setattr(apiserver, "cluster_info", body)
    before = sup.snapshot(root)
    assert ko.main(join(root, bundle_dir, apiserver.endpoint,
                        apiserver.ca_hash)) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "error: cannot read the cluster's image repository: the cluster-info of "
        "%s names no CA: give --image-repository (the master's), or join with "
        "the join file" % apiserver.endpoint)
    assert "Traceback" not in err
    assert sup.snapshot(root) == before
