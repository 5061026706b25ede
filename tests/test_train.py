"""One task's training loop: what it leaves behind for evaluation."""

import copy
import os

import pytest
import torch
from accelerate.state import AcceleratorState

import hybridcl.training.loop as train_module
from hybridcl.config.experiment import TrainConfig, load_config
from hybridcl.data.batching import encode
from hybridcl.data.tasks import load_task_data
from hybridcl.evaluation.precision import evaluation_precision
from hybridcl.model.loading import load_base
from hybridcl.training.loop import make_accelerator, train_task


def _python_examples(arch: str, max_train: int):
    """The smoke preset's model ``arch`` (every parameter trainable) and its first ``max_train``
    Python training examples, encoded at 64 + 64 tokens."""
    config = load_config(overrides=["preset=smoke", f"model.name={arch}", f"data.max_train={max_train}"])
    base = load_base(config.model)
    base.model.requires_grad_(True)
    encoded = encode(
        load_task_data(config.data, "python").train,
        base.tokenizer,
        base.kind,
        64,
        64,
        progress=False,
        long_targets="cut",
    )
    return base, encoded


@pytest.fixture
def fresh_accelerate_state():
    # Accelerate keeps one process-wide state and refuses a second mixed-precision setting in the
    # same process; its own tests reset it the same way.
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("arch", ["tiny:llama", "tiny:t5"])
def test_bf16_training_leaves_an_unwrapped_forward_and_fp32_evaluation_is_exact(arch, fresh_accelerate_state):
    """issue 11 #3: after `accelerator.prepare`, model.forward stayed autocast-wrapped, so non-PEFT
    strategies were evaluated in bf16 and PEFT ones in fp32."""
    base, encoded = _python_examples(arch, 8)
    never_prepared = copy.deepcopy(base.model)
    cfg = TrainConfig(epochs=1, batch_size=4, precision="bf16")
    accelerator = make_accelerator(cfg, "cpu")
    assert accelerator.mixed_precision == "bf16"
    train_task(
        base.model,
        encoded,
        cfg,
        accelerator=accelerator,
        kind=base.kind,
        pad_token_id=0,
        seed=0,
        task="python",
        progress=False,
    )
    model = base.model
    assert "_original_forward" not in vars(model) and not hasattr(model.forward, "__wrapped__")
    never_prepared.load_state_dict(model.state_dict())  # the trained weights, never through Accelerate
    never_prepared.eval()
    ids = torch.tensor([encoded.input_ids[0][:12]])
    inputs = {"input_ids": ids, "decoder_input_ids": ids} if base.kind == "seq2seq" else {"input_ids": ids}
    with torch.no_grad():
        expected = never_prepared(**inputs).logits
        with evaluation_precision("fp32", "cpu"):
            fp32 = model(**inputs).logits
        with evaluation_precision("bf16", "cpu"):
            bf16 = model(**inputs).logits
    assert expected.dtype == fp32.dtype == torch.float32 and torch.equal(fp32, expected)
    assert bf16.dtype == torch.bfloat16 and not torch.equal(bf16.float(), expected)


def test_every_task_trained_in_one_process_runs_under_bf16_autocast(fresh_accelerate_state):
    """issue 15: Accelerate marks a model it prepared and returns a marked model unprepared, so the
    second task of a run (same model, same accelerator) trained without the autocast wrapper, in
    float32, while a run resumed at that task trained it in bf16: the two ended 1e-4 nats apart."""
    base, encoded = _python_examples("tiny:t5", 8)
    cfg = TrainConfig(epochs=1, batch_size=4, precision="bf16")
    accelerator = make_accelerator(cfg, "cpu")
    seen = []
    base.model.encoder.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    for task in ("python", "javascript"):
        train_task(
            base.model,
            encoded,
            cfg,
            accelerator=accelerator,
            kind=base.kind,
            pad_token_id=0,
            seed=0,
            task=task,
            progress=False,
        )
    assert seen == [True] * 4  # 2 batches per task


@pytest.mark.parametrize("precision, during", [("bf16", "eager"), ("fp32", "sdpa")])
def test_cpu_bf16_training_attends_with_matrix_products_and_restores_sdpa(precision, during, fresh_accelerate_state):
    """issue 15: torch's CPU flash attention is slow in bf16; training under bf16 autocast on a CPU
    uses eager attention, float32 training keeps SDPA, and evaluation gets SDPA back afterwards."""
    base, encoded = _python_examples("tiny:llama", 8)
    cfg = TrainConfig(epochs=1, batch_size=4, precision=precision)
    seen = []
    base.model.model.register_forward_pre_hook(lambda *_: seen.append(base.model.config._attn_implementation))
    assert base.model.config._attn_implementation == "sdpa"
    train_task(
        base.model,
        encoded,
        cfg,
        accelerator=make_accelerator(cfg, "cpu"),
        kind=base.kind,
        pad_token_id=0,
        seed=0,
        task="python",
        progress=False,
    )
    assert seen == [during] * 2
    assert base.model.config._attn_implementation == "sdpa"


