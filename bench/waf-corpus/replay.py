#!/usr/bin/env python3
"""Replay the benign corpus against a WAF and count what it refuses.

Each corpus line is sent as it is written: method, path?query, Content-Type
and body byte for byte, with the headers Node's built-in fetch (undici) sends
on its own (`user-agent: node`, `accept: */*`, ...) and `Host: localhost`.
The upstream behind the WAF answers 200 to everything, so any other status is
the WAF's: 403 is a block, anything else non-2xx is counted apart.

With --audit-log (ModSecurity 3's audit log, `SecAuditLogFormat JSON`,
serial), each response's transaction id (the `X-Request-Id` header nginx adds,
the same `$request_id` given to ModSecurity with `modsecurity_transaction_id`)
is looked up in the log to list the rule ids that fired on the request.

    python3 bench/waf-corpus/replay.py --base-url http://127.0.0.1:18080 \\
        [--audit-log DIR/logs/modsec_audit.json] [--out results.jsonl]

Prints: total, blocked (403), other non-2xx, the false-positive rate, the
rules behind the blocks (how many blocked requests each fired on) and every
blocked request with its rules. Writes one JSON line per request to --out.
"""

import argparse
import collections
import http.client
import json
import os
import sys
import time
import urllib.parse

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_CORPUS = os.path.join(REPO, "crates", "waf", "tests", "data", "benign-corpus.jsonl")

# What Node's fetch (undici) sends when the caller sets only the body and
# Content-Type. Content-Length is added by http.client.
FETCH_HEADERS = {
    "Accept": "*/*",
    "Accept-Language": "*",
    "Sec-Fetch-Mode": "cors",
    "User-Agent": "node",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
}

# Rules that report the verdict rather than detect anything: CRS's blocking
# evaluation and correlation.
VERDICT_RULES = {"949110", "949111", "959100", "959101", "980170", "980099"}


