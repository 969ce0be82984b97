"""Day two: certs check / certs renew / backup / restore.

Certificates are real (made with openssl here) and read back with the
tool's own DER reader; commands go through the recording FakeRunner of the
install tests with --root, plus the answers the day-two commands ask for.
"""

import base64
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import time

import pytest

from install_support import (FakeRunner, HOST_IP, K8S_VERSION, install_fake,
                             ko, make_root, snapshot, write)
from test_hostile_stick import deadline

OPENSSL = shutil.which("openssl")

ETCD_IMAGE = "k8s.gcr.io/etcd:3.3.15-0"
ETCD_MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --name=node-a
    - --initial-advertise-peer-urls=https://%s:2380
    - --data-dir=/var/lib/etcd
    image: %s
    name: etcd
""" % (HOST_IP, ETCD_IMAGE)
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler",
              "etcd")


# -- real certificates -------------------------------------------------------

def openssl(*argv):
    assert OPENSSL, "openssl is missing: .ci/run installs it"
    subprocess.run([OPENSSL] + list(argv), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_cert(folder, name, days, ca=None, cn=None, san=None):
    """A real EC key and certificate valid for days (signed by ca, a
    (crt, key) pair, or self-signed; san: a subjectAltName value);
    returns (crt path, key path)."""
    crt, key = os.path.join(folder, name + ".crt"), \
        os.path.join(folder, name + ".key")
    if not os.path.isdir(folder):
        os.makedirs(folder)
    subject = "/CN=%s" % (cn or name)
    if ca is None:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                "-out", crt, "-days", str(days), "-subj", subject)
        return crt, key
    csr = crt + ".csr"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
            "-out", csr, "-subj", subject)
    extra = []
    if san:
        ext = crt + ".ext"
        with open(ext, "w") as handle:
            handle.write("subjectAltName=%s\nextendedKeyUsage=serverAuth,"
                         "clientAuth\n" % san)
        extra = ["-extfile", ext]
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
            "-CAcreateserial", "-out", crt, "-days", str(days), *extra)
    os.unlink(csr)
    return crt, key


def openssl_enddate(crt):
    out = subprocess.run([OPENSSL, "x509", "-enddate", "-noout", "-in", crt],
                         check=True, stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    text = out.strip().split("=", 1)[1]
    return ko.calendar.timegm(time.strptime(text, "%b %d %H:%M:%S %Y GMT"))


def kubeconfig(crt):
    with open(crt, "rb") as handle:
        data = base64.b64encode(handle.read()).decode()
    return ("apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n"
            "    client-certificate-data: %s\n    client-key-data: S0VZ\n"
            % data)


def make_pki(root, days=365, ca_days=3650):
    """A kubeadm-shaped PKI under root: CAs, leaf certificates, kubeconfigs
    with embedded client certificates, the kubelet's rotating cert."""
    pki = os.path.join(root, "etc/kubernetes/pki")
    ca = make_cert(pki, "ca", ca_days, cn="kubernetes")
    make_cert(pki, "apiserver", days, ca)
    make_cert(pki, "apiserver-kubelet-client", days, ca)
    make_cert(pki, "front-proxy-ca", ca_days)
    etcd_ca = make_cert(pki + "/etcd", "ca", ca_days, cn="etcd-ca")
    for name in ("server", "peer", "healthcheck-client"):
        make_cert(pki + "/etcd", name, days, etcd_ca)
    clients = os.path.join(root, "tmp-clients")
    for conf in ("admin", "controller-manager", "scheduler"):
        crt, _ = make_cert(clients, conf, days, ca)
        write(root, "/etc/kubernetes/%s.conf" % conf, kubeconfig(crt), 0o600)
    crt, key = make_cert(clients, "kubelet", days, ca)
    with open(crt) as c, open(key) as k:
        write(root, ko.KUBELET_CLIENT_CERT, c.read() + k.read(), 0o600)
    write(root, "/etc/kubernetes/kubelet.conf",
          "apiVersion: v1\nkind: Config\nusers:\n- name: default-auth\n  user:"
          "\n    client-certificate: %s\n    client-key: %s\n"
          % (ko.KUBELET_CLIENT_CERT, ko.KUBELET_CLIENT_CERT), 0o600)
    write(root, ko.KUBELET_CONFIG, "apiVersion: kubelet.config.k8s.io/v1beta1"
          "\nkind: KubeletConfiguration\nrotateCertificates: true\n")
    shutil.rmtree(clients)
    return pki


def make_master(root, days=365):
    make_root(root)
    make_pki(root, days)
    for component in COMPONENTS:
        text = ETCD_MANIFEST if component == "etcd" else \
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n" % component
        write(root, "%s/%s.yaml" % (ko.MANIFEST_DIR, component), text, 0o600)
    write(root, "/usr/bin/kubeadm", "#!/bin/sh\n", 0o755)
    write(root, ko.kubelet_unit_files(ko.profile(K8S_VERSION)["unit_dir"])[
        "kubelet.service"], "[Service]\nExecStart=/usr/bin/kubelet\n")
    # What master wrote there (restore runs kubeadm init with it again).
    write(root, ko.INIT_CONFIG, json.dumps(
        {"apiVersion": "kubeadm.k8s.io/v1beta2", "kind": "InitConfiguration",
         "nodeRegistration": {"name": "node-a"}}) + "\n---\n" + json.dumps(
        {"apiVersion": "kubeadm.k8s.io/v1beta2",
         "kind": "ClusterConfiguration", "kubernetesVersion": K8S_VERSION})
        + "\n", 0o600)
    write(root, ko.STATE_FILE, json.dumps({
        "role": "master", "init": "done", "cri": "docker", "node": "node-a",
        "kubernetes_version": K8S_VERSION,
        "kubeconfigs": ["/root/.kube/config"]}), 0o600)
    with open(os.path.join(root, "etc/kubernetes/admin.conf"), "rb") as h:
        write(root, "/root/.kube/config", h.read().decode(), 0o600)
    os.makedirs(os.path.join(root, "var/lib/etcd/member/snap"))
    write(root, "/var/lib/etcd/member/snap/db", "live etcd data")
    return root


# -- the runner's day-two answers --------------------------------------------

