#!/usr/bin/python3
"""The status page (`/` beside /metrics) end to end, in Debian's headless
Chromium.

- On a 2-server, 2-worker run, each process's page, rendered by Chromium
  with its scripts run (--dump-dom), shows the live values: on a server
  the layers /metrics names, each version between the versions /metrics
  gave just before and just after, the pending step, the workers it waits
  for and push and pull rates; on a worker its step (between the steps
  /metrics gave around it, and past 0), a numeric loss, samples/s and a
  chart of each with points. The page's script has fetched /status.json
  (#live says so). The page served without scripts already holds the
  values, and a screenshot of each page is a real picture (PNG of the
  window's size, not of one colour).
- Layer names a client chose to be HTML and script stay text: in the
  HTML served, in the JSON, and in the page Chromium renders after its
  script redrew the table.

Chromium must be installed (scripts/setup.sh installs it): without it the
test fails, it does not skip.

Usage: test_status_page.py --bin BUILD_DIR --proto PATH/fsps.proto
"""
import argparse
import html.parser
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import zlib

# gRPC's fork handlers can deadlock a later subprocess launch (see
# test_faults.py); no child of this test uses gRPC.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
import grpc  # noqa: E402

from metrics_harness import (DIE_WITH_PARENT, Cluster, Proc, fetch, parse,
                             scrape, server_argv, wait_file)

ARGS = None
WINDOW = (1000, 760)
# Chromium runs the page's scripts in virtual time: 5 s of it is three
# fetches of /status.json, two seconds apart.
VIRTUAL_MS = 5000
CHROMIUM_TIMEOUT = 300  # seconds; a loaded CI machine is slow to start it


def chromium_path():
    path = shutil.which("chromium")
    if path is None:
        raise AssertionError(
            "chromium is not installed: the status page is tested in "
            "Debian's headless Chromium (apt-get install chromium; "
            "scripts/setup.sh installs it)")
    return path


