"""The greedy loop (finished rows leave, waiting prompts join) chooses the token ids HF generate chooses."""

import pytest
import torch
import transformers as tf
from transformers import StoppingCriteria, StoppingCriteriaList

from hybridcl.evaluation.greedy import greedy_generate, supports_fast_greedy
from hybridcl.model.parameters import trainable_parameters

MAX_NEW = 24
EOS, PAD = 1, 0


def llama():
    return tf.LlamaForCausalLM(
        tf.LlamaConfig(
            vocab_size=384,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=PAD,
            bos_token_id=2,
            eos_token_id=EOS,
        )
    )


def gpt2():
    return tf.GPT2LMHeadModel(
        tf.GPT2Config(
            vocab_size=384,
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=256,
            pad_token_id=PAD,
            bos_token_id=EOS,
            eos_token_id=EOS,
        )
    )


def t5():
    # initializer_factor 5: at the default scale a random T5 writes one token whatever the prompt
    return tf.T5ForConditionalGeneration(
        tf.T5Config(
            vocab_size=384,
            d_model=32,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            d_kv=16,
            decoder_start_token_id=PAD,
            pad_token_id=PAD,
            eos_token_id=EOS,
            tie_word_embeddings=False,
            initializer_factor=5.0,
        )
    )


def ends(rows: list[list[int]]) -> list[bool]:
    """A stand-in for the end of a function: true at steps that vary with the tokens, so rows end apart."""
    return [(sum(r) + len(r) ** 2) % 6 == 0 for r in rows]


class Ends(StoppingCriteria):
    """``ends`` as generate's stopping criterion (one flag per row), on the tokens after ``start``."""

    def __init__(self, start):
        self.start = start

    def __call__(self, input_ids, scores, **kwargs):
        return torch.tensor(ends([row[self.start :] for row in input_ids.tolist()]))


def reference(model, prompts, batch_size, encoder_decoder, stop):
    """HF generate batch by batch in the given order; each output cut after its EOS or its end."""
    out = []
    for s in range(0, len(prompts), batch_size):
        rows = prompts[s : s + batch_size]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), PAD)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, p in enumerate(rows):
            span = slice(0, len(p)) if encoder_decoder else slice(width - len(p), width)
            ids[r, span], mask[r, span] = torch.tensor(p), 1
        start = 1 if encoder_decoder else width
        criteria = StoppingCriteriaList([Ends(start)] if stop else [])
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=MAX_NEW,
            do_sample=False,
            num_beams=1,
            pad_token_id=PAD,
            eos_token_id=EOS,
            stopping_criteria=criteria,
        )
        for row in generated[:, start:].tolist():
            n = next((k + 1 for k in range(len(row)) if row[k] == EOS or (stop and ends([row[: k + 1]])[0])), len(row))
            out.append(row[:n])
    return out


class Forwards:
    """Per forward call of the model: the prompts of a decoder-only prefill, or the rows and tokens
    of a step (one token per row, or a pending token and drafted ones)."""

    def __init__(self, model):
        self.step_rows, self.prefills, self.drafting_steps = 0, [], 0
        model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("decoder_input_ids")
        cache = kwargs.get("cache")
        if kwargs.get("input_ids") is not None and (cache is None or cache.get_seq_length() == 0):
            self.prefills.append(ids.shape[0])
        else:
            self.step_rows += ids.shape[0]
            self.drafting_steps += ids.shape[1] > 1


@pytest.mark.parametrize("make,encoder_decoder", [(llama, False), (gpt2, False), (t5, True)])
@pytest.mark.parametrize("stop", [True, False])
@pytest.mark.parametrize("draft_budget", [0, 8])
def test_the_same_token_ids_as_generate(make, encoder_decoder, stop, draft_budget):
    """Prompts of eight lengths, three rows at a time, rows ending at different steps (EOS, the
    stand-in end, the limit), with and without drafted tokens: every prompt's token ids equal
    generate's, cut at the same token."""
    torch.manual_seed(0)
    model = make().eval()
    assert supports_fast_greedy(model, encoder_decoder)
    g = torch.Generator().manual_seed(1)
    prompts = sorted(
        (torch.randint(3, 384, (n,), generator=g).tolist() for n in [9, 3, 14, 5, 7, 2, 11, 6]), key=lambda p: -len(p)
    )
    with torch.inference_mode():
        forwards = Forwards(model)
        expected = reference(model, prompts, 3, encoder_decoder, stop)
        generate_rows, forwards.step_rows, forwards.prefills = forwards.step_rows, 0, []
        got = greedy_generate(
            model,
            prompts,
            encoder_decoder=encoder_decoder,
            batch_size=3,
            max_new_tokens=MAX_NEW,
            pad_token_id=PAD,
            eos_token_id=EOS,
            ended=ends if stop else None,
            draft_budget=draft_budget,
        )
    assert got == expected
    lengths = [len(ids) for ids in got]
    if stop:
        assert len(set(lengths)) >= 3 and MAX_NEW in lengths  # rows end at different steps, some at the limit
        if not draft_budget:
            # a row is computed only until it ends (generate feeds it padding until its batch's last row ends)
            assert forwards.step_rows < generate_rows
    if not encoder_decoder:
        assert sum(forwards.prefills) == len(prompts)
        if stop:
            assert len(forwards.prefills) > 3  # prompts joined the batch as rows left, not three at a time
        assert (forwards.drafting_steps > 0) == (draft_budget > 0)