class DayTwoRunner(FakeRunner):
    """FakeRunner plus kubeadm version, certs renew, static pods that the
    kubelet restarts when their manifest leaves and comes back, and etcdctl
    run through `docker run`."""

    def __init__(self, root, cluster=None):
        super(DayTwoRunner, self).__init__(root, cluster)
        self.kubeadm_version = K8S_VERSION
        self.generation = dict((c, 1) for c in COMPONENTS)
        self.stopped = set()
        self.renewed = False
        self.snapshot_bytes = b"etcd snapshot bytes " * 100
        self.cluster.docker_images[ETCD_IMAGE] = "sha256:" + "e" * 64

    def manifest_present(self, component):
        return os.path.exists(os.path.join(
            self.root, ko.MANIFEST_DIR.lstrip("/"), component + ".yaml"))

    def answer(self, argv):
        if argv[:2] == ["kubeadm", "version"]:
            return 0, self.kubeadm_version + "\n"
        if argv[0] == "kubeadm" and argv[-3:] == ["certs", "renew", "all"]:
            make_pki_renewal(self.root)
            self.renewed = True
            return 0, "certificates renewed\n"
        if argv[:2] == ["docker", "inspect"]:
            component, _, _ = argv[-1].rpartition("-")
            if self.manifest_present(component):
                return 0, "true\n"
            self.stopped.add(component)
            return 0, "false\n"
        if argv[0] == "kubectl" and "pod" in argv:
            name = argv[argv.index("pod") + 1]
            component = name[:-len("-node-a")]
            if not self.manifest_present(component):
                return 1, "NotFound"
            if component in self.stopped:
                self.stopped.discard(component)
                self.generation[component] += 1
            return 0, json.dumps({"status": {"phase": "Running",
                                             "containerStatuses": [{
                "name": component, "ready": True,
                "containerID": "docker://%s-%d" % (
                    component, self.generation[component])}]}})
        if argv[:2] == ["docker", "run"] and "etcdctl" in argv:
            mounts = dict(reversed(argv[i + 1].split(":")[:2])
                          for i, a in enumerate(argv) if a == "-v")
            if "save" in argv:
                target = mounts["/backup"]
                with open(os.path.join(target, "snapshot.db"), "wb") as h:
                    h.write(self.snapshot_bytes)
                return 0, "Snapshot saved at /backup/snapshot.db\n"
            if "restore" in argv:
                work = mounts["/restore"]
                with open(os.path.join(work, "snapshot.db"), "rb") as h:
                    data = h.read()
                os.makedirs(os.path.join(work, "etcd/member/snap"))
                with open(os.path.join(work, "etcd/member/snap/db"), "wb") as h:
                    h.write(b"restored:" + data)
                return 0, "restored\n"
        return super(DayTwoRunner, self).answer(argv)


def make_pki_renewal(root):
    """What kubeadm certs renew all does: new leaf certificates (two years
    here, so they expire later) and new embedded client certificates."""
    pki = os.path.join(root, "etc/kubernetes/pki")
    ca = (pki + "/ca.crt", pki + "/ca.key")
    make_cert(pki, "apiserver", 730, ca)
    crt, _ = make_cert(os.path.join(root, "tmp-renew"), "admin", 730, ca)
    write(root, "/etc/kubernetes/admin.conf", kubeconfig(crt), 0o600)
    shutil.rmtree(os.path.join(root, "tmp-renew"))


@pytest.fixture
def master(tmp_path, monkeypatch):
    root = make_master(str(tmp_path / "root"))
    runner = DayTwoRunner(root)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: runner.bind(dry_run))
    fake = install_fake(monkeypatch, root)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: runner.bind(dry_run))
    runner.clock = fake.clock
    runner.clock["t"] = time.time()
    return root, runner


def run_tool(capsys, root, *argv):
    code = ko.main(list(argv) + ["--root", root])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


# -- the DER reader ----------------------------------------------------------

@pytest.mark.parametrize("days", [1, 400, 20000])   # 20000: GeneralizedTime
def test_not_after_matches_openssl(tmp_path, days):
    crt, _ = make_cert(str(tmp_path), "c%d" % days, days)
    with open(crt) as handle:
        der = ko.first_pem_certificate(handle.read())
    assert ko.certificate_not_after(der) == openssl_enddate(crt)


def test_not_after_of_a_signed_certificate_is_its_own(tmp_path):
    ca = make_cert(str(tmp_path), "ca", 3650)
    crt, _ = make_cert(str(tmp_path), "leaf", 10, ca)
    with open(crt) as handle:
        der = ko.first_pem_certificate(handle.read())
    assert ko.certificate_not_after(der) == openssl_enddate(crt)
    assert ko.certificate_not_after(der) < openssl_enddate(ca[0])


def test_kubeconfig_client_certificate_forms(tmp_path):
    crt, _ = make_cert(str(tmp_path), "admin", 5)
    kind, der = ko.kubeconfig_client_certificate(kubeconfig(crt))
    assert kind == "data"
    assert ko.certificate_not_after(der) == openssl_enddate(crt)
    assert ko.kubeconfig_client_certificate(
        "users:\n- user:\n    client-certificate: /var/x.pem\n") == \
        ("file", "/var/x.pem")


# -- certs check ---------------------------------------------------------------

def test_certs_check_lists_every_certificate(master, capsys):
    root, _ = master
    code, out, err = run_tool(capsys, root, "certs", "check")
    assert code == 0, err
    for name in ("ca.crt", "apiserver.crt", "apiserver-kubelet-client.crt",
                 "front-proxy-ca.crt", "etcd/ca.crt", "etcd/server.crt",
                 "etcd/peer.crt", "etcd/healthcheck-client.crt", "admin.conf",
                 "controller-manager.conf", "scheduler.conf"):
        assert any(line.split()[0] == name for line in out.splitlines()), name
    kubelet = [l for l in out.splitlines() if l.startswith("kubelet.conf")]
    assert kubelet and "rotates itself" in kubelet[0]
    apiserver = [l for l in out.splitlines() if l.startswith("apiserver.crt")]
    assert apiserver[0].split()[4] in ("364", "365")    # DAYS LEFT
    shown = " ".join(apiserver[0].split()[1:3])
    assert ko.calendar.timegm(time.strptime(shown, "%Y-%m-%d %H:%M:%S")) == \
        openssl_enddate(os.path.join(root, "etc/kubernetes/pki/apiserver.crt"))
    assert "warning" not in err


def test_certs_check_says_when_the_kubelet_does_not_rotate(master, capsys):
    root, _ = master
    write(root, ko.KUBELET_CONFIG, "kind: KubeletConfiguration\n")
    code, out, _ = run_tool(capsys, root, "certs", "check")
    assert code == 0
    assert "does NOT rotate" in [l for l in out.splitlines()
                                 if l.startswith("kubelet.conf")][0]


def test_certs_check_warns_below_30_days_and_fails_below_7(master, capsys):
    root, runner = master
    runner.clock["t"] = time.time() + 345 * 86400      # about 20 days left
    code, _, err = run_tool(capsys, root, "certs", "check")
    assert code == 0
    assert "warning: a certificate expires in" in err
    runner.clock["t"] = time.time() + 360 * 86400      # about 5 days left
    code, _, err = run_tool(capsys, root, "certs", "check")
    assert code == 1
    assert len(error_lines(err)) == 1 and "certs renew" in err


def test_certs_check_fails_on_an_unreadable_certificate(master, capsys):
    root, _ = master
    write(root, "/etc/kubernetes/pki/apiserver.crt", "-----BEGIN CERTIFICATE"
          "-----\nAAAA\n-----END CERTIFICATE-----\n")
    code, out, err = run_tool(capsys, root, "certs", "check")
    assert code == 1
    assert "apiserver.crt" in err and "unreadable" in out


