"""hybridcl.load_run(path).generate(task, prompts), task-agnostic routing and `hybridcl generate`."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import hybridcl
from hybridcl.cli import main
from hybridcl.config.experiment import load_config
from hybridcl.continual import run_experiment
from hybridcl.data.tasks import load_task_data
from hybridcl.evaluation.generate import Generations
from hybridcl.inference.routing import Router, Routers

SMALL = ["preset=smoke", "data.max_train=16", "data.max_val=4", "eval.max_new_tokens=8"]


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    config = load_config(overrides=[*SMALL, "model.name=tiny:llama", "strategy=hybrid_task_specific"])
    return run_experiment(config, tmp_path_factory.mktemp("inference") / "run", progress=False)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_load_run_reproduces_the_runs_predictions(llama_run):
    run = hybridcl.load_run(llama_run)
    assert run.components.tasks == ["python", "javascript"] and run.kind == "causal"
    for task in ("python", "javascript"):
        val = load_task_data(run.config.data, task, seed=0).val
        saved = lines(llama_run / "seed-0" / "predictions" / f"row2-{task}.jsonl")
        assert run.generate(task, [ex.source for ex in val]) == [p["prediction"] for p in saved]
    assert isinstance(run.generate("python", val[0].source), str)


def test_auto_routing_matches_the_runs_routing(llama_run):
    run = hybridcl.load_run(llama_run)
    for task in ("python", "javascript"):
        val = load_task_data(run.config.data, task, seed=0).val
        routed = lines(llama_run / "seed-0" / "predictions" / f"routed-row2-{task}.jsonl")
        texts, chosen = run.generate("auto", [ex.source for ex in val], return_tasks=True)
        assert chosen == [r["routed_to"] for r in routed]
        assert texts == [r["prediction"] for r in routed]


def test_generate_command_and_its_errors(llama_run, capsys):
    assert main(["generate", "--run", str(llama_run), "--task", "python", "Add two numbers."]) == 0
    expected = hybridcl.load_run(llama_run).generate("python", "Add two numbers.")
    shown = expected if expected.strip() else "(empty output)"
    assert capsys.readouterr().out == f"### prompt 1 of 1: task python\n{shown}\n"
    assert main(["generate", "--run", str(llama_run), "--task", "ruby", "x"]) == 2
    assert "task 'ruby' is not a task of run" in capsys.readouterr().err
    assert main(["generate", "--run", str(llama_run / "nope"), "--task", "python", "x"]) == 2
    assert main(["generate", "--run", str(llama_run), "--seed", "3", "--task", "python", "x"]) == 2
    assert "has no seed 3" in capsys.readouterr().err


def test_a_language_tag_picks_the_task_under_auto(llama_run):
    from hybridcl.inference.routing import split_language_tag

    assert split_language_tag("[JavaScript] Sum a and b.", ["python", "javascript"]) == ("javascript", "Sum a and b.")
    assert split_language_tag("[note] Sum a and b.", ["python", "javascript"]) == (None, "[note] Sum a and b.")
    run = hybridcl.load_run(llama_run)
    texts, chosen = run.generate(
        "auto", ["[javascript] Add two numbers.", "[python] Add two numbers."], return_tasks=True
    )
    assert chosen == ["javascript", "python"]
    assert texts == [run.generate("javascript", "Add two numbers."), run.generate("python", "Add two numbers.")]


def test_routing_accuracy_has_its_interval(llama_run):
    routing = json.loads((llama_run / "seed-0" / "results.json").read_text())["routing"]
    low, high = routing["accuracy_interval"]
    assert low <= routing["accuracy"] <= high and 0 <= low and high <= 100


def test_routing_scores_the_bare_source_and_regenerates_with_the_chosen_template(monkeypatch):
    """The template names the language (issue 11 #1), so routing must never see it: it would leak the task."""
    import hybridcl.evaluation.matrix as evaluator
    from hybridcl.data.tasks import format_prompt
    from hybridcl.model.components import ComponentSet
    from hybridcl.model.loading import load_base
    from hybridcl.strategies import get_strategy

    config = load_config(overrides=[*SMALL, "strategy=lora_only"])
    base = load_base(config.model)
    components = ComponentSet(base.model, base.kind, get_strategy("lora_only"), config.components)
    for task in config.task_names:
        components.activate(task)
    with torch.no_grad():  # javascript's adapter differs from python's, so a misrouted prompt's loss changes
        for name, param in components.model.named_parameters():
            if "lora_B.javascript" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    data = {t: load_task_data(config.data, t) for t in config.task_names}
    routed_sources, generated_prompts = [], []

    class ToJavaScript(Router):  # every prompt goes to javascript
        method = "feature_ridge"

        def choose(self, prompts, tasks=None):
            routed_sources.extend(prompts.texts)
            return ["javascript"] * len(prompts.texts)

    def fake_generate(model, tokenizer, prompts, **kwargs):  # prompts: token ids from the training encoder
        generated_prompts.extend(tokenizer.decode(p, skip_special_tokens=True) for p in prompts)
        return Generations([["other"]] * len(prompts), [[False]] * len(prompts))

    monkeypatch.setattr(evaluator, "generate", fake_generate)
    routers = Routers(replace(config.routing, compare=[]))
    routers.by_method = {"feature_ridge": ToJavaScript(config.routing)}
    matrix = evaluator.MatrixEvaluator(config, base, components, data, progress=False, routers=routers)
    losses = {}
    for t in config.task_names:
        components.route(t)
        losses[t] = matrix.loss(t)[1]
    with_id = evaluator.Row(
        2,
        {t: {} for t in config.task_names},
        {t: ["same"] * len(data[t].val) for t in config.task_names},
        {t: [False] * len(data[t].val) for t in config.task_names},
        losses,
    )
    routed = matrix.routed_row(2, with_id)
    result = routed.result
    assert routed_sources == [ex.source for t in config.task_names for ex in data[t].val]
    expected = [format_prompt(ex.source, "javascript", "text-to-code", "seq2seq") for ex in data["python"].val]
    # cut on the right to data.max_source_len, as training cuts them
    assert len(generated_prompts) == len(expected) and all(
        e.startswith(g) for g, e in zip(generated_prompts, expected, strict=True)
    )
    assert generated_prompts[0].startswith("Generate JavaScript: ") and result["per_task_accuracy"] == {
        "python": 0.0,
        "javascript": 100.0,
    }
    # python's prompts were scored with javascript's parts, javascript's kept their task-id loss
    components.route("javascript")
    assert routed.stats["python"]["loss"] == pytest.approx(matrix.loss("python")[1]["loss"])
    assert (routed.stats["javascript"]["loss"] == losses["javascript"]["loss"]).all()
    assert not np.allclose(routed.stats["python"]["loss"], losses["python"]["loss"])


PYTHON_SNIPPET = "def read_config(path):\n    with open(path) as handle:\n        return yaml.safe_load(handle)"
JAVASCRIPT_SNIPPET = (
    "function readConfig(path) {\n  const text = fs.readFileSync(path, 'utf8');\n  return JSON.parse(text);"
)


@pytest.fixture(scope="module")
def completion_run(tmp_path_factory):
    """Per-task LoRA on completion, routed by token n-grams (the tiny model's random features carry no language)."""
    overrides = [*SMALL, "data.direction=completion", "strategy=lora_only", "routing.method=token_ngram"]
    return run_experiment(load_config(overrides=overrides), tmp_path_factory.mktemp("auto") / "run", progress=False)


def test_generate_auto_routes_each_prompt_of_a_mixed_call_to_its_own_task(completion_run, capsys):
    run = hybridcl.load_run(completion_run)
    assert run.routers.main.method == "token_ngram" and run.routers.main.tasks == ["python", "javascript"]
    texts, chosen = run.generate("auto", [PYTHON_SNIPPET, JAVASCRIPT_SNIPPET], return_tasks=True)
    assert chosen == ["python", "javascript"]
    own = [run.generate("python", PYTHON_SNIPPET), run.generate("javascript", JAVASCRIPT_SNIPPET)]
    assert texts == own
    assert main(["generate", "--run", str(completion_run), "--task", "auto", PYTHON_SNIPPET, JAVASCRIPT_SNIPPET]) == 0
    out = capsys.readouterr().out
    assert out.index("task python") < out.index("task javascript")
