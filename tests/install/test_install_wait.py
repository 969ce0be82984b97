"""The wait phase of master and join (issue 21): it returns when what a user
needs works (kubectl, a fresh Ready node, the API server's /readyz, the
controller-manager's and scheduler's health, flannel on the node, CoreDNS
answering), not when the kubelet's Ready flags of the static pods catch up;
and `reset` of a worker takes its Node out of the cluster, so a join right
after it is not refused or fooled by the old Node.  The real health and DNS
probes run against loopback servers at the end."""

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import install_support as sup
from install_support import ko, run


def _master(root, bundle_dir, *extra):
    return run(root, bundle_dir, "master", "--skip-phases", "join-file",
               *extra)


def _lagging_static_pods():
    return [sup.pod_json("etcd-node-a", static=True, ready=False),
            sup.pod_json("kube-scheduler-node-a", static=True, ready=False),
            sup.pod_json("kube-controller-manager-node-a", static=True,
                         ready=False),
            sup.pod_json("kube-apiserver-node-a", static=True, ready=False),
            sup.pod_json("coredns-1"), sup.flannel_pod_json()]


def test_master_does_not_wait_for_the_static_pods_ready_lag(host, bundle_dir,
                                                           capsys):
    root, runner = host
    runner.cluster.pods = _lagging_static_pods()
    assert _master(root, bundle_dir, "--wait-timeout", "60") == 0
    err = capsys.readouterr().err
    lag = [line for line in err.splitlines() if "still reports" in line]
    assert len(lag) == 1, err
    for name in ("etcd-node-a", "kube-scheduler-node-a",
                 "kube-controller-manager-node-a", "kube-apiserver-node-a"):
        assert name in lag[0]
    assert "not waiting" in lag[0]
    # it did check what matters: /readyz, both health ports, CoreDNS
    assert runner.ran("kubectl", "--kubeconfig", ko.ADMIN_CONF, "get",
                      "--raw", "/readyz")
    ports = set(port for _, port, _, _ in runner.cluster.health_asked)
    assert ports == set(ko.profile(sup.K8S_VERSION)["control_plane_ports"])
    assert runner.cluster.dns_asked == [
        ("10.96.0.10", "kubernetes.default.svc.cluster.local")] * len(
            runner.cluster.dns_asked) and runner.cluster.dns_asked
    # no time spent: the first round saw everything working
    assert runner.clock["t"] - 1600000000.0 < 2 * ko.WAIT_POLL


def test_a_static_pod_not_ready_whose_health_fails_is_waited_for(
        host, bundle_dir, capsys):
    root, runner = host
    runner.cluster.pods = _lagging_static_pods()
    scheduler = ko.profile(sup.K8S_VERSION)["control_plane_ports"][0]
    runner.cluster.health[scheduler] = False
    assert _master(root, bundle_dir, "--wait-timeout", "30") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the cluster was not ready after 30 s")
    assert "kube-scheduler" in last and "connection refused" in last
    assert "still reports" not in err


def test_a_ready_scheduler_whose_health_fails_is_still_waited_for(
        host, bundle_dir, capsys):
    """The health endpoints are checked even when every pod looks Ready."""
    root, runner = host
    controller_manager = ko.profile(sup.K8S_VERSION)["control_plane_ports"][1]
    runner.cluster.health[controller_manager] = False
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "kube-controller-manager" in last and "%d" % controller_manager in last


def test_master_waits_for_readyz(host, bundle_dir, capsys):
    root, runner = host
    runner.cluster.readyz = (1, "[-]etcd failed: reason withheld\nreadyz check failed")
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the API server" in last and "readyz check failed" in last


def test_master_waits_until_coredns_answers(host, bundle_dir, capsys):
    root, runner = host
    asked = {"n": 0}

    def answers():
        asked["n"] += 1
        return asked["n"] >= 4
    runner.cluster.dns_answers = answers
    assert _master(root, bundle_dir, "--wait-timeout", "60") == 0
    assert asked["n"] == 4
    assert "CoreDNS" in capsys.readouterr().err
    runner.cluster.dns_answers = False
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "CoreDNS" in last and "10.96.0.10" in last


