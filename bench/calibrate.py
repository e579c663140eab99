"""Regenerate docs/figures/*.png and the numbers in docs/STATISTICS.md from reglab.calibration's simulation.

    PYTHONPATH=src python bench/calibrate.py [--studies 4000] [--docs docs]

Every table of docs/STATISTICS.md sits between `<!-- calibrate:NAME -->` and `<!-- /calibrate:NAME -->` and is
rewritten in place, with the command, machine and time of the run; the figures are written beside it. Numpy and
matplotlib only; minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats as sps  # noqa: E402

from reglab import calibration as cal  # noqa: E402
from reglab import stats  # noqa: E402

BALANCED = ((1, 1), (2, 2), (3, 3), (5, 5), (10, 10), (20, 20))
UNBALANCED = ((2, 5), (3, 10))
DESIGNS = BALANCED + UNBALANCED
NOMINAL = 1 - cal.CONFIDENCE  # false "differs" per comparison
METHODS = ("Welch (seeds only)", "Welch + image term", "Satterthwaite", "Welch df at any seed counts", "reglab")
BOOTSTRAP_DESIGNS = ((2, 2), (5, 5))
POWER_SEEDS = (2, 3, 5, 10, 20)


def pct(rate: cal.Rate | None) -> str:
    return "n/a" if rate is None or not rate.trials else f"{100 * rate.rate:.1f}"


def label(design) -> str:
    return f"{design[0]} vs {design[1]}"


def method_table(tally: dict, measure: str, methods, designs) -> str:
    """Rows: methods; columns: designs; cells: the measure's rate in % (n/a where a method gives no interval: the
    old image-level path only ran with one seed a side, the others need two)."""
    head = "| method | " + " | ".join(label(d) for d in designs) + " |\n|---|" + "---:|" * len(designs) + "\n"
    return head + "\n".join(f"| {m} | " + " | ".join(pct(tally.get((d, m, measure))) for d in designs) + " |"
                             for m in ("image only (old)",) + tuple(methods))


def bootstrap_coverage(scenario: cal.Scenario, studies: int, seed: int) -> dict:
    """reglab's old two-level bootstrap (stats.two_level_bootstrap, 1000 replicates): how often it holds the truth."""
    rng = np.random.default_rng(seed)
    truth = scenario.a.accuracy - scenario.b.accuracy
    most = max(d[0] for d in BOOTSTRAP_DESIGNS)
    out = {d: cal.Rate(0, 0) for d in BOOTSTRAP_DESIGNS}
    batch = cal.simulate(scenario, most, most, studies, rng)
    for i in range(studies):
        for d in BOOTSTRAP_DESIGNS:
            boot = stats.two_level_bootstrap({"a": batch.correct_a[i, :d[0]], "b": batch.correct_b[i, :d[1]]}, "b",
                                             cal.CONFIDENCE, n_boot=1000, seed=i)["a"]
            out[d].events += int(boot["lo"] <= truth <= boot["hi"])
            out[d].trials += 1
    return out


