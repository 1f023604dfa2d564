"""PNG plots of the latency and scale curves, and the README's table, from the JSON
files in bench/results/ (written by latency_bench.py and scale_bench.py).

    .venv/bin/python bench/plots.py              # redraw docs/bench/*.png
    .venv/bin/python bench/plots.py --markdown   # print the README section
    .venv/bin/python bench/plots.py --quick      # the --quick runs' plots, in bench/results/

Every plot has ours, the peer (FastAPI + uvicorn + asyncpg) and the database limit
(the same commits straight through asyncpg) measured in the same run. Full runs'
plots go to docs/bench/ (committed: small PNGs), quick runs' to bench/results/.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
import results
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from processes import ROOT

DOCS = ROOT / "docs" / "bench"
COLORS = {"ours": "#1f5fbf", "conventional": "#d9730d", "direct": "#555555"}
NAMES = {
    "ours": "ours (serve -w2)",
    "conventional": "peer (FastAPI + uvicorn + asyncpg)",
    "direct": "database limit (direct asyncpg)",
}
DPI = 100


def out_dir(name: str) -> Path:
    return results.RESULTS if name.endswith("_quick") else DOCS


def _kilo(x: float, _pos: object = None) -> str:
    if x >= 1000:
        return f"{x / 1000:g}k"
    return f"{x:g}"


def _count(x: float, _pos: object = None) -> str:
    return f"{x:,.0f}"


def _bytes(x: float, _pos: object = None) -> str:
    return f"{x / 1024:g} KiB" if x >= 1024 else f"{x:g} B"


def _subtitle(doc: dict[str, Any]) -> str:
    c = doc["context"]
    quick = " (--quick: indicative only)" if doc["bench"].endswith("_quick") else ""
    return (
        f"{c['date'][:10]}, commit {c['commit']}, {c['usable_cores']} cores, "
        f"PostgreSQL fsync {doc.get('postgres', {}).get('fsync', '?')}{quick}"
    )


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


# ---- latency ---------------------------------------------------------------------------


def plot_latency(name: str = "latency") -> list[Path]:
    doc = results.load(name)
    if doc is None:
        return []
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    maxima = doc["maximum"]
    top = 1.0
    failed = 0
    for kind, swept in doc["sweep"].items():
        points = [p for p in swept if p["stored_ok"] and not p["first_error"]]
        failed += len(swept) - len(points)
        if not points:
            continue
        color = COLORS[kind]
        x = [p["offered_events_per_s"] for p in points]
        for q, style, width in (("p50", "--", 1.2), ("p99", "-", 2.0), ("p999", ":", 1.2)):
            y = [p["latency_ms"][q] for p in points]
            label = f"{NAMES[kind].split(' (')[0]} {q.replace('p999', 'p99.9')}"
            ax.plot(x, y, style, color=color, lw=width, marker="o", ms=3, label=label)
            top = max([top, *(v for v in y if v)])
        for p in points:
            # Overloaded: the queue did not drain (older files: answered < 90 % of offered).
            over = p.get("overloaded", p["events_per_s"] < 0.9 * p["offered_events_per_s"])
            if over:
                ax.plot(p["offered_events_per_s"], p["latency_ms"]["p99"], "x", color="red", ms=7)
    lines = sorted((m["events_per_s"], kind) for kind, m in maxima.items() if m["events_per_s"])
    near = 0.15 * max((rate for rate, _ in lines), default=1.0)
    for i, (rate, kind) in enumerate(lines):
        ax.axvline(rate, color=COLORS[kind], ls="-." if kind != "direct" else "--", lw=1)
        # Two maxima close together: their labels go to either side of their lines.
        ha = "center"
        if i + 1 < len(lines) and lines[i + 1][0] - rate < near:
            ha = "right"
        elif i > 0 and rate - lines[i - 1][0] < near:
            ha = "left"
        ax.text(
            rate,
            1.02,
            f"{NAMES[kind].split(' (')[0]} max\n{rate / 1000:,.0f}k",
            color=COLORS[kind],
            transform=ax.get_xaxis_transform(),
            ha=ha,
            va="bottom",
            fontsize=7,
        )
    goal = doc.get("goal")
    ax.axhline(50, color="red", ls=":", lw=1)
    ax.text(
        0.99,
        50,
        "goal: p99 ≤ 50 ms at 70 % of our max (circled) ",
        color="red",
        fontsize=7,
        ha="right",
        va="bottom",
        transform=ax.get_yaxis_transform(),
    )
    if goal:
        ax.plot(goal["offered_events_per_s"], goal["p99_ms"], "o", mfc="none", mec="red", ms=11)
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(0.5, min(_all_latencies(doc)) / 1.5), top=top * 2)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(FuncFormatter(_kilo))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.set_xlabel("offered load, events/s (open loop, Poisson arrivals; x = overloaded)")
    ax.set_ylabel("batch latency, ms (from scheduled arrival)")
    w = doc["workload"]
    ax.set_title(
        f"Latency vs load: {w['sessions']} sessions × {w['events_per_batch']}-event batches\n"
        + _subtitle(doc),
        fontsize=9,
        pad=26,
    )
    ax.grid(True, which="both", alpha=0.25)
    title = f"{failed} failed point(s) left out" if failed else None
    ax.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.85, title=title, title_fontsize=7)
    fig.tight_layout()
    return [_save(fig, out_dir(name) / f"{name}.png")]


def _all_latencies(doc: dict[str, Any]) -> list[float]:
    vals = [p["latency_ms"]["p50"] or 0.0 for pts in doc["sweep"].values() for p in pts]
    return [v for v in vals if v] or [1.0]


# ---- scale -------------------------------------------------------------------------------

CURVES = {
    "sessions": ("sessions (concurrent, one connection each)", "linear"),
    "batch": ("events per batch", "log"),
    "payload": ("payload bytes per event", "log"),
}


def _ok(m: dict[str, Any] | None) -> bool:
    return bool(m and m["events_per_s"] and m["stored_ok"] and not m["first_error"])


def _curve(ax: Axes, curve: dict[str, Any], key: str) -> int:
    """Draw the three systems' lines; returns how many failed measurements were left out."""
    points = curve["points"]
    failed = sum(1 for p in points for k in COLORS if p.get(k) and not _ok(p[k]))
    for kind in ("direct", "conventional", "ours"):
        got = [p for p in points if _ok(p.get(kind))]
        xs = [p["x"] for p in got]
        ys = [p[kind]["events_per_s"] for p in got]
        if not xs:
            continue
        style = "--" if kind == "direct" else "-"
        ax.plot(
            xs,
            ys,
            style,
            color=COLORS[kind],
            marker="o",
            ms=4,
            lw=2 if kind == "ours" else 1.4,
            label=NAMES[kind],
        )
        if kind == "ours" and key == "payload":
            for p in got:
                if p.get("ours"):
                    mb = p["ours"]["events_per_s"] * p["payload_bytes"] / 1e6
                    ax.annotate(
                        f"{mb:,.0f} MB/s",
                        (p["x"], p["ours"]["events_per_s"]),
                        textcoords="offset points",
                        xytext=(4, 6),
                        fontsize=7,
                        color=COLORS["ours"],
                    )
    ax.set_xscale("log", base=2 if key == "sessions" else 10)
    ax.set_xticks([p["x"] for p in points])
    ax.xaxis.set_major_formatter(FuncFormatter(_bytes if key == "payload" else _count))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda _x, _p: ""))
    ax.yaxis.set_major_formatter(FuncFormatter(_kilo))
    return failed