def test_a_generation_config_that_adds_to_greedy_falls_back():
    model = llama()
    assert supports_fast_greedy(model, False)
    model.generation_config.repetition_penalty = 1.3
    assert not supports_fast_greedy(model, False)


def assert_fast_texts_equal_generates(model, kind, monkeypatch):
    """hybridcl's generate (the greedy loop) gives the texts of its plain, batch-by-batch generate
    path on prompts of varied lengths, three at a time (rows leave, prompts join), and they differ."""
    from hybridcl.evaluation.generate import GenerationSettings, generate

    tokenizer = tf.ByT5Tokenizer()
    prompts = [
        "def add(a, b):",
        "x",
        "return the sum of two numbers in a list",
        "hello",
        "sort a list",
        "a longer prompt " * 3,
        "reverse a string",
    ]
    settings = GenerationSettings(max_new_tokens=10, batch_size=3)
    plain = generate(model, tokenizer, prompts, kind=kind, settings=settings, progress=False, hf_generate=True)
    monkeypatch.setattr(model, "generate", None)  # the fast path does not call it
    fast = generate(model, tokenizer, prompts, kind=kind, settings=settings, progress=False)
    assert fast == plain and len(set(fast.texts)) > 1


@pytest.mark.parametrize("make,kind", [(llama, "causal"), (gpt2, "causal"), (t5, "seq2seq")])
def test_through_lora_and_a_full_layer_the_same_texts_as_generate(make, kind, monkeypatch):
    """The evaluation's model: a PEFT model with a LoRA adapter and an extra full layer, trained a few
    steps so that both change the outputs. generate's fast path gives generate's texts."""
    from hybridcl.config.experiment import ComponentsConfig, LoraSpec
    from hybridcl.model.components import ComponentSet
    from hybridcl.strategies import STRATEGIES

    torch.manual_seed(0)
    components = ComponentSet(
        make().eval(),
        kind,
        STRATEGIES["hybrid_task_specific"],
        ComponentsConfig(lora=LoraSpec(r=4, alpha=8, dropout=0.0)),
    )
    components.activate("python")
    model = components.model
    optimizer = torch.optim.AdamW(trainable_parameters(components.model), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        x = torch.randint(3, 380, (4, 10), generator=g)
        labels = torch.randint(3, 380, (4, 7), generator=g) if kind == "seq2seq" else x
        model(input_ids=x, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert_fast_texts_equal_generates(model, kind, monkeypatch)


@pytest.mark.parametrize(
    "make,kind,position",
    [
        (llama, "causal", "auto"),
        (llama, "causal", "decoder:1"),
        (t5, "seq2seq", "decoder"),
        (t5, "seq2seq", "decoder:1"),
    ],
)
def test_a_full_layer_routed_off_leaves_an_empty_cache_layer_and_the_same_texts(make, kind, position, monkeypatch):
    """Row 0 of the matrix evaluates the base model with the extra layer routed off (`base_only`):
    the model's cache then has a layer that no forward fills (keys None). Rows leaving the batch,
    prompts joining it and drafts cut and rebuild the cache, which failed on that layer (a
    TypeError in the study's full_layer_only runs); now the texts are generate's."""
    from hybridcl.config.experiment import ComponentsConfig, FullLayerSpec
    from hybridcl.model.components import ComponentSet
    from hybridcl.strategies import STRATEGIES

    torch.manual_seed(0)
    components = ComponentSet(
        make().eval(),
        kind,
        STRATEGIES["full_layer_only"],
        ComponentsConfig(full_layer=FullLayerSpec(position=position)),
    )
    components.activate("python")
    model = components.model
    with components.base_only():
        assert_fast_texts_equal_generates(model, kind, monkeypatch)
