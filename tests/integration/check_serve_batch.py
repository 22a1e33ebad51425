#!/usr/bin/python3
"""Runs bench/serve_batch.py small (2 000 rows, 2 repetitions, two batch
sizes) and checks the shape of what it prints: the BLAS header naming
OpenBLAS, then one line per --max-batch with positive rates, ratios that
are quotients of the rates, and fsps-serve's classes equal to PyTorch's on
every row (probabilities within 1e-5). Speed is not checked.

Usage: check_serve_batch.py SOURCE_DIR BUILD_DIR"""
import json
import subprocess
import sys


def main():
    src, build = sys.argv[1], sys.argv[2]
    p = subprocess.run(
        ["/usr/bin/python3", src + "/bench/serve_batch.py", "--build", build,
         "--rows", "2000", "--reps", "2", "--max-batch", "64,1000",
         "--steps", "5"],
        capture_output=True, text=True, timeout=540)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    head, rows = lines[0], lines[1:]
    assert head["mode"] == "batch_header", head
    assert any("openblas" in lib for lib in head["torch_blas"]), head
    assert "OpenBLAS" in head["torch_openblas_config"], head
    assert [r["max_batch"] for r in rows] == [64, 1000], rows
    for r in rows:
        assert r["bench"] == "serve" and r["mode"] == "batch", r
        assert r["model"] == "mlp:784,512,256,10", r
        assert r["rows"] == 2000 and r["reps"] == 2, r
        assert r["classes_equal"] is True, r
        assert 0.0 <= r["max_prob_diff"] < 1e-5, r
        for k in ("samples_per_s", "torch_samples_per_s",
                  "torch_nowrite_samples_per_s", "ratio", "ratio_vs_nowrite"):
            lo, hi = r[k + "_range"]
            assert 0 < lo <= r[k] <= hi, (k, r)
        (tl, th), (fl, fh) = (r["torch_samples_per_s_range"],
                              r["samples_per_s_range"])
        assert fl / th * 0.99 <= r["ratio"] <= fh / tl * 1.01, r
        assert r["other_cores"] >= 0, r
    print("bench/serve_batch prints its header and %d batch sizes" %
          len(rows))


if __name__ == "__main__":
    main()