def chromium(tmp, url, *flags):
    """Runs headless Chromium on url with its own profile in tmp; returns
    its stdout. Fails with its stderr when it fails."""
    profile = tempfile.mkdtemp(dir=tmp, prefix="chromium-")
    env = dict(os.environ, HOME=profile, XDG_CONFIG_HOME=profile,
               XDG_CACHE_HOME=profile)
    argv = DIE_WITH_PARENT + [
        chromium_path(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--mute-audio",
        "--user-data-dir=" + profile,
        "--virtual-time-budget=%d" % VIRTUAL_MS] + list(flags) + [url]
    # Its own session, so that on a timeout its helpers go with it.
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise AssertionError("chromium on %s took over %d s"
                             % (url, CHROMIUM_TIMEOUT))
    if p.returncode != 0:
        raise AssertionError("chromium on %s exited %d:\n%s" % (
            url, p.returncode, err.decode(errors="replace")[-3000:]))
    return out.decode()


def dump_dom(tmp, port):
    text = chromium(tmp, "http://127.0.0.1:%d/" % port, "--dump-dom")
    if "</html>" not in text:
        raise AssertionError("chromium dumped no page:\n" + text[-2000:])
    return Dom(text)


def screenshot(tmp, port, name):
    path = os.path.join(tmp, name + ".png")
    chromium(tmp, "http://127.0.0.1:%d/" % port, "--screenshot=" + path,
             "--window-size=%d,%d" % WINDOW, "--hide-scrollbars")
    with open(path, "rb") as f:
        return f.read()


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children, self.parts = [], []

    def text(self):
        return "".join(self.parts)

    def classes(self):
        return (self.attrs.get("class") or "").split()


class Dom(html.parser.HTMLParser):
    """The page as a tree of Nodes, text and attributes unescaped."""
    VOID = {"meta", "link", "br", "img", "input", "hr", "area", "base",
            "col", "embed", "source", "track", "wbr"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", [], None)
        self.cur, self.all = self.root, []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        self.all.append(n)
        if tag not in self.VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        self.all.append(n)

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        n = self.cur
        while n is not None:
            n.parts.append(data)
            n = n.parent

    def by_id(self, ident):
        for n in self.all:
            if n.attrs.get("id") == ident:
                return n
        raise AssertionError("no element #%s in the page" % ident)

    def tags(self, tag):
        return [n for n in self.all if n.tag == tag]

    def layer_rows(self):
        """[(name, version text, pending text, missing text)] of the
        layers' table, in order."""
        rows = []
        for tr in self.tags("tr"):
            if not (tr.attrs.get("id") or "").startswith("layer-"):
                continue
            cells = {c: td.text() for td in tr.children if td.tag == "td"
                     for c in td.classes()}
            rows.append((cells["name"], cells["version"], cells["pending"],
                         cells["missing"]))
        return rows


def png_info(data):
    """(width, height) of a PNG; fails unless it is one, and one that is
    not all a single colour."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG: %r" % data[:16]
    width, height = struct.unpack(">II", data[16:24])
    idat, at = b"", 8
    while at < len(data):
        n, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"IDAT":
            idat += data[at + 8:at + 8 + n]
        at += 12 + n
    pixels = zlib.decompress(idat)
    assert len(set(pixels[::7])) > 8, "the screenshot is blank"
    return width, height


def check_clean(test, procs):
    """No process reported a sanitizer error while the pages were read
    (their exit statuses are checked as they stop)."""
    for p in procs:
        test.assertIsNone(p.sanitizer_report(), p.tag + ":\n" + p.logged())


def versions(samples):
    """{layer name: version} from a server's /metrics."""
    out = {}
    for (name, labels), v in samples.items():
        if name == "fsps_layer_version":
            out[re.search(r'name="([^"]*)"', labels).group(1)] = v
    return out


def number(text):
    v = float(text)
    assert math.isfinite(v), text
    return v


def polyline(dom, ident):
    pts = [tuple(map(float, p.split(",")))
           for p in dom.by_id(ident).attrs.get("points", "").split()]
    for x, y in pts:
        assert 0 <= x <= 560 and 0 <= y <= 166, (ident, x, y)
    return pts


class StatusPageTest(unittest.TestCase):
    def test_live_values_in_chromium(self):
        chromium_path()
        with tempfile.TemporaryDirectory() as tmp:
            with Cluster(ARGS.bin, tmp) as c:
                c.wait_steps(5, timeout=300)
                for p in c.servers:
                    self.check_server(tmp, p)
                for p in c.workers:
                    self.check_worker(tmp, p)
                for p in c.procs:
                    self.check_screenshot(tmp, p)
            check_clean(self, c.procs)

    def check_served(self, p):
        """The page without scripts already holds values; its JSON is
        JSON; unknown paths are 404."""
        status, ctype, body = fetch(p.port, "/")
        self.assertEqual((status, ctype), (200, "text/html; charset=utf-8"))
        page = body.decode()
        self.assertIn('id="live"', page)
        status, ctype, body = fetch(p.port, "/status.json")
        self.assertEqual((status, ctype), (200, "application/json"))
        with self.assertRaises(urllib.error.HTTPError) as cm:
            fetch(p.port, "/nope")
        self.assertEqual(cm.exception.code, 404)
        return page, json.loads(body)

    def check_live(self, dom, tag):
        live = dom.by_id("live")
        self.assertIn("live", live.classes(),
                      "%s's page script did not update it: %r"
                      % (tag, live.text()))

    def check_server(self, tmp, p):
        page, data = self.check_served(p)
        self.assertEqual(data["process"], "fsps-server")
        self.assertEqual([l["name"] for l in data["layers"]], ["fc1", "fc2"])
        for name in ("fc1", "fc2"):  # in the HTML served, before any script
            self.assertRegex(page, r'<td class="name">%s</td><td class="n '
                             r'version">\d+</td>' % name)
        before = versions(parse(scrape(p.port)))
        dom = dump_dom(tmp, p.port)
        after = versions(parse(scrape(p.port)))
        self.check_live(dom, p.tag)
        self.assertEqual(dom.by_id("mode").text(), "bsp")
        self.assertEqual(dom.by_id("workers").text(), "2")
        rows = dom.layer_rows()
        self.assertEqual([r[0] for r in rows], sorted(before), rows)
        for name, version, pending, missing in rows:
            v = int(version)
            self.assertTrue(before[name] <= v <= after[name],
                            "%s: version %d not within /metrics' %d..%d"
                            % (name, v, before[name], after[name]))
            self.assertEqual(int(pending), v)  # BSP: the next step
            self.assertRegex(missing, r"^(none|[01](, 1|\u20131)?)$")
        # Training goes on: the last ten seconds saw pushes and pulls.
        for ident in ("push-rate", "pull-rate", "rx-rate", "tx-rate"):
            self.assertGreater(number(dom.by_id(ident).text()), 0, ident)

    def check_worker(self, tmp, p):
        page, data = self.check_served(p)
        self.assertEqual(data["process"], "fsps-worker")
        self.assertRegex(page, r'id="step">\d+ of \d+<')
        self.assertIn('id="loss-line"', page)
        before = parse(scrape(p.port))[("fsps_worker_step", "")]
        dom = dump_dom(tmp, p.port)
        after = parse(scrape(p.port))[("fsps_worker_step", "")]
        self.check_live(dom, p.tag)
        step, total = map(int, dom.by_id("step").text().split(" of "))
        self.assertTrue(0 < before <= step <= after <= total,
                        "step %d not within /metrics' %d..%d"
                        % (step, before, after))
        self.assertGreaterEqual(int(dom.by_id("epoch").text().split()[0]), 1)
        number(dom.by_id("loss").text())
        self.assertGreater(number(dom.by_id("rate").text()), 0)
        for chart in ("loss", "rate"):
            pts = polyline(dom, chart + "-line")
            self.assertGreaterEqual(len(pts), 2, chart)
            x0, x1 = (int(dom.by_id(chart + end).text())
                      for end in ("-x0", "-x1"))
            self.assertTrue(0 < x0 < x1 <= step, (chart, x0, x1, step))

    def check_screenshot(self, tmp, p):
        data = screenshot(tmp, p.port, p.tag)
        self.assertEqual(png_info(data), WINDOW)
        self.assertGreater(len(data), 10000, p.tag)


# Names a client may give layers: HTML that would run script, and a
# string that would end a JSON string and the script element.
EVIL = ["<img src=x onerror=\"document.title='owned'\">",
        "\"]}</script><script>document.title='owned'</script>"]


class HostileNamesTest(unittest.TestCase):
    def test_layer_names_stay_text(self):
        chromium_path()
        with tempfile.TemporaryDirectory() as tmp:
            pb = generate_pb(tmp)
            p = Proc(tmp, "server", server_argv(ARGS.bin, tmp, 0, 1, 1), 120)
            try:
                self.declare(pb, tmp, p)
                self.check(tmp, p)
            finally:
                code = p.stop()
            self.assertEqual(code, 0, p.logged())
            check_clean(self, [p])

    def declare(self, pb, tmp, p):
        # The metrics port is written first: wait for the gRPC one.
        addr = "127.0.0.1:%d" % wait_file(os.path.join(tmp, "port-0"),
                                          p.proc, "fsps-server", 120)
        layers = [pb.LayerSpec(name=n, tensors=[pb.TensorSpec(
            name="w", dims=[4], init=pb.INIT_ZEROS)]) for n in EVIL]
        spec = pb.ModelSpec(layers=layers, seed=1, optimizer=pb.OptimizerSpec(
            name="sgd", lr=0.1, gamma=0.1, eps=1e-8, beta1=0.9, beta2=0.999,
            warmup_start_factor=1.0))
        with grpc.insecure_channel(addr) as ch:
            init = ch.unary_unary(
                "/fsps.v1.ParameterServer/Init",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=pb.InitReply.FromString)
            init(pb.InitRequest(spec=spec, num_servers=1), timeout=60)

    def check(self, tmp, p):
        status, _, body = fetch(p.port, "/")
        page = body.decode()
        self.assertNotIn("<img", page)
        self.assertEqual(page.count("<script"), 1)
        self.assertIn("&lt;img src=x onerror=&quot;document.title=&#39;owned"
                      "&#39;&quot;&gt;", page)
        _, _, body = fetch(p.port, "/status.json")
        self.assertEqual([l["name"] for l in json.loads(body)["layers"]], EVIL)
        dom = dump_dom(tmp, p.port)  # after the script redrew the table
        self.check_live_dom(dom)
        self.assertEqual([r[0] for r in dom.layer_rows()], EVIL)

    def check_live_dom(self, dom):
        self.assertIn("live", dom.by_id("live").classes())
        self.assertEqual(dom.tags("img"), [])
        self.assertEqual(len(dom.tags("script")), 1)
        self.assertEqual(dom.tags("title")[0].text(), "fsps-server 0 of 1")


def generate_pb(tmp):
    subprocess.run(["/usr/bin/protoc", "--python_out=" + tmp,
                    "-I" + os.path.dirname(ARGS.proto), ARGS.proto],
                   check=True)
    sys.path.insert(0, tmp)
    import fsps_pb2
    return fsps_pb2


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--proto", required=True)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
