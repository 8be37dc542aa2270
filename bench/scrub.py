"""Benchmark of scrubbing secrets by value from output, in one run.

Every line coder-migrate prints passes :func:`coder_migrate.sensitive.scrub`. This measures
it on 1 MB of plan-like text (the text-mode plan of about 2,000 regions) with 0, 2, 20 and 200
registered secrets (each registered in its forms: as is and base64; a v2 deployment of 200
regions registers about that many proxy tokens), against the baseline: one plain regular
expression alternation of the same values, longest first, measured in the same run. The
median of ``--rounds`` runs each.

    .venv/bin/python bench/scrub.py [--rounds 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import re
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coder_migrate.sensitive import pattern_of  # noqa: E402

LINE = ("  ~ update helm release coder-satellite (coder-1.21.0) in ns coder-satellite of "
        "prod-eu-west  # values differ\n")
TEXT = LINE * (1_000_000 // len(LINE))


def _median_seconds(pattern: re.Pattern[str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        pattern.sub("(sensitive)", TEXT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = ["| secrets | forms | plain alternation (baseline) | trie (scrub) | baseline / trie |",
            "| --- | --- | --- | --- | --- |"]
    for count in (0, 2, 20, 200):
        values = {secrets.token_hex(20) for _ in range(count)}
        values |= {base64.b64encode(v.encode()).decode() for v in values}
        if not values:
            rows.append("| 0 | 0 | (no pattern: text passes as is) | - | - |")
            continue
        plain = re.compile("|".join(re.escape(v) for v in sorted(values, key=len,
                                                                 reverse=True)))
        trie = re.compile(pattern_of(values))
        assert plain.sub("X", TEXT) == trie.sub("X", TEXT)
        baseline = _median_seconds(plain, args.rounds)
        measured = _median_seconds(trie, args.rounds)
        rows.append(f"| {count} | {len(values)} | {baseline * 1000:.1f} ms | "
                    f"{measured * 1000:.1f} ms | {baseline / measured:.1f} |")
    table = (f"Scrubbing {len(TEXT) / 1e6:.2f} MB of plan text, median of {args.rounds} "
             "rounds\n\n" + "\n".join(rows) + "\n")
    print(table)
    if args.out:
        args.out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