def test_evaluation_precision_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="eval.precision = 'fp16': choose one of fp32, bf16"):
        with evaluation_precision("fp16", "cpu"):
            pass


def _train_python(arch: str, precision: str, **overrides):
    base, encoded = _python_examples(arch, 16)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-3, precision=precision, **overrides)
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = make_accelerator(cfg, "cpu")
    result = train_task(
        base.model,
        encoded,
        cfg,
        accelerator=accelerator,
        kind=base.kind,
        pad_token_id=0,
        seed=0,
        task="python",
        progress=False,
    )
    return accelerator, result


@pytest.mark.parametrize("arch", ["tiny:llama", "tiny:t5"])
def test_the_fast_path_follows_the_plain_path_within_0_2_percent(arch, fresh_accelerate_state):
    """issue 15: bf16 autocast (float32 master weights and AdamW state; train.precision=bf16) gives the
    float32 loss trajectory within 0.2% at every step (measured: 0.006% on tiny:llama, 0.02% on tiny:t5)."""
    _, plain = _train_python(arch, "fp32")
    accelerator, fast = _train_python(arch, "bf16")
    assert accelerator.mixed_precision == "bf16"
    assert [s for s, _ in fast.losses] == [s for s, _ in plain.losses] == list(range(1, 13))
    for (_, f), (_, p) in zip(fast.losses, plain.losses, strict=True):
        assert f == pytest.approx(p, rel=2e-3)
    assert fast.losses[-1][1] < fast.losses[0][1] - 0.05  # it learns, like the plain path
    assert (fast.samples, fast.tokens) == (plain.samples, plain.tokens) == (48, plain.tokens)


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="the kernel's CPU flags are read from /proc/cpuinfo")
def test_native_bf16_is_what_the_kernel_says_this_processor_has():
    assert train_module.cpu_has_native_bf16() == bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.mark.parametrize(
    "avx512_bf16, amx, mkldnn, expected",
    [
        (True, False, True, "bf16"),
        (False, True, True, "bf16"),
        (True, True, True, "bf16"),
        (False, False, True, "fp32"),
        (True, True, False, "fp32"),
    ],
)
def test_auto_precision_on_a_cpu_is_bf16_where_the_processor_has_it(
    monkeypatch, fresh_accelerate_state, avx512_bf16, amx, mkldnn, expected
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    assert train_module.training_precision("auto", cpu=True) == expected
    assert make_accelerator(TrainConfig(), "cpu").mixed_precision == {"bf16": "bf16", "fp32": "no"}[expected]
    # an explicit setting is kept whatever the processor
    assert train_module.training_precision("fp32", cpu=True) == "fp32"
    assert train_module.training_precision("bf16", cpu=True) == "bf16"
    assert (
        make_accelerator(TrainConfig(precision="bf16"), "cpu").mixed_precision == "bf16"
    )  # a second precision in one process
    assert make_accelerator(TrainConfig(precision="fp32"), "cpu").mixed_precision == "no"


def test_auto_precision_on_a_cpu_is_fp32_where_torch_cannot_tell(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert train_module.training_precision("auto", cpu=True) == "fp32"


def test_reading_the_loss_every_50_steps_as_on_a_gpu_logs_the_same_lines(monkeypatch, tmp_path, fresh_accelerate_state):
    """The GPU path (losses read back every 50 steps, not every step) writes the same log lines,
    exactly, and still names the step where the loss stopped being finite."""
    _, eager = _train_python("tiny:t5", "fp32", log_every=5)
    monkeypatch.setattr(train_module, "_EAGER_DEVICES", ())
    monkeypatch.setattr(train_module, "_GPU_FLUSH_STEPS", 4)
    _, deferred = _train_python("tiny:t5", "fp32", log_every=5)
    assert deferred.losses == eager.losses and [s for s, _ in deferred.losses] == [5, 10, 12]


def test_reading_the_loss_every_50_steps_still_names_the_step_that_diverged(monkeypatch, fresh_accelerate_state):
    base, encoded = _python_examples("tiny:t5", 16)
    monkeypatch.setattr(train_module, "_EAGER_DEVICES", ())
    calls = []

    def penalty(model):  # the loss turns bad at the sixth batch (step 2 of epoch 2), read back at step 8
        calls.append(1)
        return torch.tensor(float("nan")) if len(calls) == 6 else None

    cfg = TrainConfig(epochs=3, batch_size=4)
    with pytest.raises(train_module.TrainingDiverged, match=r"task python: the loss became nan at step 6 \(epoch 2\)"):
        train_task(
            base.model,
            encoded,
            cfg,
            accelerator=make_accelerator(cfg, "cpu"),
            kind=base.kind,
            pad_token_id=0,
            seed=0,
            task="python",
            penalty=penalty,
            progress=False,
        )
    assert len(calls) == 12  # read back at the end (12 steps < 50): training went on past the bad step