def test_master_waits_for_flannel_on_its_node(host, bundle_dir, capsys):
    """A Ready node is not enough: flannel's pod on it must run (its init
    container alone writes the CNI config that makes the node Ready)."""
    root, runner = host
    runner.cluster.pods = [sup.pod_json("etcd-node-a", static=True),
                           sup.pod_json("coredns-1"),
                           sup.flannel_pod_json(node="node-b")]
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "flannel on node node-a" in last


def test_a_crash_looping_static_pod_is_not_lag(host, bundle_dir, capsys):
    root, runner = host
    runner.cluster.pods = [
        sup.pod_json("kube-scheduler-node-a", "Running", "CrashLoopBackOff",
                     static=True),
        sup.pod_json("coredns-1"), sup.flannel_pod_json()]
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "kube-scheduler-node-a" in last and "CrashLoopBackOff" in last


def test_master_does_not_wait_for_every_coredns_replica(host, bundle_dir,
                                                        capsys):
    """CoreDNS answering through its Service is what a user needs; a second
    replica still starting is not waited for."""
    root, runner = host
    runner.cluster.pods = [
        sup.pod_json("etcd-node-a", static=True),
        sup.pod_json("coredns-1", labels={"k8s-app": "kube-dns"}),
        sup.pod_json("coredns-2", labels={"k8s-app": "kube-dns"}, ready=False),
        sup.flannel_pod_json()]
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 0
    runner.cluster.dns_answers = False
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "CoreDNS" in last


def test_the_wait_polls_once_a_second_counting_its_own_checks(
        host, bundle_dir):
    """A round's checks (kubectl runs) count toward the poll interval: the
    wait sleeps only what is left of it, so a change is seen within about a
    second, not a second plus the round's own time."""
    root, runner = host
    runner.cluster.kubectl_seconds = 0.1
    asked = {"n": 0}

    def answers():
        asked["n"] += 1
        return asked["n"] >= 3
    runner.cluster.dns_answers = answers
    assert _master(root, bundle_dir, "--wait-timeout", "60") == 0
    rounds = [seconds for seconds in runner.slept if seconds <= ko.WAIT_POLL]
    assert len(rounds) == 2, runner.slept
    for seconds in rounds:
        assert 0 < seconds < ko.WAIT_POLL


def _coredns_not_ready_yet(pod_ip="10.244.0.3"):
    return [sup.pod_json("etcd-node-a", static=True),
            sup.coredns_pod_json("coredns-1", ready=False, pod_ip=pod_ip),
            sup.flannel_pod_json()]


def test_master_does_not_wait_for_coredns_ready_lag(host, bundle_dir, capsys):
    """CoreDNS answers at its own pod address while the kubelet has not yet
    marked it ready (its readiness probe runs every 10 s, and the kube-dns
    Service follows that flag): master says so in one line, and returns."""
    root, runner = host
    runner.cluster.pods = _coredns_not_ready_yet()
    runner.cluster.dns_answers = {"10.244.0.3": True}
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 0
    err = capsys.readouterr().err
    lag = [line for line in err.splitlines() if "CoreDNS answers at" in line]
    assert len(lag) == 1, err
    assert "coredns-1" in lag[0] and "10.244.0.3" in lag[0]
    assert "not waiting" in lag[0]
    assert "still reports" not in err      # the static pods' line: no lag
    # the Service was asked first, then the pod
    assert runner.cluster.dns_asked[:2] == [
        ("10.96.0.10", "kubernetes.default.svc.cluster.local"),
        ("10.244.0.3", "kubernetes.default.svc.cluster.local")]


def test_a_ready_coredns_the_service_does_not_reach_is_waited_for(
        host, bundle_dir, capsys):
    """When the kubelet reports CoreDNS ready, the Service has its endpoint:
    if the Service still does not answer (kube-proxy), that is no lag."""
    root, runner = host
    runner.cluster.pods = [sup.pod_json("etcd-node-a", static=True),
                           sup.coredns_pod_json("coredns-1", ready=True),
                           sup.flannel_pod_json()]
    runner.cluster.dns_answers = {"10.244.0.3": True}
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "CoreDNS" in last and "10.96.0.10" in last


def test_coredns_not_answering_at_its_pod_is_waited_for(host, bundle_dir,
                                                        capsys):
    root, runner = host
    runner.cluster.pods = _coredns_not_ready_yet()
    runner.cluster.dns_answers = {}
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "CoreDNS" in last and "10.96.0.10" in last
    assert ("10.244.0.3", "kubernetes.default.svc.cluster.local") in (
        runner.cluster.dns_asked)


