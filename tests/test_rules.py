"""The baseline strategies' training rules (hybridcl.strategies.rules), on hand-made data."""
import pytest

from hybridcl.config import load_config
from hybridcl.data.tasks import Example, TaskData
from hybridcl.errors import ConfigError
from hybridcl.strategies.rules import Replay


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
    with pytest.raises(ConfigError, match=r"replay 2000 examples from python, but baselines.replay_buffer = 1000 "
                                          r"keeps only 1000: set baselines.replay_buffer to at least 2000"):
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
        Replay(_config("tasks=[python,javascript]", "baselines.replay_ratio=0.5"), _data({"python": 100, "javascript": 200}))
