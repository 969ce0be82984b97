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


# -- a hostile API server (issue 22) -------------------------------------------

class HostileAPI(object):
    """HTTPS on 127.0.0.1 with the fixture cluster's certificate, answering
    each path with what a test sets in ``answers`` {path suffix: function
    of the request handler}; plus a plain HTTP listener that records what
    reaches it (where a redirect would send the tool)."""

    def __init__(self, api):
        self.api, self.answers, self.plain_seen = api, {}, []

    def __enter__(self):
        import socket
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                for suffix, answer in hostile.answers.items():
                    if self.path.endswith(suffix):
                        return answer(self)
                self.send_error(404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = self.api.context.wrap_socket(self.httpd.socket,
                                                         server_side=True)
        self.plain = socket.socket()
        self.plain.bind(("127.0.0.1", 0))
        self.plain.listen(5)
        self.plain.settimeout(0.2)
        self.running = True

        def record():
            while self.running:
                try:
                    conn, _ = self.plain.accept()
                except OSError:
                    continue
                conn.settimeout(2)
                try:
                    self.plain_seen.append(conn.recv(65536))
                except OSError:
                    self.plain_seen.append(b"")
                conn.close()
        self.threads = [threading.Thread(target=self.httpd.serve_forever,
                                         kwargs={"poll_interval": 0.1},
                                         daemon=True),
                        threading.Thread(target=record, daemon=True)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.httpd.shutdown()
        self.httpd.server_close()
        self.plain.close()

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.httpd.server_address[1]

    @property
    def plain_url(self):
        return "http://127.0.0.1:%d/steal" % self.plain.getsockname()[1]

    def good_cluster_info(self, handler):
        import base64
        import json
        kubeconfig = ("apiVersion: v1\nclusters:\n- cluster:\n"
                      "    certificate-authority-data: %s\n"
                      "    server: https://%s\n  name: \"\"\n" % (
                          base64.b64encode(self.api.ca_pem).decode(),
                          self.endpoint))
        body(handler, json.dumps({"kind": "ConfigMap", "data": {
            "kubeconfig": kubeconfig}}).encode())


def body(handler, data, status=200, headers=()):
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def redirect_to(url):
    return lambda handler: body(handler, b"", 302, [("Location", url)])


def trickle(handler):
    import time
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    handler.wfile.flush()
    for _ in range(200):
        try:
            handler.wfile.write(b" ")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.3)


def hostile_join(hostile, bundle_dir, tmp_path, monkeypatch, capsys):
    """join by flags against the hostile server: rc 2, one line, no
    traceback, the host unchanged; the error line."""
    import contextlib
    import signal
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    monkeypatch.setattr(ko, "API_TIMEOUT", 2)
    before = sup.snapshot(root)

    def expired(signum, frame):
        raise AssertionError("join hung")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(12)
    try:
        code = ko.main(join(root, bundle_dir, hostile.endpoint,
                            hostile.api.ca_hash))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert "Traceback" not in err and "error: unexpected" not in err, err
    assert sup.snapshot(root) == before
    assert not runner.ran("kubeadm")
    return errors[0]


def test_a_trickling_api_server_cannot_hold_join(apiserver, bundle_dir,
                                                 tmp_path, monkeypatch, capsys):
    """One byte every 0.3 s keeps every socket read alive: only an overall
    deadline on the request ends it."""
    with HostileAPI(apiserver) as hostile:
        hostile.answers["cluster-info"] = trickle
        line = hostile_join(hostile, bundle_dir, tmp_path, monkeypatch, capsys)
    assert "did not answer within 2 s" in line


@pytest.mark.parametrize("which", ["cluster-info", "kubeadm-config"])
def test_the_api_client_follows_no_redirect(which, apiserver, bundle_dir,
                                            tmp_path, monkeypatch, capsys):
    """An unverified cluster-info could send the tool anywhere; a pinned
    kubeadm-config redirecting to plain HTTP would send the token there."""
    with HostileAPI(apiserver) as hostile:
        hostile.answers["cluster-info"] = hostile.good_cluster_info
        hostile.answers[which] = redirect_to(hostile.plain_url)
        line = hostile_join(hostile, bundle_dir, tmp_path, monkeypatch, capsys)
        seen = list(hostile.plain_seen)
    assert "redirect" in line and "refusing it" in line, line
    assert seen == []


@pytest.mark.parametrize("which,data", [
    ("cluster-info", b"[" * 100000),
    ("kubeadm-config", b"[" * 100000),
    ("kubeadm-config", b'{"data": {"ClusterConfiguration": "' +
     b"[" * 100000 + b'"}}'),
    ("cluster-info", b" " * (17 << 20)),
], ids=["cluster-info-deep", "kubeadm-config-deep", "yaml-flow-deep",
        "cluster-info-17MiB"])
def test_a_hostile_api_answer_is_one_line(which, data, apiserver, bundle_dir,
                                          tmp_path, monkeypatch, capsys):
    with HostileAPI(apiserver) as hostile:
        hostile.answers["cluster-info"] = hostile.good_cluster_info
        hostile.answers[which] = lambda handler: body(handler, data)
        line = hostile_join(hostile, bundle_dir, tmp_path, monkeypatch, capsys)
    assert "cannot read the cluster's image repository" in line
