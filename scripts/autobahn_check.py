#!/usr/bin/env python3
"""Compare Autobahn|Testsuite fuzzingclient runs with the expectations kept in the repo.

Used by scripts/autobahn.sh; stdlib only, runs on the project's Python 3.

    autobahn_check.py --mode text --results autobahn-reports/text/index.json \
        [--results autobahn-reports/text.run2/index.json ...] \
        --expected tests/autobahn-expected-text.json [--update] [--partial]

Each case has two outcomes, ``behavior`` (what came back) and ``behaviorClose``
(how the connection ended).  Both are ranked

    OK > NON-STRICT > INFORMATIONAL > UNIMPLEMENTED > FAILED

(``WRONG CODE``, ``UNCLEAN`` and ``FAILED BY CLIENT`` are kinds of failure and rank
with FAILED).  A case is a REGRESSION when, in any run, either outcome ranks
below its expectation, or when an expected case did not run at all (unless
--partial, or it matches an --excluded pattern: then it is only listed).  A case missing from the expectations is expected to be OK/OK.

The expectations file::

    {
      "about": "...",
      "server": "what the expectations were recorded against",
      "excluded": ["12.*", ...],             # copy of the excluded case patterns
      "reasons": {"9.4.*": "one line", "9.2.1": "one line"},
      "cases": {"1.1.1": ["OK", "OK"], ...}  # [behavior, behaviorClose]
    }

``reasons`` keys are a case id or an fnmatch pattern over case ids ("9.4.*"); the
exact id wins, then the longest matching pattern.  Every case that is not OK/OK
should have one.  --update rewrites "cases" from the runs -- per case and per
outcome the worst result seen, so a timing-dependent case is recorded at its
worst and does not make CI flaky --, keeps the reasons that still match a
non-OK case, and adds a "TODO" reason for new non-OK cases (saying so when the
case varied between runs).  --update --merge also counts the current
expectation as one of the results, so nothing is recorded better than before.

Exit status: 0 no regression, 1 regressions, 2 usage / input error.
"""

import argparse
import collections
import fnmatch
import json
import os
import sys

RANK = {"OK": 4, "NON-STRICT": 3, "INFORMATIONAL": 2, "UNIMPLEMENTED": 1}
FAILURE_RANK = 0  # FAILED, WRONG CODE, UNCLEAN, FAILED BY CLIENT, anything unknown
DISPLAY_ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED",
                 "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT"]
TODO = "TODO: explain why this case is not OK"


def rank(outcome):
    return RANK.get(outcome, FAILURE_RANK)


