#!/usr/bin/env python3
"""Checks that a Grafana dashboard is importable and that every metric its queries use is exported.

Usage: check-metrics.py DASHBOARD.json METRICS.txt
  DASHBOARD.json  the dashboard (infra/grafana/storm-dashboard.json)
  METRICS.txt     a live scrape of stormd's /metrics (scripts/check-ops takes one)

Checks:
  - the file is JSON with a title, a uid, unique panel ids and a grid position for every panel;
  - a `datasource` template variable exists and every panel and query uses it (${datasource}), so the
    dashboard imports into any Grafana whatever its Prometheus data source is called;
  - every metric name in every query (panel targets and template variables) is a sample name in the
    scrape: histogram series (_bucket, _sum, _count) included, Prometheus' own `up` allowed.
Exit status: 0 when all pass, 1 otherwise (each problem on one line).
"""

import json
import re
import sys

# Series Prometheus makes itself, not the target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling", "scrape_series_added"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan", "atan2"}
# Aggregation operators may be followed by a grouping clause before their parenthesis: `sum by (le) (...)`.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers that are neither functions (followed by '('),
    keywords, label names (inside {} or the grouping lists of by/without/on/ignoring), nor inside
    strings or range selectors."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    text = re.sub(r"\{[^}]*\}", "{}", text)                     # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)                    # ranges, including $__rate_interval
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)                     # dashboard variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS or name in AGGREGATIONS:
            continue
        names.add(name)
    return names


def exported_names(path):
    names = set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def all_panels(panels):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    dashboard_path, metrics_path = sys.argv[1], sys.argv[2]
    problems = []
    try:
        with open(dashboard_path, encoding="utf-8") as handle:
            dashboard = json.load(handle)
    except (OSError, ValueError) as error:
        print(f"check-grafana: {dashboard_path}: not readable JSON: {error}", file=sys.stderr)
        return 1
    exported = exported_names(metrics_path)
    if not exported:
        problems.append(f"{metrics_path}: no samples in the scrape")

    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dashboard:
            problems.append(f"dashboard has no '{key}'")
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list", [])}
    if (variables.get("datasource") or {}).get("type") != "datasource":
        problems.append("no 'datasource' template variable of type datasource")

    queries = []
    for variable in variables.values():
        query = variable.get("query")
        if variable.get("type") == "query":
            text = query.get("query") if isinstance(query, dict) else query
            inner = re.match(r"label_values\((.*),\s*\w+\)$", text or "")
            queries.append((f"variable {variable.get('name')}", inner.group(1) if inner else text or ""))
            if (variable.get("datasource") or {}).get("uid") != "${datasource}":
                problems.append(f"variable {variable.get('name')}: datasource is not ${{datasource}}")
    ids = set()
    panel_count = 0
    for panel in all_panels(dashboard.get("panels") or []):
        panel_count += 1
        label = f"panel {panel.get('id')} '{panel.get('title')}'"
        if panel.get("id") in ids:
            problems.append(f"{label}: duplicate id")
        ids.add(panel.get("id"))
        if not all(k in (panel.get("gridPos") or {}) for k in ("x", "y", "w", "h")):
            problems.append(f"{label}: no complete gridPos")
        if panel.get("type") == "row":
            continue
        if (panel.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"{label}: datasource is not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{label}: no queries")
        for target in targets:
            if (target.get("datasource") or {}).get("uid") != "${datasource}":
                problems.append(f"{label} query {target.get('refId')}: datasource is not ${{datasource}}")
            queries.append((f"{label} query {target.get('refId')}", target.get("expr", "")))

    used = set()
    for where, expr in queries:
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in '{expr}'")
        for name in sorted(names):
            used.add(name)
            if name not in exported and name not in SYNTHETIC:
                problems.append(f"{where}: metric '{name}' is not in the live /metrics output")

    for line in problems:
        print(f"check-grafana: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-grafana: {panel_count} panels, {len(queries)} queries, {len(used)} metrics, all exported: {', '.join(sorted(used))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