def test_certs_check_bad_input(master, capsys, monkeypatch, tmp_path):
    root, _ = master
    monkeypatch.setattr(ko, "current_euid", lambda: 1000)
    code, _, err = run_tool(capsys, root, "certs", "check")
    assert code == 2 and error_lines(err) == [
        "error: certs check must run as root: run it with sudo"]
    monkeypatch.setattr(ko, "current_euid", lambda: 0)
    empty = make_root(str(tmp_path / "empty"))
    code, _, err = run_tool(capsys, empty, "certs", "check")
    assert code == 2 and len(error_lines(err)) == 1
    assert "no kubeadm certificates" in err


# -- certs renew ---------------------------------------------------------------

@pytest.mark.parametrize("version,command", [
    ("v1.16.0", ["kubeadm", "alpha", "certs", "renew", "all"]),
    ("v1.19.9", ["kubeadm", "alpha", "certs", "renew", "all"]),
    ("v1.20.2", ["kubeadm", "certs", "renew", "all"]),
    ("v1.22.0", ["kubeadm", "certs", "renew", "all"])])
def test_renew_command_follows_the_installed_kubeadm(master, capsys, version,
                                                     command):
    root, runner = master
    runner.kubeadm_version = version
    code, _, err = run_tool(capsys, root, "certs", "renew")
    assert code == 0, err
    assert runner.ran(*command)


def expiry(root, path):
    with open(os.path.join(root, path.lstrip("/"))) as handle:
        text = handle.read()
    if path.endswith(".conf"):
        return ko.certificate_not_after(
            ko.kubeconfig_client_certificate(text)[1])
    return ko.certificate_not_after(ko.first_pem_certificate(text))


def test_certs_renew_backs_up_renews_restarts_and_refreshes(master, capsys):
    root, runner = master
    old_admin = open(os.path.join(root, "etc/kubernetes/admin.conf"),
                     "rb").read()
    old_api = open(os.path.join(root, "etc/kubernetes/pki/apiserver.crt"),
                   "rb").read()
    before = {p: expiry(root, p) for p in ("/etc/kubernetes/admin.conf",
                                           "/etc/kubernetes/pki/apiserver.crt")}
    code, out, err = run_tool(capsys, root, "certs", "renew")
    assert code == 0, err
    for path, when in before.items():
        assert expiry(root, path) > when, path
    # every static pod: stopped by the kubelet, back with a new container
    assert runner.generation == dict((c, 2) for c in COMPONENTS)
    for component in COMPONENTS:
        assert os.path.exists(os.path.join(
            root, "etc/kubernetes/manifests/%s.yaml" % component))
    # the renewal before the first restart
    commands = runner.commands()
    renew_at = [i for i, a in enumerate(commands) if a[-2:] == ["renew", "all"]]
    inspect_at = [i for i, a in enumerate(commands) if a[:2] ==
                  ["docker", "inspect"]]
    assert renew_at and inspect_at and renew_at[0] < inspect_at[0]
    # the copy the tool made is the new admin.conf
    new_admin = open(os.path.join(root, "etc/kubernetes/admin.conf"),
                     "rb").read()
    assert new_admin != old_admin
    assert open(os.path.join(root, "root/.kube/config"), "rb").read() == \
        new_admin
    # the 0600 backup holds the old bytes
    folder = os.path.join(root, ko.DAYTWO_DIR.lstrip("/"))
    backups = [n for n in os.listdir(folder) if n.startswith("certs-before")]
    assert len(backups) == 1
    path = os.path.join(folder, backups[0])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with tarfile.open(path) as tar:
        assert tar.extractfile("etc/kubernetes/admin.conf").read() == old_admin
        assert tar.extractfile("etc/kubernetes/pki/apiserver.crt").read() == \
            old_api
        assert "etc/kubernetes/pki/etcd/ca.key" in tar.getnames()
    assert "renewed" in out


def test_certs_renew_dry_run_changes_nothing(master, capsys):
    root, runner = master
    before = snapshot(root)
    code, _, err = run_tool(capsys, root, "certs", "renew", "--dry-run")
    assert code == 0, err
    assert snapshot(root) == before
    assert not runner.renewed
    planned = runner.commands(executed_only=False)
    assert ["kubeadm", "alpha", "certs", "renew", "all"] in planned
    for component in COMPONENTS:
        assert "would move /etc/kubernetes/manifests/%s.yaml" % component in err
    assert "would copy /etc/kubernetes/admin.conf to /root/.kube/config" in err
    assert "certs-before-renew" in err


KUBELET_CONF_CLUSTER = (
    "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: "
    "TFMwdA==\n    server: https://%s:6443\n  name: kubernetes\ncontexts:\n"
    "- context:\n    cluster: kubernetes\n    user: system:node:node-a\n"
    "  name: system:node:node-a@kubernetes\ncurrent-context: "
    "system:node:node-a@kubernetes\nkind: Config\npreferences: {}\n" % HOST_IP)


def embed_kubelet_conf(root, days=365):
    """kubelet.conf as kubeadm 1.16 init writes it on the first control
    plane: the client certificate embedded (kubeadm's renewal does not
    touch it, so it expires a year after init)."""
    pki = os.path.join(root, "etc/kubernetes/pki")
    crt, key = make_cert(os.path.join(root, "tmp-node"), "node-a", days,
                         (pki + "/ca.crt", pki + "/ca.key"),
                         cn="system:node:node-a")
    data = [base64.b64encode(open(f, "rb").read()).decode() for f in (crt, key)]
    shutil.rmtree(os.path.join(root, "tmp-node"))
    write(root, ko.KUBELET_CONF, KUBELET_CONF_CLUSTER +
          "users:\n- name: system:node:node-a\n  user:\n"
          "    client-certificate-data: %s\n    client-key-data: %s\n"
          % tuple(data), 0o600)


def read_root(root, path):
    with open(os.path.join(root, path.lstrip("/")), "rb") as handle:
        return handle.read()


def kubelet_restarts(runner):
    return runner.ran("systemctl", "restart", "kubelet")


