"""reglab.stats: against scipy.stats computed by hand, against simulation, and on constructed cases."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from reglab import stats

NAN = float("nan")


def isnan(*values):
    return all(isinstance(v, float) and math.isnan(v) for v in values)


# ------------------------------------------------------------------------------------------------ mean_ci


@pytest.mark.parametrize("x, conf", [([0.8, 0.82, 0.79], 0.95), ([1.0, 2.0, 4.0, 8.0], 0.9),
                                     ([0.3804, 0.0910], 0.95), (list(np.linspace(-3, 5, 17)), 0.99)])
def test_mean_ci_matches_scipy_t_interval(x, conf):
    out = stats.mean_ci(x, conf)
    a = np.asarray(x)
    lo, hi = sps.t.interval(conf, a.size - 1, loc=a.mean(), scale=sps.sem(a))
    assert out["n"] == a.size and out["clipped"] is False
    assert out["mean"] == pytest.approx(a.mean(), abs=1e-12)
    assert out["sd"] == pytest.approx(a.std(ddof=1), rel=1e-12)
    assert (out["lo"], out["hi"]) == pytest.approx((lo, hi), rel=1e-10, abs=1e-12)


def test_mean_ci_clips_to_bounds():
    free = stats.mean_ci([0.3804, 0.0910])  # README numbers: two seeds, t with 1 df, half-width ~1.84
    assert free["lo"] < 0 and free["hi"] > 1 and free["clipped"] is False
    out = stats.mean_ci([0.3804, 0.0910], bounds=(0, 1))
    assert out["lo"] == 0.0 and out["hi"] == 1.0 and out["clipped"] is True
    assert out["mean"] == pytest.approx(0.2357) and out["sd"] == free["sd"]
    inside = stats.mean_ci([0.80, 0.82, 0.81], bounds=(0, 1))  # nothing to clip
    assert inside["clipped"] is False and inside["lo"] == stats.mean_ci([0.80, 0.82, 0.81])["lo"]
    times = stats.mean_ci([1.0, 30.0], bounds=(0, math.inf))  # only the low end can move
    assert times["lo"] == 0.0 and times["hi"] > 30 and times["clipped"] is True


def test_mean_ci_degenerate():
    one = stats.mean_ci([0.7])
    assert one["mean"] == 0.7 and one["n"] == 1 and isnan(one["lo"], one["hi"], one["sd"])
    empty = stats.mean_ci([])
    assert empty["n"] == 0 and isnan(empty["mean"])
    assert stats.mean_ci([0.5, None, NAN, 0.7])["n"] == 2  # missing values are skipped
    same = stats.mean_ci([357 / 3925] * 3)  # the mean of three equal floats must not leave a 1e-17 spread
    assert same["sd"] == 0.0 and same["lo"] == same["hi"] == same["mean"] == 357 / 3925


def test_mean_ci_coverage_by_simulation():
    """Normal data, true mean 0.7: the 95% interval covers it within 1.5 points of 95% at 3 and 5 seeds."""
    rng = np.random.default_rng(12345)
    for n in (3, 5):
        data = rng.normal(0.7, 0.02, size=(3000, n))
        covered = 0
        for row in data:
            ci = stats.mean_ci(row)
            covered += ci["lo"] <= 0.7 <= ci["hi"]
        assert abs(covered / len(data) - 0.95) < 0.015, (n, covered / len(data))


# -------------------------------------------------------------------------------------------------- welch


@pytest.mark.parametrize("a, b, conf", [([0.8, 0.82, 0.79], [0.7, 0.69, 0.72, 0.71], 0.95),
                                        ([1.0, 2.0, 3.0], [1.0, 2.0, 5.0], 0.9),
                                        ([0.5, 0.5, 0.5], [0.4, 0.45], 0.95),
                                        ([3.1, 2.0, 4.4, 5.0, 1.2], [0.3, 0.1], 0.99)])
@pytest.mark.filterwarnings("ignore:Precision loss occurred")  # scipy on the constant sample
def test_welch_matches_scipy_ttest_ind(a, b, conf):
    out = stats.welch(a, b, conf)
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(conf)
    assert out["diff"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["df"] == pytest.approx(ref.df, rel=1e-9)
    assert (out["lo"], out["hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    assert out["se"] == pytest.approx(se, rel=1e-9) and out["zero_variance"] is False


def test_welch_counts_make_zero_variance_exact():
    two = stats.welch([357 / 3925] * 2, [347 / 3925] * 2, n_images=3925)
    three = stats.welch([357 / 3925] * 3, [347 / 3925] * 3, n_images=3925)
    for out in (two, three):
        assert out["zero_variance"] is True and out["se"] == 0.0
        assert out["diff"] == 10 / 3925  # exact, not 10/3925 +- an ulp
        assert isnan(out["lo"], out["hi"], out["p"])
    assert two == pytest.approx(three, nan_ok=True)


def test_welch_float_noise_is_not_a_difference():
    noisy = [0.1, 0.3 - 0.2, 0.7 - 0.6]  # 0.1 up to the last bits
    assert len(set(noisy)) > 1
    for kwargs in ({}, {"n_images": 1000}):
        out = stats.welch(noisy, [0.2, 0.2, 0.2], **kwargs)
        assert out["zero_variance"] is True and isnan(out["p"])
        assert out["diff"] == pytest.approx(-0.1, abs=1e-15)
    # with a real spread on the other side the test is well defined and not absurdly small
    out = stats.welch(noisy, [0.2, 0.21, 0.19], n_images=1000)
    assert out["zero_variance"] is False and out["p"] > 1e-4
    # counts change nothing for values that are already exact k/n with a spread
    a, b = [0.71, 0.73, 0.70], [0.69, 0.70, 0.70]
    assert stats.welch(a, b, n_images=100)["p"] == pytest.approx(stats.welch(a, b)["p"], rel=1e-9)


def test_welch_degenerate_gives_nan_not_exception():
    for a, b in ([[1.0], [2.0, 3.0]], [[], [1.0, 2.0]]):
        out = stats.welch(a, b)
        assert isnan(out["lo"], out["hi"], out["p"], out["df"], out["se"]) and out["zero_variance"] is False
    assert stats.welch([1.0], [2.0, 3.0])["diff"] == -1.5
    both_flat = stats.welch([1.0, 1.0], [2.0, 2.0])
    assert both_flat["diff"] == -1.0 and both_flat["zero_variance"] is True and isnan(both_flat["p"])


# ------------------------------------------------------------------------------- multiple comparisons


def test_simultaneous_confidence():
    assert stats.simultaneous_confidence(0.95, 5) == pytest.approx(0.99)
    assert stats.simultaneous_confidence(0.95, 1) == 0.95 and stats.simultaneous_confidence(0.95, 0) == 0.95


# ------------------------------------------------------------------------------------ seed-level misc


def test_prob_superiority_with_ties():
    out = stats.prob_superiority([1, 2, 3], [2, 2])
    # pairs: 1<2,1<2 -> 0; 2=2,2=2 -> 2 * 0.5; 3>2,3>2 -> 2; (0 + 1 + 2) / 6
    assert out["p"] == pytest.approx(0.5) and out["pairs"] == 6 and out["resolution"] == pytest.approx(1 / 6)
    assert stats.prob_superiority([0.9, 0.91], [0.8, 0.85, 0.7])["p"] == 1.0
    assert stats.prob_superiority([0.5, 0.5], [0.5])["p"] == 0.5
    assert isnan(stats.prob_superiority([], [1.0])["p"])


@pytest.mark.parametrize("k, n", [(4, 5), (0, 5), (5, 5), (37, 3925)])
def test_binomial_ci_and_wilson_match_scipy(k, n):
    exact = sps.binomtest(k, n).proportion_ci(0.95, method="exact")
    wil = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert stats.binomial_ci(k, n) == pytest.approx((exact.low, exact.high))
    assert stats.wilson(k, n) == pytest.approx((wil.low, wil.high))
    lo, hi = stats.binomial_ci(k, n)
    assert lo <= k / n <= hi
    assert isnan(*stats.binomial_ci(0, 0)) and isnan(*stats.wilson(0, 0))


def test_binomial_ci_known_value():
    lo, hi = stats.binomial_ci(4, 5)  # Clopper-Pearson: (beta.ppf(0.025, 4, 2), beta.ppf(0.975, 5, 1))
    assert lo == pytest.approx(sps.beta.ppf(0.025, 4, 2)) and hi == pytest.approx(0.975 ** (1 / 5))


# ------------------------------------------------------------------------------------------ image level


def test_networks_mcnemar_constructed():
    """One seed a side: the networks' discordant counts and McNemar's exact p (unadjusted), by hand."""
    a = np.array([True] * 10 + [False] * 2 + [True] * 50 + [False] * 38)
    b = np.array([False] * 10 + [True] * 2 + [True] * 50 + [False] * 38)
    out = stats.compare_variants(a[None], b[None])["networks"]
    assert out["a_only"] == 10 and out["b_only"] == 2
    by_hand = 2 * sum(math.comb(12, i) for i in range(0, 3)) / 2**12  # two-sided, symmetric at 1/2
    assert out["p_unadjusted"] == pytest.approx(by_hand)
    assert out["p_unadjusted"] == pytest.approx(sps.binomtest(10, 12, 0.5).pvalue)
    same = stats.compare_variants(a[None], a[None])["networks"]
    assert (same["a_only"], same["b_only"], same["p_unadjusted"]) == (0, 0, 1.0)
    with pytest.raises(ValueError):
        stats.compare_variants(a[None], b[None, :-1])


def staircase(n_seeds, n_images, base):
    """Seed s gets images [0, base + 10 s) right: accuracy (base + 10 s) / n_images."""
    idx = np.arange(n_images)
    return np.stack([idx < base + 10 * s for s in range(n_seeds)])


def test_two_level_bootstrap_reproducible_and_sane():
    rng = np.random.default_rng(3)
    ref = rng.random((5, 2000)) < 0.7
    correct = {"ref": ref, "same": ref.copy(), "other": rng.random((3, 2000)) < 0.7}
    one = stats.two_level_bootstrap(correct, "ref", n_boot=500, seed=11)
    two = stats.two_level_bootstrap(correct, "ref", n_boot=500, seed=11)
    assert one == two and set(one) == {"same", "other"}
    assert stats.two_level_bootstrap(correct, "ref", n_boot=500, seed=12) != one
    same = one["same"]
    assert same["diff"] == 0.0 and same["lo"] < 0 < same["hi"]
    # +5 pp in every seed
    correct = {"ref": staircase(4, 2000, 1200), "better": staircase(4, 2000, 1300)}
    out = stats.two_level_bootstrap(correct, "ref", n_boot=1000, seed=0)["better"]
    assert out["diff"] == pytest.approx(0.05, abs=1e-12)
    assert 0 < out["lo"] < 0.05 < out["hi"] < 0.1


def test_two_level_bootstrap_shares_the_image_resample():
    """One seed each: only images are resampled, and a shared resample makes identical runs differ by 0."""
    ref = np.random.default_rng(6).random((1, 1000)) < 0.7
    out = stats.two_level_bootstrap({"ref": ref, "same": ref.copy()}, "ref", n_boot=300)["same"]
    assert out == dict(diff=0.0, lo=0.0, hi=0.0)
    better = ref.copy()
    better[0, np.flatnonzero(~ref[0])[:50]] = True  # 50 more images right, none lost: every replicate > 0
    out = stats.two_level_bootstrap({"ref": ref, "better": better}, "ref", n_boot=300)["better"]
    assert out["diff"] == pytest.approx(0.05) and 0 < out["lo"] < 0.05 < out["hi"]


def test_two_level_bootstrap_matches_a_loop():
    """The vectorised replicates agree with a plain resampling loop in distribution (same width, roughly)."""
    rng = np.random.default_rng(4)
    correct = {"r": rng.random((4, 600)) < 0.6, "v": rng.random((3, 600)) < 0.65}
    fast = stats.two_level_bootstrap(correct, "r", n_boot=2000, seed=1)["v"]
    loop = np.empty(2000)
    for i in range(2000):
        img = rng.integers(0, 600, 600)
        means = [c[rng.integers(0, c.shape[0], c.shape[0])][:, img].mean() for c in (correct["v"], correct["r"])]
        loop[i] = means[0] - means[1]
    lo, hi = np.quantile(loop, [0.025, 0.975])
    assert fast["lo"] == pytest.approx(lo, abs=0.01) and fast["hi"] == pytest.approx(hi, abs=0.01)


def test_two_level_bootstrap_is_fast_enough():
    rng = np.random.default_rng(5)
    correct = {f"v{i}": rng.random((5, 3925)) < 0.7 for i in range(6)}
    import time
    start = time.perf_counter()
    out = stats.two_level_bootstrap(correct, "v0", n_boot=2000)
    assert time.perf_counter() - start < 5.0 and len(out) == 5


def test_chance_level():
    at = stats.chance_level(103, 1000, 10)  # 10.3% on 10 classes: guessing
    assert at["at_chance"] is True and at["p"] == pytest.approx(
        sps.binomtest(103, 1000, 0.1, alternative="greater").pvalue)
    above = stats.chance_level(150, 1000, 10)
    assert above["at_chance"] is False and above["p"] < 1e-6
    assert stats.chance_level(0, 0, 10)["at_chance"] is True


# ----------------------------------------------------------------------------------------- variant level


def anova(c):
    """Seeds x images two-way ANOVA written from its definition: (seed MS, image MS, residual MS)."""
    y = np.asarray(c, dtype=float)
    s, n = y.shape
    grand, seed, image = y.mean(), y.mean(axis=1), y.mean(axis=0)
    resid = y - seed[:, None] - image[None, :] + grand
    return (n * ((seed - grand) ** 2).sum() / (s - 1), s * ((image - grand) ** 2).sum() / (n - 1),
            (resid ** 2).sum() / ((s - 1) * (n - 1)))


def random_correct(rng, seeds, images, p=0.8, flip=0.1):
    """Seeds sharing a per-image profile (an image is hard for all) with a fraction `flip` of images redrawn."""
    base = rng.random(images) < p
    redraw = rng.random((seeds, images)) < flip
    return np.where(redraw, rng.random((seeds, images)) < p, base)


def test_variant_interval_is_the_crossed_design_by_hand():
    c = random_correct(np.random.default_rng(0), 4, 500)
    out = stats.variant_interval(c, 0.95)
    ms_seed, ms_image, ms_resid = anova(c)
    s, n = c.shape
    # var of the grand mean = (MS_seed + MS_image - MS_resid) / (s n), split into the seed and the image part
    seed_term, image_term = ms_seed / (s * n), (ms_image - ms_resid) / (s * n)
    assert out["components"]["churn"] == pytest.approx(ms_resid, rel=1e-12)
    assert out["components"]["seed_var"] == pytest.approx(np.var(c.mean(axis=1), ddof=1), rel=1e-12)
    assert out["components"]["image_term"] == pytest.approx(image_term, rel=1e-12)
    assert out["se"] == pytest.approx(math.sqrt(seed_term + image_term), rel=1e-12)
    half = math.sqrt(sps.t.ppf(0.975, s - 1) ** 2 * seed_term + sps.t.ppf(0.975, n - 1) ** 2 * image_term)
    assert (out["lo"], out["hi"]) == pytest.approx((c.mean() - half, c.mean() + half), rel=1e-12)
    assert out["estimand"] == "variant" and out["n_seeds"] == 4 and out["n_images"] == 500
    assert out["clipped"] is False and out["confidence"] == 0.95


def test_variant_interval_counts_the_val_images_even_when_seeds_agree():
    """Identical seeds: no seed variance, but the val images are still a sample (the old t interval was [m, m])."""
    c = np.tile(np.arange(400) % 5 != 0, (3, 1))  # 80%, every seed the same
    out = stats.variant_interval(c)
    assert out["components"]["seed_var"] == 0.0 and out["components"]["churn"] == 0.0
    se = math.sqrt(np.var(c[0], ddof=1) / 400)
    assert out["se"] == pytest.approx(se) and out["lo"] < 0.8 < out["hi"]
    assert stats.mean_ci(c.mean(axis=1))["lo"] == 0.8  # what the seed-level interval said


def test_variant_interval_one_seed_is_about_that_network():
    c = random_correct(np.random.default_rng(1), 1, 1000)
    out = stats.variant_interval(c, 0.9)
    assert out["estimand"] == "network" and "not for the variant" in out["level_note"]
    assert (out["lo"], out["hi"]) == pytest.approx(stats.wilson(int(c.sum()), 1000, 0.9), rel=1e-10)
    assert isnan(out["components"]["seed_var"], out["components"]["churn"])


def test_variant_interval_is_clipped_to_the_possible_range():
    c = np.ones((3, 50), dtype=bool)
    c[0, 0] = False
    c[1, :3] = False  # two seeds miss a few images: an interval near 100% that would pass it
    out = stats.variant_interval(c)
    assert out["hi"] == 1.0 and out["clipped"] is True


def test_batches_give_what_each_study_gives():
    rng = np.random.default_rng(2)
    a = np.stack([random_correct(rng, 3, 300) for _ in range(4)])
    b = np.stack([random_correct(rng, 3, 300, p=0.75) for _ in range(4)])
    clean_a, clean_b = rng.uniform(0.85, 0.95, (4, 3)), rng.uniform(0.85, 0.95, (4, 3))
    batch = [stats.variant_interval(a), stats.compare_variants(a, b, 0.99),
             stats.gap_interval(a, clean_a, 2000), stats.compare_gaps(a, clean_a, 2000, b, clean_b, 2000)]
    for i in range(4):
        one = [stats.variant_interval(a[i]), stats.compare_variants(a[i], b[i], 0.99),
               stats.gap_interval(a[i], clean_a[i], 2000), stats.compare_gaps(a[i], clean_a[i], 2000, b[i],
                                                                              clean_b[i], 2000)]
        for whole, single in zip(batch, one):
            for key in ("lo", "hi", "se"):
                assert whole[key][i] == pytest.approx(single[key], rel=1e-12)
            assert str(whole.get("verdict", [""] * 4)[i]) == single.get("verdict", "")


def test_compare_with_equal_seeds_pools_them_with_welchs_df():
    rng = np.random.default_rng(3)
    a, b = random_correct(rng, 5, 800, p=0.8), random_correct(rng, 5, 800, p=0.7)
    out = stats.compare_variants(a, b, 0.95)
    acc_a, acc_b = a.mean(axis=1), b.mean(axis=1)
    w = stats.welch(acc_a, acc_b)
    comp = out["components"]
    assert comp["df_seed"] == pytest.approx(w["df"], rel=1e-10)
    assert comp["seed_term"] == pytest.approx(w["se"] ** 2, rel=1e-10)
    contrast = a.mean(axis=0) - b.mean(axis=0)
    image = (np.var(contrast, ddof=1) - anova(a)[2] / 5 - anova(b)[2] / 5) / 800
    assert comp["image_term"] == pytest.approx(max(image, 0.0), rel=1e-10)
    half = math.sqrt(sps.t.ppf(0.975, w["df"]) ** 2 * w["se"] ** 2 + sps.t.ppf(0.975, 799) ** 2 * comp["image_term"])
    assert (out["lo"], out["hi"]) == pytest.approx((w["diff"] - half, w["diff"] + half), rel=1e-10)
    assert out["verdict"] == "differs" and out["at_least"] == pytest.approx(out["lo"])
    assert "Welch" in out["method"] and out["n_seeds"] == (5, 5)


def test_compare_with_unequal_seeds_gives_each_its_own_quantile():
    rng = np.random.default_rng(4)
    a, b = random_correct(rng, 2, 800), random_correct(rng, 5, 800)
    out = stats.compare_variants(a, b, 0.975)
    comp = out["components"]
    va, vb = np.var(a.mean(axis=1), ddof=1) / 2, np.var(b.mean(axis=1), ddof=1) / 5
    half = math.sqrt(sps.t.ppf(0.9875, 1) ** 2 * va + sps.t.ppf(0.9875, 4) ** 2 * vb
                     + sps.t.ppf(0.9875, 799) ** 2 * comp["image_term"])
    assert out["hi"] - out["lo"] == pytest.approx(2 * half, rel=1e-10)
    assert isnan(comp["df_seed"]) and "Banerjee" in out["method"]
    assert out["tost_level"] == 0.0125


def test_compare_counts_the_val_images_when_no_seed_varies():
    """Seeds that all agree still leave the val images a sample: a paired image-level interval, not [d, d]."""
    idx = np.arange(1000)
    a = np.tile(idx % 5 != 0, (3, 1))  # 80%
    b = np.tile(idx % 5 != 1, (3, 1))  # 80%, on other images
    out = stats.compare_variants(a, b)
    assert out["diff"] == 0.0 and out["components"]["seed_term"] == 0.0
    assert out["lo"] < 0 < out["hi"] and out["verdict"] == "inconclusive"
    assert stats.welch(a.mean(axis=1), b.mean(axis=1), n_images=1000)["zero_variance"] is True
    same = stats.compare_variants(a, a.copy())  # the same networks: nothing varies at all
    assert same["lo"] == same["hi"] == 0.0 and same["verdict"] == "equivalent"


def test_compare_makes_no_claim_below_two_seeds():
    rng = np.random.default_rng(5)
    a, b = random_correct(rng, 1, 2000, p=0.8), random_correct(rng, 1, 2000, p=0.7)
    out = stats.compare_variants(a, b)
    assert out["verdict"] == "no claim" and isnan(out["lo"], out["hi"], out["at_least"])
    assert out["near_bound"] is False and out["estimand"] == "none"
    net = out["networks"]
    assert "not about the variants" in net["note"]
    assert net["lo"] > 0  # these two networks differ on images like val/ ...
    a_only, b_only = int(np.sum(a[0] & ~b[0])), int(np.sum(~a[0] & b[0]))  # ... with McNemar's exact p, unadjusted
    assert (net["a_only"], net["b_only"]) == (a_only, b_only)
    assert net["p_unadjusted"] == pytest.approx(sps.binomtest(a_only, a_only + b_only, 0.5).pvalue, rel=1e-9)
    one_three = stats.compare_variants(a, random_correct(rng, 3, 2000))
    assert one_three["verdict"] == "no claim" and "p_unadjusted" not in one_three["networks"]
    plan = stats.seeds_needed(out)
    assert plan["detect"]["seeds"] is None and "at least 2 seeds" in plan["note"]


def test_compare_refuses_variants_scored_on_different_images():
    with pytest.raises(ValueError):
        stats.compare_variants(np.ones((2, 10), bool), np.ones((2, 11), bool))
    with pytest.raises(ValueError):
        stats.variant_interval(np.ones(10, bool))


def test_gaps_pair_the_val_images_and_carry_the_clean_binomial_in_the_seed_term():
    rng = np.random.default_rng(6)
    a, b = random_correct(rng, 3, 1000, p=0.8), random_correct(rng, 4, 1000, p=0.7)
    clean_a, clean_b = np.array([0.95, 0.96, 0.93]), np.array([0.80, 0.82, 0.79, 0.81])
    out = stats.compare_gaps(a, clean_a, 2000, b, clean_b, [2000, 1900, 2000, 2000])
    gap_a, gap_b = clean_a - a.mean(axis=1), clean_b - b.mean(axis=1)
    assert out["diff"] == pytest.approx(gap_a.mean() - gap_b.mean(), rel=1e-12)
    assert out["components"]["seed_var_a"] == pytest.approx(np.var(gap_a, ddof=1), rel=1e-10)
    assert out["components"]["image_term"] == pytest.approx(stats.compare_variants(a, b)["components"]["image_term"])
    per = stats.gap_interval(a, clean_a, 2000)
    assert per["mean"] == pytest.approx(gap_a.mean()) and per["estimand"] == "variant"
    one = stats.gap_interval(a[:1], clean_a[:1], 2000, 0.95)  # one network: clean binomial + val images
    se = math.sqrt(0.95 * 0.05 / 2000 + np.var(a[0], ddof=1) / 1000)
    assert one["hi"] - one["lo"] == pytest.approx(2 * sps.t.ppf(0.975, 999) * se, rel=1e-10)
    for bad in ([0.9, 0.9], [0.9, 1.2, 0.9]):
        with pytest.raises(ValueError):
            stats.gap_interval(a, bad, 2000)
    with pytest.raises(ValueError):
        stats.gap_interval(a, clean_a, 0)


def test_near_bound_flags_close_calls():
    assert bool(stats._near_bound(0.002, 0.05, 0.01)) is True  # lo 0.002 from 0, within 10% of the half-width
    assert bool(stats._near_bound(0.02, 0.06, 0.01)) is False
    assert bool(stats._near_bound(-0.0095, 0.0095, 0.01)) is True  # both ends just inside the margin


def test_failure_rate_is_the_exact_binomial():
    out = stats.failure_rate(2, 7)
    assert (out["lo"], out["hi"]) == stats.binomial_ci(2, 7) and out["rate"] == 2 / 7
    assert isnan(stats.failure_rate(0, 0)["rate"])


def comparison(diff, var_a, var_b, image, seeds=(3, 3), confidence=0.975, margin=0.01, images=3925):
    return dict(diff=diff, confidence=confidence, margin=margin, n_images=images, n_seeds=seeds,
                verdict="inconclusive", components=dict(seed_var_a=var_a, seed_var_b=var_b, image_term=image))


def test_planned_power_matches_a_simulation_of_the_procedure():
    rng = np.random.default_rng(7)
    va, vb, image, conf = 1e-4, 1.5e-4, 2.2e-5, 0.975
    for seeds in (2, 3, 10):
        ta = va / seeds * rng.chisquare(seeds - 1, 100_000) / (seeds - 1)
        tb = vb / seeds * rng.chisquare(seeds - 1, 100_000) / (seeds - 1)
        df = (ta + tb) ** 2 / ((ta ** 2 + tb ** 2) / (seeds - 1))
        half = np.sqrt(sps.t.ppf(0.9875, df) ** 2 * (ta + tb) + sps.t.ppf(0.9875, 3924) ** 2 * image)
        sd = math.sqrt((va + vb) / seeds + image)
        detected = np.mean(np.abs(0.03 + rng.standard_normal(100_000) * sd) > half)
        shown = np.mean(np.abs(rng.standard_normal(100_000) * sd) + half < 0.02)
        plan = comparison(0.03, va, vb, image, confidence=conf, margin=0.02)
        assert stats.planned_power(plan, seeds)[0] == pytest.approx(detected, abs=0.005)
        assert stats.planned_power(plan, seeds, "equivalent")[0] == pytest.approx(shown, abs=0.005)


def test_seeds_needed_reaches_the_power_and_no_fewer_do():
    plan = comparison(0.02, 1e-4, 1e-4, 4e-6)
    out = stats.seeds_needed(plan, power=0.8)
    seeds = out["detect"]["seeds"]
    assert stats.planned_power(plan, seeds)[0] >= 0.8 > stats.planned_power(plan, seeds - 1)[0]
    lo, hi = out["detect"]["range"]
    assert lo <= seeds <= hi and lo < hi
    eq = out["equivalent"]["seeds"]
    assert stats.planned_power(plan, eq, "equivalent")[0] >= 0.8 > stats.planned_power(plan, eq - 1, "equivalent")[0]


def test_seeds_needed_says_when_the_val_set_alone_prevents_a_claim():
    """The image term does not shrink with seeds: below (z_a + z_power) sd_image nothing is detectable."""
    image = 0.005 ** 2  # a 0.5 pp val-image standard error
    out = stats.seeds_needed(comparison(0.012, 1e-4, 1e-4, image))
    limit = (sps.t.ppf(0.9875, 3924) + sps.norm.ppf(0.8)) * 0.005
    assert out["detect"]["limit"] == pytest.approx(limit) and out["detect"]["reachable"] is False
    assert out["detect"]["seeds"] is None and out["equivalent"]["reachable"] is False  # +-1 pp: out of reach too
    assert "does not shrink" in out["note"]
    assert stats.seeds_needed(comparison(0.03, 1e-4, 1e-4, image))["detect"]["reachable"] is True
