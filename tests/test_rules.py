"""The baseline strategies' training rules (hybridcl.strategies.rules), on hand-made data."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hybridcl.config.experiment import load_config
from hybridcl.data.batching import Encoded
from hybridcl.data.tasks import Example, TaskData
from hybridcl.errors import ConfigError
from hybridcl.strategies.rules import EWC, Replay


def _config(*overrides):
    return load_config(overrides=["preset=smoke", "strategy=replay", *overrides])


def _data(sizes: dict[str, int]) -> dict[str, TaskData]:
    def ex(task, i):
        return Example(f"{task}-{i}", task, "text-to-code", f"doc {i}", f"code {i}")

    return {t: TaskData(t, [ex(t, i) for i in range(n)], []) for t, n in sizes.items()}


def test_replay_replays_the_configured_share_at_the_seeds_scale():
    # The seed: 8,000 training examples per task, 20% replay. A buffer of 1,000 per earlier task used
    # to cap the replayed examples at 1,000 of 9,000 (11.1%); the share asks for 2,000 of 10,000.
    cfg = _config("tasks=[python,javascript]", "baselines.replay_ratio=0.2")
    rule = Replay(cfg, _data({"python": 8000, "javascript": 8000}))
    assert len(rule.training_examples(["python"], seed=0)) == 8000
    assert rule.train_record() == {"n_replayed": 0, "replay_share": 0.0}
    mixed = rule.training_examples(["javascript"], seed=1)
    languages = [ex.language for ex in mixed]
    assert languages.count("javascript") == 8000 and languages.count("python") == 2000
    assert len({ex.id for ex in mixed}) == 10000  # drawn without repetition
    assert rule.train_record() == {"n_replayed": 2000, "replay_share": 0.2}


def test_a_buffer_too_small_for_the_share_is_an_error_before_training():
    data = _data({"python": 8000, "javascript": 8000})
    with pytest.raises(
        ConfigError,
        match=r"replay 2000 examples from python, but baselines.replay_buffer = 1000 "
        r"keeps only 1000: set baselines.replay_buffer to at least 2000",
    ):
        Replay(_config("tasks=[python,javascript]", "baselines.replay_buffer=1000"), data)
    Replay(_config("tasks=[python,javascript]", "baselines.replay_buffer=2000"), data)  # just enough


def test_three_tasks_share_the_buffer_between_earlier_tasks():
    # javascript: 1,600 examples -> 400 replayed from python; go: 4,000 -> 1,000 from python and
    # javascript's buffers. A cap of 400 per task is enough for javascript but holds only 800 for go.
    sizes = {"python": 3000, "javascript": 1600, "go": 4000}
    with pytest.raises(ConfigError, match="to at least 500"):
        Replay(_config("tasks=[python,javascript,go]", "baselines.replay_buffer=400"), _data(sizes))
    rule = Replay(_config("tasks=[python,javascript,go]", "baselines.replay_buffer=500"), _data(sizes))
    mixed = rule.training_examples(["go"], seed=3)
    languages = [ex.language for ex in mixed]
    assert languages.count("go") == 4000 and languages.count("python") + languages.count("javascript") == 1000
    assert rule.train_record() == {"n_replayed": 1000, "replay_share": 0.2}


def test_earlier_tasks_without_enough_examples_are_an_error():
    with pytest.raises(ConfigError, match="which have only 100 training examples: lower baselines.replay_ratio"):
        Replay(
            _config("tasks=[python,javascript]", "baselines.replay_ratio=0.5"),
            _data({"python": 100, "javascript": 200}),
        )


# ---- EWC's Fisher --------------------------------------------------------------------------------


class Bigram(torch.nn.Module):
    """A causal LM whose logits at a position are row ``x_t`` of one 2 x 2 weight (vocabulary 2)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2, 2))

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.weight[input_ids]
        # what a Hugging Face model returns when given labels: the batch's mean token loss
        loss = (
            None
            if labels is None
            else F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        )
        return SimpleNamespace(logits=logits, loss=loss)