def test_certs_renew_points_an_embedded_kubelet_conf_at_the_rotating_cert(
        master, capsys):
    """kubeadm 1.16 leaves the first master's kubelet.conf with its
    embedded client certificate, which then expires: renew points it at
    the kubelet's rotating kubelet-client-current.pem (what kubeadm writes
    from 1.17), restarts the kubelet once, and a re-run changes nothing."""
    root, runner = master
    embed_kubelet_conf(root)
    old = read_root(root, ko.KUBELET_CONF)
    _, out, _ = run_tool(capsys, root, "certs", "check")
    assert [l for l in out.splitlines() if l.split()[0] == "kubelet.conf"]
    code, out, err = run_tool(capsys, root, "certs", "renew")
    assert code == 0, err
    new = ko.parse_yaml_document(read_root(root, ko.KUBELET_CONF).decode())
    want = ko.parse_yaml_document(old.decode())
    want["users"][0]["user"] = {"client-certificate": ko.KUBELET_CLIENT_CERT,
                                "client-key": ko.KUBELET_CLIENT_CERT}
    assert new == want
    assert stat.S_IMODE(os.stat(os.path.join(
        root, ko.KUBELET_CONF.lstrip("/"))).st_mode) == 0o600
    assert len(kubelet_restarts(runner)) == 1
    # after every static pod's restart: the lab saw a restarted kubelet report
    # no container for the API server, whose restart then did not happen
    commands = runner.commands()
    last_pod_check = max(i for i, a in enumerate(commands)
                         if a[:2] == ["docker", "inspect"] or
                         (a[0] == "kubectl" and "pod" in a))
    assert commands.index(["systemctl", "restart", "kubelet"]) > last_pod_check
    assert "kubelet.conf" in err and ko.KUBELET_CLIENT_CERT in err
    # certs check now follows it to the rotating certificate
    _, out, _ = run_tool(capsys, root, "certs", "check")
    row = [l for l in out.splitlines() if l.startswith("kubelet.conf")]
    assert row and row[0].startswith(
        "kubelet.conf -> " + ko.KUBELET_CLIENT_CERT), row
    assert "rotates itself" in row[0]
    # the old kubelet.conf is in the renewal's backup
    folder = os.path.join(root, ko.DAYTWO_DIR.lstrip("/"))
    backup = [n for n in os.listdir(folder) if n.startswith("certs-before")][0]
    with tarfile.open(os.path.join(folder, backup)) as tar:
        assert tar.extractfile("etc/kubernetes/kubelet.conf").read() == old
    # a re-run leaves kubelet.conf and the kubelet alone
    done = read_root(root, ko.KUBELET_CONF)
    code, _, err = run_tool(capsys, root, "certs", "renew")
    assert code == 0, err
    assert read_root(root, ko.KUBELET_CONF) == done
    assert len(kubelet_restarts(runner)) == 1


def test_certs_renew_dry_run_names_the_kubelet_conf_change(master, capsys):
    root, runner = master
    embed_kubelet_conf(root)
    before = snapshot(root)
    code, _, err = run_tool(capsys, root, "certs", "renew", "--dry-run")
    assert code == 0, err
    assert snapshot(root) == before
    assert "would write %s" % ko.KUBELET_CONF in err
    assert not kubelet_restarts(runner)
    assert ["systemctl", "restart", "kubelet"] in runner.commands(
        executed_only=False)


@pytest.mark.parametrize("damage", ["missing", "no key", "expired",
                                    "no rotation"])
def test_certs_renew_keeps_kubelet_conf_without_a_usable_rotating_cert(
        master, capsys, damage):
    """Pointing the kubelet at a file it cannot use would cut it off: then
    kubelet.conf stays as it is and one warning says why."""
    root, runner = master
    embed_kubelet_conf(root)
    current = os.path.join(root, ko.KUBELET_CLIENT_CERT.lstrip("/"))
    if damage == "missing":
        os.unlink(current)
    elif damage == "no key":
        text = open(current).read()
        write(root, ko.KUBELET_CLIENT_CERT,
              text[:text.index("-----BEGIN PRIVATE KEY")], 0o600)
    elif damage == "expired":
        pki = os.path.join(root, "etc/kubernetes/pki")
        crt, key = make_cert(os.path.join(root, "tmp-old"), "k", -1,
                             (pki + "/ca.crt", pki + "/ca.key"))
        write(root, ko.KUBELET_CLIENT_CERT,
              open(crt).read() + open(key).read(), 0o600)
        shutil.rmtree(os.path.join(root, "tmp-old"))
    else:
        write(root, ko.KUBELET_CONFIG, "rotateCertificates: false\n")
    old = read_root(root, ko.KUBELET_CONF)
    code, _, err = run_tool(capsys, root, "certs", "renew")
    assert code == 0, err
    assert read_root(root, ko.KUBELET_CONF) == old
    assert not kubelet_restarts(runner)
    warnings = [l for l in err.splitlines() if "kubelet.conf" in l and
                "warning" in l]
    assert len(warnings) == 1, err


def test_kubeconfig_client_certificate_reads_the_json_form(tmp_path):
    """kubelet.conf as renew rewrites it (JSON through the serializer)."""
    text = json.dumps({"users": [{"name": "n", "user": {
        "client-certificate": ko.KUBELET_CLIENT_CERT,
        "client-key": ko.KUBELET_CLIENT_CERT}}]}, indent=2)
    assert ko.kubeconfig_client_certificate(text) == (
        "file", ko.KUBELET_CLIENT_CERT)
    crt, _ = make_cert(str(tmp_path), "admin", 5)
    data = base64.b64encode(open(crt, "rb").read()).decode()
    kind, der = ko.kubeconfig_client_certificate(json.dumps(
        {"users": [{"user": {"client-certificate-data": data}}]}, indent=2))
    assert kind == "data" and ko.certificate_not_after(der) == \
        openssl_enddate(crt)


def test_certs_renew_needs_a_master(master, capsys, monkeypatch, tmp_path):
    root, _ = master
    worker = make_root(str(tmp_path / "worker"))
    code, _, err = run_tool(capsys, worker, "certs", "renew")
    assert code == 2 and len(error_lines(err)) == 1 and "not a master" in err
    monkeypatch.setattr(ko, "current_euid", lambda: 1000)
    code, _, err = run_tool(capsys, root, "certs", "renew")
    assert code == 2 and "must run as root" in err


def test_a_pod_that_never_stops_is_one_line_and_its_manifest_returns(
        master, capsys):
    root, runner = master
    original = runner.answer

    def stuck(argv):
        if argv[:2] == ["docker", "inspect"]:
            return 0, "true\n"
        return original(argv)
    runner.answer = stuck
    code, _, err = run_tool(capsys, root, "certs", "renew")
    assert code == 2 and len(error_lines(err)) == 1
    assert "kube-apiserver" in err
    assert os.path.exists(os.path.join(
        root, "etc/kubernetes/manifests/kube-apiserver.yaml"))


# -- backup ------------------------------------------------------------------

def backup(capsys, root, output=None):
    output = output or "/var/backups/b.tar.gz"
    code, out, err = run_tool(capsys, root, "backup", "--output", output)
    return code, out, err, os.path.join(root, output.lstrip("/"))


def test_backup_writes_one_private_file_with_its_sha256(master, capsys):
    root, runner = master
    code, out, err, path = backup(capsys, root)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert "sha256 %s" % digest in out
    assert open(path + ".sha256").read() == "%s  b.tar.gz\n" % digest
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert tar.extractfile("etcd/snapshot.db").read() == \
            runner.snapshot_bytes
        meta = json.loads(tar.extractfile("backup.json").read())
        ca = tar.extractfile("pki/ca.crt").read()
    assert "pki/etcd/healthcheck-client.key" in names
    assert "kubeadm/kubeadm-init.json" in names
    assert meta["etcd"] == {"image": ETCD_IMAGE, "name": "node-a",
                            "peer_url": "https://%s:2380" % HOST_IP,
                            "client_url": "https://127.0.0.1:2379"}
    assert meta["kubernetes_version"] == K8S_VERSION
    assert meta["cluster_ca_sha256"] == hashlib.sha256(ca).hexdigest()
    run = runner.ran("docker", "run")[0]
    assert run[run.index("--entrypoint") + 1] == "etcdctl"
    assert ETCD_IMAGE in run and "host" in run
    assert "%s/etc/kubernetes/pki/etcd:/etc/kubernetes/pki/etcd:ro" % root \
        in run
    # no working files left, no key in the output or the log
    assert not [n for n in os.listdir(os.path.join(
        root, ko.DAYTWO_DIR.lstrip("/"))) if n.startswith("backup-")]
    key = open(os.path.join(root, "etc/kubernetes/pki/ca.key")).read()
    body = key.splitlines()[1]
    log = open(os.path.join(root, "var/log/k8s-offline.log")).read()
    for text in (out, err, log):
        assert body not in text


