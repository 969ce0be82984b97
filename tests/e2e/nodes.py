"""Air-gapped kubeadm nodes as systemd containers on an --internal Docker network.

    python3 -m tests.e2e.nodes --image          # build (or reuse) the node image only

The node image: a Debian 12 root filesystem made with debootstrap (systemd, docker.io, containerd,
runc, python3, iptables, conntrack, socat, ebtables, ethtool, ...), imported with `tar | docker
import`, then finished with `docker build` (never a recursive file copy of a rootfs: device nodes).

LAB ONLY: this sandbox's capability bounding set lacks CAP_SYS_RESOURCE, so runc inside a node
cannot start privileged pods or pods with a negative oom_score_adj. The node image diverts
/usr/sbin/runc and puts a small wrapper in its place that drops CAP_SYS_RESOURCE and raises
process.oomScoreAdj to what the caller may set. Real hosts do not need it; k8s_offline.py never
sees it (docker and containerd just run `runc`, whatever daemon.json the tool writes).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from .common import (CACHE_DIR, DEBIAN_MIRROR, DEBIAN_SUITE, PREFIX, RUN_LABEL, log, out,
                     require_tools, run)

NODE_RECIPE = "2"
PID_LABEL = "org.k8s-offline.lab.pid"
SERVICE_CIDR = "10.96.0.0/12"  # kubeadm default service subnet
NODE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "iproute2", "iptables", "kmod", "procps",
                 "ca-certificates", "python3", "conntrack", "socat", "ebtables", "ethtool",
                 "util-linux", "mount", "docker.io", "containerd", "runc", "less",
                 # scenario cluster (`cluster up` over ssh): sshd and sudo, off until it turns them on
                 "openssh-server", "sudo"]
#: Masked in the node image: the packages' host keys are the image's, the same on every node, so
#: sshd runs only where a scenario gave the node keys of its own (ssh_on).
SSH_UNITS = ["ssh.service", "ssh.socket"]

RUNC_WRAPPER = r'''#!/usr/bin/python3
# k8s-offline AIR-GAP LAB ONLY (tests/e2e/nodes.py): this sandbox cannot grant CAP_SYS_RESOURCE,
# so drop it from every OCI process spec and raise a negative oomScoreAdj to the lowest value this
# process may set, then run the real runc. Not part of k8s-offline; real hosts do not need it.
import json
import os
import sys

REAL = "/usr/sbin/runc.k8so-lab-real"
VALUE_FLAGS = {"--root", "--log", "--log-format", "--criu", "--rootless"}


def fix_process(proc, cur):
    changed = False
    for key, caps in (proc.get("capabilities") or {}).items():
        if caps and "CAP_SYS_RESOURCE" in caps:
            proc["capabilities"][key] = [c for c in caps if c != "CAP_SYS_RESOURCE"]
            changed = True
    if "oomScoreAdj" in proc and proc["oomScoreAdj"] < cur:
        proc["oomScoreAdj"] = cur
        changed = True
    return changed


def rewrite(path, inner):
    with open(path) as f:
        doc = json.load(f)
    with open("/proc/self/oom_score_adj") as f:
        cur = int(f.read())
    proc = doc.get("process", {}) if inner else doc
    if fix_process(proc, cur):
        tmp = path + ".k8so-lab"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, path)


def main(args):
    i, cmd = 0, None
    while i < len(args):
        a = args[i]
        if a in VALUE_FLAGS:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        cmd = a
        break
    rest = args[i + 1:]
    if cmd in ("create", "run"):
        bundle = os.getcwd()
        for j, a in enumerate(rest):
            if a in ("--bundle", "-b") and j + 1 < len(rest):
                bundle = rest[j + 1]
            elif a.startswith("--bundle="):
                bundle = a.split("=", 1)[1]
        rewrite(os.path.join(bundle, "config.json"), True)
    elif cmd == "exec":
        for j, a in enumerate(rest):
            if a in ("--process", "-p") and j + 1 < len(rest):
                rewrite(rest[j + 1], False)
            elif a.startswith("--process="):
                rewrite(a.split("=", 1)[1], False)
    os.execv(REAL, [REAL] + args)


main(sys.argv[1:])
'''

RSHARED_UNIT = """[Unit]
Description=k8s-offline lab: make / rshared (as on a real host) before the runtimes start
DefaultDependencies=no
Before=docker.service containerd.service kubelet.service
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/bin/mount --make-rshared /
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""

