"""Routers fitted task by task from statistics (hybridcl.inference.routing): exact incremental fits, saving."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hybridcl.config.experiment import RoutingConfig
from hybridcl.inference.routing import (
    ROUTERS,
    FeatureRidge,
    Mahalanobis,
    Prompts,
    Routers,
    TokenNgram,
    accuracy_summary,
    wilson_interval,
)

CFG = RoutingConfig(random_features=64, ridge=1e-2, shrinkage=0.1, ngram_hash_bits=8)


def scripted(features=None, token_ids=None) -> Prompts:
    """Prompts whose features (or token ids) are given, as the frozen base would compute them."""
    n = len(features) if features is not None else len(token_ids)
    prompts = Prompts([f"prompt {k}" for k in range(n)], components=None, tokenizer=None, kind="causal")
    if features is not None:
        prompts.__dict__["features"] = torch.as_tensor(features, dtype=torch.float64)
    if token_ids is not None:
        prompts.__dict__["token_ids"] = token_ids
    return prompts


def clusters(seed: int, n: int = 30, d: int = 12, tasks: int = 3, spread: float = 0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(tasks, d))
    return [centres[t] + spread * rng.normal(size=(n, d)) for t in range(tasks)]


def test_feature_ridge_fitted_task_by_task_equals_the_ridge_on_every_task_at_once():
    data = clusters(0)
    tasks = ["python", "javascript", "go"]
    router = FeatureRidge(CFG)
    for task, x in zip(tasks, data, strict=True):
        router.add_task(task, router.statistics(scripted(x)))
    queries = scripted(np.concatenate(data))
    # the batch ridge: all features and one-hot targets in one design matrix
    h = router._features(scripted(np.concatenate(data)))
    y = torch.zeros(len(h), 3, dtype=torch.float64)
    for t in range(3):
        y[30 * t : 30 * (t + 1), t] = 1
    gram = h.T @ h
    penalty = CFG.ridge * gram.diagonal().mean()
    weights = torch.linalg.solve(gram + penalty * torch.eye(len(gram), dtype=gram.dtype), h.T @ y)
    assert torch.allclose(router.scores(queries, tasks), router._features(queries) @ weights, atol=1e-9)
    chosen = router.choose(queries)
    assert accuracy_summary({t: chosen[k * 30 : (k + 1) * 30] for k, t in enumerate(tasks)}, tasks)["accuracy"] == 100


def test_mahalanobis_matches_the_pooled_covariance_computed_from_the_examples():
    data = clusters(1, tasks=2)
    tasks = ["python", "javascript"]
    router = Mahalanobis(CFG)
    for task, x in zip(tasks, data, strict=True):
        router.add_task(task, router.statistics(scripted(x)))
    means = [x.mean(0) for x in data]
    scatter = sum((x - m).T @ (x - m) for x, m in zip(data, means, strict=True))
    cov = scatter / (sum(len(x) for x in data) - 2)
    cov = 0.9 * cov + 0.1 * np.trace(cov) / len(cov) * np.eye(len(cov))
    query = np.concatenate(data)[:5]
    expected = np.stack([-np.einsum("pd,de,pe->p", query - m, np.linalg.inv(cov), query - m) for m in means], 1)
    assert np.allclose(router.scores(scripted(query), tasks).numpy(), expected, rtol=1e-9)


def test_token_ngram_is_naive_bayes_over_unigrams_and_bigrams():
    cfg = replace(CFG, ngram_smoothing=1.0, ngram_hash_bits=4)  # 16 buckets
    router = TokenNgram(cfg)
    router.add_task("python", router.statistics(scripted(token_ids=[[1, 2], [1]])))
    router.add_task("javascript", router.statistics(scripted(token_ids=[[3]])))
    # python: unigrams 1, 2, 1 and the bigram (1, 2) -> (1 * 1000003 + 2 + 16) % 16 = 5
    assert (1 * 1_000_003 + 2 + 16) % 16 == 5
    counts = router.stats["python"]["counts"]
    assert counts[1] == 2 and counts[2] == 1 and counts[5] == 1 and counts.sum() == 4
    scores = router.scores(scripted(token_ids=[[1]]), ["python", "javascript"])
    assert scores[0, 0] == pytest.approx(math.log(3 / 20)) and scores[0, 1] == pytest.approx(math.log(1 / 17))
    assert router.choose(scripted(token_ids=[[1, 2], [3, 3]])) == ["python", "javascript"]


def test_saved_statistics_route_exactly_as_the_fitted_routers():
    data = clusters(2, tasks=2)
    tasks = ["python", "javascript"]
    cfg = replace(CFG, compare=["feature_ridge", "mahalanobis"])
    fitted, loaded = Routers(cfg), Routers(cfg)
    for task, x in zip(tasks, data, strict=True):
        flat = fitted.fit_task(task, scripted(x))
        assert set(flat) == {f"{m}/{s}" for m in ("feature_ridge", "mahalanobis") for s in ("gram", "sum", "count")}
        loaded.load_task(task, {k: v.clone() for k, v in flat.items()})
    queries = scripted(np.concatenate(data))
    for method in cfg.compare:
        assert torch.equal(
            fitted.by_method[method].scores(queries, tasks), loaded.by_method[method].scores(queries, tasks)
        )
    with pytest.raises(ValueError, match="lack method 'token_ngram'"):
        Routers(replace(cfg, compare=["token_ngram"])).load_task("python", flat)


def test_one_task_or_no_prompt_needs_no_choice():
    router = ROUTERS["feature_ridge"](CFG)
    router.add_task("python", router.statistics(scripted(np.ones((3, 4)))))
    assert router.choose(scripted(np.ones((2, 4)))) == ["python", "python"]
    assert router.choose(scripted(np.ones((0, 4))), ["python", "javascript"]) == []


def test_wilson_interval_matches_hand_computed_values():
    low, high = wilson_interval(256, 256)  # all right: the bootstrap would say [100, 100]
    assert low == pytest.approx(100 * 256 / (256 + 1.959964**2), abs=1e-9) and high == 100
    low, high = wilson_interval(5, 10)
    assert (low, high) == pytest.approx((23.659309, 76.340691), abs=1e-5)
    summary = accuracy_summary({"python": ["python", "go"], "go": ["go"]}, ["python", "go"])
    assert summary["accuracy"] == pytest.approx(200 / 3) and summary["n"] == 3
    assert summary["confusion"] == {"python": {"python": 1, "go": 1}, "go": {"python": 0, "go": 1}}
    assert summary["per_task_accuracy"] == {"python": 50.0, "go": 100.0}


def test_what_a_client_sends_is_made_from_each_training_example():
    from hybridcl.data.tasks import Example
    from hybridcl.inference.routing import fitting_texts, request_texts

    code = "def add(a, b):\n    return a + b\n"
    t2c = Example("x", "python", "text-to-code", "Return the sum of a and b.", code)
    assert request_texts(t2c, "prompts") == ["Return the sum of a and b."]
    assert request_texts(t2c, "code_start") == [code[: len(code) // 2]]
    assert request_texts(t2c, "docstring") == ["Return the sum of a and b."]
    assert request_texts(t2c, "chat") == [
        "Write a Python function that return the sum of a and b.",
        "Write a function that return the sum of a and b.",
    ]
    c2t = Example("y", "javascript", "code-to-text", "function f() {}", "Do nothing.")
    assert request_texts(c2t, "code_start") == ["functio"] and request_texts(c2t, "docstring") == ["Do nothing."]
    completion = Example("z", "go", "completion", "func f(", "func f() {}")
    assert request_texts(completion, "docstring") == [] and request_texts(completion, "chat") == []
    assert fitting_texts([t2c, completion], ["prompts", "docstring"]) == [t2c.source, "func f(", t2c.source]


@pytest.mark.parametrize(
    ("prompt", "language"),
    [
        ("Write a JavaScript function that adds two numbers", "javascript"),
        ("a java method that sorts", "java"),
        ("Write it in Go, please", "go"),
        ("a Go function that", "go"),
        ("Let's go through the list", None),
        ("Python or Ruby, either", None),
        ("Return the sum of a and b.", None),
        ("def add(a, b):", None),
    ],
)
def test_a_request_names_its_language_in_words(prompt, language):
    from hybridcl.inference.routing import named_language

    assert named_language(prompt) == language


@pytest.mark.parametrize("method", ["feature_ridge", "mahalanobis"])
def test_a_task_of_two_far_apart_kinds_is_one_class_per_kind_and_saves_and_loads(method):
    """Each task's code starts and docstrings lie apart: one mean per task sits between its two kinds,
    nearer the other task's; a class per kind keeps each task's prompts on it."""
    d = 12
    rng = np.random.default_rng(0)
    e = np.eye(d)
    # both tasks' kinds average to the same point: one class per task cannot tell them apart
    centre = {
        ("a", "code"): 3 * e[0],
        ("a", "doc"): 3 * e[1],
        ("b", "code"): 1.5 * (e[0] + e[1]) + 3 * e[2],
        ("b", "doc"): 1.5 * (e[0] + e[1]) - 3 * e[2],
    }

    def kind(task, k, n=40):
        return centre[(task, k)] + rng.normal(scale=0.3, size=(n, d))

    train = {(t, k): kind(t, k) for t, k in centre}
    test = {(t, k): kind(t, k) for t, k in centre}
    cfg = replace(CFG, method=method, compare=[])
    by_kind, one = Routers(cfg), Routers(cfg)
    saved = {}
    for task in ("a", "b"):
        saved[task] = by_kind.fit_task(task, {k: scripted(train[(task, k)]) for k in ("code", "doc")})
        one.fit_task(task, scripted(np.concatenate([train[(task, k)] for k in ("code", "doc")])))
    assert {key.split("/")[0] for key in saved["a"]} == {f"{method}@code", f"{method}@doc"}

    def accuracy(routers):
        hits = [c == t for (t, k), x in test.items() for c in routers.main.choose(scripted(x), ["a", "b"])]
        return 100 * sum(hits) / len(hits)

    loaded = Routers(cfg)
    for task in ("a", "b"):
        loaded.load_task(task, saved[task])
    assert accuracy(by_kind) == accuracy(loaded) == 100.0
    if method == "mahalanobis":  # nearest mean: both tasks' one mean is the same point
        assert accuracy(one) <= 75.0
