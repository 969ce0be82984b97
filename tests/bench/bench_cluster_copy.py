#!/usr/bin/env python3
"""How the copy of the bundle to N hosts grows with N (issue 20, item 4).

Hosts: network namespaces of this script's own (k8sob1..8, 10.221.0.11-18)
and the sender in one more (k8sobop, 10.221.0.2), all on one bridge; every
veth end is limited to RATE by tc tbf, so that each host, and the sender,
has one "NIC" of that speed.  Each host runs its own sshd and has its own
user (its home is its disk).  For N = 1, 2, 4, 8 it times, from the sender:
  scp       plain scp to one host after the other;
  cluster   cluster's copy phase (ssh streams, --parallel 8);
  fan-out   cluster's copy phase with --fan-out (hosts pass it on).
Run as root: python3 tests/bench/bench_cluster_copy.py [--size-mib 64]
[--rate 200mbit] [--rounds 1].  Everything made is removed at the end.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "k8s_offline.py")
sys.path.insert(0, os.path.dirname(HERE))

from fixtures import sshkeys  # noqa: E402
HOSTS = 8
BRIDGE = "k8sobr0"
SWITCH = "k8sobsw"      # the bridge's own namespace: no host firewall on it
SENDER = "k8sobop"


def sh(*argv, **kwargs):
    return subprocess.run(list(argv), check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          **kwargs)


def address(number):
    return "10.221.0.%d" % (10 + number)


def user(number):
    return "k8sob%d" % number


def link(netns, ip, name, rate):
    """netns on the bridge at ip through a veth limited to rate both ways."""
    outer, inner = name + "h", name + "n"
    sh("ip", "netns", "add", netns)
    sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
    sh("ip", "link", "set", inner, "netns", netns)
    sh("ip", "link", "set", outer, "netns", SWITCH)
    sh("ip", "netns", "exec", SWITCH, "ip", "link", "set", outer, "master",
       BRIDGE, "up")
    sh("ip", "netns", "exec", netns, "ip", "addr", "add", ip + "/24", "dev",
       inner)
    sh("ip", "netns", "exec", netns, "ip", "link", "set", inner, "up")
    sh("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
    for where, dev in ((SWITCH, outer), (netns, inner)):
        prefix = ["ip", "netns", "exec", where]
        sh(*prefix + ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                      rate, "burst", "256kb", "latency", "100ms"])


class Bench(object):
    def __init__(self, rate):
        self.rate = rate
        self.base = tempfile.mkdtemp(prefix="k8sob-")
        os.chmod(self.base, 0o755)
        self.key = None
        self.known = os.path.join(self.base, "known_hosts")
        self.sshds = []

    def up(self):
        sh("ip", "netns", "add", SWITCH)
        sh("ip", "netns", "exec", SWITCH, "ip", "link", "add", BRIDGE, "type",
           "bridge")
        sh("ip", "netns", "exec", SWITCH, "ip", "link", "set", BRIDGE, "up")
        link(SENDER, "10.221.0.2", "k8sobo", self.rate)
        users = [user(number) for number in range(1, HOSTS + 1)]
        self.key, hostkey, public, keys = sshkeys.make_keys(self.base, users)
        with open(self.known, "w") as handle:
            for number in range(1, HOSTS + 1):
                handle.write("%s %s\n" % (address(number), public))
        for number in range(1, HOSTS + 1):
            sshkeys.add_user(user(number), "bench-%d" % number)
            link("k8sob%d" % number, address(number), "k8sob%d" % number,
                 self.rate)
            config = os.path.join(self.base, "sshd%d" % number)
            with open(config, "w") as handle:
                handle.write("\n".join([
                    "ListenAddress %s" % address(number), "Port 22",
                    "HostKey %s" % hostkey,
                    "PidFile %s/sshd%d.pid" % (self.base, number),
                    "AuthorizedKeysFile %s/%%u" % keys, "StrictModes no",
                    "UsePAM no", "PasswordAuthentication no",
                    "AllowUsers %s" % user(number),
                    "Subsystem sftp internal-sftp", ""]))
            self.sshds.append(subprocess.Popen(
                ["ip", "netns", "exec", "k8sob%d" % number, "/usr/sbin/sshd",
                 "-D", "-e", "-f", config], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd")
        time.sleep(1)

    def down(self):
        for proc in self.sshds:
            proc.terminate()
            proc.wait(10)
        for number in range(1, HOSTS + 1):
            subprocess.call(["ip", "netns", "del", "k8sob%d" % number])
            subprocess.call(["userdel", "-r", "-f", user(number)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        subprocess.call(["ip", "netns", "del", SENDER])
        subprocess.call(["ip", "netns", "del", SWITCH])
        shutil.rmtree(self.base, ignore_errors=True)

    def clean_hosts(self):
        for number in range(1, HOSTS + 1):
            shutil.rmtree("/home/%s/k8s-offline" % user(number),
                          ignore_errors=True)

    def inventory(self, count):
        path = os.path.join(self.base, "inventory-%d.ini" % count)
        with open(path, "w") as handle:
            handle.write("[kube_control_plane]\n")
            for number in range(1, count + 1):
                handle.write("n%d ansible_host=%s ansible_user=%s\n" % (
                    number, address(number), user(number)))
                if number == 1:
                    handle.write("[kube_node]\n")
            handle.write("[all:vars]\nansible_ssh_private_key_file=%s\n"
                         % self.key)
        return path

    def in_sender(self, *argv):
        start = time.time()
        sh("ip", "netns", "exec", SENDER, *argv)
        return time.time() - start


PHASE = r"""
import sys, time
sys.path.insert(0, %(repo)r)
import k8s_offline as ko
ko.setup_logging()
args = ko.build_parser().parse_args(["cluster", "up", "-i", %(inventory)r,
    "--bundle", %(big)r, "--known-hosts", %(known)r, "--parallel", "8",
    "--log-dir", %(logs)r, "--no-progress"] + %(extra)r)