DOCKERFILE = """FROM {base}
RUN dpkg-divert --local --rename --divert /usr/sbin/runc.k8so-lab-real --add /usr/sbin/runc
COPY rootfs/ /
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/sbin/init"]
LABEL org.k8s-offline.lab.node="{key}"
"""

# Units that make no sense in a container and only slow the boot or mark it degraded.
MASKED_UNITS = ["systemd-udevd.service", "systemd-udev-trigger.service", "getty@tty1.service",
                "console-getty.service", "systemd-modules-load.service", "sys-kernel-debug.mount",
                "sys-kernel-tracing.mount", "systemd-remount-fs.service", "e2scrub_reap.service",
                "systemd-firstboot.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                "e2scrub_all.timer", "fstrim.timer", "dpkg-db-backup.timer"]


def _docker_env():
    env = dict(os.environ)
    env["DOCKER_BUILDKIT"] = "0"
    return env


def image_exists(ref):
    return subprocess.run(["docker", "image", "inspect", ref], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def base_key():
    material = "\n".join([DEBIAN_SUITE, DEBIAN_MIRROR, " ".join(NODE_PACKAGES)])
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def node_key():
    material = "\n".join([base_key(), NODE_RECIPE, RUNC_WRAPPER, RSHARED_UNIT, DOCKERFILE,
                          " ".join(MASKED_UNITS), " ".join(SSH_UNITS)])
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def ensure_base_image():
    ref = "%s-node-base:%s" % (PREFIX, base_key())
    return debootstrap_image(ref, base_key(), NODE_PACKAGES)


def debootstrap_image(ref, key, packages, variant="minbase"):
    """Docker image `ref` of a Debian root filesystem made by debootstrap (cached by its tag;
    the rootfs itself lives under <cache>/node/<key> only while it is imported)."""
    if image_exists(ref):
        return ref
    require_tools(["debootstrap", "tar", "docker"])
    root = CACHE_DIR / "node" / key
    rootfs = root / "rootfs"
    if root.exists():
        # only ever removed with rm -rf of our own debootstrap dir (never copied)
        run(["rm", "-rf", "--one-file-system", root])
    root.mkdir(parents=True)
    t0 = time.monotonic()
    with open(str(root / "debootstrap.log"), "w") as logf:
        proc = subprocess.run(["debootstrap", "--variant=" + variant,
                               "--include=" + ",".join(packages), DEBIAN_SUITE, str(rootfs),
                               DEBIAN_MIRROR], stdout=logf, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError("debootstrap failed, see %s" % (root / "debootstrap.log"))
    log("debootstrap done in %.0fs" % (time.monotonic() - t0))
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (rootfs / d).glob("*"):
            if p.is_file():
                p.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*",
                            "--exclude=./proc/*", "--exclude=./sys/*", "-c", "."],
                           stdout=subprocess.PIPE)
    imp = subprocess.run(["docker", "import", "--message", "k8s-offline lab node base", "-", ref],
                         stdin=tar.stdout, stdout=subprocess.PIPE, universal_newlines=True)
    tar.stdout.close()
    if tar.wait() != 0 or imp.returncode != 0:
        raise RuntimeError("docker import of the node rootfs failed")
    run(["rm", "-rf", "--one-file-system", rootfs])
    log("node base image %s imported" % ref)
    return ref


def write_node_context(r):
    """The files every node image adds under rootfs dir r: the rshared unit, the masked units and
    the bundle's mount point."""
    units = r / "etc/systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "k8so-lab-rshared.service").write_text(RSHARED_UNIT)
    os.symlink("/etc/systemd/system/k8so-lab-rshared.service",
               str(units / "multi-user.target.wants" / "k8so-lab-rshared.service"))
    for u in MASKED_UNITS:
        os.symlink("/dev/null", str(units / u))
    (r / "media/usb").mkdir(parents=True)


def build_image(ref, dockerfile, write_rootfs):
    """docker build of `dockerfile` with a rootfs/ folder filled by write_rootfs(path)."""
    ctx = Path(tempfile.mkdtemp(prefix="k8so-lab-node-"))
    try:
        r = ctx / "rootfs"
        r.mkdir()
        write_rootfs(r)
        write_node_context(r)
        (ctx / "Dockerfile").write_text(dockerfile)
        # --network none: the steps need no network, so the build does not depend on the
        # default bridge (docker0) being there
        run(["docker", "build", "--network", "none", "-q", "-t", ref, ctx], env=_docker_env(),
            capture=True)
    finally:
        shutil.rmtree(str(ctx))
    log("node image %s built" % ref)
    return ref


def ensure_node_image():
    """Build (or reuse) the node image; returns its reference."""
    ref = "%s-node:%s" % (PREFIX, node_key())
    if image_exists(ref):
        log("node image %s is cached" % ref)
        return ref
    base = ensure_base_image()

    def rootfs(r):
        (r / "usr/sbin").mkdir(parents=True)
        (r / "usr/sbin/runc").write_text(RUNC_WRAPPER)
        os.chmod(str(r / "usr/sbin/runc"), 0o755)
        mask_ssh(r)
    return build_image(ref, DOCKERFILE.format(base=base, key=node_key()), rootfs)


def mask_ssh(r):
    """sshd off in the node image (rootfs dir r), see SSH_UNITS."""
    units = r / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    for u in SSH_UNITS:
        os.symlink("/dev/null", str(units / u))


def ssh_on(node):
    """Give the node host keys of its own (as a real host makes them on its first boot), unmask
    and start sshd; returns its public host keys ("type base64" lines)."""
    node.exec(["sh", "-c", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A && systemctl unmask %s "
               "&& systemctl daemon-reload && systemctl start ssh.service" % " ".join(SSH_UNITS)])
    keys = node.sh_out(["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"], quiet=True)
    return [" ".join(line.split()[:2]) for line in keys.splitlines() if line.strip()]


# --------------------------------------------------------------------------- running nodes

class Node(object):
    def __init__(self, lab, name, container):
        self.lab = lab
        self.name = name          # short name, also the hostname (e.g. node1)
        self.container = container

    def exec(self, argv, check=True, timeout=300, input=None, quiet=False, env=None):
        """Run argv inside the node; returns CompletedProcess with stdout/stderr captured."""
        pre = ["docker", "exec"]
        if input is not None:
            pre.append("-i")
        for k, v in (env or {}).items():
            pre += ["-e", "%s=%s" % (k, v)]
        return run(pre + [self.container] + list(argv), check=check, capture=True,
                   timeout=timeout, input=input, quiet=quiet)

    def sh_out(self, argv, **kw):
        return self.exec(argv, **kw).stdout.strip()

    def ip_cmd(self, *args, check=True, quiet=False):
        """This machine's `ip` run in the node's network namespace (a bare node has no iproute2)."""
        pid = out(["docker", "inspect", "-f", "{{.State.Pid}}", self.container], quiet=True)
        return run(["nsenter", "--target", pid, "--net", "--", "ip"] + list(args), check=check,
                   capture=True, quiet=quiet).stdout.strip()

    def ip(self):
        fmt = "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % self.lab.network
        return out(["docker", "inspect", "-f", fmt, self.container], quiet=True)

    def cp_in(self, src, dest):
        """docker cp into the node (not into its tmpfs mounts /run and /tmp: docker cp cannot)."""
        run(["docker", "cp", src, "%s:%s" % (self.container, dest)])

    def wait_booted(self, timeout=180, docker=True):
        """Wait until systemd is up (running/degraded) and docker answers inside the node (a bare
        node, docker=False, has no docker)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            p = self.exec(["systemctl", "is-system-running"], check=False, quiet=True)
            state = p.stdout.strip()
            if state in ("running", "degraded"):
                d = self.exec(["docker", "info", "-f", "{{.ServerVersion}}"], check=False,
                              quiet=True) if docker else None
                if d is None or d.returncode == 0:
                    if state == "degraded":
                        failed = self.sh_out(["systemctl", "--failed", "--no-legend", "--plain"],
                                             check=False, quiet=True)
                        log("%s is degraded (failed units: %s)" % (self.name, failed.replace("\n", "; ")))
                    return state
            time.sleep(1)
        raise RuntimeError("%s did not boot within %ds (systemd state %r)" % (self.name, timeout, state))

    def start_event_watch(self, timeout=60):
        """Record Docker image events inside the node (pull, load, tag, ...) from now on.

        Returns once the watcher is provably subscribed: it must have recorded the "prune" image
        event of an `docker image prune` run after it started (a no-op on a fresh node).
        """
        self.exec(["sh", "-c", "nohup docker events --filter type=image --format '{{json .}}' "
                   ">>/var/log/k8so-lab-docker-events.log 2>&1 &"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.exec(["docker", "image", "prune", "-f"], quiet=True)
            if any(e.get("Action") == "prune" for e in self.image_events()):
                return
            time.sleep(0.5)
        raise RuntimeError("docker events watcher on %s did not start" % self.name)

    def image_events(self):
        text = self.sh_out(["cat", "/var/log/k8so-lab-docker-events.log"], check=False, quiet=True)
        events = []
        for line in text.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return events

    def save_logs(self, dest):
        """Copy journal, kubelet/docker journal, kubeadm logs and events out of the node."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        cmds = {
            "journal.log": ["journalctl", "--no-pager", "-b"],
            "kubelet.log": ["journalctl", "--no-pager", "-b", "-u", "kubelet"],
            "docker.log": ["journalctl", "--no-pager", "-b", "-u", "docker", "-u", "containerd"],
            "docker-ps.txt": ["docker", "ps", "-a"],
            "docker-images.txt": ["docker", "images", "--digests"],
            "docker-image-events.log": ["cat", "/var/log/k8so-lab-docker-events.log"],
            # the pod network's and DNS's own logs (docker nodes; containerd nodes have none here)
            "network-pods.log": ["sh", "-c", "for c in $(docker ps -aq --filter name=k8s_kube-flannel "
                                 "--filter name=k8s_coredns --filter name=k8s_kube-proxy 2>/dev/null); do "
                                 "docker inspect -f '=== {{.Name}} {{.State.StartedAt}}' $c; "
                                 "docker logs --tail 200 $c 2>&1; done; ip neigh show dev flannel.1; "
                                 "bridge fdb show dev flannel.1; ip -d link show flannel.1"],
            # the same on containerd nodes (crictl), with the routes and this node's rules
            "cri-network-pods.log": ["sh", "-c", "command -v crictl >/dev/null || exit 0; "
                                     "c='crictl --runtime-endpoint unix:///run/containerd/containerd.sock'; "
                                     "for i in $($c ps -a -q --name 'kube-flannel|coredns|kube-proxy'); do "
                                     "$c inspect -o go-template --template '=== {{.status.metadata.name}} "
                                     "{{.status.startedAt}}' $i; echo; $c logs --tail 200 $i 2>&1; done; "
                                     "ip route; ip -d link show flannel.1; bridge fdb show dev flannel.1; "
                                     "ip neigh show dev flannel.1; cat /run/flannel/subnet.env; "
                                     "iptables-save 2>&1 | head -300"],
            "pods.txt": ["sh", "-c", "k='kubectl --kubeconfig /etc/kubernetes/admin.conf "
                         "--request-timeout 10s'; $k get pods -A -o wide; $k get nodes -o wide; "
                         "$k get events -A"],
        }
        for fname, argv in cmds.items():
            p = subprocess.run(["docker", "exec", self.container] + argv, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
            (dest / fname).write_bytes(p.stdout)
        found = subprocess.run(["docker", "exec", self.container, "find", "/", "-xdev", "(", "-name",
                                "kubeadm-init.log", "-o", "-name", "kubeadm-join.log", "-o", "-name",
                                "kubeadm-*.log", "-o", "-path", "/var/log/k8s-offline*", ")",
                                "-type", "f"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True, timeout=120).stdout.split()
        for path in found:
            target = dest / path.strip("/").replace("/", "__")
            subprocess.run(["docker", "cp", "%s:%s" % (self.container, path), str(target)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p = subprocess.run(["docker", "logs", self.container], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        (dest / "console.log").write_bytes(p.stdout)


def dead_gateway(node):
    """The last host address of the node's eth0 subnet: on the lab's internal network nobody
    holds it (Docker hands addresses out from the bottom), so a route via it leads nowhere."""
    import ipaddress
    cidr = node.ip_cmd("-4", "-o", "addr", "show", "dev", "eth0", quiet=True).split()[3]
    net = ipaddress.ip_interface(cidr).network
    return str(net.broadcast_address - 1)


class Lab(object):
    """Owns every Docker object and process of one lab run; stop() removes them all."""

    def __init__(self, workdir, image):
        self.run_id = "%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
        self.image = image
        self.workdir = Path(workdir)
        self.logdir = self.workdir / "logs"
        self.network = "%s-%s-net" % (PREFIX, self.run_id)
        self.containers = []
        self.volumes = []
        self.nodes = {}
        self.net_created = False

    def labels(self):
        return ["--label", "%s=%s" % (RUN_LABEL, self.run_id), "--label", "%s=%d" % (PID_LABEL, os.getpid())]

    def create_network(self):
        run(["docker", "network", "create", "--internal"] + self.labels() + [self.network])
        self.net_created = True

    def add_node(self, name, bundle_dir=None, image=None):
        """Boot one node container (not --privileged, see LAB-NOTES), bundle mounted read-only;
        image: another node image than the lab's (a bare node's)."""
        cname = "%s-%s-%s" % (PREFIX, self.run_id, name)
        argv = ["docker", "run", "-d", "--name", cname, "--hostname", name,
                "--network", self.network] + self.labels() + [
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined",
            "--device-cgroup-rule", "a *:* rwm", "--device", "/dev/kmsg",
            "--tmpfs", "/run:rw,exec,nosuid,nodev", "--tmpfs", "/tmp:rw,exec,nosuid,nodev",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "net.ipv4.conf.all.forwarding=1",
        ]
        if os.path.isdir("/lib/modules"):  # absent on kernels without loadable modules
            argv += ["-v", "/lib/modules:/lib/modules:ro"]
        for mnt in ("/var/lib/docker", "/var/lib/containerd", "/var/lib/kubelet"):
            vol = "%s-%s-%s-%s" % (PREFIX, self.run_id, name, mnt.strip("/").replace("/", "-"))
            run(["docker", "volume", "create"] + self.labels() + [vol], capture=True)
            self.volumes.append(vol)
            argv += ["-v", "%s:%s" % (vol, mnt)]
        if bundle_dir is not None:
            argv += ["-v", "%s:/media/usb:ro" % bundle_dir]
        self.containers.append(cname)
        run(argv + [image or self.image], capture=True)
        node = Node(self, name, cname)
        self.nodes[name] = node
        # Docker 20.10 still gives containers on an --internal network a default route to the
        # host's bridge address (forwarding is dropped, but the host itself answers). Remove it:
        # no node has a route out. The service CIDR stays on-link so that kube-proxy's DNAT of
        # 10.96.0.1 (looked up before DNAT) still works for host-network processes.
        node.ip_cmd("route", "del", "default", check=False)
        node.ip_cmd("route", "add", SERVICE_CIDR, "dev", "eth0")
        # A real host has a default route, and flanneld picks its interface from it ("failed to
        # get default interface" without one). Give the node one via an address nobody holds on
        # the internal network (its last host address): still no way out.
        node.ip_cmd("route", "add", "default", "via", dead_gateway(node), "dev", "eth0")
        # Docker points a container's resolv.conf at its embedded DNS, 127.0.0.11. A pod with
        # dnsPolicy Default (CoreDNS) gets the node's resolv.conf, and there 127.0.0.11:53 is the
        # pod's own loopback: CoreDNS forwards to itself and its loop plugin stops it ("Loop ...
        # detected"). A real air-gapped host names a LAN resolver: give the node one nobody
        # holds (the same dead address), so lookups of outside names fail, as they should.
        run(["docker", "exec", cname, "sh", "-c", "printf 'nameserver %s\\n' > /etc/resolv.conf"
             % dead_gateway(node)], quiet=True)
        return node

    def remove_node(self, name, save_logs=True):
        node = self.nodes.pop(name)
        if save_logs:
            self._save(node)
        run(["docker", "rm", "-f", "-v", node.container], check=False, capture=True)
        self.containers.remove(node.container)
        for vol in [v for v in self.volumes if v.startswith(node.container + "-")]:
            run(["docker", "volume", "rm", "-f", vol], check=False, capture=True)
            self.volumes.remove(vol)

    def _save(self, node):
        try:
            node.save_logs(self.logdir / node.name)
        except Exception as exc:  # logs are best effort; teardown must go on
            log("could not save logs of %s: %s" % (node.name, exc))

    def stop(self):
        """Save node logs, then remove every container, volume and the network of this run."""
        for node in list(self.nodes.values()):
            self._save(node)
        if self.nodes:
            log("node logs (journal, kubelet, docker, kubeadm-*.log) saved under %s" % self.logdir)
        for c in list(self.containers):
            run(["docker", "rm", "-f", "-v", c], check=False, capture=True)
        self.containers = []
        self.nodes = {}
        # anything else carrying this run's label (e.g. left by an interrupted add_node)
        reap(self.run_id)
        for v in list(self.volumes):
            run(["docker", "volume", "rm", "-f", v], check=False, capture=True)
        self.volumes = []
        if self.net_created:
            run(["docker", "network", "rm", self.network], check=False, capture=True)
            self.net_created = False


def reap(run_id=None):
    """Remove lab containers, networks and volumes of run_id, or of dead lab processes if None."""
    def stale(labels):
        if run_id is not None:
            return labels.get(RUN_LABEL) == run_id
        pid = labels.get(PID_LABEL)
        return pid is not None and pid.isdigit() and not os.path.exists("/proc/%s" % pid)

    flt = ["--filter", "label=%s" % RUN_LABEL]
    for kind, ls, rm in (("container", ["docker", "ps", "-aq"], ["docker", "rm", "-f", "-v"]),
                         ("network", ["docker", "network", "ls", "-q"], ["docker", "network", "rm"]),
                         ("volume", ["docker", "volume", "ls", "-q"], ["docker", "volume", "rm", "-f"])):
        ids = out(ls + flt, quiet=True).split()
        for obj in ids:
            fmt = "{{json .Labels}}" if kind != "container" else "{{json .Config.Labels}}"
            insp = ["docker", kind, "inspect", "-f", fmt, obj] if kind != "container" else \
                ["docker", "inspect", "-f", fmt, obj]
            p = subprocess.run(insp, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True)
            if p.returncode != 0:
                continue
            labels = json.loads(p.stdout.strip() or "{}") or {}
            if stale(labels):
                run(rm + [obj], check=False, capture=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.e2e.nodes")
    ap.add_argument("--image", action="store_true", help="build (or reuse) the node image")
    ap.add_argument("--reap", action="store_true", help="remove leftovers of dead lab runs")
    args = ap.parse_args(argv)
    if args.reap:
        reap()
    if args.image:
        t0 = time.monotonic()
        print(ensure_node_image())
        log("node image ready in %.0fs" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
