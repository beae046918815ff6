"""The Grafana dashboard in deploy/grafana against what loomd really serves: the JSON is an
importable dashboard (panels with titles and PromQL targets, the ${datasource} variable,
the namespace/pod/service variables), and every `loom_*` metric its queries and template
variables name is in a live loomd's /metrics, scraped over the admin socket and parsed by
the Prometheus client library. Renaming a metric in Daemon+Metrics.swift without
updating the dashboard fails here. No pods and no traffic: a fresh loomd declares every
family (`# TYPE`) even before it has samples."""

import json
import os
import re

import pytest

import harness
from harness import run

DASHBOARD = os.path.join(harness.REPO, "deploy", "grafana", "loom-dashboard.json")
DS_UID = "${datasource}"

# A metric name starting with loom_, not part of a longer identifier or a $variable.
METRIC = re.compile(r"(?<![A-Za-z0-9_:$])loom_[A-Za-z0-9_:]*")
# Grafana variables in queries: $name, ${name}, ${name:format}, [[name]].
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                     "__range_ms", "__from", "__to", "__dashboard", "__name"}

# One metric per panel the dashboard promises (deploy/grafana/README.md); dropping a
# panel's query by accident fails the structure test.
REQUIRED_METRICS = {
    "loom_connections_opened_total", "loom_connections_active", "loom_connections_closed_total",
    "loom_bytes_total", "loom_service_connections_total", "loom_service_connections_active",
    "loom_service_connections_failed_total", "loom_service_bytes_total",
    "loom_upstream_connect_seconds_bucket", "loom_routing_decisions_total",
    "loom_policy_denials_total", "loom_rule_programming_seconds_bucket", "loom_pipes_in_use",
    "loom_pipes_cached", "loom_fd_budget_used_connections", "loom_fd_budget_connections",
    "loom_tracers", "loom_trace_dropped_total", "loom_config_version",
}