def test_backup_through_containerd(master, capsys):
    root, runner = master
    state = json.load(open(os.path.join(root, ko.STATE_FILE.lstrip("/"))))
    state["cri"] = "containerd"
    write(root, ko.STATE_FILE, json.dumps(state), 0o600)
    runner.cluster.containerd_images["k8s.gcr.io/etcd:3.3.15-0"] = "sha256:1"
    runner.expect("ctr", "--address", "/run/containerd/containerd.sock", "-n",
                  "k8s.io", "run")
    code, _, err, _ = backup(capsys, root)
    # the fake runner does not write the snapshot for ctr: the tool says so
    assert code == 2 and "etcdctl wrote no snapshot" in err
    run = runner.ran("ctr")[-1]
    assert run[run.index("run"):run.index("run") + 3] == ["run", "--rm",
                                                          "--net-host"]
    assert ETCD_IMAGE in run and "etcdctl" in run


def test_backup_dry_run_changes_nothing(master, capsys):
    root, runner = master
    before = snapshot(root)
    code, out, err = run_tool(capsys, root, "backup", "--dry-run")
    assert code == 0, err
    assert snapshot(root) == before
    assert runner.ran("docker", "run") == []
    assert any(a[:2] == ["docker", "run"] for a in
               runner.commands(executed_only=False))


def test_backup_to_a_relative_path(master, capsys, monkeypatch, tmp_path):
    root, _ = master
    monkeypatch.chdir(str(tmp_path))
    code, out, err = run_tool(capsys, root, "backup", "--output", "b.tar.gz")
    assert code == 0, err
    written = os.path.join(root, str(tmp_path / "b.tar.gz").lstrip("/"))
    assert os.path.isfile(written) and os.path.isfile(written + ".sha256")


def test_backup_output_must_be_a_tar_gz(master, capsys):
    root, _ = master
    before = snapshot(root)
    code, _, err = run_tool(capsys, root, "backup", "--output", "/x/b.zip")
    assert code == 2 and error_lines(err) == [
        "error: bad --output /x/b.zip: the name must end in .tar.gz"]
    assert snapshot(root) == before


@pytest.mark.parametrize("case", ["not-root", "no-image", "no-etcd",
                                  "no-kubeadm"])
def test_backup_bad_input_is_one_line(master, capsys, monkeypatch, case):
    root, runner = master
    if case == "not-root":
        monkeypatch.setattr(ko, "current_euid", lambda: 1000)
    elif case == "no-image":
        runner.cluster.docker_images.clear()
    elif case == "no-etcd":
        os.unlink(os.path.join(root, "etc/kubernetes/manifests/etcd.yaml"))
    else:
        os.unlink(os.path.join(root, "usr/bin/kubeadm"))
    before = snapshot(root)
    code, _, err, path = backup(capsys, root)
    assert code == 2
    assert len(error_lines(err)) == 1, err
    assert "Traceback" not in err
    assert {"not-root": "must run as root", "no-image": "is not in docker",
            "no-etcd": "no local etcd",
            "no-kubeadm": "kubeadm is not installed"}[case] in err
    assert not os.path.exists(path)
    after = snapshot(root)
    assert after == before


# -- restore -----------------------------------------------------------------

def reset_host(root):
    """What kubeadm reset and this tool's reset leave: no /etc/kubernetes,
    no etcd data, no state (images and binaries stay)."""
    for path in ("etc/kubernetes", "var/lib/etcd", "var/lib/k8s-offline",
                 "root/.kube"):
        shutil.rmtree(os.path.join(root, path))


@pytest.fixture
def backed_up(master, capsys):
    root, runner = master
    code, _, err, path = backup(capsys, root)
    assert code == 0, err
    pki = {}
    for folder, _, files in os.walk(os.path.join(root, "etc/kubernetes/pki")):
        for name in files:
            full = os.path.join(folder, name)
            pki[os.path.relpath(full, root)] = open(full, "rb").read()
    return root, runner, path, pki


def test_restore_on_a_reset_master(backed_up, capsys):
    root, runner, path, pki = backed_up
    reset_host(root)
    runner.calls[:] = []
    code, out, err = run_tool(capsys, root, "restore", path)
    assert code == 0, err
    for rel, data in pki.items():
        assert open(os.path.join(root, rel), "rb").read() == data, rel
    key = os.path.join(root, "etc/kubernetes/pki/ca.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    db = open(os.path.join(root, "var/lib/etcd/member/snap/db"), "rb").read()
    assert db == b"restored:" + runner.snapshot_bytes
    restore = [a for a in runner.ran("docker", "run") if "restore" in a][0]
    assert restore[restore.index("--name") + 1] == "node-a"
    assert restore[restore.index("--initial-cluster") + 1] == \
        "node-a=https://%s:2380" % HOST_IP
    init = runner.ran("kubeadm", "init")[0]
    assert init[init.index("--config") + 1] == ko.INIT_CONFIG
    assert "DirAvailable--var-lib-etcd" in \
        init[init.index("--ignore-preflight-errors") + 1]
    commands = runner.commands()
    assert commands.index(restore) < commands.index(init)
    # every node's flannel lost the old control plane; flannel v0.11's API client never
    # reconnects ("http2: no cached connection was available"), so restore restarts its pods
    flannel = [a for a in commands if "delete" in a and "app=flannel" in a]
    assert flannel and commands.index(init) < commands.index(flannel[0]), commands
    state = json.load(open(os.path.join(root, ko.STATE_FILE.lstrip("/"))))
    assert state["role"] == "master" and state["init"] == "done"
    assert os.path.exists(os.path.join(root, "root/.kube/config"))
    assert not [n for n in os.listdir(os.path.join(
        root, ko.DAYTWO_DIR.lstrip("/"))) if n.startswith("restore-")]
    assert "restored" in out


def test_restore_says_why_kubeadm_init_failed(backed_up, capsys):
    """restore's kubeadm init refusal, word for word: its last line and the
    log (master's init says the same, with its own hint after it)."""
    root, runner, path, _ = backed_up
    reset_host(root)
    runner.fail[("kubeadm", "init")] = 1
    code, _, err = run_tool(capsys, root, "restore", path)
    assert code == 2
    assert error_lines(err) == [
        "error: kubeadm init failed (exit 1): simulated failure of kubeadm: "
        "the full output is in %s" % ko.KUBEADM_INIT_LOG]
    assert runner.ran("kubeadm", "init")


def test_restore_dry_run_changes_nothing(backed_up, capsys):
    root, runner, path, _ = backed_up
    reset_host(root)
    before = snapshot(root)
    runner.calls[:] = []
    code, _, err = run_tool(capsys, root, "restore", path, "--dry-run")
    assert code == 0, err
    assert snapshot(root) == before
    planned = runner.commands(executed_only=False)
    assert any(a[:2] == ["kubeadm", "init"] for a in planned)
    assert runner.ran("kubeadm", "init") == []


def damage(path):
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 1]))