def case_key(case_id):
    """Natural order of case ids ("6.9.1" < "6.10.1"); also copes with patterns."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in case_id.split("."))


def is_ok(pair):
    return pair[0] == "OK" and pair[1] == "OK"


def fmt(pair):
    return "%s/%s" % (pair[0], pair[1])


class Run:
    """One fuzzingclient run: index.json -> {case_id: (behavior, behaviorClose)}."""

    def __init__(self, path):
        with open(path) as f:
            index = json.load(f)
        if len(index) != 1:
            raise ValueError("expected exactly one agent in %s, found %s" % (path, sorted(index)))
        (self.agent, cases), = index.items()
        self.path = path
        self.dir = os.path.dirname(os.path.abspath(path))
        self.cases = {cid: (c.get("behavior", "?"), c.get("behaviorClose", "?")) for cid, c in cases.items()}
        self.reportfiles = {cid: c.get("reportfile") for cid, c in cases.items()}

    def detail(self, cid):
        """The 'result' / 'resultClose' texts of a case, for the regression list."""
        try:
            with open(os.path.join(self.dir, self.reportfiles[cid])) as f:
                data = json.load(f)
        except (OSError, ValueError, KeyError, TypeError):
            return ""
        return " / ".join(p for p in (data.get("result", ""), data.get("resultClose", "")) if p)

    def summary(self, mode):
        out = []
        for field, idx in (("behavior", 0), ("behaviorClose", 1)):
            counts = collections.Counter(r[idx] for r in self.cases.values())
            order = DISPLAY_ORDER + sorted(set(counts) - set(DISPLAY_ORDER))
            out.append("%s: %s" % (field, ", ".join("%s %d" % (k, counts[k]) for k in order if counts[k])))
        return "[%s] %s: %d cases; %s" % (mode, self.agent, len(self.cases), "; ".join(out))


def find_reason(reasons, case_id):
    if case_id in reasons:
        return reasons[case_id]
    matches = [p for p in reasons if fnmatch.fnmatchcase(case_id, p)]
    if not matches:
        return None
    return reasons[max(matches, key=len)]


def load_expected(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    data.setdefault("reasons", {})
    data.setdefault("cases", {})
    return data


def write_expected(path, data):
    """JSON with one case per line, so diffs of the expectations stay readable."""
    lines = ["{"]
    for key in ("about", "server", "excluded"):
        lines.append("  %s: %s," % (json.dumps(key), json.dumps(data.get(key, ""))))
    lines.append('  "reasons": {')
    items = sorted(data["reasons"].items(), key=lambda kv: case_key(kv[0]))
    lines.append(",\n".join("    %s: %s" % (json.dumps(k), json.dumps(v)) for k, v in items))
    lines.append("  },")
    lines.append('  "cases": {')
    items = sorted(data["cases"].items(), key=lambda kv: case_key(kv[0]))
    lines.append(",\n".join("    %s: %s" % (json.dumps(k), json.dumps(list(v))) for k, v in items))
    lines.append("  }")
    lines.append("}")
    text = "\n".join(l for l in lines if l != "") + "\n"
    json.loads(text)  # never write something we cannot read back
    with open(path, "w") as f:
        f.write(text)


def check(args, runs, expected):
    exp_cases, reasons = expected["cases"], expected["reasons"]
    label = "[%s]" % args.mode
    regressions, improved, changed, unexplained, missing, skipped = [], set(), set(), set(), [], set()
    excluded = [p for p in args.excluded.split(",") if p]
    all_ids = set(exp_cases).union(*(r.cases for r in runs))
    for cid in sorted(all_ids, key=case_key):
        want = tuple(exp_cases.get(cid, ("OK", "OK")))
        for n, run in enumerate(runs, 1):
            tag = " (run %d)" % n if len(runs) > 1 else ""
            if cid not in run.cases:
                if args.partial:
                    pass
                elif any(fnmatch.fnmatchcase(cid, p) for p in excluded):
                    skipped.add(cid)
                else:
                    missing.append((cid, want, tag))
                continue
            got = run.cases[cid]
            if any(rank(got[i]) < rank(want[i]) for i in (0, 1)):
                regressions.append((cid, want, got, tag, run.detail(cid)))
                continue
            if any(rank(got[i]) > rank(want[i]) for i in (0, 1)):
                improved.add((cid, want, got))
            elif got != want:
                changed.add((cid, want, got))
            if not is_ok(got):
                r = find_reason(reasons, cid)
                if not r or r.startswith("TODO"):
                    unexplained.add(cid)

    for cid, want, got in sorted(improved, key=lambda x: case_key(x[0])):
        print("%s improved   %-8s %s (expected %s)%s"
              % (label, cid, fmt(got), fmt(want),
                 "" if "timing" in (find_reason(reasons, cid) or "").lower()
                 else "; if it holds over --repeat 5, --update-expected records it"))
    if changed:
        print("%s same rank, other outcome (not a regression): %s"
              % (label, ", ".join("%s %s (expected %s)" % (cid, fmt(got), fmt(want))
                                  for cid, want, got in sorted(changed, key=lambda x: case_key(x[0])))))
    if unexplained:
        print("%s warning: non-OK cases without a reason in %s: %s"
              % (label, os.path.basename(args.expected), ", ".join(sorted(unexplained, key=case_key))))
    if skipped:
        print("%s note: %d expected case(s) excluded from this run, not checked: %s"
              % (label, len(skipped), ", ".join(sorted(skipped, key=case_key))))
    for cid, want, tag in missing:
        print("%s REGRESSION %-8s did not run%s (expected %s)" % (label, cid, tag, fmt(want)))
    for cid, want, got, tag, detail in regressions:
        print("%s REGRESSION %-8s %s%s (expected %s)%s"
              % (label, cid, fmt(got), tag, fmt(want), (": " + detail[:300]) if detail else ""))
    nbad = len(regressions) + len(missing)
    not_ok = sum(1 for cid, want in exp_cases.items() if not is_ok(want) and any(cid in r.cases for r in runs))
    print("%s %d regression(s), %d improvement(s); %d case(s) expected not OK/OK (reasons in %s)"
          % (label, nbad, len(improved), not_ok, os.path.basename(args.expected)))
    return 1 if nbad else 0


def update(args, runs, expected):
    if expected is None:
        expected = {"about": "", "server": "", "excluded": [], "reasons": {}, "cases": {}}
    if args.about:
        expected["about"] = args.about
    if args.server:
        expected["server"] = args.server + (" (worst of %d runs)" % len(runs) if len(runs) > 1 else "")
    if args.excluded or not args.partial:
        expected["excluded"] = [p for p in args.excluded.split(",") if p]
    old = expected["cases"]
    cases = dict(old) if args.partial else {}
    varied = {}
    for cid in set().union(*(r.cases for r in runs)):
        seen = [r.cases[cid] for r in runs if cid in r.cases]
        if args.merge and cid in old:
            seen.append(tuple(old[cid]))
        worst = [min((s[i] for s in seen), key=rank) for i in (0, 1)]
        cases[cid] = worst
        if len(set(seen)) > 1:
            varied[cid] = sorted(set(seen), key=lambda p: (-rank(p[0]), -rank(p[1])))
    expected["cases"] = cases

    reasons = expected["reasons"]
    not_ok = [cid for cid in sorted(cases, key=case_key) if not is_ok(cases[cid])]
    stale = [k for k in reasons if not any(k == c or fnmatch.fnmatchcase(c, k) for c in not_ok)]
    for k in stale:
        print("[%s] dropping reason %r: no non-OK case matches it any more" % (args.mode, k))
        del reasons[k]
    todo = []
    for cid in not_ok:
        if find_reason(reasons, cid) is None:
            todo.append(cid)
            reasons[cid] = TODO + (" (varies between runs: %s)" % ", ".join(fmt(p) for p in varied[cid])
                                   if cid in varied else "")
    for cid in sorted(varied, key=case_key):
        print("[%s] varies between runs: %-8s %s -> recorded %s"
              % (args.mode, cid, ", ".join(fmt(p) for p in varied[cid]), fmt(cases[cid])))
    write_expected(args.expected, expected)
    print("[%s] wrote %s: %d cases, %d not OK/OK" % (args.mode, args.expected, len(cases), len(not_ok)))
    if todo:
        print("[%s] please replace the TODO reasons for: %s" % (args.mode, ", ".join(todo)))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", required=True, help="label used in the output (text / binary)")
    ap.add_argument("--results", required=True, action="append",
                    help="index.json written by wstest -m fuzzingclient (repeat for several runs)")
    ap.add_argument("--expected", required=True, help="expectations JSON kept in the repo")
    ap.add_argument("--update", action="store_true", help="write the runs' results as the new expectations")
    ap.add_argument("--merge", action="store_true",
                    help="with --update: never record a case better than the current expectation "
                         "(accumulates the worst result of timing-dependent cases over several sessions)")
    ap.add_argument("--partial", action="store_true",
                    help="only a subset of cases ran: do not flag expected cases that did not run, "
                         "and with --update merge instead of replace")
    ap.add_argument("--server", default="", help="description of the server under test (stored on --update)")
    ap.add_argument("--excluded", default="",
                    help="comma-separated case patterns excluded from the run: expected cases matching "
                         "them are reported as not checked instead of 'did not run' (stored on --update)")
    ap.add_argument("--about", default="", help="'about' text of the expectations file (stored on --update)")
    args = ap.parse_args(argv)

    runs = []
    for path in args.results:
        try:
            runs.append(Run(path))
        except (OSError, ValueError) as e:
            print("autobahn_check: cannot read results %s: %s" % (path, e), file=sys.stderr)
            return 2
    for run in runs:
        print(run.summary(args.mode))

    expected = load_expected(args.expected)
    if args.update:
        return update(args, runs, expected)
    if expected is None:
        print("[%s] no expectations file %s; run scripts/autobahn.sh --update-expected to create it"
              % (args.mode, args.expected), file=sys.stderr)
        return 2
    return check(args, runs, expected)


if __name__ == "__main__":
    sys.exit(main())
