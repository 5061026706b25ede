"""scripts/study_claims.py (issue 23): the sign-flip test, Holm's correction, the interaction contrast of
synergy and the per-example shares, against hand-computed values."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridcl.config.experiment import load_config
from hybridcl.constants import HEADLINE_METRIC
from hybridcl.errors import RunError
from hybridcl.records.io import read_json, save_tensors, write_json
from hybridcl.records.run_dir import write_run_config
from hybridcl.stats.cl_metrics import cl_metrics
from hybridcl.stats.intervals import value

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("study_claims", ROOT / "scripts" / "study_claims.py")
sc = importlib.util.module_from_spec(_spec)
sys.modules["study_claims"] = sc  # dataclasses look their module up by name
_spec.loader.exec_module(sc)

TASKS = ["python", "javascript"]
HYB = "hybrid_task_specific"


def claim(a, b, column):
    (found,) = [c for c in sc.CLAIMS if (c.a, c.b, c.column) == (a, b, column)]
    return found


# ---- the sign-flip test ---------------------------------------------------------------------------


def test_sign_flip_exact_by_hand():
    # +-1 +-2 +-3: the 8 sums are 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 in 2 of 8
    assert sc.sign_flip_test([1.0, 2.0, 3.0]) == (0.25, "exact, n=3")
    # 3 +-1 +-1 ...: sums 5, 3, 3, 1, -1, -3, -3, -5: again 2 of 8
    assert sc.sign_flip_test([3.0, 1.0, 1.0])[0] == 0.25
    # eight positive differences: only all-plus and all-minus reach 8 (the p at n = 8 is at least this)
    assert sc.sign_flip_test([0.5] * 8)[0] == 2 / 256
    # a zero sum: every pattern reaches it
    assert sc.sign_flip_test([1.0, -1.0])[0] == 1.0
    # zeros change no sum: left out of n, p unchanged
    assert sc.sign_flip_test([1.0, 2.0, 0.0, 3.0, 0.0]) == (0.25, "exact, n=3")
    assert sc.sign_flip_test([0.0, 0.0]) == (1.0, "all 2 differences are 0")


def test_sign_flip_monte_carlo_beyond_the_exact_limit():
    # 25 equal differences: only 2 of 2^25 patterns reach the sum, so no random draw does
    p, method = sc.sign_flip_test([1.0] * 25, draws=1000)
    assert (p, method) == (1 / 1001, "Monte Carlo, n=25, 1,000 draws")
    p, method = sc.sign_flip_test([1.0, -1.0] * 11, exact_max=4, draws=2000)
    assert p == 1.0 and method.startswith("Monte Carlo, n=22")
    # the Monte Carlo p of a case with an exact answer lands near it: 1, 2, 3 and 22 ones of either sign
    exact, _ = sc.sign_flip_test([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # 6 of 64 reach 21 -> 2/64
    assert exact == 2 / 64
    mc, _ = sc.sign_flip_test([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], exact_max=3, draws=20_000)
    assert abs(mc - 2 / 64) < 0.005


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert sc.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert sc.holm([0.2, None, 0.9]) == pytest.approx([0.4, None, 0.9])  # 0.2 x 2; 0.9 x 1
    assert sc.holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, then never below it
    assert sc.holm([]) == []


# ---- per-example shares ---------------------------------------------------------------------------


def _ratio_matrix(rng, n=(5, 7), rows=3):
    tokens = [rng.integers(1, 30, size=k).astype(float) for k in n]
    return [[np.column_stack([rng.uniform(0.5, 3.0, size=len(t)) * t, t]) for t in tokens] for _ in range(rows)]


@pytest.mark.parametrize("key", ["average_final", "bwt", "fwt", "forgetting_relative"])
@pytest.mark.parametrize("metric", ["loss", HEADLINE_METRIC])
def test_shares_sum_to_the_cl_metric(key, metric):
    rng = np.random.default_rng(3)
    stats = _ratio_matrix(rng, rows=4, n=(5, 7, 4))  # base + 3 tasks
    if metric != "loss":
        stats = [[np.column_stack([st[:, 0] / st[:, 1] * 10, np.ones(len(st))]) for st in row] for row in stats]
    hib = metric != "loss"
    cells = [[sc.cell_shares(metric, st) for st in row] for row in stats]
    total = float(np.concatenate(sc.key_shares(cells, key, hib)).sum())
    matrix = [[value(metric, st.sum(0)) for st in row] for row in stats]
    assert total == pytest.approx(cl_metrics(matrix, higher_is_better=hib)[key], rel=1e-12)


def test_a_corpus_metric_has_no_shares():
    with pytest.raises(ValueError, match="not a mean or ratio"):
        sc.cell_shares("bleu_sacre", np.ones((2, 10)))


# ---- the interaction contrast on a hand-made sweep ------------------------------------------------


def _write_run(folder: Path, strategy: str, seeds: dict[int, list[list[list[float]]]], metric=HEADLINE_METRIC):
    """A run folder with ``seeds[s][i][j]``: the per-example values of row i, task j (mean-type rows)."""
    folder.mkdir(parents=True)
    write_json(folder / "results.json", {"strategy": strategy, "tasks": TASKS, "rows": ["base", *TASKS], "matrix": {}})
    for s, rows in seeds.items():
        for i, row in enumerate(rows):
            tensors = {
                f"{t}/{metric}": torch.tensor([[v, 1.0] for v in vals], dtype=torch.float64)
                for t, vals in zip(TASKS, row, strict=True)
            }
            save_tensors(folder / f"seed-{s}" / "stats" / f"row{i}.safetensors", tensors)


BASE = [[10.0, 20.0], [30.0, 40.0]]  # python mean 15, javascript mean 35: base average 25


def _final(shift):
    return [[v + shift for v in task] for task in BASE]


@pytest.fixture
def synergy_sweep(tmp_path):
    # gains over the base (average after the last task - base average), seed 0 / seed 1:
    # hybrid 10 / 12, LoRA-only 2 / 2, full-layer-only 4 / 4 -> contrast 4 / 6
    for name, shifts in [("hybrid_task_specific", (10, 12)), ("lora_only", (2, 2)), ("full_layer_only", (4, 4))]:
        seeds = {s: [BASE, _final(shift), _final(shift)] for s, shift in enumerate(shifts)}
        _write_run(tmp_path / "sweep" / name, name, seeds)
    return tmp_path / "sweep"


def test_interaction_contrast_by_hand(synergy_sweep):
    runs = sc.strategy_runs([synergy_sweep])
    synergy = claim("hybrid_task_specific", sc.SYNERGY, "average_bleu")
    assert synergy.parts == ("lora_only", "full_layer_only")
    shares = sc.claim_shares(synergy, runs)
    # each of the 4 examples carries a quarter of the contrast: 1 (seed 0), 1.5 (seed 1)
    assert shares["seed-0"] == pytest.approx([1.0] * 4) and shares["seed-1"] == pytest.approx([1.5] * 4)
    r = sc.evaluate_claim(synergy, runs)
    assert r.per_seed == pytest.approx([4.0, 6.0]) and r.value == pytest.approx(5.0)
    # t interval of [4, 6]: 5 +- 12.706 * sqrt(2) / sqrt(2)
    assert r.seed_interval == pytest.approx((5 - 12.706, 5 + 12.706))
    # four positive shares: 2 of 16 sign patterns reach the sum
    assert (r.p, r.method) == (0.125, "exact, n=4")
    # every example's contrast is 4 (seed 0) or 6 (seed 1): every bootstrap resample gives 5
    assert r.example_interval == pytest.approx((5.0, 5.0))


def test_claims_table_applies_holm_and_says_what_is_missing(synergy_sweep):
    table = sc.report([synergy_sweep])
    synergy = next(line for line in table.splitlines() if "sum of its parts (average BLEU" in line)
    # tested here (BLEU statistics only): hybrid vs LoRA, hybrid vs full layer, the contrast (p 0.125 each: all
    # shares positive) and two forgettings (p 1: rows 1 and 2 are equal). Holm over 5: 0.125 x 5 = 0.625,
    # 0.125 x 4 and x 3 lifted to it, 1 x 2 capped at 1 -> 0.625, 0.625, 0.625, 1, 1
    results = [r for r in sc.claims_results([synergy_sweep])[False] if isinstance(r, sc.ClaimResult)]
    assert [r.p for r in results] == [0.125, 0.125, 0.125, 1.0, 1.0]
    assert [r.p_holm for r in results] == pytest.approx([0.625, 0.625, 0.625, 1.0, 1.0])
    assert "| 0.12 (exact, n=4) | 0.62 |" in synergy
    assert "not in this study (hybrid_shared_layer)" in table
    assert "not testable here" in table and "no loss statistics" in table
    assert "within noise: rules out effects beyond ±17.706 (not inside ±1 BLEU)" in synergy


def test_one_seed_is_decided_over_examples_alone(tmp_path):
    # the open questions run one seed: no t interval, so the examples' test and interval decide
    base = [[10.0, 20.0, 30.0, 40.0], [30.0, 40.0, 50.0, 60.0]]
    for name, shift in [("hybrid_task_specific", 10.0), ("lora_only", 2.0)]:
        final = [[v + shift + 0.1 * k for k, v in enumerate(task)] for task in base]
        _write_run(tmp_path / "one" / name, name, {0: [base, final, final]}, metric=HEADLINE_METRIC)
    runs = sc.strategy_runs([tmp_path / "one"])
    r = sc.evaluate_claim(claim("hybrid_task_specific", "lora_only", "average_bleu"), runs)
    # 8 positive shares (each example's half-task difference, 8 / 8 = 1 each): 2 of 256 patterns reach the sum
    assert r.per_seed == pytest.approx([8.0]) and r.seed_interval is None and (r.p, r.method) == (2 / 256, "exact, n=8")
    r.p_holm = r.p
    assert sc.verdict(r) == "holds (one seed: over examples alone)"
    r.p_holm = 0.2  # the same numbers after a correction over many claims
    assert sc.verdict(r).startswith("within noise")
    once = sc.ClaimResult(claim(HYB, "lora_only", "seconds_per_step"), 0.1, [0.1], None, None, None, "once per seed")
    assert sc.verdict(once) == "not decided: one seed and no test over examples"
    # one seed's forgetting with the task id: exactly 0 over every example, and 0 by construction
    zero = sc.ClaimResult(claim(HYB, None, "forgetting_relative"), 0.0, [0.0], None, (0.0, 0.0), 1.0, "exact")
    zero.by_construction = "per-task parts"
    assert sc.verdict(zero) == "does not hold: 0 by construction (per-task parts)"


def test_the_open_questions_pair_with_mains_hybrid_on_the_seeds_they_share(tmp_path):
    _write_run(tmp_path / "main" / HYB, HYB, {0: [BASE, BASE, _final(1)], 1: [BASE, BASE, _final(5)]})
    _write_run(tmp_path / "rank" / "r=16", HYB, {0: [BASE, BASE, _final(3)]})
    _write_run(tmp_path / "rank" / "r=4", HYB, {0: [BASE, BASE, _final(0)]})
    _write_run(tmp_path / "position" / "decoder-15", HYB, {0: [BASE, BASE, _final(2)]})
    studies = [tmp_path / "main", tmp_path / "rank", tmp_path / "position"]
    runs = sc.strategy_runs(studies)
    claims = sc.open_claims(runs)
    assert [(c.a, c.b, c.column) for c in claims] == [
        (name, HYB, column) for name in ("r=4", "r=16", "decoder-15") for column in ("average_bleu", "average_loss")
    ]
    assert claims[2].text == "LoRA rank 16 beats rank 8 on average BLEU (task-specific hybrid)"
    assert claims[4].text.startswith("the block at position decoder:15 beats it where main puts it")
    results = sc.claims_results(studies, claims)[False]
    # seed 0 alone (main's seed 1 has no partner): rank 16 - rank 8 = 3 - 1, rank 4 - rank 8 = 0 - 1
    assert [r.per_seed for r in results if r.claim.column == "average_bleu"] == [[-1.0], [2.0], [1.0]]
    assert all(isinstance(r, sc.Untested) for r in results if r.claim.column == "average_loss")  # BLEU stats only


def _write_pooled(folder: Path, name: str, seeds: dict, *overrides: str) -> None:
    _write_run(folder, name, seeds)
    config = load_config("smoke", [f"strategy={name}", f"run.seeds=[{','.join(map(str, seeds))}]", *overrides])
    write_run_config(folder, config)


def test_seeds_added_later_in_other_folders_pool_with_mains(tmp_path):
    # main: seeds 0 and 1; more-seeds/seed-2: seed 2 of both strategies, written elsewhere (another row-0 cache)
    for name, shifts in [(HYB, (10, 12, 7)), ("lora_only", (2, 2, 3))]:
        seeds = {s: [BASE, _final(x), _final(x)] for s, x in enumerate(shifts[:2])}
        _write_pooled(tmp_path / "main" / name, name, seeds)
        more = tmp_path / "more-seeds" / "seed-2" / name
        _write_pooled(more, name, {2: [BASE, _final(shifts[2]), _final(shifts[2])]}, "eval.base_cells=elsewhere")
    runs = sc.strategy_runs([tmp_path / "main", tmp_path / "more-seeds"])
    assert list(runs[HYB].seed_dirs()) == ["seed-0", "seed-1", "seed-2"]
    r = sc.evaluate_claim(claim(HYB, "lora_only", "average_bleu"), runs)
    assert r.per_seed == pytest.approx([8.0, 10.0, 4.0])  # the hybrid's shift minus LoRA-only's, seed by seed
    # t interval of [8, 10, 4]: mean 22/3, sd sqrt(28/3), t(0.975, 2) = 4.303
    half = 4.303 * math.sqrt(28 / 3) / math.sqrt(3)
    assert r.seed_interval == pytest.approx(
        (22 / 3 - half, 22 / 3 + half),
    )


def test_folders_that_do_not_pool_are_refused_by_name(tmp_path):
    _write_pooled(tmp_path / "main" / HYB, HYB, {0: [BASE, BASE, BASE]})
    _write_pooled(tmp_path / "again" / HYB, HYB, {0: [BASE, BASE, BASE]})
    _write_pooled(tmp_path / "other" / HYB, HYB, {1: [BASE, BASE, BASE]}, "train.lr=0.01")
    with pytest.raises(RunError, match=r"main/hybrid_task_specific and .*again/hybrid_task_specific both hold seed-0"):
        sc.strategy_runs([tmp_path / "main", tmp_path / "again"])
    with pytest.raises(RunError, match=r"differ in train\.lr \(0\.001 against 0\.01\): their seeds do not pool"):
        sc.strategy_runs([tmp_path / "main", tmp_path / "other"])


def test_runs_on_other_examples_do_not_pair(tmp_path):
    _write_run(tmp_path / "s" / "a", "hybrid_task_specific", {0: [BASE, BASE, BASE]}, metric="loss")
    _write_run(tmp_path / "s" / "b", "lora_only", {0: [BASE, BASE, [[1.0, 2.0, 3.0], [1.0, 2.0]]]}, metric="loss")
    with pytest.raises(ValueError, match="same evaluation examples"):
        sc.claim_shares(claim("hybrid_task_specific", "lora_only", "average_loss"), sc.strategy_runs([tmp_path / "s"]))


# ---- the committed study -------------------------------------------------------------------------

STUDY = ROOT / "docs" / "results" / "2026-11-27-study" / "study-completion"


@pytest.mark.skipif(not STUDY.is_dir(), reason="the committed study is not in this checkout")
def test_committed_study_per_seed_values_are_the_results_files():
    runs = sc.strategy_runs([STUDY])
    r = sc.evaluate_claim(claim("hybrid_task_specific", "lora_only", "average_bleu"), runs)
    expected = []
    for seed in ("seed-0", "seed-1", "seed-2"):
        a, b = (read_json(runs[s].seed_dirs()[seed] / "results.json") for s in ("hybrid_task_specific", "lora_only"))
        key = lambda res: res["cl_metrics"][HEADLINE_METRIC]["average_final"]  # noqa: E731
        expected.append(key(a) - key(b))
    assert r.per_seed == pytest.approx(expected, abs=1e-9)
    assert r.method == "exact, n=12"  # 16 examples, 4 with equal BLEU on both (mean over seeds)


def test_two_sample_permutation_by_hand():
    # pooled 1, 2, 3, 4 split 2 + 2: the 6 differences of means are -2, -1, 0, 0, 1, 2; |d| >= 2 in 2 of 6
    assert sc.permutation_test([1.0, 2.0], [3.0, 4.0]) == (pytest.approx(1 / 3), "exact permutation, 2 + 2")
    p, method = sc.permutation_test([1.0, 2.0], [3.0, 4.0], exact_max=2, draws=20_000)
    assert abs(p - 1 / 3) < 0.01 and method.startswith("Monte Carlo permutation, 2 + 2")
    assert sc.permutation_test([0.0] * 3, [0.0] * 3)[0] == 1.0


def test_first_epoch_loss_weights_each_logged_window_by_its_steps(tmp_path):
    run = tmp_path / "run"
    (run / "seed-0").mkdir(parents=True)
    from hybridcl.config.experiment import load_config
    from hybridcl.records.run_dir import write_run_config

    write_run_config(run, load_config("smoke", ["train.epochs=2"]))
    # 8 steps over 2 epochs: the first epoch is steps 1-4, logged as windows ending at 1 (1 step) and 4 (3 steps)
    record = {"task": "javascript", "steps": 8, "seconds": 4.0, "losses": [[1, 3.0], [4, 1.0], [8, 0.5]]}
    write_json(run / "seed-0" / "results.json", {"train": [record, {"task": "python", "steps": 2, "seconds": 2.0}]})
    run = sc.Run((run,))
    assert sc.seed_value(run, "seed-0", "first_epoch_loss", "javascript") == pytest.approx((3.0 + 3 * 1.0) / 4)
    assert sc.seed_value(run, "seed-0", "seconds_per_step", None) == pytest.approx(6.0 / 10)


def test_runs_of_another_precision_or_timed_on_another_machine_are_not_compared(tmp_path):
    # the study's shared-layer hybrid first trained in bf16 on a machine where train.precision=auto is bf16
    setup = [
        ("hybrid_task_specific", "fp32", "AVX2"),
        ("lora_only", "fp32", "AVX512"),
        ("hybrid_shared_layer", "bf16", "AVX2"),
    ]
    for name, precision, capability in setup:
        _write_run(tmp_path / "main" / name, name, {0: [BASE, BASE, BASE]})
        record = {"task": "python", "steps": 4, "seconds": 2.0, "precision": precision}
        results = read_json(tmp_path / "main" / name / "results.json")
        results["environment"] = {"cpu": {"model": "AMD EPYC", "torch_capability": capability}, "gpu": {"names": []}}
        results["per_seed"] = [{"train": [record]}]
        write_json(tmp_path / "main" / name / "results.json", results)
        write_json(tmp_path / "main" / name / "seed-0" / "results.json", {"train": [record]})
    claims = [
        claim(HYB, "lora_only", "average_bleu"),
        claim(HYB, "lora_only", "seconds_per_step"),
        claim("hybrid_shared_layer", HYB, "average_bleu"),
    ]
    same_precision, timed, other_precision = sc.claims_results([tmp_path / "main"], claims)[False]
    assert isinstance(same_precision, sc.ClaimResult) and same_precision.per_seed == [0.0]
    assert timed.reason == (
        "not comparable: seed-0 timed on different machines "
        "(hybrid_task_specific: AMD EPYC, AVX2; lora_only: AMD EPYC, AVX512)"
    )
    assert other_precision.reason == (
        "not comparable: trained in different precisions (hybrid_shared_layer: bf16; hybrid_task_specific: fp32)"
    )


def _write_timed(folder: Path, name: str, seed: int, capability: str, seconds: float) -> None:
    _write_pooled(folder, name, {seed: [BASE, BASE, BASE]})
    results = read_json(folder / "results.json")
    results["environment"] = {"cpu": {"model": "AMD EPYC", "torch_capability": capability}}
    write_json(folder / "results.json", results)
    record = {"task": "python", "steps": 4, "seconds": seconds}
    write_json(folder / f"seed-{seed}" / "results.json", {"train": [record]})


def test_pooled_runs_compare_times_seed_by_seed_on_one_machine(tmp_path):
    # the hybrid's seeds 0 (main) and 1 (added later) ran on one machine each, LoRA-only's the other way
    # round: both runs ran on both machines, but no seed's pair shares one
    timed = claim(HYB, "lora_only", "seconds_per_step")
    for name, machines in [(HYB, ("AVX2", "AVX512")), ("lora_only", ("AVX512", "AVX2"))]:
        for seed, (folder, capability) in enumerate(zip(("main", "more/seed-1"), machines, strict=True)):
            _write_timed(tmp_path / folder / name, name, seed, capability, 8.0)
    (r,) = sc.claims_results([tmp_path / "main", tmp_path / "more"], [timed])[False]
    assert r.reason == (
        "not comparable: seed-0 timed on different machines "
        "(hybrid_task_specific: AMD EPYC, AVX2; lora_only: AMD EPYC, AVX512)"
    )
    # each seed's pair on one machine (the machines differ between seeds), and a seed of the hybrid
    # alone on a third: compared over the seeds both have
    for seed, capability, seconds in [(0, "AVX2", 8.0), (1, "AVX512", 4.0)]:
        folder = "main" if seed == 0 else f"same/seed-{seed}"
        _write_timed(tmp_path / "b" / folder / HYB, HYB, seed, capability, seconds)
        _write_timed(tmp_path / "b" / folder / "lora_only", "lora_only", seed, capability, seconds + 2.0)
    _write_timed(tmp_path / "b" / "only-hybrid" / HYB, HYB, 2, "NEON", 1.0)
    studies = [tmp_path / "b" / f for f in ("main", "same", "only-hybrid")]
    (r,) = sc.claims_results(studies, [timed])[False]
    assert r.per_seed == pytest.approx([-0.5, -0.5])  # (8 - 10) / 4 and (4 - 6) / 4 s per step


def test_two_tasks_fwt_of_runs_that_train_the_first_task_alike_is_0_by_construction(tmp_path):
    # after Python alone the shared-layer hybrid is the task-specific one (the study's seeds: the same
    # BLEU on every example); at another learning rate that is no longer so by construction
    for sweep, shared_lr in (("alike", 1e-3), ("other_lr", 3e-3)):
        for name, lr in (("hybrid_task_specific", 1e-3), ("hybrid_shared_layer", shared_lr)):
            _write_run(tmp_path / sweep / name, name, {s: [BASE, _final(5), _final(5)] for s in (0, 1)})
            write_run_config(tmp_path / sweep / name, load_config("smoke", [f"strategy={name}", f"train.lr={lr}"]))
    fwt = claim("hybrid_shared_layer", HYB, "fwt")
    alike, other_lr = (sc.claims_results([tmp_path / sweep], [fwt])[False][0] for sweep in ("alike", "other_lr"))
    assert alike.per_seed == other_lr.per_seed == [0.0, 0.0]
    assert sc.verdict(alike).startswith("does not hold: 0 by construction (over two tasks FWT reads only")
    assert sc.verdict(other_lr) == "does not hold: exactly 0 on every seed and example"


def test_the_parameter_matched_lora_is_found_by_its_folder(tmp_path):
    # two lora_only runs: the one in a folder named lora_only keeps the strategy's name
    for folder in ("lora_matched", "lora_only", "hybrid_task_specific"):
        strategy = "hybrid_task_specific" if folder.startswith("hybrid") else "lora_only"
        _write_run(tmp_path / "main" / folder, strategy, {0: [BASE, BASE, BASE]})
    runs = sc.strategy_runs([tmp_path / "main"])
    assert runs["lora_only"].name == "lora_only" and runs["lora_matched"].name == "lora_matched"
    (result,) = sc.claims_results([tmp_path / "main"], [claim("hybrid_task_specific", "lora_matched", "average_bleu")])[
        False
    ]
    assert result.per_seed == [0.0]


def test_without_the_task_id_the_claims_read_the_routed_rows_and_holm_spans_both_tables(synergy_sweep):
    # routed, the hybrid's last row loses 8 points of Python BLEU per example (seed 0: [20, 30] -> [12, 22])
    hybrid = synergy_sweep / "hybrid_task_specific"
    for s, shift in enumerate((10, 12)):
        final = _final(shift)
        routed = [[v - 8 for v in final[0]], final[1]]
        tensors = {
            f"{t}/{HEADLINE_METRIC}": torch.tensor([[v, 1.0] for v in vals], dtype=torch.float64)
            for t, vals in zip(TASKS, routed, strict=True)
        }
        save_tensors(hybrid / f"seed-{s}" / "stats" / "routed-row2.safetensors", tensors)
    assert [p.name for p in sc.row_files(hybrid / "seed-0", routed=True)] == [
        "row0.safetensors",
        "row1.safetensors",
        "routed-row2.safetensors",
    ]
    results = sc.claims_results([synergy_sweep], settings=(False, True))
    forgets = claim("hybrid_task_specific", None, "forgetting_relative")
    with_id, routed = (next(r for r in results[k] if r.claim == forgets) for k in (False, True))
    # with the task id rows 1 and 2 are equal: 0 by construction; routed, Python's BLEU falls from its
    # diagonal 25 to 17 on seed 0 -> 100 * 8 / 25 = 32%; from 27 to 19 on seed 1 -> 100 * 8 / 27
    assert sc.verdict(with_id).startswith("does not hold: 0 by construction (with the task id")
    assert routed.per_seed == pytest.approx([32.0, 800 / 27])
    # the two tables are one family: 5 tested claims each, Holm over 10 (0.125 x 10 capped at 1)
    tested = [r for k in (False, True) for r in results[k] if isinstance(r, sc.ClaimResult)]
    assert len(tested) == 10 and min(r.p_holm for r in tested) == pytest.approx(1.0)
    table = sc.report([synergy_sweep])
    assert "## Without the task id" in table and table.count("| claim |") == 2