def plot_scale(name: str = "scale") -> list[Path]:
    doc = results.load(name)
    if doc is None:
        return []
    out = []
    for key, curve in doc["curves"].items():
        if not curve["points"]:
            continue
        label, yscale = CURVES[key]
        fig, ax = plt.subplots(figsize=(7.0, 4.2))
        ax.set_yscale(yscale)
        failed = _curve(ax, curve, key)
        if yscale == "linear":
            ax.set_ylim(bottom=0)
        ax.set_xlabel(label)
        ax.set_ylabel("events/s (closed loop, maximum)")
        ax.set_title(f"Throughput vs {curve['title']}\n" + _subtitle(doc), fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        title = f"{failed} failed measurement(s) left out" if failed else None
        ax.legend(fontsize=7, loc="best", framealpha=0.85, title=title, title_fontsize=7)
        fig.tight_layout()
        out.append(_save(fig, out_dir(name) / f"{name}_{key}.png"))
    return out


# ---- the README's section -------------------------------------------------------------


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}"


def _cell(m: dict[str, Any] | None) -> str:
    """events/s, marked when the measurement failed (a non-200, a lost row)."""
    if not m:
        return "–"
    return _fmt(m["events_per_s"]) + ("" if _ok(m) else " (failed)")


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or not b["events_per_s"]:
        return "–"
    return f"{a['events_per_s'] / b['events_per_s']:.2f}"


