import pytest
import torch
import transformers as tf

from hybridcl.evaluation import greedy
from hybridcl.evaluation.generate import Generations, GenerationSettings, generate


def _generate(
    model,
    tok,
    prompts,
    *,
    kind,
    num_return_sequences=1,
    seed=0,
    progress=False,
    code_language=None,
    hf_generate=False,
    return_hit_limit=False,
    **settings,
):
    """:func:`generate` with the settings' fields as keywords; the texts (samples with several per
    prompt), and with ``return_hit_limit`` the first output's flags too, as the tests compare them."""
    out = generate(
        model,
        tok,
        prompts,
        kind=kind,
        settings=GenerationSettings(**settings),
        num_return_sequences=num_return_sequences,
        seed=seed,
        progress=progress,
        code_language=code_language,
        hf_generate=hf_generate,
    )
    texts = out.samples if num_return_sequences > 1 else out.texts
    return (texts, out.hit_limit) if return_hit_limit else texts


def test_generations_hold_every_sample_and_the_first_outputs():
    out = Generations([["a", "b"], ["c", "d"]], [[True, False], [False, False]])
    assert out.texts == ["a", "c"] and out.hit_limit == [True, False]
    assert Generations([], []).texts == []


PROMPTS = [
    "def add(a, b):",
    "x",
    "return the sum of two numbers in a list",
    "hello",
    "",
    "a longer prompt " * 4,
    "sort a list",
]


@pytest.fixture(scope="module")
def tok():
    return tf.ByT5Tokenizer()


def _no_early_eos(model):
    with torch.no_grad():  # zero pad/EOS/unk rows of the output head: outputs run to max_new_tokens
        model.get_output_embeddings().weight[:3].zero_()
    return model


def _constant_head(model, token_id):
    """Replace the output head so that ``token_id`` is always the argmax."""
    head = model.get_output_embeddings()
    new = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        new.weight.zero_()
        new.bias.zero_()
        new.bias[token_id] = 10.0
    model.set_output_embeddings(new)
    return model


