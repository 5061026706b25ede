"""HumanEval through a model: the generated function replaces the prompt's stub and is run in the sandbox."""

import torch

from hybridcl.config.experiment import EvalConfig, ModelConfig
from hybridcl.evaluation import humaneval
from hybridcl.evaluation.generate import Generations, GenerationSettings
from hybridcl.model.loading import load_base


def test_generated_functions_are_run_against_the_tests(monkeypatch):
    answers = {  # problem 0 solved (inside a Markdown fence), problem 1 wrong
        0: "```python\ndef has_close_elements(numbers, threshold):\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```",
        1: "def separate_paren_groups(paren_string):\n    return []",
    }
    seen = []

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen.extend(prompts)
        return Generations([[answers[i]] for i in range(len(prompts))], [[False]] * len(prompts))

    monkeypatch.setattr(humaneval, "generate", fake_generate)
    model = torch.nn.Linear(1, 1)  # generate is faked; the model only tells the device for eval.precision
    tokenizer = load_base(ModelConfig(name="tiny:llama")).tokenizer
    result = humaneval.run_humaneval(
        model, tokenizer, "causal", EvalConfig(humaneval_problems=2, sandbox_timeout_s=20), GenerationSettings()
    )
    assert result["pass@1"] == 50.0 and result["problems"] == 2 and result["samples"] == 1
    assert [p["correct"] for p in result["per_problem"]] == [1, 0]
    first = tokenizer.decode(seen[0], skip_special_tokens=True)  # token ids from the prompt encoder training uses
    assert "def has_close_elements" in first and first.startswith("Python function.")
