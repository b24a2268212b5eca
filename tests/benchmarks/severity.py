#!/usr/bin/env python3
"""Severity grading: accuracy on the labelled requests, and CPU time per request.

    python tests/benchmarks/severity.py [--rounds 50]

For each corpus of tests/data/severity/ (requests.yaml, on which the evidence of
rules/severity.yaml was tuned; holdout.yaml, written apart from it), prints exact and
within-one-level accuracy, a confusion matrix (rows: the label, columns: the grade), and
the microseconds of CPU a request costs (CPU time: other work on a shared machine changes
it less than wall time, but still by about a third; `valgrind --tool=callgrind` counts
about 1.07 million instructions a request).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.classify import Classifier  # noqa: E402
from bot.rules import load_rules  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    classifier = Classifier(load_rules().severity)
    for name in ("requests.yaml", "holdout.yaml"):
        requests = yaml.safe_load((ROOT / "tests" / "data" / "severity" / name).read_text("utf-8"))["requests"]
        grades = [classifier.grade(r["subject"], r["body"], 3).level for r in requests]
        exact = sum(g == r["level"] for g, r in zip(grades, requests))
        near = sum(abs(g - r["level"]) <= 1 for g, r in zip(grades, requests))
        clear = [(g, r) for g, r in zip(grades, requests) if r["clear"]]
        print(f"{name}: {exact}/{len(requests)} exact ({exact / len(requests):.0%}), {near} within one level, "
              f"{sum(g == r['level'] for g, r in clear)}/{len(clear)} of the clear ones")
        matrix = Counter((r["level"], g) for g, r in zip(grades, requests))
        print("   label \\ grade   1   2   3   4")
        for level in (1, 2, 3, 4):
            print(f"   {level:>13} " + "".join(f"{matrix[(level, g)]:>4}" for g in (1, 2, 3, 4)))
        start = time.process_time()
        for _ in range(args.rounds):
            for r in requests:
                classifier.grade(r["subject"], r["body"], 3)
        each = (time.process_time() - start) / (args.rounds * len(requests))
        size = sum(len(r["body"]) for r in requests) / len(requests)
        print(f"   {each * 1e6:.0f} µs of CPU a request (bodies of {size:.0f} characters on average)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