def test_a_coredns_pod_address_is_checked_before_it_is_asked(
        host, bundle_dir, capsys):
    """The pod address comes from the API: one that is no IPv4 address is
    never asked."""
    root, runner = host
    runner.cluster.pods = _coredns_not_ready_yet(pod_ip="10.244.0.3:53;x")
    runner.cluster.dns_answers = {"10.244.0.3:53;x": True}
    assert _master(root, bundle_dir, "--wait-timeout", "20") == 2
    assert set(server for server, _ in runner.cluster.dns_asked) == {
        "10.96.0.10"}


def _join(root, bundle_dir, tmp_path, *extra):
    path = sup.write_join_file(tmp_path)
    return run(root, bundle_dir, "join", "--join-file", path, *extra)


def test_worker_wait_is_not_fooled_by_a_ready_status_from_before_its_join(
        host, bundle_dir, tmp_path, capsys):
    """Right after a reset the cluster may still hold the old Node, Ready:
    the join waits for the Ready its own kubelet reports (the heartbeat is
    the kubelet's clock, this host's)."""
    root, runner = host
    runner.cluster.node_heartbeat = runner.clock["t"] - 300
    gets = {"n": 0}
    original = runner.answer

    def answer(argv):
        if argv[0] == "kubectl" and "node" in argv:
            gets["n"] += 1
            if gets["n"] == 3:
                runner.cluster.node_heartbeat = runner.clock["t"]
        return original(argv)
    runner.answer = answer
    assert _join(root, bundle_dir, tmp_path, "--wait-timeout", "60") == 0
    err = capsys.readouterr().err
    assert "from before this run's kubeadm join" in err
    assert gets["n"] >= 3


