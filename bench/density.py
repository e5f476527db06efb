#!/usr/bin/env python3
"""Helpers of bench/density.sh (the shell script drives; this file measures and summarises).

  density.py watch KUBECTL KUBECONFIG NS SELECTOR N TIMEOUT OUT.json [--ready]
      Streams the pods' watch from the API server and time-stamps every event on arrival:
      first seen (the ReplicaSet controller created the pod), first seen Running (and
      Ready with --ready). Stops once N pods are Running (and Ready) or after TIMEOUT s.
  density.py proc PID...            {pss_kb, cpu_ticks} summed over the PIDs (smaps_rollup, stat)
  density.py metrics FILE           kubelet_runtime_operations_duration_seconds → JSON
  density.py combine START S0 S1 STEADY OPS1 OPS0 EMPTY CLEAN LEFT   one workload's JSON
  density.py table RESULTS_DIR      the kboot / containerd table from every round's JSON

The creation time is when the pod's ADDED event arrives, not metadata.creationTimestamp
(whole seconds only); the API server sends it within milliseconds of the write.
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time


def pct(values, p):
    """Nearest-rank percentile (the SIG-scalability measurement's definition)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def watch(kubectl, kubeconfig, ns, selector, n, timeout, out, ready):
    t0 = time.time()
    deadline = t0 + timeout
    pods = {}
    key = "ready" if ready else "running"
    reached = 0
    rv = ""
    restarts = 0
    while reached < n and time.time() < deadline:
        # The API server ends a watch whose client falls behind (a loaded host): resume
        # from the last resourceVersion seen, so no event is lost.
        url = (f"/api/v1/namespaces/{ns}/pods?watch=1&labelSelector={selector}"
               f"&allowWatchBookmarks=true" + (f"&resourceVersion={rv}" if rv else ""))
        proc = subprocess.Popen([kubectl, "--kubeconfig", kubeconfig, "get", "--raw", url],
                                stdout=subprocess.PIPE, text=True, bufsize=1)
        # The deadline kills kubectl, which ends the loop below. (select() on the pipe
        # cannot tell when lines already sit in Python's buffer: the first version hung.)
        timer = threading.Timer(max(0.0, deadline - time.time()), proc.terminate)
        timer.start()
        for line in proc.stdout:
            now = time.time()
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            obj = ev.get("object", {})
            rv = obj.get("metadata", {}).get("resourceVersion", rv)
            name = obj.get("metadata", {}).get("name")
            if ev.get("type") in ("BOOKMARK", "ERROR") or not name:
                if ev.get("type") == "ERROR":
                    rv = ""  # e.g. 410 Gone: start over (pods already seen keep their times)
                continue
            p = pods.setdefault(name, {"seen": now})
            st = obj.get("status", {})
            if st.get("phase") == "Running" and "running" not in p:
                p["running"] = now
                reached += key == "running"
            conds = {c.get("type"): c.get("status") for c in st.get("conditions", [])}
            if conds.get("Ready") == "True" and "ready" not in p:
                p["ready"] = now
                reached += key == "ready"
            if reached >= n:
                break
        timer.cancel()
        proc.terminate()
        proc.wait()
        restarts += 1
    run = [p["running"] - p["seen"] for p in pods.values() if "running" in p]
    rdy = [p["ready"] - p["seen"] for p in pods.values() if "ready" in p]
    first = min((p["seen"] for p in pods.values()), default=t0)
    res = {
        "pods_seen": len(pods),
        "watch_restarts": restarts - 1,
        "pods_running": len(run),
        "pods_ready": len(rdy),
        "all_running_s": (max(p["running"] for p in pods.values() if "running" in p) - first) if len(run) >= n else None,
        "creation_spread_s": (max(p["seen"] for p in pods.values()) - first) if pods else None,
        "start_s": {"p50": pct(run, 50), "p90": pct(run, 90), "p99": pct(run, 99), "max": max(run, default=None)},
        "per_pod_running_s": sorted(run),
    }
    if ready:
        res["all_ready_s"] = (max(p["ready"] for p in pods.values() if "ready" in p) - first) if len(rdy) >= n else None
        res["ready_s"] = {"p50": pct(rdy, 50), "p90": pct(rdy, 90), "p99": pct(rdy, 99)}
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "per_pod_running_s"}))
    return 0 if len(run) >= n else 1