def rewrite_backup(path, change):
    """Rebuild the backup with change(meta, files) applied, with a matching
    .sha256 (a well-formed backup of another cluster or version)."""
    with tarfile.open(path) as tar:
        files = dict((m.name, tar.extractfile(m).read()) for m in tar)
    meta = json.loads(files.pop("backup.json"))
    change(meta, files)
    meta["files"] = dict((n, hashlib.sha256(d).hexdigest())
                         for n, d in files.items())
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in [("backup.json", json.dumps(meta).encode())] + \
                sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, "wb") as handle:
        handle.write(raw.getvalue())
    with open(path + ".sha256", "w") as handle:
        handle.write(hashlib.sha256(raw.getvalue()).hexdigest() + "  x\n")


def write_backup_as_is(path, change):
    """Rebuild the backup with change(files) applied to every member,
    backup.json included and left as it is (only the .sha256 matches)."""
    with tarfile.open(path) as tar:
        files = dict((m.name, tar.extractfile(m).read()) for m in tar)
    change(files)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    open(path, "wb").write(raw.getvalue())
    open(path + ".sha256", "w").write(
        hashlib.sha256(raw.getvalue()).hexdigest() + "\n")


def listed_sha(name, value):
    """A change for write_backup_as_is: backup.json lists value for name."""
    def change(files):
        meta = json.loads(files["backup.json"])
        meta["files"][name] = value
        files["backup.json"] = json.dumps(meta).encode()
    return change


def other_ca(meta, files):
    files["pki/ca.crt"] = b"another CA"
    meta["cluster_ca_sha256"] = hashlib.sha256(b"another CA").hexdigest()


@pytest.mark.parametrize("case,message", [
    ("damaged", "is damaged: its sha256 is"),
    ("missing", "no backup file"),
    ("no-sha-file", ".sha256 beside the backup"),
    ("bad-sha-flag", "bad --sha256"),
    ("wrong-sha-flag", "is damaged"),
    ("not-root", "must run as root"),
    ("other-version", "the backup is of Kubernetes %s but this host's "
                      "kubeadm is v1.17.3" % K8S_VERSION),
    ("other-format", "a backup format this tool does not know"),
    ("hostile-name", "unexpected entry"),
    ("dot-dot", "unexpected entry"),
    ("etcd-name-newline", "backup.json field etcd.name"),
    ("peer-url-newline", "backup.json field etcd.peer_url"),
    ("member-sha", "does not match its sha256"),
    ("other-cluster", "the CA of another cluster"),
    ("running", "still runs a control plane"),
    ("no-image", "the etcd image k8s.gcr.io/etcd:3.3.15-0 is not in docker"),
])
def test_restore_bad_input_is_one_line_and_changes_nothing(
        backed_up, capsys, monkeypatch, case, message):
    root, runner, path, _ = backed_up
    if case != "running":
        reset_host(root)
    extra = []
    if case == "damaged":
        damage(path)
    elif case == "missing":
        path += ".nope"
    elif case == "no-sha-file":
        os.unlink(path + ".sha256")
    elif case == "bad-sha-flag":
        extra = ["--sha256", "xyz"]
    elif case == "wrong-sha-flag":
        extra = ["--sha256", "0" * 64]
    elif case == "not-root":
        monkeypatch.setattr(ko, "current_euid", lambda: 1000)
    elif case == "other-version":
        runner.kubeadm_version = "v1.17.3"
    elif case == "other-format":
        rewrite_backup(path, lambda meta, files: meta.update(format=9))
    elif case == "hostile-name":
        rewrite_backup(path, lambda meta, files: files.update(
            {"pki/../../etc/passwd": b"x"}))
    elif case == "dot-dot":
        rewrite_backup(path, lambda meta, files: files.update(
            {"pki/../admin.conf": b"x"}))
    elif case in ("etcd-name-newline", "peer-url-newline"):
        key = "name" if case == "etcd-name-newline" else "peer_url"
        rewrite_backup(path, lambda meta, files: meta["etcd"].update(
            {key: meta["etcd"][key] + "\n"}))
    elif case == "member-sha":
        write_backup_as_is(path, listed_sha("pki/ca.crt", "0" * 64))
    elif case == "other-cluster":
        rewrite_backup(path, other_ca)
        make_cert(os.path.join(root, "etc/kubernetes/pki"), "ca", 10)
    elif case == "no-image":
        runner.cluster.docker_images.clear()
    before = snapshot(root)
    runner.calls[:] = []
    code, _, err = run_tool(capsys, root, "restore", path, *extra)
    assert code == 2, err
    assert len(error_lines(err)) == 1, err
    assert message in err
    assert "Traceback" not in err
    assert snapshot(root) == before
    changes = [a for a in runner.commands() if a[0] in ("kubeadm", "docker")
               and a[:2] not in (["kubeadm", "version"],
                                 ["docker", "image"])]
    assert changes == []


def test_restore_replace_resets_the_running_control_plane_first(
        backed_up, capsys):
    root, runner, path, pki = backed_up
    runner.calls[:] = []
    code, _, err = run_tool(capsys, root, "restore", path, "--replace")
    assert code == 0, err
    commands = runner.commands()
    reset = commands.index(["kubeadm", "reset", "-f"])
    init = [i for i, a in enumerate(commands) if a[:2] == ["kubeadm", "init"]]
    assert reset < init[0]
    assert open(os.path.join(root, "var/lib/etcd/member/snap/db"),
                "rb").read() == b"restored:" + runner.snapshot_bytes


# -- a real etcd, a real etcdctl ---------------------------------------------

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


class HostEtcdctlRunner(DayTwoRunner):
    """Runs the tool's `docker run ... etcdctl` with the host's real
    etcdctl instead, the container paths mapped to the mounted host paths:
    the flags the tool gives etcdctl meet a real etcd."""

    def answer(self, argv):
        if argv[:2] != ["docker", "run"]:
            return super(HostEtcdctlRunner, self).answer(argv)
        mounts, env, rest = [], dict(os.environ), argv[2:]
        image_at = None
        i = 0
        while i < len(rest):
            if rest[i] == "-v":
                host, container = rest[i + 1].split(":")[:2]
                mounts.append((container, host))
                i += 2
            elif rest[i] == "-e":
                key, _, value = rest[i + 1].partition("=")
                env[key] = value
                i += 2
            elif rest[i] in ("--network", "--entrypoint"):
                i += 2
            elif rest[i].startswith("-"):
                i += 1
            else:
                image_at = i
                break
        args = []
        for arg in rest[image_at + 1:]:
            for container, host in mounts:
                if arg == container or arg.startswith(container + "/"):
                    arg = host + arg[len(container):]
            args.append(arg)
        proc = subprocess.run([ETCDCTL] + args, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=120)
        return proc.returncode, proc.stdout


