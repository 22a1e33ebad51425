"""bench/scale/net: an emulated cluster network on one machine. Each node
(server or worker) gets its own network namespace, joined by a veth pair to
one bridge that lives in a namespace of the harness too, so nothing touches
the host's network. Each node's link is shaped with tc tbf in both
directions: egress of the node's end (its uplink) and egress of the
bridge's end (its downlink), as a switch port of that rate would be.

Every namespace is named PREFIX-NAME, PREFIX unique to the run
(fsps-scale-<pid>), so parallel runs and other users' namespaces are never
touched; close() removes every namespace with that prefix, also ones a
failed set-up left half made.
"""
import json
import os
import subprocess

# Children are started through setpriv(1) with PDEATHSIG set, so none
# outlives the harness (as tests/integration/metrics_harness.py does: a
# preexec_fn would make subprocess fork a threaded process).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]
BRIDGE = "br0"
NODE_DEV = "eth0"


class NetError(Exception):
    """A command that sets the network up failed; the message says which."""


def sh(argv, check=True):
    """Runs argv; raises NetError with its stderr when it fails."""
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise NetError("%s: %s" % (" ".join(argv), p.stderr.strip()))
    return p.stdout


def netns_names():
    """The names `ip netns list` shows."""
    out = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def tbf(rate_bit, queue_kb=1024):
    """tc arguments of a token bucket of rate_bit bit/s. The bucket holds
    2 ms at the rate (at least 32 KiB, so one 1500-byte frame and small
    bursts pass at line rate; GSO frames larger than that are cut by tbf
    itself); the queue behind it holds queue_kb KiB, sized in bytes as a
    switch port's share of its buffer is (1 MiB: a 32 MB shared buffer
    over 32 ports), not in time: many flows arriving at once (incast)
    overflow it as they would the switch's."""
    rate_b = rate_bit / 8
    burst = max(32 * 1024, int(rate_b * 0.002))
    return ["tbf", "rate", "%dbit" % rate_bit, "burst", str(burst),
            "limit", str(int(queue_kb * 1024) + burst)]


class Net:
    """The namespaces, veth pairs, bridge and shapers of one run.

    nodes: names of the nodes (at most 15 characters, e.g. "s0", "w12");
    rate_bit: each link's rate in bit/s, each direction."""

    def __init__(self, prefix, nodes, rate_bit, mtu=1500, queue_kb=1024,
                 rto_min_ms=0):
        self.prefix = prefix
        self.rto_min_ms = rto_min_ms
        self.queue_kb = queue_kb
        self.mtu = mtu
        self.nodes = list(nodes)
        self.rate_bit = rate_bit
        self.bridge_ns = prefix + "-br"
        self.addrs = {n: "10.88.%d.%d" % (i // 250, i % 250 + 1)
                      for i, n in enumerate(self.nodes)}

    def ns(self, node):
        return "%s-%s" % (self.prefix, node)

    def addr(self, node):
        return self.addrs[node]

    def create(self):
        """Makes the bridge and every node's namespace and shaped link.
        On failure the caller's close() removes what was made."""
        sh(["ip", "netns", "add", self.bridge_ns])
        b = ["ip", "-n", self.bridge_ns]
        sh(b + ["link", "add", BRIDGE, "type", "bridge"])
        sh(b + ["link", "set", BRIDGE, "up"])
        for node in self.nodes:
            self._add_node(node)

    def _add_node(self, node):
        ns = self.ns(node)
        sh(["ip", "netns", "add", ns])
        # Both ends are made straight in their namespaces: no device ever
        # appears in the host's, so names cannot clash with anyone's.
        sh(["ip", "link", "add", NODE_DEV, "netns", ns, "mtu", str(self.mtu),
            "type", "veth", "peer", "name", node, "netns", self.bridge_ns,
            "mtu", str(self.mtu)])
        b = ["ip", "-n", self.bridge_ns, "link", "set", node]
        sh(b + ["master", BRIDGE])
        sh(b + ["up"])
        n = ["ip", "-n", ns]
        sh(n + ["addr", "add", self.addrs[node] + "/16", "dev", NODE_DEV])
        sh(n + ["link", "set", NODE_DEV, "up"])
        sh(n + ["link", "set", "lo", "up"])
        if self.rto_min_ms:  # as data centres lower it against incast
            sh(n + ["route", "replace", "10.88.0.0/16", "dev", NODE_DEV,
                    "rto_min", "%gms" % self.rto_min_ms])
        shape = tbf(self.rate_bit, self.queue_kb)
        sh(["tc", "-n", ns, "qdisc", "add", "dev", NODE_DEV, "root"] + shape)
        sh(["tc", "-n", self.bridge_ns, "qdisc", "add", "dev", node,
            "root"] + shape)

    def popen(self, node, argv, **kw):
        """Starts argv in node's namespace; it dies with the harness."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns(node)] +
                                DIE_WITH_PARENT + list(argv), **kw)

    def run(self, node, argv, **kw):
        """Runs argv to completion in node's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.ns(node)] +
                              DIE_WITH_PARENT + list(argv), **kw)

    def counters(self):
        """{node: (bytes to the node, bytes from the node)} so far, read
        on the bridge's end of each link (its tx is the node's downlink)."""
        out = sh(["ip", "-n", self.bridge_ns, "-s", "-j", "link", "show"])
        got = {}
        for dev in json.loads(out):
            name = dev.get("ifname")
            if name in self.addrs:
                st = dev["stats64"]
                got[name] = (st["tx"]["bytes"], st["rx"]["bytes"])
        missing = set(self.nodes) - set(got)
        if missing:
            raise NetError("no counters for %s" % sorted(missing))
        return got

    def tcp_stats(self, node):
        """{counter: value} of node's TCP counters (the namespace's
        /proc/net/snmp Tcp and /proc/net/netstat TcpExt lines)."""
        out = sh(["ip", "netns", "exec", self.ns(node), "cat",
                  "/proc/net/snmp", "/proc/net/netstat"])
        lines = out.splitlines()
        got = {}
        for head, vals in zip(lines[::2], lines[1::2]):
            keys, nums = head.split(), vals.split()
            if keys[0] in ("Tcp:", "TcpExt:") and keys[0] == nums[0]:
                got.update({k: int(v) for k, v in zip(keys[1:], nums[1:])
                            if v.lstrip("-").isdigit()})
        return got

    def shaped(self):
        """[(namespace, device, qdisc kind)] of every link end's root
        qdisc, as tc reports them (to show the shaping is in place)."""
        out = []
        for ns, dev in ([(self.ns(n), NODE_DEV) for n in self.nodes] +
                        [(self.bridge_ns, n) for n in self.nodes]):
            q = json.loads(sh(["tc", "-n", ns, "-j", "qdisc", "show",
                               "dev", dev]))
            out.append((ns, dev, q[0]["kind"] if q else None))
        return out

    def close(self):
        """Removes every namespace of this run's prefix (veth pairs and
        the bridge go with them). Returns the names still listed after."""
        mine = [n for n in netns_names() if n.startswith(self.prefix + "-")]
        # Nodes first, the bridge last: deleting a node's namespace
        # destroys its veth pair, whose other end is in the bridge's.
        for n in sorted(mine, key=lambda n: n == self.bridge_ns):
            sh(["ip", "netns", "del", n], check=False)
        return [n for n in netns_names() if n.startswith(self.prefix + "-")]


def default_prefix():
    return "fsps-scale-%d" % os.getpid()