def test_worker_wait_is_not_fooled_by_a_pod_status_from_before_its_join(
        host, bundle_dir, tmp_path, capsys):
    root, runner = host
    old = sup.flannel_pod_json()
    old["status"]["containerStatuses"][0]["state"] = {"running": {
        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(
            runner.clock["t"] - 600))}}
    runner.cluster.pods = [old]
    assert _join(root, bundle_dir, tmp_path, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "kube-flannel-ds-node-a" in last and "from before this run's " \
        "kubeadm join" in last


def test_worker_waits_for_flannel_on_its_node_with_its_own_credentials(
        host, bundle_dir, tmp_path, capsys):
    root, runner = host
    runner.cluster.pods = [sup.flannel_pod_json(node="node-a", ready=False)]
    assert _join(root, bundle_dir, tmp_path, "--wait-timeout", "20") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "kube-flannel-ds-node-a" in last
    lists = [a for a in runner.commands() if a[0] == "kubectl" and "pods" in a]
    assert lists and all(a[2] == ko.KUBELET_CONF for a in lists)
    # a node may list only the pods bound to it
    assert all("spec.nodeName=node-a" in a for a in lists)
    assert not runner.ran("kubectl", "--kubeconfig", ko.KUBELET_CONF, "get",
                          "--raw", "/readyz")
    assert not runner.cluster.dns_asked


def _joined_worker(root, bundle_dir, tmp_path):
    assert _join(root, bundle_dir, tmp_path, "--no-wait") == 0


def test_reset_of_a_worker_reports_its_node_not_ready(
        host, bundle_dir, tmp_path, capsys):
    """A node may not delete its Node (the lab: Forbidden) but may update its
    status: reset reports it NotReady, so kubeadm join (1.18 on) takes the
    name at once and no wait takes the old Ready for the new."""
    root, runner = host
    _joined_worker(root, bundle_dir, tmp_path)
    replace = ("kubectl", "--kubeconfig", ko.KUBELET_CONF, "replace", "--raw",
               "/api/v1/nodes/node-a/status", "-f")
    sent = []
    original = runner.answer

    def answer(argv):
        if tuple(argv[:len(replace)]) == replace:
            with open(sup.rpath(root, ko.NODE_STATUS_FILE)) as handle:
                sent.append(json.load(handle))
        return original(argv)
    runner.answer = answer
    runner.expect("systemctl", "stop", "kubelet")
    runner.expect(*replace)
    assert ko.main(["reset", "--yes", "--root", root]) == 0
    cmds = runner.commands()
    stop = cmds.index(["systemctl", "stop", "kubelet"])
    put = [i for i, a in enumerate(cmds) if tuple(a[:len(replace)]) == replace]
    reset = [i for i, a in enumerate(cmds) if a[:3] == ["kubeadm", "reset", "-f"]]
    # the kubelet is stopped first (it would report Ready again)
    assert put and reset and stop < put[0] < reset[-1]
    ready = [c for c in sent[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "False"
    assert sent[0]["metadata"]["name"] == "node-a"
    assert "node node-a reported NotReady" in capsys.readouterr().err


def test_reset_of_a_worker_goes_on_when_the_cluster_is_unreachable(
        host, bundle_dir, tmp_path, capsys):
    root, runner = host
    _joined_worker(root, bundle_dir, tmp_path)
    runner.expect("systemctl", "stop", "kubelet")
    runner.expect("kubectl", "--kubeconfig", ko.KUBELET_CONF, "replace",
                  rc=1, out="Unable to connect to the server: dial tcp: i/o timeout")
    assert ko.main(["reset", "--yes", "--root", root]) == 0
    err = capsys.readouterr().err
    assert "remove-node node-a" in err and "warning:" in err
    assert runner.ran("kubeadm", "reset", "-f")


def test_reset_of_a_master_reports_no_node(host, bundle_dir, capsys):
    root, runner = host
    assert _master(root, bundle_dir, "--no-wait") == 0
    assert ko.main(["reset", "--yes", "--root", root]) == 0
    assert not [a for a in runner.commands() if "replace" in a]


def test_reset_dry_run_deletes_nothing(host, bundle_dir, tmp_path, capsys):
    root, runner = host
    _joined_worker(root, bundle_dir, tmp_path)
    before = len(runner.commands())
    assert ko.main(["reset", "--yes", "--dry-run", "--root", root]) == 0
    assert not [a for a in runner.commands()[before:]
                if "replace" in a or a[:2] == ["systemctl", "stop"]]
    assert "would report node node-a NotReady" in capsys.readouterr().err


# -- the real probes, against loopback servers ------------------------------

class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.server.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def _serve(status):
    server = HTTPServer(("127.0.0.1", 0), _Health)
    server.status = status
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_health_problem_asks_a_real_http_server():
    good, bad = _serve(200), _serve(500)
    try:
        assert ko.health_problem("127.0.0.1", good.server_port, "/healthz",
                                 "http") is None
        assert "500" in ko.health_problem("127.0.0.1", bad.server_port,
                                          "/healthz", "http")
    finally:
        good.shutdown()
        bad.shutdown()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert ko.health_problem("127.0.0.1", port, "/healthz", "http")
    # https to a plain HTTP server: an error, not a traceback
    plain = _serve(200)
    try:
        assert ko.health_problem("127.0.0.1", plain.server_port, "/healthz",
                                 "https")
    finally:
        plain.shutdown()


def _dns_server(rcode, answers):
    """A UDP responder on loopback: echoes the question with rcode and
    `answers` A records of 10.96.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    seen = []

    def serve():
        data, peer = sock.recvfrom(512)
        seen.append(data)
        ident = data[:2]
        question = data[12:]
        reply = ident + struct.pack(">HHHHH", 0x8180 | rcode, 1, answers, 0, 0)
        reply += question
        for _ in range(answers):
            reply += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + \
                socket.inet_aton("10.96.0.1")
        sock.sendto(reply, peer)
        sock.close()
    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1], seen


def test_dns_answers_asks_a_real_udp_server():
    port, seen = _dns_server(0, 1)
    assert ko.dns_answers("127.0.0.1", "kubernetes.default.svc.cluster.local",
                          port=port, timeout=2) is True
    assert b"\x0akubernetes\x07default\x03svc\x07cluster\x05local\x00" in seen[0]
    port, _ = _dns_server(3, 0)          # NXDOMAIN
    assert ko.dns_answers("127.0.0.1", "kubernetes.default.svc.cluster.local",
                          port=port, timeout=2) is False
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        assert ko.dns_answers("127.0.0.1", "x.cluster.local",
                              port=silent.getsockname()[1], timeout=0.2) is False
    finally:
        silent.close()
