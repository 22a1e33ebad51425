#!/usr/bin/python3
"""Runs bench/serve small (1 s a load, 1 and 8 clients, one offered load)
and checks the shape of what it prints: the compute line, then per client
count the closed-loop line and the open-loop line, every request answered
(no failure, no error), positive rates, p50 <= p99, and the batches
fsps-serve counted holding at least one row each. Speed is not checked.

Usage: check_serve_online.py BUILD_DIR"""
import json
import subprocess
import sys


def main():
    build = sys.argv[1]
    p = subprocess.run(
        [build + "/bench/serve", "--seconds", "1", "--warmup", "0.2",
         "--clients", "1,8", "--offered", "200"],
        capture_output=True, text=True, timeout=540)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert [(r["mode"], r.get("clients")) for r in lines] == [
        ("compute", None), ("online", 1), ("online_open", 1),
        ("online", 8), ("online_open", 8)], lines
    assert lines[0]["rows_per_s_batch64"] > 0, lines[0]
    for r in lines[1:]:
        assert r["bench"] == "serve" and r["model"] == "mlp:784,512,256,10", r
        assert r["mean_batch_rows"] >= 1, r
        for pre in ("", "max_batch1_"):
            assert r[pre + "throughput_per_s"] > 0, r
            assert 0 < r[pre + "p50_ms"] <= r[pre + "p99_ms"], r
        if r["mode"] == "online":
            assert r["failed"] == 0 and r["batching_gain"] > 0, r
        else:
            assert r["offered_per_s"] == 200, r
            assert r["errors"] == 0 and r["max_batch1_errors"] == 0, r
    print("bench/serve prints %d lines, every request answered" % len(lines))


if __name__ == "__main__":
    main()
