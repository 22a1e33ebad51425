#!/usr/bin/python3
"""Runs bench/vs_torch.py briefly (a few steps) and checks the shape of what
it prints: the BLAS header, then one line per config with positive rates,
a ratio that is their quotient, and test accuracies in [0, 1]. Speed is not
checked (a shared machine's figures say nothing about correctness).

Usage: check_vs_torch.py SOURCE_DIR BUILD_DIR"""
import json
import math
import subprocess
import sys


def main():
    src, build = sys.argv[1], sys.argv[2]
    p = subprocess.run(
        ["/usr/bin/python3", src + "/bench/vs_torch.py", "--build", build,
         "--steps", "6", "--reps", "2"],
        capture_output=True, text=True, timeout=540)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    head, rows = lines[0], lines[1:]
    assert head["bench"] == "vs_torch", head
    assert any("openblas" in lib for lib in head["torch_blas"]), head
    assert "OpenBLAS" in head["torch_openblas_config"], head
    assert [r["config"] for r in rows] == ["S1W1", "S2W2"], rows
    for r in rows:
        assert r["bench"] == "vs_torch" and r["model"] == "mlp:784,512,256,10"
        assert r["steps"] == 6 and r["reps"] == 2 and r["global_batch"] == 256
        for k in ("torch_samples_per_s", "fsps_samples_per_s", "ratio"):
            assert r[k] > 0 and len(r[k + "_range"]) == 2, (k, r)
            lo, hi = r[k + "_range"]
            assert lo <= r[k] <= hi, (k, r)
        for k in ("torch_test_accuracy", "fsps_test_accuracy"):
            assert 0.0 <= r[k] <= 1.0, (k, r)
        # 6 steps of Adam move both well above chance (10%).
        assert r["torch_test_accuracy"] > 0.3, r
        assert r["fsps_test_accuracy"] > 0.3, r
        # Each ratio is one repetition's fsps / torch: the median ratio
        # lies within the quotients of the rates' extremes.
        (tl, th), (fl, fh) = (r["torch_samples_per_s_range"],
                              r["fsps_samples_per_s_range"])
        assert fl / th * 0.99 <= r["ratio"] <= fh / tl * 1.01, r
        assert math.isfinite(r["other_cores"]) and r["other_cores"] >= 0
    print("bench/vs_torch prints its header and %d configs" % len(rows))


if __name__ == "__main__":
    main()