def free_port():
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def start_etcd(tmp_path, pki, data_dir, name, client, peer):
    log = open(str(tmp_path / ("etcd-%d.log" % client)), "w")
    proc = subprocess.Popen([
        ETCD, "--name", name, "--data-dir", data_dir,
        "--listen-client-urls", "https://127.0.0.1:%d" % client,
        "--advertise-client-urls", "https://127.0.0.1:%d" % client,
        "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
        "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
        "--initial-cluster", "%s=http://127.0.0.1:%d" % (name, peer),
        "--cert-file", pki + "/server.crt", "--key-file", pki + "/server.key",
        "--client-cert-auth", "--trusted-ca-file", pki + "/ca.crt"],
        stdout=log, stderr=subprocess.STDOUT)
    return proc


def etcdctl(pki, client, *argv):
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run([ETCDCTL, "--endpoints", "https://127.0.0.1:%d"
                           % client, "--cacert", pki + "/ca.crt",
                           "--cert", pki + "/healthcheck-client.crt",
                           "--key", pki + "/healthcheck-client.key"]
                          + list(argv), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=30)


def wait_etcd(pki, client):
    for _ in range(100):
        if etcdctl(pki, client, "endpoint", "health").returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("etcd on %d did not come up" % client)


def test_backup_and_restore_with_a_real_etcd(tmp_path, monkeypatch, capsys):
    assert ETCD and ETCDCTL, "etcd or etcdctl is missing: .ci/run installs " \
        "Debian's etcd-server and etcd-client"
    root = make_master(str(tmp_path / "root"))
    pki = os.path.join(root, "etc/kubernetes/pki/etcd")
    ca = (pki + "/ca.crt", pki + "/ca.key")
    make_cert(pki, "server", 30, ca, san="IP:127.0.0.1")
    make_cert(pki, "healthcheck-client", 30, ca, san="IP:127.0.0.1")
    client, peer = free_port(), free_port()
    manifest = ETCD_MANIFEST.replace(
        "https://%s:2380" % HOST_IP, "http://127.0.0.1:%d" % peer).replace(
        "    - --data-dir=/var/lib/etcd\n",
        "    - --data-dir=/var/lib/etcd\n    - --listen-client-urls="
        "https://127.0.0.1:%d\n" % client)
    write(root, ko.ETCD_MANIFEST, manifest, 0o600)
    runner = HostEtcdctlRunner(root)
    fake = install_fake(monkeypatch, root)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: runner.bind(dry_run))
    runner.clock = fake.clock
    data = str(tmp_path / "etcd-data")
    proc = start_etcd(tmp_path, pki, data, "node-a", client, peer)
    try:
        wait_etcd(pki, client)
        assert etcdctl(pki, client, "put", "/registry/configmaps/default/"
                       "kept", "before the backup").returncode == 0
        code, out, err, path = backup(capsys, root)
        assert code == 0, err
        assert etcdctl(pki, client, "del", "/registry/configmaps/default/"
                       "kept").stdout.strip() == "1"
    finally:
        proc.terminate()
        proc.wait(30)
    reset_host(root)
    # the restored PKI is what the new etcd serves with
    code, out, err = run_tool(capsys, root, "restore", path, "--no-wait")
    assert code == 0, err
    restored = os.path.join(root, "var/lib/etcd")
    assert os.path.isdir(os.path.join(restored, "member/snap"))
    client2 = free_port()
    proc = start_etcd(tmp_path, pki, restored, "node-a", client2, peer)
    try:
        wait_etcd(pki, client2)
        got = etcdctl(pki, client2, "get", "/registry/configmaps/default/"
                      "kept", "--print-value-only")
        assert got.stdout.strip() == "before the backup", got.stdout
    finally:
        proc.terminate()
        proc.wait(30)


# -- restore: hostile backups (issue 22) ---------------------------------------

def assert_restore_refused(capsys, root, runner, path, expected, *extra):
    """restore PATH: rc 2, one error line holding expected, no traceback,
    the --root tree byte-identical and no kubeadm or container run."""
    before = snapshot(root)
    runner.calls[:] = []
    with deadline(10):
        code, _, err = run_tool(capsys, root, "restore", path, *extra)
    assert code == 2, err
    assert len(error_lines(err)) == 1, err
    assert err.strip().splitlines()[-1] == error_lines(err)[0], err
    assert "Traceback" not in err and "error: unexpected" not in err, err
    assert expected in error_lines(err)[0], err
    assert snapshot(root) == before
    assert [a for a in runner.commands() if a[0] in ("kubeadm", "docker")
            and a[:2] not in (["kubeadm", "version"], ["docker", "image"])] == []


def _sha256_fifo(path):
    os.unlink(path + ".sha256")
    os.mkfifo(path + ".sha256")


def _sha256_zero(path):
    os.unlink(path + ".sha256")
    os.symlink("/dev/zero", path + ".sha256")


def _sha256_folder(path):
    os.unlink(path + ".sha256")
    os.mkdir(path + ".sha256")


def _sha256_huge(path):
    with open(path + ".sha256", "a") as handle:
        handle.write(" " * (1 << 20))


@pytest.mark.parametrize("change,expected", [
    (_sha256_fifo, ".sha256 is not a regular file"),
    (_sha256_zero, ".sha256 is not a regular file"),
    (_sha256_folder, ".sha256 is not a regular file"),
    (_sha256_huge, ".sha256 is larger than"),
], ids=["fifo", "dev-zero", "folder", "huge"])
def test_restore_reads_the_sha256_file_bounded_and_never_hangs(
        backed_up, capsys, change, expected):
    root, runner, path, _ = backed_up
    reset_host(root)
    change(path)
    assert_restore_refused(capsys, root, runner, path, expected)


def test_restore_opens_the_backup_without_blocking(backed_up, capsys,
                                                   monkeypatch):
    """A backup that turns into a FIFO after the first look cannot hang
    the open: the file is opened non-blocking and must be regular."""
    root, runner, path, _ = backed_up
    reset_host(root)
    digest = open(path + ".sha256").read().split()[0]
    os.unlink(path)
    os.mkfifo(path)
    monkeypatch.setattr(ko.os.path, "isfile", lambda p: True)
    assert_restore_refused(capsys, root, runner, path,
                           "is not a regular file", "--sha256", digest)


def scratch_peak(monkeypatch):
    """The bytes restore's private scratch folder held when it was
    removed (what a backup could make it write before refusing)."""
    seen = []
    close = ko.BackupArchive.close

    def measured(archive):
        total = 0
        for folder, _, files in os.walk(archive.folder):
            total += sum(os.path.getsize(os.path.join(folder, name))
                         for name in files)
        seen.append(total)
        close(archive)
    monkeypatch.setattr(ko.BackupArchive, "close", measured)
    return seen