def proc_figures(pids):
    pss = 0
    ticks = 0
    alive = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            alive += 1
        except (OSError, IndexError, ValueError):
            pass
    print(json.dumps({"pss_kb": pss, "cpu_ticks": ticks, "processes": alive, "hz": os.sysconf("SC_CLK_TCK")}))


def metrics(path):
    """Per operation_type: count, sum and the histogram (cumulative buckets)."""
    ops = {}
    name = "kubelet_runtime_operations_duration_seconds"
    with open(path) as f:
        for line in f:
            if not line.startswith(name):
                continue
            metric, value = line.rsplit(" ", 1)
            labels = dict(kv.split("=", 1) for kv in metric[metric.index("{") + 1:metric.rindex("}")].split(",") if "=" in kv)
            labels = {k: v.strip('"') for k, v in labels.items()}
            op = ops.setdefault(labels.get("operation_type", "?"), {"count": 0, "sum": 0.0, "buckets": {}})
            if metric.startswith(name + "_count"):
                op["count"] = int(float(value))
            elif metric.startswith(name + "_sum"):
                op["sum"] = float(value)
            elif metric.startswith(name + "_bucket"):
                op["buckets"][labels["le"]] = int(float(value))
    print(json.dumps(ops))


def bucket_p(buckets, count, p):
    """The upper bound of the bucket holding the p-th percentile (what Prometheus' histograms allow)."""
    if not count:
        return None
    want = count * p / 100
    for le, c in sorted(((float(k), v) for k, v in buckets.items())):
        if c >= want:
            return le
    return None


def delta_ops(after, before):
    out = {}
    for op, a in after.items():
        b = before.get(op, {"count": 0, "sum": 0.0, "buckets": {}})
        cnt = a["count"] - b["count"]
        if cnt <= 0:
            continue
        bk = {le: v - b["buckets"].get(le, 0) for le, v in a["buckets"].items()}
        out[op] = {"count": cnt, "mean_ms": 1000 * (a["sum"] - b["sum"]) / cnt,
                   "p99_le_ms": (lambda x: None if x is None else 1000 * x)(bucket_p(bk, cnt, 99))}
    return out