def planning(studies: int, seed: int) -> tuple[list, list, dict]:
    """Predicted (stats.planned_power from the true components) against simulated power, and how often
    seeds_needed's range from a 3 vs 3 study holds the plan made from the true components."""
    rows, curves = [], {}
    for effect in (0.02, 0.03):
        scenario = replace(cal.SCENARIOS["different profiles"],
                           b=cal.SCENARIOS["different profiles"].b.shifted(cal.ISSUE.accuracy - effect))
        designs = tuple((s, s) for s in POWER_SEEDS)
        tally = cal.run(scenario, designs, studies, seed)
        truth = true_comparison(scenario, seed + 1)
        predicted = stats.planned_power(truth, POWER_SEEDS, effect=effect)
        simulated = [tally[(d, "reglab", "differs")] for d in designs]
        curves[effect] = (predicted, simulated)
        rows.append(f"| {100 * effect:.0f} pp | " + " | ".join(
            f"{100 * p:.0f} / {100 * q:.0f} / {pct(r)}"
            for p, q, r in zip(predicted, power_at_expected_values(truth, effect), simulated)) + " |")
    return rows, curves, range_coverage(studies // 8, seed + 2)


def power_at_expected_values(truth: dict, effect: float) -> list[float]:
    """The power a plan states when it takes the seed-variance estimates (and so Welch's df and the interval's
    width) at their expected values, as a noncentral-t calculation with known df does."""
    comp, conf, n = truth["components"], truth["confidence"], truth["n_images"]
    va, vb, image = comp["seed_var_a"], comp["seed_var_b"], comp["image_term"]
    out = []
    for s in POWER_SEEDS:
        df = (s - 1) * (va + vb) ** 2 / (va ** 2 + vb ** 2)
        q_seed, q_image = (float(sps.t.ppf(0.5 + conf / 2, k)) for k in (df, n - 1))
        half = math.sqrt(q_seed ** 2 * (va + vb) / s + q_image ** 2 * image)
        sd = math.sqrt((va + vb) / s + image)
        out.append(float(sps.norm.cdf((effect - half) / sd) + sps.norm.cdf((-effect - half) / sd)))
    return out


def true_comparison(scenario: cal.Scenario, seed: int, seeds: int = 10, studies: int = 1000) -> dict:
    """A compare_variants result whose components are the average over many studies (the method-of-moments
    estimates are unbiased): the truth a plan should be made from."""
    batch = cal.simulate(scenario, seeds, seeds, studies, np.random.default_rng(seed))
    acc = stats.compare_variants(batch.correct_a, batch.correct_b, cal.CONFIDENCE)
    comp = {k: float(np.mean(v)) for k, v in acc["components"].items()}
    return dict(acc, diff=scenario.a.accuracy - scenario.b.accuracy, components=comp, verdict="inconclusive")


def range_coverage(studies: int, seed: int) -> dict:
    """From single 3 vs 3 studies: how often seeds_needed's range holds the plan from the true components."""
    scenario = replace(cal.SCENARIOS["different profiles"],
                       b=cal.SCENARIOS["different profiles"].b.shifted(cal.ISSUE.accuracy - 0.03))
    true_plan = stats.seeds_needed(true_comparison(scenario, seed))["detect"]["seeds"]
    batch = cal.simulate(scenario, 3, 3, studies, np.random.default_rng(seed + 1))
    held, plans = 0, []
    for i in range(studies):
        acc = stats.compare_variants(batch.correct_a[i], batch.correct_b[i], cal.CONFIDENCE)
        need = stats.seeds_needed(dict(acc, diff=0.03))["detect"]
        lo, hi = need["range"]
        held += (lo or 10 ** 9) <= true_plan <= (hi or 10 ** 9)
        plans.append(need["seeds"] or 10 ** 9)
    return dict(true_plan=true_plan, held=cal.Rate(held, studies), median=int(np.median(plans)),
                spread=tuple(int(q) for q in np.quantile(plans, [0.1, 0.9])))


def _seed_axis(ax, seeds) -> None:
    ax.set_xscale("log")
    ax.set_xticks(seeds, [str(s) for s in seeds])
    ax.minorticks_off()


def _errorbar(ax, x, rates, fmt: str, **kw) -> None:
    """Rates in % with their 95% Clopper-Pearson intervals."""
    y = np.array([100 * r.rate for r in rates])
    ci = 100 * np.array([r.interval(0.95) for r in rates]).T
    ax.errorbar(x, y, yerr=[y - ci[0], ci[1] - y], fmt=fmt, capsize=2, **kw)


def figures(null: dict, curves: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    seeds = [d[0] for d in BALANCED if d[0] >= 2]
    balanced = [m for m in METHODS if m != "Welch df at any seed counts"]  # the same as reglab at equal counts
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, name in zip(axes[:2], ("different profiles", "churn only")):
        for m in balanced:
            _errorbar(ax, seeds, [null[name][((s, s), m, "differs")] for s in seeds], "o-", label=m, ms=4)
        ax.axhline(100 * NOMINAL, color="k", ls="--", lw=1, label="nominal")
        ax.set(title=f"{name}: equal seed counts", xlabel="seeds per variant", ylabel='false "differs" (%)')
        _seed_axis(ax, seeds)
    axes[0].legend(fontsize=7)
    ax, tally = axes[2], null["noisier small side"]
    width = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        x = np.arange(len(UNBALANCED)) + (j - (len(METHODS) - 1) / 2) * width
        rates = [tally[(d, m, "differs")] for d in UNBALANCED]
        y = np.array([100 * r.rate for r in rates])
        ci = 100 * np.array([r.interval(0.95) for r in rates]).T
        ax.bar(x, y, width, yerr=[y - ci[0], ci[1] - y], capsize=2, label=m)
    ax.axhline(100 * NOMINAL, color="k", ls="--", lw=1)
    ax.set(title="noisier small side: unequal seed counts", ylabel='false "differs" (%)')
    ax.set_xticks(np.arange(len(UNBALANCED)), [label(d) for d in UNBALANCED])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "false_differs.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, tally in null.items():
        line = ax.plot([], [])[0]
        _errorbar(ax, seeds, [tally[((s, s), "reglab", "covers_a")] for s in seeds], "o-", ms=4,
                  color=line.get_color(), label=f"reglab, {name}")
        _errorbar(ax, seeds, [tally[((s, s), "t over seeds (old)", "covers_a")] for s in seeds], "s:", ms=4,
                  color=line.get_color(), alpha=0.6, label=f"t over seeds (old), {name}")
    ax.axhline(100 * cal.CONFIDENCE, color="k", ls="--", lw=1, label="nominal")
    ax.set(xlabel="seeds", ylabel="covers the population accuracy (%)")
    _seed_axis(ax, seeds)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for effect, (predicted, simulated) in curves.items():
        line, = ax.plot(POWER_SEEDS, 100 * np.asarray(predicted), "-", label=f"planned, {100 * effect:.0f} pp")
        _errorbar(ax, POWER_SEEDS, simulated, "o", color=line.get_color(), label=f"simulated, {100 * effect:.0f} pp")
    ax.axhline(80, color="k", ls="--", lw=1)
    ax.set(xlabel="seeds per variant", ylabel='P("differs") (%)')
    _seed_axis(ax, POWER_SEEDS)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "planning.png", dpi=120)
    plt.close(fig)


def headline(null: dict, margin: dict) -> str:
    """The numbers the text leans on, as bullets."""
    diff, churn, noisy = (null[k] for k in ("different profiles", "churn only", "noisier small side"))

    def old(tally: dict, seeds: int) -> str:
        return pct(tally[((seeds, seeds), "Welch (seeds only)", "differs")])

    claims = [d for d in DESIGNS if min(d) >= 2]
    ours = [t[(d, "reglab", "differs")].rate for t in null.values() for d in claims]
    cover = [t[(d, "reglab", "covers_a")].rate for t in null.values() for d in DESIGNS]
    eq = [t[(d, "reglab", "equivalent")].rate for t in margin.values() for d in claims]
    return "\n".join([
        f"- The old seed-level path (Welch over seeds), equal population accuracies: false \"differs\" "
        f"{old(diff, 5)}%, {old(diff, 10)}% and {old(diff, 20)}% at 5, 10 and 20 seeds a side with different "
        f"per-image profiles; {old(churn, 5)}%, {old(churn, 10)}% and {old(churn, 20)}% when the seed variation is "
        f"all churn (nominal {100 * NOMINAL:.1f}%).",
        f"- The old per-variant t interval over seeds covered the population accuracy "
        f"{pct(diff[((10, 10), 't over seeds (old)', 'covers_a')])}% (different profiles) and "
        f"{pct(churn[((10, 10), 't over seeds (old)', 'covers_a')])}% (churn only) of the time at 10 seeds "
        f"(nominal {100 * cal.CONFIDENCE:.1f}%).",
        f"- One seed a side, the old image-level verdict read as one about the variants: false \"differs\" "
        f"{pct(diff[((1, 1), 'image only (old)', 'differs')])}% (different profiles), "
        f"{pct(noisy[((1, 1), 'image only (old)', 'differs')])}% (noisier small side). reglab makes no claim there; "
        f"the one network's own interval covered the variant's accuracy "
        f"{pct(diff[((1, 1), 'reglab', 'network_covers_variant')])}% of the time, which is why it says it is "
        "about that network only.",
        f"- 2 vs 5 seeds, the 2-seed variant the noisier: false \"differs\" "
        f"{pct(noisy[((2, 5), 'Welch (seeds only)', 'differs')])}% (Welch over seeds), "
        f"{pct(noisy[((2, 5), 'Satterthwaite', 'differs')])}% (Satterthwaite), "
        f"{pct(noisy[((2, 5), 'Welch df at any seed counts', 'differs')])}% (reglab's interval with Welch's df), "
        f"{pct(noisy[((2, 5), 'reglab', 'differs')])}% (reglab).",
        f"- reglab, every design with a claim in the three scenarios: false \"differs\" "
        f"{100 * min(ours):.1f}-{100 * max(ours):.1f}% (nominal {100 * NOMINAL:.1f}%); per-variant coverage "
        f"{100 * min(cover):.1f}-{100 * max(cover):.1f}%; false \"equivalent\" at the margin "
        f"{100 * min(eq):.1f}-{100 * max(eq):.1f}% (TOST level {100 * NOMINAL / 2:.2f}%)."])


def fill(doc: Path, blocks: dict) -> None:
    text = doc.read_text()
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- calibrate:{name} -->\n).*?(<!-- /calibrate:{name} -->)", re.S)
        if not pattern.search(text):
            sys.exit(f"calibrate: {doc} has no block {name}")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4000, help="simulated studies per scenario")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    args = parser.parse_args()
    start = time.time()
    n = args.studies
    null = {name: cal.run(cal.SCENARIOS[name], DESIGNS, n, seed=i)
            for i, name in enumerate(("different profiles", "churn only", "noisier small side"))}
    margin = {name: cal.run(cal.at_margin(cal.SCENARIOS[name]), DESIGNS, n, seed=10 + i)
              for i, name in enumerate(("similar profiles", "different profiles"))}
    boot = {name: bootstrap_coverage(cal.SCENARIOS[name], n // 10, seed=20 + i)
            for i, name in enumerate(("different profiles", "churn only"))}
    power_rows, curves, ranges = planning(n // 2, seed=30)
    figures(null, curves, args.docs / "figures")

    blocks = {}
    for name, tally in null.items():
        key = name.replace(" ", "-")
        blocks[f"differs-{key}"] = method_table(tally, "differs", METHODS, DESIGNS)
        blocks[f"family-{key}"] = ("| | " + " | ".join(label(d) for d in DESIGNS) + " |\n|---|" + "---:|" * len(DESIGNS)
                                   + "\n| accuracy or gap says differs (%) | "
                                   + " | ".join(pct(tally[(d, "reglab", "family_differs")]) for d in DESIGNS) + " |")
        blocks[f"coverage-{key}"] = (
            "| interval | " + " | ".join(label(d) for d in DESIGNS) + " |\n|---|" + "---:|" * len(DESIGNS) + "\n"
            + "\n".join(f"| {title} | " + " | ".join(pct(tally.get((d, m, measure))) for d in DESIGNS) + " |"
                        for title, m, measure in (("accuracy, t over seeds (old)", "t over seeds (old)", "covers_a"),
                                                  ("accuracy, reglab", "reglab", "covers_a"),
                                                  ("gap, reglab", "reglab", "covers_gap_a"))))
    for name, tally in margin.items():
        blocks[f"equivalent-{name.replace(' ', '-')}"] = method_table(tally, "equivalent", METHODS, DESIGNS)
    blocks["bootstrap"] = ("| scenario | " + " | ".join(label(d) for d in BOOTSTRAP_DESIGNS) + " |\n|---|"
                           + "---:|" * len(BOOTSTRAP_DESIGNS) + "\n"
                           + "\n".join(f"| {name} ({boot[name][BOOTSTRAP_DESIGNS[0]].trials} studies) | "
                                       + " | ".join(pct(boot[name][d]) for d in BOOTSTRAP_DESIGNS) + " |"
                                       for name in boot))
    blocks["planning"] = ("| true difference | " + " | ".join(f"{s} seeds" for s in POWER_SEEDS) + " |\n|---|"
                          + "---:|" * len(POWER_SEEDS) + "\n" + "\n".join(power_rows))
    blocks["headline"] = headline(null, margin)
    held = ranges["held"]
    blocks["ranges"] = (f"From each of {held.trials} simulated 3 vs 3 studies at a true difference of 3 pp, "
                        f"planning for that difference, `seeds_needed` gave a median of {ranges['median']} seeds a "
                        f"side (10-90%: {ranges['spread'][0]} to {ranges['spread'][1]}); the plan from the true "
                        f"components is "
                        f"{ranges['true_plan']}, and the stated 95% range held it in {pct(held)}% of the studies.")
    blocks["run"] = (f"`PYTHONPATH=src python bench/calibrate.py --studies {n}`: {n} simulated studies per scenario "
                     f"({n // 10} for the bootstrap, {n // 2} per power point), {time.time() - start:.0f} s on "
                     f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), numpy "
                     f"{np.__version__}, Python {platform.python_version()}.")
    fill(args.docs / "STATISTICS.md", blocks)
    print(f"calibrate: wrote {args.docs / 'STATISTICS.md'} and {args.docs / 'figures'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
