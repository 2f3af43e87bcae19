"""Statistics, table, claims and plot of the alignment matrix (benchmarks/alignment_matrix.py).

Intervals are 95% Student-t intervals over seeds: mean ± t(0.975, n−1)·sd/√n, sd the unbiased
one. A claim "A ≥ B" is checked on the paired differences d_s = acc_A(s) − acc_B(s) (both runs
of seed s share the SFT start, the data order seed and the sampling seed): it *reproduces*
when the interval of the mean difference lies above 0, is *reversed* when it lies below 0,
and is *not resolved* when it holds 0.
"""

from __future__ import annotations

import math
from collections import defaultdict

# t(0.975, dof) for dof 1..10; beyond, the normal's 1.96 is within 6%
T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
}
CLAIMS = (  # (claim, paper, better, worse)
    ("online ≥ offline (online DPO vs DPO on SFT samples)", "2405.08448", "online_dpo", "dpo"),
    (
        "on-policy + negative gradient ≥ offline max likelihood (online DPO vs sft_ml)",
        "2404.14367",
        "online_dpo",
        "sft_ml",
    ),
    ("RSO ≥ DPO", "2309.06657", "rso", "dpo"),
    ("BRAIn ≥ DPO", "2402.02479", "brain", "dpo"),
)
# one example run per algorithm of the policy-optimisation family (and references)
EXAMPLES = (
    "gspo",
    "gspo_token",
    "cispo",
    "dapo",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "grpo",
    "ppo",
    "rloo",
)


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% t-interval of the mean."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def summarise(cells: list[dict]) -> list[dict]:
    """Per method, in first-seen order: accuracy and KL intervals, mean seconds and samples."""
    by: dict[str, list[dict]] = defaultdict(list)
    for c in cells:
        by[c["method"]].append(c)
    out = []
    for method, rows in by.items():
        acc, kl = interval([r["accuracy"] for r in rows]), interval([r["kl"] for r in rows])
        entry = {"method": method, "seeds": len(rows), "accuracy": acc, "kl": kl}
        entry["seconds"] = sum(r["seconds"] for r in rows) / len(rows)
        entry["samples"] = sum(r["samples"] for r in rows) / len(rows)
        for key in ("rounds", "filtered_share"):  # DAPO's dynamic sampling
            if key in rows[0]:
                entry[key] = sum(r[key] for r in rows) / len(rows)
        out.append(entry)
    return out


def claims(cells: list[dict]) -> list[dict]:
    """Each paper claim's paired difference over seeds and its verdict (module doc)."""
    acc = {(c["method"], c["seed"]): c["accuracy"] for c in cells}
    seeds = sorted({c["seed"] for c in cells})
    found = []
    for claim, paper, better, worse in CLAIMS:
        diffs = [
            acc[better, s] - acc[worse, s]
            for s in seeds
            if (better, s) in acc and (worse, s) in acc
        ]
        if len(diffs) < 2:
            continue
        mean, low, high = interval(diffs)
        verdict = "reproduces" if low > 0 else "reversed" if high < 0 else "not resolved"
        found.append(
            {
                "claim": claim,
                "paper": paper,
                "diff": (mean, low, high),
                "verdict": verdict,
                "diffs": diffs,
            }
        )
    return found