def _inflating_snapshot(meta, files):
    files["etcd/snapshot.db"] = bytes(64 << 20)


def _many_members(meta, files):
    for number in range(5000):
        files["pki/m%04d.crt" % number] = b"x"


def _big_pki_member(meta, files):
    files["pki/big.crt"] = b"x" * (2 << 20)


@pytest.mark.parametrize("change,wrong_sha,expected", [
    (_inflating_snapshot, True, "etcd/snapshot.db does not match its sha256"),
    (_many_members, False, "holds more than"),
    (_big_pki_member, False, "pki/big.crt is larger than"),
], ids=["inflating-snapshot", "5000-members", "2MiB-pki-member"])
def test_restore_checks_every_member_before_it_writes_one(
        backed_up, capsys, monkeypatch, change, wrong_sha, expected):
    root, runner, path, _ = backed_up
    reset_host(root)

    def hostile(meta, files):
        change(meta, files)
    rewrite_backup(path, hostile)
    if wrong_sha:
        write_backup_as_is(path, listed_sha("etcd/snapshot.db", "0" * 64))
    assert os.path.getsize(path) < 1 << 20
    peak = scratch_peak(monkeypatch)
    assert_restore_refused(capsys, root, runner, path, expected)
    assert peak and max(peak) < 2 << 20, peak


def _no_kubeadm_config(meta, files):
    del files["kubeadm/kubeadm-init.json"]


def _file_and_folder(meta, files):
    files["pki/zz"] = b"a file"
    files["pki/zz/x"] = b"and a file under it"


@pytest.mark.parametrize("change,expected", [
    (_no_kubeadm_config, "holds no kubeadm config"),
    (_file_and_folder, "pki/zz is both a file and a folder"),
], ids=["no-kubeadm-config", "file-and-folder"])
def test_restore_refuses_before_the_first_write(backed_up, capsys, change,
                                                expected):
    """What the host cannot take is refused before /etc/kubernetes/pki
    gets its first file, not after 22 of them."""
    root, runner, path, _ = backed_up
    reset_host(root)
    rewrite_backup(path, change)
    assert_restore_refused(capsys, root, runner, path, expected)


def _hostile_state(meta, files):
    state = json.loads(files["kubeadm/state.json"])
    state.update(pod_cidr="-", node="node-a\nevil", cri="runc",
                 kubeconfigs="/etc", evil={"deep": [1]})
    files["kubeadm/state.json"] = json.dumps(state).encode()


def test_restore_keeps_only_the_state_keys_it_checked(backed_up, capsys):
    """state.json came from the backup: a pod_cidr of "-" would later make
    reset delete every iptables rule, Docker's too."""
    root, runner, path, _ = backed_up
    reset_host(root)
    rewrite_backup(path, _hostile_state)
    code, _, err = run_tool(capsys, root, "restore", path)
    assert code == 0, err
    state = json.load(open(os.path.join(root, ko.STATE_FILE.lstrip("/"))))
    assert "evil" not in state and "pod_cidr" not in state, state
    assert state.get("node") in (None, "node-a") and state["cri"] == "docker"
    assert state.get("kubeconfigs") in (None, ["/root/.kube/config"]), state


def test_reset_checks_the_state_it_reads_again(master, capsys):
    root, runner = master
    state = json.load(open(os.path.join(root, ko.STATE_FILE.lstrip("/"))))
    state["pod_cidr"] = "-"
    write(root, ko.STATE_FILE, json.dumps(state), 0o600)
    fed = []
    execute = runner._execute

    def recording(argv, timeout=300, tee=None, input_text=None):
        if argv[0] == "iptables-restore":
            fed.append(input_text)
        return execute(argv, timeout=timeout, tee=tee, input_text=input_text)
    runner._execute = recording
    code, _, err = run_tool(capsys, root, "reset", "--yes")
    assert code == 0, err
    assert fed, err
    assert "-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE" in fed[0]
    assert "KUBE-SERVICES" not in fed[0]


def _newline_member(meta, files):
    files["pki/evil.crt\n"] = b"x"


def _newline_version(meta, files):
    meta["kubernetes_version"] = "v1.16.0\n"


@pytest.mark.parametrize("change,expected", [
    (_newline_member, "unexpected entry 'pki/evil.crt\\n'"),
    (_newline_version, "backup.json field kubernetes_version"),
], ids=["member-name", "kubernetes-version"])
def test_restore_refuses_a_trailing_newline(backed_up, capsys, change,
                                            expected):
    """^...$ with .match let "name\\n" through: names are full matches."""
    root, runner, path, _ = backed_up
    reset_host(root)
    rewrite_backup(path, change)
    assert_restore_refused(capsys, root, runner, path, expected)


def _meta_set(key, value):
    return lambda meta, files: meta.update({key: value})


@pytest.mark.parametrize("change,expected", [
    (_meta_set("etcd", ["node-a"]), "backup.json field etcd is list"),
    (_meta_set("created", "yesterday"), "backup.json field created"),
    (_meta_set("created", 10 ** 20), "backup.json field created"),
    (_meta_set("node", {"a": 1}), "backup.json field node"),
    (_meta_set("runtime", "runc"), "backup.json field runtime"),
    (_meta_set("cluster_ca_sha256", 7), "backup.json field cluster_ca_sha256"),
    (_meta_set("evil", 1), "unknown field"),
    (lambda meta, files: meta["etcd"].update(image=["x"]),
     "backup.json field etcd.image"),
    (_meta_set("format", "1"), "a backup format this tool does not know"),
    (_meta_set("tool_version", ["0.1.0"]), "backup.json field tool_version"),
    (lambda meta, files: meta["etcd"].update(peer_url="ftp://x:1"),
     "backup.json field etcd.peer_url"),
    (_meta_set("cluster_ca_sha256", "AB" * 32),
     "backup.json field cluster_ca_sha256"),
    (_meta_set("node", "a" * 300), "backup.json field node"),
    (lambda meta, files: meta["etcd"].update(evil=1), "unknown field"),
], ids=["etcd-a-list", "created-a-string", "created-1e20", "node-a-map",
        "runtime-unknown", "ca-sha-an-int", "unknown-field", "image-a-list",
        "format-a-string", "tool-version-a-list", "peer-url-ftp",
        "ca-sha-uppercase", "node-too-long", "etcd-unknown-field"])
def test_restore_checks_backup_json_against_its_schema(backed_up, capsys,
                                                       change, expected):
    root, runner, path, _ = backed_up
    reset_host(root)
    rewrite_backup(path, change)
    assert_restore_refused(capsys, root, runner, path, expected)


def test_restore_of_a_deeply_nested_backup_json(backed_up, capsys):
    root, runner, path, _ = backed_up
    reset_host(root)
    write_backup_as_is(path, lambda files: files.update({
        "backup.json": b'{"format": 1, "x": ' + b"[" * 100000 +
        b"]" * 100000 + b"}"}))
    assert_restore_refused(capsys, root, runner, path, "unreadable backup.json")