@pytest.fixture(scope="module")
def t5():
    torch.manual_seed(0)
    cfg = tf.T5Config(
        vocab_size=384,
        d_model=32,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        d_kv=16,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    return _no_early_eos(tf.T5ForConditionalGeneration(cfg).eval())


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=384,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    return _no_early_eos(tf.LlamaForCausalLM(cfg).eval())


class Calls:
    """Records what generate feeds the model: the attention mask of each batch of prompts (a
    decoder-only prefill, an encoder call) and the number of rows of the decoder's one-token steps."""

    def __init__(self, model, kind):
        self.model, self.kind = model, kind

    def __enter__(self):
        self.masks, self.step_rows = [], 0
        self.hooks = [self.model.register_forward_pre_hook(self._forward, with_kwargs=True)]
        if self.kind == "seq2seq":
            self.hooks.append(self.model.get_encoder().register_forward_pre_hook(self._prompts, with_kwargs=True))
        return self

    def _prompts(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        self.masks.append(mask if mask is not None else torch.ones_like(kwargs["input_ids"]))

    def _forward(self, module, args, kwargs):
        if self.kind == "causal" and kwargs.get("cache") is None:  # the prefill of a batch of prompts
            self._prompts(module, args, kwargs)
        else:
            ids = kwargs.get("input_ids") if self.kind == "causal" else kwargs["decoder_input_ids"]
            self.step_rows += ids.shape[0]

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


@pytest.mark.parametrize("which,kind", [("t5", "seq2seq"), ("llama", "causal")])
def test_batched_equals_one_at_a_time(which, kind, tok, request):
    model = request.getfixturevalue(which)
    batched = _generate(model, tok, PROMPTS, kind=kind, max_new_tokens=8, batch_size=3, progress=False)
    single = [_generate(model, tok, [p], kind=kind, max_new_tokens=8, batch_size=1, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 1  # outputs differ by prompt, so order restoration is tested
    reversed_out = _generate(model, tok, PROMPTS[::-1], kind=kind, max_new_tokens=8, batch_size=3, progress=False)
    assert reversed_out == batched[::-1]
    assert batched == _generate(
        model, tok, PROMPTS, kind=kind, max_new_tokens=8, batch_size=3, progress=False, hf_generate=True
    )


@pytest.mark.parametrize("which,kind", [("t5", "seq2seq"), ("llama", "causal")])
def test_max_new_tokens_and_padding(which, kind, tok, request, monkeypatch):
    monkeypatch.setattr(greedy, "DRAFT_BUDGET", 0)  # one token per step, so that steps count tokens
    model = request.getfixturevalue(which)
    with Calls(model, kind) as calls:
        out = _generate(model, tok, PROMPTS, kind=kind, max_new_tokens=6, batch_size=4, progress=False)
    assert len(out) == len(PROMPTS)
    lengths = [n for mask in calls.masks for n in mask.sum(1).tolist()]
    assert sorted(lengths) == sorted(len(tok(p)["input_ids"]) - (kind == "causal" and len(p) > 0) for p in PROMPTS)
    assert lengths == sorted(lengths, reverse=True)  # longest first
    for mask in calls.masks:
        assert len(mask) <= 4
        if kind == "causal":
            assert mask[:, -1].all()  # left padding: every prompt ends at the last column
        else:
            assert mask[:, 0].all()
    # EOS is suppressed in these models, so every output has exactly 6 new tokens: the decoder-only
    # prefill chooses the first, one-token steps the other 5
    assert calls.step_rows == len(PROMPTS) * (5 if kind == "causal" else 6)
    assert all(len(o.encode()) <= 6 for o in out)  # ByT5: one byte per token at most


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_only_new_text_and_stop_at_eos(kind, tok):
    torch.manual_seed(2)
    if kind == "causal":
        cfg = tf.LlamaConfig(
            vocab_size=384,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=1,
            tie_word_embeddings=False,
        )
        model_class = tf.LlamaForCausalLM
    else:
        cfg = tf.T5Config(
            vocab_size=384,
            d_model=32,
            d_ff=64,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            d_kv=16,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
            tie_word_embeddings=False,
        )
        model_class = tf.T5ForConditionalGeneration
    z = tok.convert_tokens_to_ids("z")
    out = _generate(
        _constant_head(model_class(cfg).eval(), z), tok, ["abc", "defgh"], kind=kind, max_new_tokens=5, progress=False
    )
    assert out == ["zzzzz", "zzzzz"]  # exactly the new tokens: no prompt text, max_new_tokens respected
    model = _constant_head(model_class(cfg).eval(), tok.eos_token_id)
    with Calls(model, kind) as calls:
        out = _generate(model, tok, ["abc", "defgh"], kind=kind, max_new_tokens=5, progress=False)
    assert out == ["", ""]
    # stopped right after EOS: the decoder-only prefill or the encoder-decoder's first step chose it
    assert len(calls.masks) == 1 and calls.step_rows == (0 if kind == "causal" else 2)


def test_beams_sampling_and_num_return_sequences(tok, t5, llama):
    for model, kind in ((t5, "seq2seq"), (llama, "causal")):
        beams = _generate(
            model, tok, PROMPTS[:3], kind=kind, max_new_tokens=4, num_beams=3, num_return_sequences=2, progress=False
        )
        assert len(beams) == 3 and all(isinstance(b, list) and len(b) == 2 for b in beams)
        a = _generate(
            model,
            tok,
            PROMPTS[:3],
            kind=kind,
            max_new_tokens=4,
            do_sample=True,
            top_p=0.9,
            temperature=0.7,
            seed=3,
            progress=False,
        )
        b = _generate(
            model,
            tok,
            PROMPTS[:3],
            kind=kind,
            max_new_tokens=4,
            do_sample=True,
            top_p=0.9,
            temperature=0.7,
            seed=3,
            progress=False,
        )
        assert a == b  # seeded
    state = torch.random.get_rng_state()
    _generate(llama, tok, ["x"], kind="causal", max_new_tokens=2, do_sample=True, progress=False)
    assert torch.equal(state, torch.random.get_rng_state())  # caller's RNG untouched
    assert _generate(llama, tok, [], kind="causal") == []
    with pytest.raises(ValueError):
        _generate(llama, tok, ["x"], kind="encoder")


def test_decoded_code_keeps_its_spaces_before_punctuation():
    """A tokenizer saved with ``clean_up_tokenization_spaces: true`` (the default of transformers < 4.45,
    so in many hub tokenizer files) would turn ``x ,`` into ``x,`` and ``a .b`` into ``a.b``: English
    clean-up that changes code."""
    from _seed_fixtures import plant_successors

    tok = tf.ByT5Tokenizer(clean_up_tokenization_spaces=True)
    cfg = tf.T5Config(
        vocab_size=384,
        d_model=64,
        d_ff=128,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        d_kv=16,
        feed_forward_proj="relu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    model = tf.T5ForConditionalGeneration(cfg).eval()
    text = "x ,"
    plant_successors(
        model, [0, *tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id, tok.convert_tokens_to_ids("J")]
    )
    assert _generate(model, tok, ["abc", "a longer prompt"], kind="seq2seq", max_new_tokens=10, progress=False) == [
        text,
        text,
    ]


class Scripted(tf.LlamaForCausalLM):
    """Writes ``scripts[prompt]`` (ByT5 bytes) after each prompt, then EOS; counts its forward passes
    (``steps``) and the rows of those after the prompts (``step_rows``).

    The token at position ``q`` of a row whose prompt has ``P`` tokens is followed by
    ``script[q - P + 1]``, for every token fed (a pending one or drafted ones). A row's prompt and
    its length ride in each of its cache entries (the first two values of layer 0's first head),
    so that they follow the row when finished rows leave the batch or new prompts join it."""

    def __init__(self, scripts: dict[str, str]):
        cfg = tf.LlamaConfig(
            vocab_size=384,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=1,
        )
        super().__init__(cfg)
        self.prompts = [tuple(b + 3 for b in prompt.encode()) for prompt in scripts]
        self.scripts = [[b + 3 for b in s.encode()] for s in scripts.values()]
        self.steps = self.step_rows = 0
        self.eval()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, **kwargs):
        prompts = cache is None or cache.get_seq_length() == 0
        out = super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, **kwargs
        )
        values = out.cache.layers[0].values  # [rows, heads, length, head size]
        width = input_ids.shape[1]
        if prompts:  # left-padded with 0
            who = [self.prompts.index(tuple(t for t in row if t)) for row in input_ids.tolist()]
            who, length = (
                torch.tensor(who, dtype=values.dtype),
                torch.tensor([len(self.prompts[k]) for k in who], dtype=values.dtype),
            )
        else:
            who, length = values[:, 0, -width - 1, 0].clone(), values[:, 0, -width - 1, 1].clone()
            self.step_rows += len(who)
        values[:, 0, -width:, 0], values[:, 0, -width:, 1] = who[:, None], length[:, None]
        logits = torch.full_like(out.logits, -1e4)
        kept = position_ids[:, -logits.shape[1] :].tolist()
        for row, (k, n) in enumerate(zip(who.long().tolist(), length.long().tolist(), strict=True)):
            script = self.scripts[k]
            for j, q in enumerate(kept[row]):
                logits[row, j, script[q - n + 1] if q - n + 1 < len(script) else 1] = 0.0
        out.logits = logits
        self.steps += 1
        return out


PY_TWO = "def f(a):\n    return a\n\ndef g():\n    pass\n"
JS_TWO = "function f(a = {}) {\n  const s = '}';\n  return {a: s};\n}\nfunction g() {}\n"
FENCED = "```python\ndef f():\n    return 1\n```\nThis returns one, and more prose follows."


@pytest.mark.parametrize(
    "script,language,expected",
    [
        (PY_TWO, "python", "def f(a):\n    return a"),
        (JS_TWO, "javascript", "function f(a = {}) {\n  const s = '}';\n  return {a: s};\n}"),
        (FENCED, "python", "```python\ndef f():\n    return 1\n```"),
    ],
)
@pytest.mark.parametrize("draft_budget", [0, greedy.DRAFT_BUDGET])
def test_generation_stops_where_the_function_ends(tok, script, language, expected, draft_budget, monkeypatch):
    """issue 11 #5: a second function, a closing fence and prose are neither generated nor scored."""
    monkeypatch.setattr(greedy, "DRAFT_BUDGET", draft_budget)
    model = Scripted({"p1": script})
    texts, hit = _generate(
        model,
        tok,
        ["p1"],
        kind="causal",
        max_new_tokens=200,
        code_language=language,
        return_hit_limit=True,
        progress=False,
    )
    assert texts == [expected] and hit == [False]
    # it stopped generating right after the end became visible, not at EOS or the limit: one forward
    # pass per token, fewer where drafted tokens were right
    stop_at = {"python": len("def f(a):\n    return a\n\ndef "), "javascript": len(expected)}.get(language)
    if script is FENCED:
        stop_at = len(expected)
    assert model.steps == stop_at if not draft_budget else model.steps < stop_at
    model = Scripted({"p1": script})
    assert _generate(model, tok, ["p1"], kind="causal", max_new_tokens=200, progress=False) == [script]  # without: EOS
    assert model.steps == len(script) + 1 if not draft_budget else model.steps < len(script) + 1


def test_hit_limit_flags_and_unchanged_outputs_in_a_batch(tok):
    scripts = [PY_TWO, "def h():\n" + "    x = 1\n" * 20, "def k():\n    return 2\n"]
    model = Scripted(dict(zip(["p1", "p2", "p3"], scripts, strict=True)))
    texts, hit = _generate(
        model,
        tok,
        ["p1", "p2", "p3"],
        kind="causal",
        max_new_tokens=40,
        batch_size=3,
        code_language="python",
        return_hit_limit=True,
        progress=False,
    )
    assert texts == ["def f(a):\n    return a", scripts[1][:40], scripts[2]]  # the third ended at EOS: as generated
    assert hit == [False, True, False]
    plain, plain_hit = _generate(
        Scripted(dict(zip(["p1", "p2", "p3"], scripts, strict=True))),
        tok,
        ["p1", "p2", "p3"],
        kind="causal",
        max_new_tokens=40,
        batch_size=3,
        return_hit_limit=True,
        progress=False,
    )
    # without the rule the first runs on into g() and is cut by the limit
    assert plain == [PY_TWO[:40], scripts[1][:40], scripts[2]] and plain_hit == [True, True, False]
    assert _generate(model, tok, [], kind="causal", return_hit_limit=True) == ([], [])


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_ended_rows_leave_and_waiting_prompts_join_with_generates_texts(tok, batch_size):
    """Outputs that end at their function's end, at EOS and at the limit, from prompts of different
    lengths: the same texts and flags as generate batch by batch, with fewer rows computed."""
    scripts = {
        "p1": PY_TWO,
        "a second prompt": "def h():\n" + "    x = 1\n" * 20,
        "p3": "def k():\n    return 2\n",
        "the fourth": FENCED,
        "p5, the last": "def m(x):\n    return x\n@dec\ndef n(): pass\n",
    }
    kwargs = dict(
        kind="causal",
        max_new_tokens=40,
        batch_size=batch_size,
        code_language="python",
        return_hit_limit=True,
        progress=False,
    )
    fast_model, plain_model = Scripted(scripts), Scripted(scripts)
    texts, hit = _generate(fast_model, tok, list(scripts), **kwargs)
    assert (texts, hit) == _generate(plain_model, tok, list(scripts), hf_generate=True, **kwargs)
    assert hit == [False, True, False, False, False]
    assert texts[4] == "def m(x):\n    return x"
    if batch_size > 1:
        assert fast_model.step_rows < plain_model.step_rows


def test_drafted_tokens_right_for_a_while_then_wrong_change_no_text(tok):
    """Repeats that diverge ("[1, 2, 3" then "[1, 2, 4"): tokens drafted from earlier text (prompt
    lookup) are right up to a point, then wrong; the text is the script, as generate writes it, in
    fewer forward passes."""
    scripts = {
        "p1": "x = [1, 2, 3]\ny = [1, 2, 4]\nz = [1, 2, 3, 4]\nw = [1, 2, 3, 4, 5]\n",
        "p2, longer": "def f(a):\n    return [a, a, a, b]\n",
    }
    fast, plain = Scripted(scripts), Scripted(scripts)
    kwargs = dict(kind="causal", max_new_tokens=100, batch_size=2, progress=False)
    texts = _generate(fast, tok, list(scripts), **kwargs)
    assert texts == list(scripts.values()) == _generate(plain, tok, list(scripts), hf_generate=True, **kwargs)
    assert fast.steps < plain.steps


@pytest.mark.parametrize("which,kind", [("t5", "seq2seq"), ("llama", "causal")])
def test_the_function_end_rule_changes_nothing_when_no_function_ends(which, kind, tok, request):
    model = request.getfixturevalue(which)
    plain = _generate(model, tok, PROMPTS, kind=kind, max_new_tokens=8, batch_size=3, progress=False)
    texts, hit = _generate(
        model,
        tok,
        PROMPTS,
        kind=kind,
        max_new_tokens=8,
        batch_size=3,
        progress=False,
        code_language="javascript",
        return_hit_limit=True,
    )
    assert texts == plain and hit == [True] * len(PROMPTS)  # EOS suppressed: every output ran to the limit
