#!/usr/bin/env python3
"""Checks the Grafana dashboards in dashboards/ and, with --prometheus, evaluates every query against it.

Static checks (always): each file is JSON with a unique uid, a schemaVersion, a `datasource` templating
variable of type `datasource` (query `prometheus`), and every panel and target uses `${datasource}`, never a
fixed datasource id; every `$variable` a query uses is defined.

With --prometheus URL: every panel target's `expr` and every query variable (`label_values(...)`,
`query_result(...)`) is sent to URL/api/v1/query with the dashboard's variables replaced by "match anything";
each must be valid PromQL (status success) and return at least one series.

Prints one line per check and a closing `N passed, M failed`; exits 1 on any failure.
"""

import argparse
import glob
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

# Grafana's built-in interval variables, replaced by durations that suit a 1 s scrape interval.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {name}")
    else:
        failed += 1
        print(f"FAIL  {name}" + (f": {detail}" if detail else ""))


def panels_of(container):
    """Every panel, rows' nested panels included (collapsed rows keep theirs under `panels`)."""
    for p in container.get("panels", []) or []:
        yield p
        yield from panels_of(p)


def substitute(expr, variables):
    """Replaces $var, ${var}, ${var:fmt} and [[var]]: built-ins by durations, dashboard variables by `.*`."""
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in variables:
            return ".*"
        unknown.append(name)
        return m.group(0)

    return VAR_RE.sub(repl, expr), unknown


def is_datasource_ref(ds):
    """True for the templated datasource: "${datasource}" or {"type": "prometheus", "uid": "${datasource}"}."""
    if ds is None:
        return True  # inherits the panel's (checked separately) or the dashboard default
    if isinstance(ds, str):
        return ds in ("${datasource}", "$datasource")
    if isinstance(ds, dict):
        return ds.get("uid") in ("${datasource}", "$datasource") or ds.get("type") == "datasource"
    return False


def variable_queries(var):
    """PromQL equivalents of a query variable's definition."""
    q = var.get("query")
    if isinstance(q, dict):
        q = q.get("query", "")
    q = (q or "").strip()
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", q, re.S)
    if m:
        return [f"count by ({m.group(2)}) ({m.group(1)})"]
    m = re.fullmatch(r"label_values\(\s*(\w+)\s*\)", q)
    if m:
        return [f"count by ({m.group(1)}) ({{{m.group(1)}!=\"\"}})"]
    m = re.fullmatch(r"query_result\((.*)\)", q, re.S)
    if m:
        return [m.group(1)]
    return [q] if q else []


def query(base, expr, timeout):
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 400/422 carry a JSON error body
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (OSError, ValueError) as e:
        return {"status": "error", "error": str(e)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dashboards", default=os.path.join(os.path.dirname(__file__), "../../dashboards"))
    ap.add_argument("--prometheus", help="base URL of a Prometheus to evaluate every query on")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--skip-empty", action="append", default=[], metavar="UID",
                    help="for this dashboard, an empty result is reported as skipped (its queries must still parse)")
    args = ap.parse_args()

    files = sorted(glob.glob(os.path.join(args.dashboards, "*.json")))
    check(f"dashboards found in {os.path.normpath(args.dashboards)}", len(files) > 0)
    uids = {}
    exprs = []  # (where, expr, dashboard uid)
    for path in files:
        name = os.path.basename(path)
        try:
            dash = json.load(open(path, encoding="utf-8"))
        except (OSError, ValueError) as e:
            check(f"{name} is JSON", False, str(e))
            continue
        check(f"{name} is JSON", True)
        check(f"{name} has no numeric id (importable)", dash.get("id") is None)
        uid = dash.get("uid")
        check(f"{name} has a unique uid", bool(uid) and uid not in uids, f"{uid} also in {uids.get(uid)}")
        uids[uid] = name
        check(f"{name} schemaVersion is 36 or later", isinstance(dash.get("schemaVersion"), int)
              and dash["schemaVersion"] >= 36, str(dash.get("schemaVersion")))
        templ = dash.get("templating", {}).get("list", [])
        variables = {v.get("name") for v in templ}
        ds_vars = [v for v in templ if v.get("type") == "datasource"]
        check(f"{name} has a datasource variable of type datasource (prometheus)",
              any(v.get("name") == "datasource" and v.get("query") == "prometheus" for v in ds_vars))
        for v in templ:
            if v.get("type") == "query":
                check(f"{name} variable {v.get('name')} uses ${{datasource}}", is_datasource_ref(v.get("datasource")))
                for q in variable_queries(v):
                    q2, unknown = substitute(q, variables)
                    check(f"{name} variable {v.get('name')} uses only defined variables", not unknown, str(unknown))
                    exprs.append((f"{name} variable {v.get('name')}", q2, uid))
        panels = list(panels_of(dash))
        check(f"{name} has panels", len([p for p in panels if p.get("type") != "row"]) > 0)
        ids = [p.get("id") for p in panels]
        check(f"{name} panel ids are unique", len(ids) == len(set(ids)))
        for p in panels:
            if p.get("type") == "row":
                continue
            title = p.get("title", f"panel {p.get('id')}")
            where = f"{name} / {title}"
            check(f"{where}: datasource is ${{datasource}}", is_datasource_ref(p.get("datasource"))
                  and p.get("datasource") is not None, json.dumps(p.get("datasource")))
            targets = p.get("targets") or []
            if p.get("type") not in ("text", "news", "dashlist"):
                check(f"{where}: has queries", any(t.get("expr") for t in targets))
            for t in targets:
                check(f"{where} [{t.get('refId')}]: target datasource is ${{datasource}}",
                      is_datasource_ref(t.get("datasource")), json.dumps(t.get("datasource")))
                if t.get("expr"):
                    q2, unknown = substitute(t["expr"], variables)
                    check(f"{where} [{t.get('refId')}]: uses only defined variables", not unknown, str(unknown))
                    exprs.append((f"{where} [{t.get('refId')}]", q2, uid))

    # Every metric a query names exists in the code (the same scan as the docs' metrics reference).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from metrics_reference import scan  # noqa: E402 (same folder)
    known = set(scan())
    used = set()
    for _, expr, _ in exprs:
        for name in re.findall(r"\b(causeway_[a-z0-9_]+)", expr):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name not in known else name)
    for name in sorted(used):
        check(f"metric {name} exists in the code", name in known)

    if args.prometheus:
        skipped = 0
        for where, expr, uid in exprs:
            r = query(args.prometheus, expr, args.timeout)
            if r.get("status") != "success":
                check(f"{where}: valid PromQL", False, f"{r.get('error')}  in: {expr}")
                continue
            data = r.get("data", {})
            result = data.get("result", [])
            n = 1 if data.get("resultType") in ("scalar", "string") else len(result)
            if n == 0 and uid in args.skip_empty:
                skipped += 1
                print(f"skip  {where}: valid PromQL; no series expected in this run")
                continue
            check(f"{where}: {n} series", n > 0, f"no series for: {expr}")
        if skipped:
            print(f"{skipped} queries skipped (no data expected for {', '.join(args.skip_empty)})")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
