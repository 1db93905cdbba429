#!/usr/bin/env python3
"""Compare a pytest junit XML (junit_family=xunit1) with tests/hvac-suite/expected-failures.txt.

Usage: compare.py JUNIT_XML EXPECTED_FAILURES [--baseline] [--failures-out FILE]

expected-failures.txt: one pytest node id per line, then ` # reason`; blank lines and lines
starting with `#` are ignored.

Exit status: 0 when every failing test is listed and every listed test failed; 1 on an
unexpected failure, an unexpected pass, or a listed test that did not run (stale entry);
3 when the XML holds no test at all. With --baseline (the OpenBao run) only totals are printed
and the exit status is 0 whenever tests ran.
"""

import argparse
import sys
import xml.etree.ElementTree as ET

RANK = {"passed": 0, "skipped": 1, "failed": 2}


def node_id(case):
    """xunit1 testcases carry `file`; classname is the dotted module plus the class."""
    file = case.get("file", "")
    classname = case.get("classname", "")
    name = case.get("name", "")
    module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
    if module and classname.startswith(module + "."):
        cls = classname[len(module) + 1:]
        return f"{file}::{cls}::{name}"
    if module and classname == module:
        return f"{file}::{name}"
    return f"{classname}::{name}"


def outcomes(path):
    result = {}
    messages = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        nid = node_id(case)
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                messages.setdefault(nid, (child.get("message") or "").strip().splitlines()[:1])
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        # A test with a teardown error appears twice: the worst outcome wins.
        if RANK[outcome] >= RANK.get(result.get(nid, "passed"), 0):
            result[nid] = outcome
    return result, messages


def read_expected(path):
    expected = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            nid, sep, reason = text.partition(" # ")
            nid = nid.strip()
            if not sep or not reason.strip():
                sys.exit(f"{path}:{lineno}: entry without ` # reason`: {text}")
            if nid in expected:
                sys.exit(f"{path}:{lineno}: duplicate entry {nid}")
            expected[nid] = reason.strip()
    return expected


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("junit")
    ap.add_argument("expected")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--label", default="palisade")
    ap.add_argument("--failures-out")
    ap.add_argument("--max-skipped", type=int, default=14,
                    help="skips the selection has today (Enterprise-only and HA tests): more is a failure,"
                         " so a module that starts skipping cannot pass unnoticed")
    ap.add_argument("--partial", action="store_true",
                    help="a selection narrowed by extra pytest arguments: entries that did not run are not errors")
    args = ap.parse_args()

    results, messages = outcomes(args.junit)
    if not results:
        print(f"hvac-suite: no test results in {args.junit}")
        return 3
    passed = sorted(n for n, o in results.items() if o == "passed")
    failed = sorted(n for n, o in results.items() if o == "failed")
    skipped = sorted(n for n, o in results.items() if o == "skipped")
    if args.failures_out:
        with open(args.failures_out, "w") as f:
            f.writelines(n + "\n" for n in failed)

    if args.baseline:
        print(f"\nhvac-suite totals ({args.label}, baseline): {len(results)} tests: "
              f"passed {len(passed)} / failed {len(failed)} / skipped {len(skipped)}")
        return 0

    expected = read_expected(args.expected)
    unexpected_failures = [n for n in failed if n not in expected]
    unexpected_passes = [n for n in passed if n in expected]
    stale = sorted(n for n in expected if results.get(n) in (None, "skipped"))
    if args.partial:
        stale = [n for n in stale if n in results]
    expected_failing = [n for n in failed if n in expected]
    too_many_skipped = not args.partial and len(skipped) > args.max_skipped

    if unexpected_failures:
        print(f"\nUNEXPECTED FAILURES ({len(unexpected_failures)}): fix them, or list them with a reason"
              f" in {args.expected}")
        for n in unexpected_failures:
            msg = messages.get(n) or [""]
            print(f"  {n}\n      {msg[0][:300] if msg else ''}")
    if unexpected_passes:
        print(f"\nUNEXPECTED PASSES ({len(unexpected_passes)}): these now pass; remove them from"
              f" {args.expected}")
        for n in unexpected_passes:
            print(f"  {n}  # {expected[n]}")
    if stale:
        print(f"\nSTALE ENTRIES ({len(stale)}): listed in {args.expected} but not run (or skipped)")
        for n in stale:
            print(f"  {n}  ({results.get(n, 'not collected')})")

    if too_many_skipped:
        print(f"\nTOO MANY SKIPPED: {len(skipped)}, at most {args.max_skipped} expected")
        for n in skipped:
            print(f"  {n}")

    print(f"\nhvac-suite totals ({args.label}): {len(results)} tests: passed {len(passed)} / "
          f"failed {len(failed)} / expected-failures {len(expected_failing)} / skipped {len(skipped)}"
          f"; unexpected: {len(unexpected_failures)} failures, {len(unexpected_passes)} passes,"
          f" {len(stale)} stale entries")
    ok = not (unexpected_failures or unexpected_passes or stale or too_many_skipped)
    print("hvac-suite: OK" if ok else "hvac-suite: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