def combine(start, s0, s1, steady, ops1, ops0, empty, clean, left):
    """One workload's JSON: start latencies, steady state, runtime calls, delete."""
    s0, s1, steady = json.loads(s0), json.loads(s1), float(steady)

    def cpu(k):
        return 100.0 * (s1[k]["cpu_ticks"] - s0[k]["cpu_ticks"]) / s1[k]["hz"] / steady if steady else None
    with open(start) as f, open(ops1) as a, open(ops0) as b:
        out = {
            "start": json.load(f),
            "steady": {"runtime": s1["runtime"], "pause": s1["pause"], "kubelet": s1["kubelet"],
                       "runtime_cpu_pct": cpu("runtime"), "kubelet_cpu_pct": cpu("kubelet"),
                       "seconds": steady,
                       "processes_changed": s0["runtime"]["processes"] != s1["runtime"]["processes"]},
            "ops": delta_ops(json.load(a), json.load(b)),
            "delete": {"empty_s": float(empty), "clean_s": None if clean == "null" else float(clean),
                       "left": left},
        }
    print(json.dumps(out, indent=1))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def table(results):
    rounds = []
    for fn in sorted(os.listdir(results)):
        if fn.startswith("round-") and fn.endswith(".json"):
            with open(os.path.join(results, fn)) as f:
                rounds.append(json.load(f))
    rows = []  # (label, key function, unit, format)
    def fig(rt, wl, getter):
        return med([getter(r[rt][wl]) for r in rounds if rt in r and wl in r[rt] and r[rt][wl]])
    wls = [w for w in ("sleep", "probe") if any(w in r.get("kboot", {}) or w in r.get("containerd", {}) for r in rounds)]
    lines = [f"rounds: {len(rounds)} (medians of the rounds)", "",
             "| figure | kboot | containerd | ratio |", "|---|---|---|---|"]

    def row(label, getter, fmt="{:.2f}", wl=None):
        for w in ([wl] if wl else wls):
            k, c = fig("kboot", w, getter), fig("containerd", w, getter)
            ratio = f"**{k / c:.2f}**" if k is not None and c else "–"
            fk = fmt.format(k) if k is not None else "–"
            fc = fmt.format(c) if c is not None else "–"
            lines.append(f"| {label} ({w}) | {fk} | {fc} | {ratio} |")

    row("pods Running (of 110)", lambda x: x["start"]["pods_running"], "{:.0f}")
    row("pod start p50, s", lambda x: x["start"]["start_s"]["p50"])
    row("pod start p90, s", lambda x: x["start"]["start_s"]["p90"])
    row("pod start p99, s", lambda x: x["start"]["start_s"]["p99"])
    row("all Running, s (from the first pod created)", lambda x: x["start"]["all_running_s"])
    row("pod Ready p99, s", lambda x: x["start"].get("ready_s", {}).get("p99"), wl="probe")
    row("runtime Pss, MB", lambda x: x["steady"]["runtime"]["pss_kb"] / 1024, "{:.1f}")
    row("containerd's pause processes, Pss MB", lambda x: x["steady"]["pause"]["pss_kb"] / 1024, "{:.1f}")
    row("runtime processes", lambda x: x["steady"]["runtime"]["processes"], "{:.0f}")
    row("runtime CPU, % of one core", lambda x: x["steady"]["runtime_cpu_pct"], "{:.2f}")
    row("kubelet CPU, % of one core", lambda x: x["steady"]["kubelet_cpu_pct"], "{:.2f}")
    row("delete: node empty after, s", lambda x: x["delete"]["empty_s"])
    row("delete: runtime clean after, s", lambda x: x["delete"]["clean_s"])
    lines.append("")
    lines.append("Per round (`sleep`): host load average at the round's start and end, p99 pod start, runtime Pss and CPU:")
    lines.append("")
    lines.append("| round | order | load | p99 kboot / containerd, s | Pss kboot / containerd, MB | CPU kboot / containerd, % |")
    lines.append("|---|---|---|---|---|---|")
    for r in rounds:
        def one(rt, getter, fmt):
            try:
                return fmt.format(getter(r[rt]["sleep"]))
            except (KeyError, TypeError):
                return "–"
        p99 = lambda x: x["start"]["start_s"]["p99"]
        pss = lambda x: x["steady"]["runtime"]["pss_kb"] / 1024
        cpu = lambda x: x["steady"]["runtime_cpu_pct"]
        lines.append(f"| {r['round']} | {' then '.join(r['order'])} | {r['loadavg_start']:.1f} → {r['loadavg_end']:.1f} | "
                     f"{one('kboot', p99, '{:.2f}')} / {one('containerd', p99, '{:.2f}')} | "
                     f"{one('kboot', pss, '{:.1f}')} / {one('containerd', pss, '{:.1f}')} | "
                     f"{one('kboot', cpu, '{:.2f}')} / {one('containerd', cpu, '{:.2f}')} |")
    lines.append("")
    lines.append("kubelet → runtime call latency (`kubelet_runtime_operations_duration_seconds`, mean ms, from pod creation to deletion):")
    lines.append("")
    lines.append("| operation | kboot | containerd | ratio |")
    lines.append("|---|---|---|---|")
    for w in wls[:1]:
        ops = sorted({op for r in rounds for rt in ("kboot", "containerd") for op in r.get(rt, {}).get(w, {}).get("ops", {})})
        for op in ops:
            k = fig("kboot", w, lambda x: x["ops"].get(op, {}).get("mean_ms"))
            c = fig("containerd", w, lambda x: x["ops"].get(op, {}).get("mean_ms"))
            n = fig("kboot", w, lambda x: x["ops"].get(op, {}).get("count"))
            ratio = f"{k / c:.2f}" if k is not None and c else "–"
            fk = f"{k:.2f}" if k is not None else "–"
            fc = f"{c:.2f}" if c is not None else "–"
            lines.append(f"| {op} ({w}, {n:.0f} calls) | {fk} | {fc} | {ratio} |" if n else f"| {op} ({w}) | {fk} | {fc} | {ratio} |")
    print("\n".join(lines))


def main():
    cmd = sys.argv[1]
    if cmd == "watch":
        kubectl, kubeconfig, ns, selector, n, timeout, out = sys.argv[2:9]
        sys.exit(watch(kubectl, kubeconfig, ns, selector, int(n), float(timeout), out, "--ready" in sys.argv[9:]))
    elif cmd == "proc":
        proc_figures(sys.argv[2:])
    elif cmd == "metrics":
        metrics(sys.argv[2])
    elif cmd == "delta":
        with open(sys.argv[2]) as a, open(sys.argv[3]) as b:
            print(json.dumps(delta_ops(json.load(a), json.load(b))))
    elif cmd == "combine":
        combine(*sys.argv[2:11])
    elif cmd == "table":
        table(sys.argv[2])
    else:
        sys.exit(f"density.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