def markdown(quick: bool = False) -> str:
    suffix = "_quick" if quick else ""
    lat = results.load("latency" + suffix)
    scale = results.load("scale" + suffix)
    lines: list[str] = []
    if lat:
        c, m = lat["context"], lat["maximum"]
        speed = c.get("speed_at_start")
        lines += [
            f"Measured {c['date'][:10]} (`{c['command']}`, commit {c['commit']}, "
            f"{c['usable_cores']} cores; load average at the start "
            f"{c['load_average_1_5_min'][0]}"
            + (f"; machine speed at the start: {results.describe_speed(speed)}" if speed else "")
            + ").",
            "",
            "| 64 sessions × 100-event batches | events/s (max) | × peer | × database limit "
            "| p50 / p99 / p99.9 at 70 % of its max (open loop) |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind in ("direct", "conventional", "ours"):
            if kind not in m:
                continue
            at70 = next(
                (p for p in lat["sweep"].get(kind, []) if math.isclose(p["fraction"], 0.7)),
                None,
            )
            tail = (
                f"{_fmt(at70['latency_ms']['p50'], 1)} / {_fmt(at70['latency_ms']['p99'], 1)} / "
                f"{_fmt(at70['latency_ms']['p999'], 1)} ms"
                if at70
                else "–"
            )
            name = NAMES[kind]
            if kind == "ours":
                name = f"**{name}**"
            lines.append(
                f"| {name} | {_fmt(m[kind]['events_per_s'])} | "
                f"{_ratio(m[kind], m.get('conventional'))} | {_ratio(m[kind], m.get('direct'))} "
                f"| {tail} |"
            )
        goal = lat.get("goal")
        if goal:
            lines += [
                "",
                f"Goal (issue 12): ours ≥ 2.5× the peer, ≥ 0.6× the database limit, p99 ≤ 50 ms "
                f"at 70 % of our maximum: p99 there is {goal['p99_ms']:.1f} ms "
                f"({'met' if goal['met'] else 'not met'}).",
            ]
        lines += ["", f"![latency](docs/bench/latency{suffix}.png)", ""]
    if scale:
        c = scale["context"]
        lines += [
            f"Scale curves measured {c['date'][:10]} (`{c['command']}`, commit {c['commit']}).",
            "",
        ]
        for key, curve in scale["curves"].items():
            if not curve["points"]:
                continue
            lines += [
                f"| {curve['title']} | ours events/s | peer | database limit | × peer | × db |",
                "|---:|---:|---:|---:|---:|---:|",
            ]
            for p in curve["points"]:
                lines.append(
                    f"| {(_bytes if key == 'payload' else _count)(p['x'])} | "
                    f"{_cell(p.get('ours'))} | {_cell(p.get('conventional'))} | "
                    f"{_cell(p.get('direct'))} | "
                    f"{_ratio(p.get('ours'), p.get('conventional'))} | "
                    f"{_ratio(p.get('ours'), p.get('direct'))} |"
                )
            lines += ["", f"![{key}](docs/bench/scale{suffix}_{key}.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the --quick runs' files")
    parser.add_argument("--markdown", action="store_true", help="print the README section")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(args.quick))
        return
    suffix = "_quick" if args.quick else ""
    made = plot_latency("latency" + suffix) + plot_scale("scale" + suffix)
    for path in made:
        print(f"{path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KiB)")
    if not made:
        print("no results yet: run bench/latency_bench.py and bench/scale_bench.py")


if __name__ == "__main__":
    main()
