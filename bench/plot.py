#!/usr/bin/python3
"""Draws the plots of docs/benchmarks.md from the files bench/run-report.sh
writes (loadgen's own CSV output), with Debian's python3-matplotlib.

    bench/plot.py RESULTS_DIR [IMAGE_DIR]      (IMAGE_DIR default docs/img)

Draws whatever it finds:
  latency-over-time.png      per-second p50 / p99 / p99.9 of each headline run
                             (headline-*.csv), so a periodic stall shows
  latency-distribution.png   the latency distribution (CCDF) of each headline
                             run (headline-*-hist.csv)
  saturation.png             p50 / p99 / p99.9 and server CPU against the
                             deliveries/s achieved, per set-up (sat-*.csv)
"""

import csv
import glob
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def label(path, prefix):
    name = os.path.basename(path)[len(prefix):-len(".csv")]
    return name.replace("-hist", "")


def latency_over_time(results, out):
    files = sorted(f for f in glob.glob(os.path.join(results, "headline-*.csv")) if not f.endswith("-hist.csv"))
    if not files:
        return None
    fig, axes = plt.subplots(len(files), 1, figsize=(10, 3.2 * len(files)), squeeze=False, sharex=True)
    for ax, path in zip(axes[:, 0], files):
        data = rows(path)
        seconds = [int(r["second"]) for r in data]
        for column, name, style in (("p50_ms", "p50", ":"), ("p99_ms", "p99", "-"), ("p999_ms", "p99.9", "--")):
            ax.plot(seconds, [float(r[column]) for r in data], style, label=name, linewidth=1)
        ax.set_yscale("log")
        ax.set_ylabel("fan-out latency (ms)")
        ax.set_title("%s: %d s measured, per second" % (label(path, "headline-"), len(seconds)), fontsize=10)
        ax.axhline(5, color="grey", linewidth=0.5)
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("second of the measured window")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency-over-time.png"), dpi=110)
    plt.close(fig)
    return "latency-over-time.png"


def latency_distribution(results, out):
    files = sorted(glob.glob(os.path.join(results, "headline-*-hist.csv")))
    if not files:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for path in files:
        data = [(int(r["upper_us"]), int(r["count"])) for r in rows(path)]
        total = sum(count for _, count in data)
        above, xs, ys = total, [], []
        for upper, count in data:
            above -= count
            if above > 0:
                xs.append(upper / 1000.0)
                ys.append(above / total)
        ax.step(xs, ys, where="post", label="%s (%d deliveries)" % (label(path, "headline-"), total))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fan-out latency (ms)")
    ax.set_ylabel("share of deliveries slower")
    for quantile in (1e-2, 1e-3):
        ax.axhline(quantile, color="grey", linewidth=0.5)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Latency distribution of the headline runs", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency-distribution.png"), dpi=110)
    plt.close(fig)
    return "latency-distribution.png"


def saturation(results, out):
    files = sorted(glob.glob(os.path.join(results, "sat-*.csv")))
    if not files:
        return None
    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(12, 4.8))
    for path in files:
        data = [r for r in rows(path) if float(r["deliveries_per_s"]) > 0]
        x = [float(r["deliveries_per_s"]) / 1000 for r in data]
        name = label(path, "sat-")
        line, = lat.plot(x, [float(r["p99_ms"]) for r in data], "o-", label=name + " p99", markersize=3)
        lat.plot(x, [float(r["p50_ms"]) for r in data], ":", color=line.get_color(), linewidth=1)
        lat.plot(x, [float(r["p999_ms"]) for r in data], "--", color=line.get_color(), linewidth=0.8)
        cpu.plot(x, [float(r["server_cpu_pct"]) for r in data], "o-", color=line.get_color(),
                 label=name + " server", markersize=3)
        cpu.plot(x, [float(r["gen_cpu_pct"]) for r in data], "x:", color=line.get_color(),
                 label=name + " generator", markersize=3)
    lat.set_yscale("log")
    lat.axhline(10, color="grey", linewidth=0.5)
    lat.set_xlabel("deliveries per second achieved (thousands)")
    lat.set_ylabel("fan-out latency (ms): p50 dotted, p99 solid, p99.9 dashed")
    lat.grid(True, which="both", linewidth=0.3)
    lat.legend(fontsize=7)
    cpu.set_xlabel("deliveries per second achieved (thousands)")
    cpu.set_ylabel("CPU (% of one core)")
    cpu.grid(True, linewidth=0.3)
    cpu.legend(fontsize=7)
    fig.suptitle("Saturation: one step after another on the same 10,000 connections", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "saturation.png"), dpi=110)
    plt.close(fig)
    return "saturation.png"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    results = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                "..", "docs", "img")
    os.makedirs(out, exist_ok=True)
    drawn = [name for name in (latency_over_time(results, out), latency_distribution(results, out),
                               saturation(results, out)) if name]
    if not drawn:
        sys.exit("plot.py: no headline-*.csv, headline-*-hist.csv or sat-*.csv in %s" % results)
    for name in drawn:
        print("plot.py: wrote", os.path.join(out, name))


if __name__ == "__main__":
    main()
