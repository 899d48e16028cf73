"""bench/run --against DIR: the chosen scenarios on this build and on another one (the
`authgate` binary in DIR, e.g. a copy of target/release/authgate from an earlier commit),
in one run, their runs alternating.

A shared 2-core machine moves by 15-30% between runs a few minutes apart, so a before/after
figure taken from two separate `bench/run`s says little. Here each round runs every chosen
scenario once with each build (in turn first, so that neither always runs on the warmer
machine), each on a freshly seeded store and against the bare baseline measured in that same
round; the figure is the median over the rounds of (this build / the other) req/s.
"""

import os
import statistics
import tempfile


def run(bench, procs, workdir, opts, only, other):
    """{letter: {"this": [rps...], "other": [rps...], "ratio": [this/other per round]}} for
    the scenarios in `only` (req/s of each build's run, a round at a time)."""
    binary = os.path.join(other, "authgate")
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"bench/run: --against {other}: no executable authgate in it")
    this = bench.AUTHGATE
    one = type(opts)(**{**vars(opts), "runs": 1})
    rounds = []
    for round_no in range(opts.runs):
        order = [("this", this), ("other", binary)]
        if round_no % 2:
            order.reverse()
        got = {}
        for label, path in order:
            bench.log(f"bench/run: round {round_no + 1} of {opts.runs}, the {label} build ({path})")
            bench.AUTHGATE = path
            try:
                # A store of its own: each build makes the schema it knows.
                got[label] = bench.run_all(procs, tempfile.mkdtemp(dir=workdir), one, only)
            finally:
                bench.AUTHGATE = this
        rounds.append(got)
    out = {}
    # The memory checks compare peak RSS, not req/s.
    for name in ("rss", "rss_distinct"):
        if name in rounds[0]["this"]:
            out[name] = {"this_mib": [r["this"][name]["peak_rss_mib"] for r in rounds],
                         "other_mib": [r["other"][name]["peak_rss_mib"] for r in rounds]}
    skip = {"baseline", "f_base", "rss", "rss_distinct", "h", "peers"}
    for letter in sorted({k for r in rounds for k in r["this"]} - skip):
        pairs = [(r["this"][letter], r["other"][letter]) for r in rounds
                 if isinstance(r["this"].get(letter), dict) and "rps" in r["this"][letter]
                 and isinstance(r["other"].get(letter), dict) and "rps" in r["other"][letter]]
        if not pairs:
            continue
        out[letter] = {
            "this": [t["rps"] for t, _ in pairs],
            "other": [o["rps"] for _, o in pairs],
            "ratio": [t["rps"] / o["rps"] for t, o in pairs if o["rps"]],
        }
    out["baseline"] = {
        "this": [r["this"]["baseline"]["rps"] for r in rounds],
        "other": [r["other"]["baseline"]["rps"] for r in rounds],
    }
    return out


def report(results, other):
    print(f"\nThis build against {other} (req/s, one run of each per round, rounds alternating; "
          "ratio: median over the rounds of this / other)")
    base = results.get("baseline", {})
    print(f"{'':3} {'this (median)':>14} {'other (median)':>15} {'this / other':>13}   rounds (this / other)")
    for letter, r in results.items():
        if letter.startswith("rss"):
            print(f"{letter}: peak RSS this {', '.join(f'{m:.1f}' for m in r['this_mib'])} MiB, "
                  f"other {', '.join(f'{m:.1f}' for m in r['other_mib'])} MiB")
            continue
        if letter == "baseline" or not r.get("ratio"):
            continue
        pairs = ", ".join(f"{t:.0f} / {o:.0f}" for t, o in zip(r["this"], r["other"]))
        print(f"{letter:3} {statistics.median(r['this']):>14.0f} {statistics.median(r['other']):>15.0f} "
              f"{statistics.median(r['ratio']):>13.2f}   {pairs}")
    if base:
        print(f"    bare baseline in the same rounds: {', '.join(f'{b:.0f}' for b in base['this'] + base['other'])}")
    return {letter: {**r, "median_ratio": statistics.median(r["ratio"])} if r.get("ratio") else r
            for letter, r in results.items()}