def test_ewc_fisher_is_the_mean_of_squared_per_example_gradients():
    # At weight 0 every prediction is (1/2, 1/2); the gradient of one predicted token y after token x
    # is softmax - onehot(y) = +-(1/2, -1/2) in row x, divided by the example's number of target tokens.
    #   [0, 1]: row 0 ( 1/2, -1/2)                    -> squared: row 0 1/4
    #   [0, 0]: row 0 (-1/2,  1/2)                    -> squared: row 0 1/4
    #   [1, 0, 0]: row 1 (-1/4, 1/4), row 0 (-1/4, 1/4) -> squared: rows 0 and 1 1/16
    # F = mean over the 3 examples: row 0 (1/4 + 1/4 + 1/16) / 3 = 3/16, row 1 (1/16) / 3 = 1/48.
    # Squaring the mean gradient of a batch of the first two gives row 0 exactly 0: they cancel.
    cfg = load_config(overrides=["preset=smoke", "strategy=ewc", "train.batch_size=2", "baselines.ewc_samples=3"])
    rule = EWC(cfg, {})
    model = Bigram()
    ids = [[0, 1], [0, 0], [1, 0, 0]]
    encoded = Encoded(ids, ids, 0, 0)
    base = SimpleNamespace(model=model, kind="causal", tokenizer=SimpleNamespace(pad_token_id=0))
    rule.after_task(SimpleNamespace(model=model), ["python"], encoded, base)
    expected = torch.tensor([[3 / 16, 3 / 16], [1 / 48, 1 / 48]])
    assert torch.allclose(rule.fisher["weight"], expected, atol=1e-7)
    assert torch.equal(rule.anchor["weight"], torch.zeros(2, 2))
    # a second task adds its Fisher to the first's; ewc_samples=1 uses the first example only
    rule.config.baselines.ewc_samples = 1
    rule.after_task(SimpleNamespace(model=model), ["javascript"], encoded, base)
    assert torch.allclose(rule.fisher["weight"], expected + torch.tensor([[0.25, 0.25], [0.0, 0.0]]), atol=1e-7)


def test_ewc_fisher_adds_up_over_examples_on_a_tiny_t5_with_lora():
    # Per-example gradients make the estimate a mean over examples: the Fisher of two examples is the
    # mean of their single-example Fishers (a squared batch gradient is not). Exercises the seq2seq
    # loss (decoder inputs from the base's own label shift) through PEFT.
    from hybridcl.config.experiment import ComponentsConfig, LoraSpec, ModelConfig
    from hybridcl.model.components import ComponentSet
    from hybridcl.model.loading import load_base
    from hybridcl.strategies import STRATEGIES

    base = load_base(ModelConfig(name="tiny:t5"))
    components = ComponentSet(
        base.model, base.kind, STRATEGIES["lora_only"], ComponentsConfig(lora=LoraSpec(r=2, alpha=4, dropout=0.0))
    )
    components.activate("python")
    with torch.no_grad():  # LoRA's B starts at zero, which would zero A's gradients
        for name, p in components.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    encoded = Encoded([[5, 6, 7, 1], [9, 10, 1]], [[20, 21, 1], [30, 1]], 0, 0)

    def fisher(samples, examples):
        cfg = load_config(
            overrides=["preset=smoke", "strategy=ewc", "train.batch_size=2", f"baselines.ewc_samples={samples}"]
        )
        rule = EWC(cfg, {})
        rule.after_task(components, ["python"], Encoded(*examples, 0, 0), base)
        return rule.fisher

    both = fisher(2, (encoded.input_ids, encoded.labels))
    first = fisher(1, (encoded.input_ids[:1], encoded.labels[:1]))
    second = fisher(1, (encoded.input_ids[1:], encoded.labels[1:]))
    assert set(both) and all(".python." in name for name in both)
    for name in both:
        assert torch.allclose(both[name], (first[name] + second[name]) / 2, rtol=1e-5, atol=1e-12)
    assert any(both[name].sum() > 0 for name in both)
