"""Plots one benchmark results file: latency percentiles per scenario (direct to
the mock and through atelier) and the throughput steps. Writes <results>.png."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

path = sys.argv[1]
with open(path) as f:
    r = json.load(f)

PCTS = [("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")]


def percentile_panel(ax, title, comparison):
    xs = range(len(PCTS))
    direct = [comparison["direct"][k] for _, k in PCTS]
    through = [comparison["through"][k] for _, k in PCTS]
    ax.plot(xs, direct, "o-", label="direct to the mock")
    ax.plot(xs, through, "s-", label="through atelier")
    ax.set_xticks(list(xs), [name for name, _ in PCTS])
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)


panels = [(f"concurrency 1: {l['path']}", l["comparison"]) for l in r["latency_at_concurrency_one"][:2]]
panels += [(f"{s['rate']:.0f} req/s, instant mock", s["comparison"]) for s in r["fixed_rates"]]
panels += [
    ("time to first token", r["streaming"]["time_to_first_token"]),
    ("gap between tokens", r["streaming"]["gap_between_tokens"]),
]

logins = r.get("logins")
cols = 3
rows = (len(panels) + 1 + (1 if logins else 0) + cols - 1) // cols
fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows))
axes = axes.flatten()
for ax, (title, comparison) in zip(axes, panels):
    percentile_panel(ax, title, comparison)
axes[0].legend(fontsize=8)

# Throughput: added p99 per offered rate, and what was achieved.
ax = axes[len(panels)]
steps = r["throughput"]["steps"]
rungs = r["throughput"].get("rungs") or [
    {"rate": s["rate"], "median_added_p99_ms": s["comparison"]["added"]["p99_ms"]} for s in steps
]
ax.plot([g["rate"] for g in rungs], [g["median_added_p99_ms"] for g in rungs], "o-", color="C3",
        label="added p99, median run (ms)")
ax.plot([s["rate"] for s in steps], [s["comparison"]["added"]["p99_ms"] for s in steps], ".", color="C3",
        alpha=0.4, label="added p99, each run")
rates = [s["rate"] for s in steps]
ax.axhline(1.0, color="C3", linestyle=":", linewidth=1)
ax.set_xlabel("offered req/s")
ax.set_ylabel("added p99, ms")
ax.set_title(f"throughput, {r['throughput']['mock_latency_ms']} ms mock", fontsize=9)
ax.grid(alpha=0.3)
twin = ax.twinx()
twin.plot(rates, [s["achieved_rate"] for s in steps], "s", color="C2", alpha=0.5, label="achieved req/s")
twin.set_ylabel("achieved req/s")
# From zero, so that achieved and offered read against each other even when the
# ladder stopped at its first rung (matplotlib would zoom into a few req/s).
twin.set_ylim(0, max(rates) * 1.15)
ax.set_ylim(0, max(1.2, max(s["comparison"]["added"]["p99_ms"] for s in steps) * 1.15))
ax.set_xlim(min(rates) * 0.8, max(rates) * 1.2)
ax.legend(fontsize=7, loc="lower left")
# Login storm: chat's percentiles alone and during the storm, pair by pair.
extra_from = len(panels) + 1
if logins:
    ax = axes[extra_from]
    extra_from += 1
    xs = range(len(PCTS))
    for i, pair in enumerate(logins["pairs"]):
        first = i == 0
        ax.plot(xs, [pair["alone"][k] for _, k in PCTS], "o-", color="C0", alpha=0.6,
                label="chat alone" if first else None)
        ax.plot(xs, [pair["during_storm"][k] for _, k in PCTS], "s-", color="C1", alpha=0.6,
                label="chat during the storm" if first else None)
    ax.set_xticks(list(xs), [name for name, _ in PCTS])
    ax.set_title(
        f"login storm ({logins['logins_per_second']:.0f} logins/s), chat at {logins['chat_rate']:.0f} req/s: "
        f"p99 ×{logins['p99_ratio']:.2f}",
        fontsize=9,
    )
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
for extra in axes[extra_from:]:
    extra.axis("off")

smoke = " (smoke run: not a measurement)" if r["smoke"] else ""
fig.suptitle(f"atelier {r['commit']}, {r['date']}, {r['machine']['cores']} cores, {r['profile']}{smoke}")
fig.tight_layout()
out = path[: -len(".json")] + ".png"
fig.savefig(out, dpi=90)
print(out, file=sys.stderr)