def _fmt(triple: tuple[float, float, float], digits: int = 3) -> str:
    mean, low, high = triple
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def report(summary: list[dict], found: list[dict], args, console) -> None:
    from rich.table import Table

    seeds = summary[0]["seeds"] if summary else 0
    table = Table(
        title=f"held-out exact match and KL(π‖π_sft): mean [95% interval] over {seeds} seeds; "
        f"{args.steps} steps, reward {args.reward}, lr {args.lr:g}, β {args.beta:g}"
    )
    for col in ("method", "accuracy", "KL nats", "samples", "seconds"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in summary:
        table.add_row(
            r["method"],
            _fmt(r["accuracy"]),
            _fmt(r["kl"], 2),
            f"{r['samples']:.0f}",
            f"{r['seconds']:.0f}",
        )
    console.print(table)
    for c in found:
        console.print(
            f"{c['claim']} (arXiv {c['paper']}): paired difference {_fmt(c['diff'])} → {c['verdict']} "
            f"(per seed: {', '.join(f'{d:+.3f}' for d in c['diffs'])})"
        )
    console.print("\nmarkdown:\n" + markdown(summary, found))


def markdown(summary: list[dict], found: list[dict]) -> str:
    lines = [
        "| method | held-out exact match | KL(π‖π_sft), nats | sampled responses | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['method']} | {_fmt(r['accuracy'])} | {_fmt(r['kl'], 2)} | {r['samples']:.0f} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        "| claim | paper | paired difference in accuracy | verdict |",
        "|---|---|---|---|",
    ]
    for c in found:
        lines.append(f"| {c['claim']} | arXiv {c['paper']} | {_fmt(c['diff'])} | {c['verdict']} |")
    return "\n".join(lines)


def examples(cells: list[dict], names: tuple[str, ...] = EXAMPLES) -> str:
    """One example run per algorithm, as markdown: held-out accuracy of the SFT start
    (before) and after the algorithm's steps — mean [95% interval] over seeds and each seed —
    with steps and seconds per run (mean over seeds); then DAPO's sampling rounds and
    filtered share per seed."""
    before = {c["seed"]: c["accuracy"] for c in cells if c["method"] == "sft"}
    lines = [
        "| algorithm | before (SFT) | after: mean [95% interval] | after, per seed | steps "
        "| seconds per run |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        rows = sorted((c for c in cells if c["method"] == name), key=lambda c: c["seed"])
        if not rows:
            continue
        start = sum(before.get(r["seed"], math.nan) for r in rows) / len(rows)
        seconds = sum(r["seconds"] for r in rows) / len(rows)
        after = [r["accuracy"] for r in rows]
        per_seed = ", ".join(f"{a:.3f}" for a in after)
        lines.append(
            f"| {name} | {start:.3f} | {_fmt(interval(after))} | {per_seed} "
            f"| {rows[0].get('steps', '?')} | {seconds:.0f} |"
        )
    dapo = sorted((c for c in cells if "rounds" in c), key=lambda c: c["seed"])
    if dapo:
        lines += ["", "| DAPO seed | sampling rounds per step (mean) | filtered share |"]
        lines.append("|---|---|---|")
        lines += [f"| {c['seed']} | {c['rounds']:.2f} | {c['filtered_share']:.3f} |" for c in dapo]
    return "\n".join(lines)


def plot(summary: list[dict], path) -> None:
    """Points with 95% error bars: accuracy and KL per method, and accuracy against KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.5))
    names = [r["method"] for r in summary]
    x = list(range(len(names)))
    for ax, key, label in (
        (ax1, "accuracy", "held-out exact match"),
        (ax2, "kl", "KL(π‖π_sft) per response, nats"),
    ):
        means = [r[key][0] for r in summary]
        errs = [
            [m - r[key][1] for m, r in zip(means, summary)],
            [r[key][2] - m for m, r in zip(means, summary)],
        ]
        ax.errorbar(x, means, yerr=errs, fmt="o", capsize=3)
        ax.set_xticks(x, names, rotation=60, ha="right")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for r in summary:
        (a, alo, ahi), (k, klo, khi) = r["accuracy"], r["kl"]
        ax3.errorbar(
            k, a, xerr=[[k - klo], [khi - k]], yerr=[[a - alo], [ahi - a]], fmt="o", capsize=2
        )
        ax3.annotate(r["method"], (k, a), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax3.set_xlabel("KL(π‖π_sft) per response, nats")
    ax3.set_ylabel("held-out exact match")
    ax3.grid(alpha=0.3)
    fig.suptitle("alignment matrix: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