def load_corpus(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Client:
    def __init__(self, base_url, timeout):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme != "http":
            sys.exit("only http:// base URLs: %s" % base_url)
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        self.conn = None

    def send(self, req, host_header):
        target = self.prefix + req["path"] + ("?" + req["query"] if req["query"] else "")
        body = req["body"].encode("utf-8")
        headers = {"Host": host_header}
        headers.update(FETCH_HEADERS)
        if req["content_type"]:
            headers["Content-Type"] = req["content_type"]
        if body or req["method"] in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.putrequest(req["method"], target, skip_host=True, skip_accept_encoding=True)
                for k, v in headers.items():
                    self.conn.putheader(k, v)
                self.conn.endheaders(body if body else None)
                resp = self.conn.getresponse()
                resp.read()
                txid = resp.getheader("X-Request-Id", "")
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, txid
            except (http.client.HTTPException, ConnectionError, TimeoutError):
                # a keep-alive connection the server closed: once more on a new one
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def read_audit_log(path):
    """Transaction id -> list of (rule id, message) from a JSON serial audit
    log (one transaction per line; a line being written may be cut short)."""
    found = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    tx = json.loads(line)["transaction"]
                except (ValueError, KeyError):
                    continue
                msgs = []
                for m in tx.get("messages") or []:
                    d = m.get("details") or {}
                    msgs.append((str(d.get("ruleId", "")), m.get("message", ""), d.get("data", "")))
                found[tx.get("unique_id") or tx.get("id", "")] = msgs
    except FileNotFoundError:
        pass
    return found


def read_palisade_log(path):
    """Request id -> list of (rule id, message, "") from the gateway's security
    log (one JSON record a line; the rule ids are in a refused request's
    `reason`, a detect-mode finding's in `inspection`)."""
    import re
    found = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                rid = rec.get("request_id")
                if not rid:
                    continue
                text = " ".join(str(rec.get(k, "")) for k in ("reason", "inspection"))
                found[rid] = [(m, text[:200], "") for m in sorted(set(re.findall(r"\b\d{5,6}\b", text)))]
    except FileNotFoundError:
        pass
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:18080")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--out", help="results, one JSON object a line")
    ap.add_argument("--audit-log", help="ModSecurity JSON audit log to take rule ids from")
    ap.add_argument("--palisade-log", help="the Palisade gateway's security log to take rule ids from")
    ap.add_argument("--host", default="localhost", help="Host header (default %(default)s)")
    ap.add_argument("--label", default="WAF", help="name to print in the summary")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    corpus = load_corpus(args.corpus)
    client = Client(args.base_url, args.timeout)
    results = []
    started = time.monotonic()
    for req in corpus:
        status, txid = client.send(req, args.host)
        results.append({"id": req["id"], "method": req["method"], "path": req["path"],
                        "status": status, "txid": txid})
    client.close()
    elapsed = time.monotonic() - started

    if args.palisade_log:
        args.audit_log = args.palisade_log
        read_log = read_palisade_log
    else:
        read_log = read_audit_log
    if args.audit_log:
        # ModSecurity writes a transaction's audit entry in its logging phase,
        # after the response: wait a little for the last ones.
        wanted = {r["txid"] for r in results if r["txid"]}
        deadline = time.monotonic() + 10
        while True:
            audit = read_log(args.audit_log)
            if wanted <= audit.keys() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for r in results:
            msgs = audit.get(r["txid"], [])
            r["rules"] = sorted({rid for rid, _, _ in msgs if rid}, key=int)
            r["messages"] = ["%s: %s%s" % (rid, msg, (" [" + data[:160] + "]") if data else "")
                             for rid, msg, data in msgs]
            if r["status"] >= 300 and not msgs:
                r["rules_missing"] = True

    total = len(results)
    blocked = [r for r in results if r["status"] == 403]
    other = [r for r in results if r["status"] != 403 and not 200 <= r["status"] < 300]

    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    print("%s on %s (%s)" % (args.label, os.path.relpath(args.corpus, REPO), args.base_url))
    print("total:          %d requests in %.1f s" % (total, elapsed))
    print("blocked (403):  %d" % len(blocked))
    print("other non-2xx:  %d%s" % (len(other), "  (%s)" % ", ".join(
        "%d x%d" % kv for kv in sorted(collections.Counter(r["status"] for r in other).items())) if other else ""))
    print("false-positive rate: %.1f %% blocked, %.1f %% refused (403 or other non-2xx)" % (
        100.0 * len(blocked) / total, 100.0 * (len(blocked) + len(other)) / total))
    print("\nby kind of request (id prefix): refused / total")
    kinds = collections.OrderedDict()
    for r in results:
        k = kinds.setdefault(r["id"].split("-")[0], [0, 0])
        k[1] += 1
        k[0] += not 200 <= r["status"] < 300
    print("  " + ", ".join("%s %d/%d" % (name, n, t) for name, (n, t) in kinds.items()))
    if args.audit_log:
        refused = blocked + other
        per_rule = collections.Counter(rid for r in refused for rid in r.get("rules", []))
        detecting = [(rid, n) for rid, n in per_rule.most_common() if rid not in VERDICT_RULES]
        print("\nrules behind the refusals (number of refused requests each fired on):")
        for rid, n in detecting:
            print("  %-7s %3d" % (rid, n))
        passed_warn = [r for r in results if 200 <= r["status"] < 300 and r.get("rules")]
        if passed_warn:
            near = collections.Counter(rid for r in passed_warn for rid in r["rules"])
            print("\nrules that fired on passed requests (score below the threshold), %d requests:" % len(passed_warn))
            print("  " + ", ".join("%s x%d" % kv for kv in near.most_common()))
        missing = [r["id"] for r in refused if r.get("rules_missing")]
        if missing:
            print("\nno audit entry found for: %s" % ", ".join(missing))
        print("\nrefused requests:")
        for r in refused:
            rules = [x for x in r.get("rules", []) if x not in VERDICT_RULES]
            print("  %-28s %d  %s" % (r["id"], r["status"], " ".join(rules)))
    if args.out:
        print("\nresults: %s" % args.out)


if __name__ == "__main__":
    main()
