#!/usr/bin/env python3
"""Writes the Grafana dashboards of this folder (*.json) from the definitions below.

    python3 dashboards/generate.py          # rewrites dashboards/*.json
    python3 dashboards/generate.py --check  # exits 1 when a JSON file differs from what it would write

Every query uses only metrics the binaries export today (see docs/operations.md, "Metrics"); the observability
test (tests/observability/prometheus.sh) evaluates each one against a real Prometheus scraping causeway and
causeway-node under load. The JSON is importable as is: the data source is the `${datasource}` variable.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39


class Dashboard:
    def __init__(self, uid, title, description, tags, variables=()):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.variables = list(variables)
        self.panels = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    # --- layout: panels flow left to right on a 24-column grid ---
    def _place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title):
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0
        self.panels.append({"type": "row", "id": self._id(), "title": title, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.y += 1

    def panel(self, kind, title, targets, description="", unit=None, w=8, h=8, options=None, field=None,
              overrides=None, transformations=None):
        defaults = {"unit": unit} if unit else {}
        if kind == "timeseries":
            defaults.setdefault("custom", {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                           "showPoints": "never", "spanNulls": False})
        defaults.update(field or {})
        p = {
            "type": kind,
            "id": self._id(),
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or default_options(kind),
            "targets": [],
        }
        for i, t in enumerate(targets):
            expr, legend = (t, "") if isinstance(t, str) else t
            target = {"datasource": DS, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend or "__auto",
                      "range": kind != "table", "instant": kind == "table", "editorMode": "code"}
            if kind == "table":
                target["format"] = "table"
            p["targets"].append(target)
        if transformations:
            p["transformations"] = transformations
        self.panels.append(p)

    def json(self):
        templating = [{
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "",
        }]
        for name, label, query in self.variables:
            templating.append({
                "name": name, "label": label, "type": "query", "datasource": DS,
                "definition": query,
                "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
                "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "options": [], "regex": "", "sort": 1, "hide": 0,
            })
        return {
            "__requires": [
                {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
                {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            ],
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                "type": "dashboard",
            }]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [{"title": "Causeway", "type": "dashboards", "tags": ["causeway"], "asDropdown": True,
                       "includeVars": True, "keepTime": True}],
            "panels": self.panels,
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": self.tags,
            "templating": {"list": templating},
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


def default_options(kind):
    if kind == "timeseries":
        return {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
                "textMode": "auto"}
    if kind == "table":
        return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return {}


INST = 'instance=~"$instance"'
# The per-Service L4 panels (listeners of loadBalancerClass causeway.dev/proxy Services).
L4_TRAFFIC = True
RATE = "$__rate_interval"


def edge_overview():
    d = Dashboard("causeway-edge", "Causeway / Edge overview",
                  "The causeway replicas: HTTP(S) traffic (rate, errors, duration), TLS, the live route table, "
                  "L4 listeners and the Kubernetes watches.",
                  ["causeway"], [("instance", "Replica", "label_values(causeway_route_table_swaps_total, instance)")])
    d.row("Traffic")
    d.panel("stat", "Requests per second", [f"sum(rate(causeway_http_requests_total{{{INST}}}[{RATE}]))"],
            "Requests answered by every selected replica.", unit="reqps", w=6, h=5)
    d.panel("stat", "5xx ratio",
            [f'sum(rate(causeway_http_requests_total{{{INST},status_class="5xx"}}[{RATE}]))'
             f" / clamp_min(sum(rate(causeway_http_requests_total{{{INST}}}[{RATE}])), 1e-9)"],
            "Share of answers with a 5xx status (502: no endpoint reachable, 503: no endpoints, 504: timeout).",
            unit="percentunit", w=6, h=5,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                  {"color": "orange", "value": 0.01},
                                                                  {"color": "red", "value": 0.05}]}})
    d.panel("stat", "p99 response time",
            [f"histogram_quantile(0.99, sum by (le) "
             f"(rate(causeway_http_request_duration_seconds_bucket{{{INST}}}[{RATE}])))"],
            "Time from receiving a request to sending its response headers.", unit="s", w=6, h=5)
    d.panel("stat", "Connections per second", [f"sum(rate(causeway_connections_total{{{INST}}}[{RATE}]))"],
            "Client connections accepted on the HTTP and HTTPS listeners.", unit="cps", w=6, h=5)
    d.panel("timeseries", "Requests by status class",
            [(f"sum by (status_class) (rate(causeway_http_requests_total{{{INST}}}[{RATE}]))", "{{status_class}}")],
            unit="reqps", w=12)
    d.panel("timeseries", "Response time",
            [(f"histogram_quantile({q}, sum by (le) "
              f"(rate(causeway_http_request_duration_seconds_bucket{{{INST}}}[{RATE}])))", f"p{int(q * 100)}")
             for q in (0.5, 0.9, 0.99)],
            "Quantiles over every route.", unit="s", w=12)
    d.panel("timeseries", "Connections by listener",
            [(f"sum by (listener) (rate(causeway_connections_total{{{INST}}}[{RATE}]))", "{{listener}}")],
            unit="cps", w=8)
    d.panel("timeseries", "TLS handshake failures",
            [(f"sum by (instance) (rate(causeway_tls_handshake_errors_total{{{INST}}}[{RATE}]))", "{{instance}}")],
            "Handshakes that failed or timed out (no certificate for the name, protocol errors, port scans).",
            unit="ops", w=8)
    d.panel("timeseries", "Endpoint connect failures",
            [(f"sum by (service) (rate(causeway_upstream_connect_errors_total{{{INST}}}[{RATE}]))", "{{service}}")],
            "Failed or timed-out connects to pod endpoints, by Service: stale EndpointSlices or dead pods.",
            unit="ops", w=8)

    d.row("Route table")
    d.panel("stat", "Seconds since the last table swap",
            [f"time() - max(causeway_route_table_last_swap_timestamp_seconds{{{INST}}})"],
            "Every change of Ingresses, Services, EndpointSlices or Secrets compiles and swaps a new table.",
            unit="s", w=6, h=5)
    d.panel("stat", "Table swaps (range)",
            [f"sum(increase(causeway_route_table_swaps_total{{{INST}}}[$__range]))"], unit="short", w=6, h=5)
    d.panel("stat", "Error diagnostics",
            [f'max(causeway_route_table_diagnostics{{{INST},severity="error"}})'],
            "Objects (or fields) left out of the live table. `causeway routes` or /debug/routes names them.",
            unit="short", w=6, h=5,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                  {"color": "red", "value": 1}]}})
    d.panel("stat", "Warning diagnostics",
            [f'max(causeway_route_table_diagnostics{{{INST},severity="warning"}})'], unit="short", w=6, h=5,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                  {"color": "orange", "value": 1}]}})
    d.panel("timeseries", "Table swaps", [(f"sum by (instance) (rate(causeway_route_table_swaps_total{{{INST}}}[{RATE}]))",
                                           "{{instance}}")], unit="ops", w=12)
    d.panel("timeseries", "Diagnostics by severity",
            [(f"max by (severity) (causeway_route_table_diagnostics{{{INST}}})", "{{severity}}")], unit="short", w=12)
    d.panel("table", "TLS certificates: days to expiry",
            [(f"min by (host) (causeway_tls_certificate_expiry_timestamp_seconds{{{INST}}} - time()) / 86400", "")],
            "notAfter of the certificate served for each host, in days from now. Renew below 14.",
            unit="d", w=24, h=7,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                                  {"color": "orange", "value": 7},
                                                                  {"color": "green", "value": 14}]},
                   "custom": {"cellOptions": {"type": "color-text"}}},
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                             "renameByName": {"Value": "days left"}}}])

    d.row("L4 listeners (loadBalancerClass causeway.dev/proxy)")
    d.panel("stat", "L4 listeners", [f"sum(causeway_l4_listeners{{{INST}}})"], unit="short", w=6, h=5)
    if not L4_TRAFFIC:
        return d
    d.panel("stat", "Open L4 connections", [f"sum(causeway_l4_active_connections{{{INST}}})"], unit="short", w=6, h=5)
    d.panel("stat", "L4 throughput",
            [f"sum(rate(causeway_l4_bytes_total{{{INST}}}[{RATE}]))"], unit="Bps", w=6, h=5)
    d.panel("stat", "L4 connect failures per second",
            [f"sum(rate(causeway_l4_connect_errors_total{{{INST}}}[{RATE}]))"], unit="ops", w=6, h=5)
    d.panel("timeseries", "L4 connections by Service",
            [(f"sum by (service, protocol) (rate(causeway_l4_connections_total{{{INST}}}[{RATE}]))",
              "{{service}} {{protocol}}")], unit="cps", w=12)
    d.panel("timeseries", "L4 bytes by Service and direction",
            [(f"sum by (service, direction) (rate(causeway_l4_bytes_total{{{INST}}}[{RATE}]))",
              "{{service}} {{direction}}")], unit="Bps", w=12)
    return d


def per_ingress():
    d = Dashboard("causeway-ingress", "Causeway / Ingress and Service",
                  "Rate, errors and duration per Ingress and backend Service. The empty Ingress and Service "
                  "label counts requests that matched no route (404).",
                  ["causeway"],
                  [("instance", "Replica", "label_values(causeway_route_table_swaps_total, instance)"),
                   ("ingress", "Ingress", 'label_values(causeway_http_requests_total{instance=~"$instance"}, ingress)'),
                   ("service", "Service",
                    'label_values(causeway_http_requests_total{instance=~"$instance",ingress=~"$ingress"}, service)')])
    sel = f'{INST},ingress=~"$ingress",service=~"$service"'
    d.row("Requests")
    d.panel("timeseries", "Requests by Ingress",
            [(f"sum by (ingress) (rate(causeway_http_requests_total{{{sel}}}[{RATE}]))", "{{ingress}}")],
            "Ingresses are labelled namespace/name.", unit="reqps", w=12)
    d.panel("timeseries", "Requests by Service and status class",
            [(f"sum by (service, status_class) (rate(causeway_http_requests_total{{{sel}}}[{RATE}]))",
              "{{service}} {{status_class}}")], unit="reqps", w=12)
    d.panel("timeseries", "Error ratio (5xx) by Service",
            [(f'sum by (service) (rate(causeway_http_requests_total{{{sel},status_class="5xx"}}[{RATE}]))'
              f" / clamp_min(sum by (service) (rate(causeway_http_requests_total{{{sel}}}[{RATE}])), 1e-9)",
              "{{service}}")], unit="percentunit", w=12)
    d.panel("timeseries", "Client errors (4xx) by Ingress",
            [(f'sum by (ingress) (rate(causeway_http_requests_total{{{sel},status_class="4xx"}}[{RATE}]))',
              "{{ingress}}")], unit="reqps", w=12)
    d.row("Duration")
    for q, w in ((0.5, 8), (0.9, 8), (0.99, 8)):
        d.panel("timeseries", f"p{int(q * 100)} by Ingress and Service",
                [(f"histogram_quantile({q}, sum by (le, ingress, service) "
                  f"(rate(causeway_http_request_duration_seconds_bucket{{{sel}}}[{RATE}])))",
                  "{{ingress}} → {{service}}")], unit="s", w=w)
    d.panel("timeseries", "Mean response time by Service",
            [(f"sum by (service) (rate(causeway_http_request_duration_seconds_sum{{{sel}}}[{RATE}]))"
              f" / clamp_min(sum by (service) (rate(causeway_http_request_duration_seconds_count{{{sel}}}[{RATE}])), 1e-9)",
              "{{service}}")], unit="s", w=12)
    d.panel("timeseries", "Endpoint connect failures by Service",
            [(f'sum by (service) (rate(causeway_upstream_connect_errors_total{{{INST},service=~"$service"}}[{RATE}]))',
              "{{service}}")], unit="ops", w=12)
    d.row("Routes")
    d.panel("table", "Routes: request rate and errors",
            [(f"sum by (ingress, service) (rate(causeway_http_requests_total{{{sel}}}[{RATE}]))", ""),
             (f'sum by (ingress, service) (rate(causeway_http_requests_total{{{sel},status_class="5xx"}}[{RATE}]))', "")],
            "One line per (Ingress, Service) the live table routes to.", unit="reqps", w=24, h=8,
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                            "renameByName": {"Value #A": "req/s",
                                                                             "Value #B": "5xx/s"}}}])
    return d


def node_agent():
    d = Dashboard("causeway-node", "Causeway / Node agent",
                  "causeway-node on every node: Service rule syncs (iptables-restore), network programming "
                  "latency, routes to other nodes' pod CIDRs.",
                  ["causeway"],
                  [("instance", "Node agent", "label_values(causeway_node_last_sync_timestamp_seconds, instance)")])
    d.row("Health")
    d.panel("stat", "Node agents", [f"count(causeway_node_last_sync_timestamp_seconds{{{INST}}})"],
            "Agents scraped.", unit="short", w=6, h=5)
    d.panel("stat", "Agents without a sync in 2 minutes",
            [f"count(time() - causeway_node_last_sync_timestamp_seconds{{{INST}}} > 120)"
             f" or count(causeway_node_last_sync_timestamp_seconds{{{INST}}}) * 0"],
            "Agents whose last successful rule sync is older than 2 minutes (the periodic sync runs every 30 s).",
            unit="short", w=6, h=5,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                  {"color": "red", "value": 1}]}})
    d.panel("stat", "Rule sync failures per minute",
            [f"sum(rate(causeway_node_sync_failures_total{{{INST}}}[{RATE}])) * 60"], unit="short", w=6, h=5,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                  {"color": "red", "value": 0.001}]}})
    d.panel("stat", "p99 network programming latency",
            [f"histogram_quantile(0.99, sum by (le) "
             f"(rate(causeway_node_network_programming_latency_seconds_bucket{{{INST}}}[{RATE}])))"],
            "From a change of Services, EndpointSlices or Nodes (as the source saw it) to its rules applied.",
            unit="s", w=6, h=5)
    d.panel("table", "Agents: seconds since the last successful sync",
            [(f"max by (instance) (time() - causeway_node_last_sync_timestamp_seconds{{{INST}}})", "")],
            "A very large value: the agent never synced since it started.", unit="s", w=24, h=6,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                             "renameByName": {"Value": "seconds"}}}])
    d.row("Rule syncs")
    d.panel("timeseries", "Rule syncs by kind",
            [(f"sum by (instance, kind) (rate(causeway_node_syncs_total{{{INST}}}[{RATE}]))", "{{instance}} {{kind}}")],
            "Full syncs rewrite every chain; partial syncs only the Services that changed.", unit="ops", w=12)
    d.panel("timeseries", "Rule sync failures by reason",
            [(f"sum by (instance, reason, family) (rate(causeway_node_sync_failures_total{{{INST}}}[{RATE}]))",
              "{{instance}} {{reason}} {{family}}")],
            "iptables-restore refused the rules or could not run; the agent retries.", unit="ops", w=12)
    d.panel("timeseries", "Sync duration",
            [(f"histogram_quantile({q}, sum by (le, kind) "
              f"(rate(causeway_node_sync_duration_seconds_bucket{{{INST}}}[{RATE}])))", f"p{int(q * 100)} {{{{kind}}}}")
             for q in (0.5, 0.99)],
            "Time to render and apply the rules.", unit="s", w=12)
    d.panel("timeseries", "Network programming latency",
            [(f"histogram_quantile({q}, sum by (le) "
              f"(rate(causeway_node_network_programming_latency_seconds_bucket{{{INST}}}[{RATE}])))", f"p{int(q * 100)}")
             for q in (0.5, 0.99)], unit="s", w=12)
    d.row("Rules and routes")
    d.panel("timeseries", "Service ports programmed",
            [(f"max by (instance) (causeway_node_service_ports{{{INST}}})", "{{instance}}")], unit="short", w=8)
    d.panel("timeseries", "iptables rules owned",
            [(f"max by (instance) (causeway_node_iptables_rules{{{INST}}})", "{{instance}}")], unit="short", w=8)
    d.panel("timeseries", "Diagnostics (objects skipped)",
            [(f"max by (instance) (causeway_node_diagnostics{{{INST}}})", "{{instance}}")], unit="short", w=8)
    d.panel("timeseries", "Routes to other nodes",
            [(f"max by (instance) (causeway_node_routes{{{INST}}})", "{{instance}}")],
            "Routes `podCIDR via nodeInternalIP`, one per other node.", unit="short", w=12)
    d.panel("timeseries", "Route reconcile failures by reason",
            [(f"sum by (instance, reason) (rate(causeway_node_route_sync_failures_total{{{INST}}}[{RATE}]))",
              "{{instance}} {{reason}}")],
            "netlink refused a route (for example a node address on no connected network).", unit="ops", w=12)
    return d


def controller():
    d = Dashboard("causeway-controller", "Causeway / Controller",
                  "The Kubernetes side of the causeway replicas: watch health, leader election, Ingress status "
                  "writes and Events. Exported when causeway watches a cluster (not with --manifests).",
                  ["causeway"], [("instance", "Replica", "label_values(causeway_kube_watch_synced, instance)")])
    d.row("Watches")
    d.panel("stat", "Leaders", [f"sum(causeway_leader{{{INST}}})"],
            "Replicas holding the Lease: exactly 1 when healthy.", unit="short", w=6, h=5,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                                  {"color": "green", "value": 1},
                                                                  {"color": "red", "value": 2}]}})
    d.panel("stat", "Watched kinds not synced",
            [f"count(causeway_kube_watch_synced{{{INST}}} == 0) or count(causeway_kube_watch_synced{{{INST}}}) * 0"],
            "Kinds whose current list has not been delivered: the replica is not ready (/readyz) while any is.",
            unit="short", w=6, h=5,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                  {"color": "red", "value": 1}]}})
    d.panel("stat", "Watch errors per minute",
            [f"sum(rate(causeway_kube_watch_errors_total{{{INST}}}[{RATE}])) * 60"], unit="short", w=6, h=5)
    d.panel("stat", "Re-lists (range)",
            [f"sum(increase(causeway_kube_watch_restarts_total{{{INST}}}[$__range]))"], unit="short", w=6, h=5)
    d.panel("timeseries", "Synced by kind",
            [(f"min by (kind) (causeway_kube_watch_synced{{{INST}}})", "{{kind}}")],
            "1 once the kind's list has been delivered; 0 while it re-lists.", unit="short", w=8)
    d.panel("timeseries", "Watch errors by kind",
            [(f"sum by (kind) (rate(causeway_kube_watch_errors_total{{{INST}}}[{RATE}]))", "{{kind}}")],
            "Failed lists and broken watches (API server restarts, expired resource versions, missing RBAC).",
            unit="ops", w=8)
    d.panel("timeseries", "Re-lists by kind",
            [(f"sum by (kind) (rate(causeway_kube_watch_restarts_total{{{INST}}}[{RATE}]))", "{{kind}}")],
            unit="ops", w=8)
    d.row("Leadership and writes")
    d.panel("timeseries", "Leader by replica",
            [(f"max by (instance) (causeway_leader{{{INST}}})", "{{instance}}")], unit="short", w=8)
    d.panel("timeseries", "Leadership changes",
            [(f"sum by (instance, change) (increase(causeway_leader_transitions_total{{{INST}}}[$__range]))",
              "{{instance}} {{change}}")], unit="short", w=8)
    d.panel("timeseries", "Ingress status writes by result",
            [(f"sum by (result) (rate(causeway_ingress_status_updates_total{{{INST}}}[{RATE}]))", "{{result}}")],
            "Writes of Ingress status.loadBalancer by the leader.", unit="ops", w=8)
    d.panel("timeseries", "Events published by result",
            [(f"sum by (result) (rate(causeway_kube_events_total{{{INST}}}[{RATE}]))", "{{result}}")],
            "Diagnostics published as Kubernetes Events on the objects concerned.", unit="ops", w=12)
    d.panel("timeseries", "Diagnostics by severity",
            [(f"max by (severity) (causeway_route_table_diagnostics{{{INST}}})", "{{severity}}")],
            "Objects or fields left out of the live table.", unit="short", w=12)
    return d


def load_balancer():
    d = Dashboard("causeway-loadbalancer", "Causeway / LoadBalancer addresses",
                  "Addresses of Services of type LoadBalancer: which node announces each (causeway-node with "
                  "--lb-interface: the address on the interface plus gratuitous ARP), ownership moves "
                  "(failovers), announce failures, and the proxy's L4 listeners on those addresses.",
                  ["causeway"],
                  [("instance", "Node agent", "label_values(causeway_node_lb_addresses_owned, instance)")])
    d.row("Announcement")
    d.panel("stat", "Addresses announced", [f"sum(causeway_node_lb_addresses_owned{{{INST}}})"],
            "LoadBalancer addresses held and announced by some node. Fewer than the assigned addresses: "
            "some have no eligible node (no Ready node, or no local endpoint with externalTrafficPolicy Local).",
            unit="short", w=6, h=5)
    d.panel("stat", "Nodes announcing", [f"count(causeway_node_lb_addresses_owned{{{INST}}} > 0)"
                                         f" or count(causeway_node_lb_addresses_owned{{{INST}}}) * 0"],
            unit="short", w=6, h=5)
    d.panel("stat", "Ownership moves (range)",
            [f'sum(increase(causeway_node_lb_ownership_changes_total{{{INST},change="acquired"}}[$__range]))'],
            "Addresses a node started announcing: at start, on new Services, and on failover from a lost node.",
            unit="short", w=6, h=5)
    d.panel("stat", "Announce failures per minute",
            [f"sum(rate(causeway_node_lb_announce_failures_total{{{INST}}}[{RATE}])) * 60"],
            "Failed address changes or gratuitous ARPs on --lb-interface.", unit="short", w=6, h=5,
            field={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                  {"color": "red", "value": 0.001}]}})
    d.panel("timeseries", "Addresses announced by node",
            [(f"max by (instance) (causeway_node_lb_addresses_owned{{{INST}}})", "{{instance}}")],
            "Each address is announced by exactly one node (rendezvous hashing over the eligible nodes).",
            unit="short", w=12)
    d.panel("timeseries", "Ownership changes by node",
            [(f"sum by (instance, change) (rate(causeway_node_lb_ownership_changes_total{{{INST}}}[{RATE}]))",
              "{{instance}} {{change}}")],
            "acquired on one node and released on another at the same time: a failover.", unit="ops", w=12)
    d.panel("timeseries", "Announce failures by node",
            [(f"sum by (instance) (rate(causeway_node_lb_announce_failures_total{{{INST}}}[{RATE}]))",
              "{{instance}}")], unit="ops", w=12)
    d.panel("timeseries", "Proxy L4 listeners (loadBalancerClass causeway.dev/proxy)",
            [("sum by (instance) (causeway_l4_listeners)", "{{instance}}")],
            "Listeners the causeway proxy opened on the LoadBalancer addresses of proxy-class Services.",
            unit="short", w=12)
    return d


def main():
    check = sys.argv[1:] == ["--check"]
    stale = 0
    for name, d in (("edge-overview", edge_overview()), ("ingress-service", per_ingress()),
                    ("controller", controller()), ("node-agent", node_agent()),
                    ("loadbalancer", load_balancer())):
        if not [p for p in d.panels if p["type"] != "row"]:
            continue  # nothing to show yet: the metrics do not exist in the code
        path = os.path.join(HERE, f"causeway-{name}.json")
        text = json.dumps(d.json(), indent=2, ensure_ascii=False) + "\n"
        if check:
            try:
                same = open(path, encoding="utf-8").read() == text
            except OSError:
                same = False
            print(f"{'ok  ' if same else 'FAIL'}  {os.path.relpath(path)} is what dashboards/generate.py writes")
            stale += 0 if same else 1
            continue
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