hosts, where = ko.cluster_hosts(args)
ctx = ko.ClusterContext(args, hosts, where)
ctx.found.bundle_files, ctx.found.bundle_name = [%(big)r], "big.tar"
for host in hosts:
    ko.find_home(ctx, host)
start = time.time()
ko.cluster_phase_copy(ctx)
took = time.time() - start
ctx.close()
assert not ctx.failed, ctx.failed
print(took)
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rate", default="200mbit")
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    bench = Bench(options.rate)
    results = []
    try:
        bench.up()
        big = os.path.join(bench.base, "big.tar")
        with open(big, "wb") as handle:
            for _ in range(options.size_mib):
                handle.write(os.urandom(1 << 20))
        for count in (1, 2, 4, 8):
            inventory = bench.inventory(count)
            for _ in range(options.rounds):
                row = {"hosts": count}
                bench.clean_hosts()
                start = time.time()
                for number in range(1, count + 1):
                    sh("ip", "netns", "exec", SENDER, "ssh", "-i", bench.key,
                       "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=%s"
                       % bench.known, "%s@%s" % (user(number), address(number)),
                       "mkdir -p k8s-offline")
                    sh("ip", "netns", "exec", SENDER, "scp", "-q", "-i",
                       bench.key, "-o", "BatchMode=yes", "-o",
                       "UserKnownHostsFile=%s" % bench.known, big,
                       "%s@%s:k8s-offline/" % (user(number), address(number)))
                row["scp"] = time.time() - start
                for mode, extra in (("cluster", []), ("fan-out", ["--fan-out"])):
                    bench.clean_hosts()
                    script = PHASE % {"repo": REPO, "inventory": inventory,
                                      "big": big, "known": bench.known,
                                      "logs": os.path.join(bench.base, "logs"),
                                      "extra": extra}
                    out = sh("ip", "netns", "exec", SENDER, sys.executable,
                             "-c", script).stdout
                    row[mode] = float(out.strip().splitlines()[-1])
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        bench.down()
    print("hosts  scp one by one  cluster (--parallel 8)  cluster --fan-out")
    for row in results:
        print("%5d  %13.1f s  %20.1f s  %15.1f s" % (
            row["hosts"], row["scp"], row["cluster"], row["fan-out"]))


if __name__ == "__main__":
    main()