def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(dash):
    """Every panel, rows' nested panels (collapsed rows keep theirs inside) included."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def query_panels(dash):
    return [p for p in all_panels(dash) if p.get("type") != "row"]


def panel_exprs(dash):
    """(panel title, expr) for every target."""
    return [(p.get("title"), t.get("expr", ""))
            for p in query_panels(dash) for t in p.get("targets", [])]


def variable_queries(dash):
    """(variable name, query text) for every query variable: `query` (a string, or an
    object with a `query` string, as Grafana 10+ saves it) and `definition`."""
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        for text in (q, v.get("definition")):
            if isinstance(text, str) and text:
                out.append((v["name"], text))
    return out


def referenced_metrics(dash):
    """metric name -> where it is used."""
    used = {}
    for where, text in panel_exprs(dash) + [("variable $" + n, q) for n, q in variable_queries(dash)]:
        for name in METRIC.findall(text):
            used.setdefault(name, set()).add(where)
    return used


def test_dashboard_is_importable_json():
    dash = load_dashboard()
    assert dash.get("schemaVersion") == 39
    assert dash.get("title") and dash.get("uid")
    panels = query_panels(dash)
    assert panels, "dashboard has no panels"

    ids = [p.get("id") for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat: %s" % ids
    taken = {}
    for p in all_panels(dash):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, "%r sticks out of the grid" % p.get("title")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, "%r overlaps %r" % (p.get("title"), taken[(x, y)])
                taken[(x, y)] = p.get("title")

    for p in panels:
        title = p.get("title")
        assert isinstance(title, str) and title.strip(), "panel %s has no title" % p.get("id")
        assert p.get("type") in ("timeseries", "stat"), "%r: type %r" % (title, p.get("type"))
        assert p.get("datasource", {}).get("uid") == DS_UID, "%r: datasource %r" % (title, p.get("datasource"))
        targets = p.get("targets") or []
        assert targets, "%r has no targets" % title
        refs = [t.get("refId") for t in targets]
        assert len(refs) == len(set(refs)), "%r: refIds repeat: %s" % (title, refs)
        for t in targets:
            expr = t.get("expr")
            assert isinstance(expr, str) and expr.strip(), "%r: a target without expr" % title
            assert t.get("datasource", {}).get("uid") == DS_UID, "%r: target datasource %r" % (title, t.get("datasource"))
            assert METRIC.search(expr), "%r: %r names no loom_ metric" % (title, expr)

    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus"
    queries = dict(variable_queries(dash))
    assert queries.get("namespace") == "label_values(loom_connections_active, namespace)"
    assert queries.get("pod") == 'label_values(loom_connections_active{namespace=~"$namespace"}, pod)'
    assert queries.get("service") == "label_values(loom_service_connections_total, service)"
    for name, v in variables.items():
        if v["type"] == "query":
            assert v.get("datasource", {}).get("uid") == DS_UID, "$%s: datasource %r" % (name, v.get("datasource"))

    # Every variable a query uses exists; brackets balance (no promtool here).
    for where, text in panel_exprs(dash) + list(queries.items()):
        for m in VARIABLE.finditer(text):
            name = next(g for g in m.groups() if g)
            assert name in variables or name in BUILTIN_VARIABLES, "%r uses undefined $%s" % (where, name)
        depth = []
        for c in re.sub(r'"(?:[^"\\]|\\.)*"', '""', text):
            if c in "([{":
                depth.append(c)
            elif c in ")]}":
                assert depth and depth.pop() == {")": "(", "]": "[", "}": "{"}[c], "%r: unbalanced %r" % (where, text)
        assert not depth, "%r: unbalanced %r" % (where, text)

    missing = REQUIRED_METRICS - set(referenced_metrics(dash))
    assert not missing, "dashboard no longer queries %s" % sorted(missing)


def exposed_names(text):
    """Names a PromQL query can select in this exposition: every sample's name, plus
    names that `# TYPE` declares but that have no samples yet (a counter or gauge with
    labels before its first event); for histograms only _bucket/_sum/_count, since the
    bare name is no series."""
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(text))   # raises on a malformed line
    names = {s.name for f in families for s in f.samples}
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    parsed = {f.name for f in families}
    for name, kind in declared.items():
        assert name in parsed or re.sub(r"_total$", "", name) in parsed, \
            "the Prometheus parser did not see family %s" % name
        if kind == "histogram":
            names.update(name + s for s in ("_bucket", "_sum", "_count"))
        elif kind == "summary":
            names.update(name + s for s in ("", "_sum", "_count"))
        else:
            names.add(name)
    return names, declared


def test_dashboard_metrics_exist_in_loomd(workdir):
    if os.geteuid() != 0:
        pytest.skip("loomd needs root")
    if not os.access(harness.loomd_path(), os.X_OK):
        pytest.skip("loomd not built: %s (build it or set LOOMD)" % harness.loomd_path())
    used = referenced_metrics(load_dashboard())
    assert len(used) >= len(REQUIRED_METRICS)

    ld = harness.Loomd(None, workdir, ["--loops", "1"]).start()
    try:
        text = run("curl", "-sf", "--unix-socket", ld.admin, "http://loom/metrics").stdout
    finally:
        ld.stop()
    names, declared = exposed_names(text)
    assert len(declared) >= 20, "suspiciously few metric families:\n%s" % text

    missing = {n: sorted(w) for n, w in used.items() if n not in names}
    assert not missing, "the dashboard uses metrics loomd does not serve:\n%s\nloomd declares: %s" % (
        "\n".join("  %s (in %s)" % (n, ", ".join(w)) for n, w in sorted(missing.items())),
        ", ".join(sorted(declared)))

    def on_dashboard(name):
        if declared[name] in ("histogram", "summary"):
            return any(name + s in used for s in ("", "_bucket", "_sum", "_count"))
        return name in used
    print("loomd metrics not on the dashboard: %s" % ", ".join(sorted(n for n in declared if not on_dashboard(n))))
