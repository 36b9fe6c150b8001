"""Build a `Model` from a Hugging Face `config.json`.

Supported: Llama, Qwen2, Qwen3, Qwen3-MoE, Mixtral, DeepSeek-V3 and gpt-oss
(see `SUPPORTED`). The first recognised entry of `architectures` decides the
family; without `architectures`, `model_type` does. Counting conventions are
the ones of `gimletc.models.arch`: biases, norms, attention sinks and
DeepSeek's multi-token-prediction module are not modelled.

Every error is a one-line `ConfigError` naming the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gimletc._io import read_data, validate
from gimletc.errors import ConfigError, UnsupportedArchitectureError
from gimletc.models.arch import Model

SUPPORTED: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "MixtralForCausalLM": "mixtral",
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "GptOssForCausalLM": "gpt_oss",
}
"""`architectures` value -> family (the matching `model_type`)."""

_QWEN = frozenset({"qwen2", "qwen3", "qwen3_moe"})
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
_REQUIRED: Any = object()


class _Keys:
    """A config.json mapping whose typed getters raise ConfigErrors naming the key and the file.

    A key whose value is null counts as absent."""

    def __init__(self, data: dict[str, Any], source: str):
        self.data, self.source = data, source

    def error(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {why}")

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def int(self, key: str, default: Any = _REQUIRED, minimum: int = 1) -> Any:
        """The integer at `key` (>= minimum); `default` when absent, a ConfigError if required."""
        v = self.data.get(key)
        if v is None:
            if default is _REQUIRED:
                raise ConfigError(f"{self.source}: missing key {key!r}")
            return default
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.error(key, f"expected an integer >= {minimum}, got {v!r}")
        return v

    def first_int(self, keys: tuple[str, ...]) -> int:
        """The integer at the first of `keys` present; a ConfigError naming them all if none is."""
        for k in keys:
            if self.data.get(k) is not None:
                return self.int(k)
        raise ConfigError(f"{self.source}: missing key: one of {', '.join(map(repr, keys))}")

    def bool(self, key: str, default: bool) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.error(key, f"expected true or false, got {v!r}")
        return v


def _config_file(path: str | Path) -> Path:
    p = Path(path)
    return p / "config.json" if p.is_dir() else p


def _default_name(file: Path) -> str:
    """The config's folder name; for a Hugging Face cache snapshot, the repository's name."""
    folder = file.absolute().parent
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name


def _family(cfg: _Keys) -> str:
    archs = cfg.get("architectures")
    supported = ", ".join(SUPPORTED)
    if archs is not None and archs != []:
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise cfg.error("architectures", f"expected a list of names, got {archs!r}")
        for a in archs:
            if a in SUPPORTED:
                return SUPPORTED[a]
        shown = archs[0] if len(archs) == 1 else archs
        raise UnsupportedArchitectureError(
            f"{cfg.source}: architectures {shown!r} is not supported; supported: {supported}"
        )
    mt = cfg.get("model_type")
    if mt is None:
        raise ConfigError(f"{cfg.source}: missing key 'architectures' (and no 'model_type')")
    if mt not in SUPPORTED.values():
        raise UnsupportedArchitectureError(
            f"{cfg.source}: model_type {mt!r} is not supported; supported architectures: {supported} "
            f"(model_type {', '.join(SUPPORTED.values())})"
        )
    return mt


def _dtype(cfg: _Keys) -> str:
    key = "torch_dtype" if cfg.get("torch_dtype") is not None else "dtype"
    v = cfg.get(key)
    if v is None:
        return "bf16"
    name = v.removeprefix("torch.") if isinstance(v, str) else None
    if name not in _TORCH_DTYPES:
        raise cfg.error(key, f"expected one of {', '.join(_TORCH_DTYPES)}, got {v!r}")
    return _TORCH_DTYPES[name]


def _sliding_window(cfg: _Keys, family: str, layers: int) -> dict[str, int] | None:
    """SlidingWindow fields, or None when no layer is windowed."""
    if family in _QWEN and not cfg.bool("use_sliding_window", False):
        return None
    if family in ("llama", "deepseek_v3") or cfg.get("sliding_window") is None:
        return None
    window = cfg.int("sliding_window")
    types = cfg.get("layer_types")
    if types is not None:
        kinds = ("sliding_attention", "full_attention")
        if not isinstance(types, list) or len(types) != layers or any(t not in kinds for t in types):
            raise cfg.error(
                "layer_types", f"expected {layers} entries (num_hidden_layers), each one of {', '.join(kinds)}"
            )
        sliding = [t == "sliding_attention" for t in types]
    elif family in _QWEN:  # Qwen windows the layers from max_window_layers on (transformers' default: 28)
        first = cfg.int("max_window_layers", default=28, minimum=0)
        sliding = [i >= first for i in range(layers)]
    elif family == "gpt_oss":  # transformers' default: sliding, full, sliding, ...
        sliding = [i % 2 == 0 for i in range(layers)]
    else:  # Mixtral: every layer
        sliding = [True] * layers
    if not any(sliding):
        return None
    if all(sliding):
        return {"window": window, "every": 1}
    if sliding == [i % 2 == 0 for i in range(layers)]:
        return {"window": window, "every": 2}
    key = "layer_types" if types is not None else "max_window_layers"
    raise cfg.error(
        key,
        "only all-sliding layers or sliding/full alternating from the first layer are modelled; "
        f"windowed layers here: {[i for i, s in enumerate(sliding) if s]}",
    )


def _first_dense_layers(cfg: _Keys, family: str, layers: int) -> int:
    """Leading dense layers before the MoE ones; a ConfigError for any other layout."""
    if family == "deepseek_v3":
        if cfg.int("moe_layer_freq", default=1) != 1:
            raise cfg.error("moe_layer_freq", "only 1 (every layer after the leading dense ones) is modelled")
        k = cfg.int("first_k_dense_replace", default=0, minimum=0)
        if k > layers:
            raise cfg.error("first_k_dense_replace", f"{k} exceeds num_hidden_layers={layers}")
        return k
    if family == "qwen3_moe":
        step = cfg.int("decoder_sparse_step", default=1)
        dense_only = cfg.get("mlp_only_layers") or []
        if not isinstance(dense_only, list) or not all(isinstance(i, int) for i in dense_only):
            raise cfg.error("mlp_only_layers", f"expected a list of layer indices, got {dense_only!r}")
        dense = [i in dense_only or (i + 1) % step != 0 for i in range(layers)]
        k = sum(dense)
        if dense != [i < k for i in range(layers)]:
            raise ConfigError(
                f"{cfg.source}: mlp_only_layers={dense_only}, decoder_sparse_step={step}: only leading "
                f"dense layers are modelled; dense layers here: {[i for i, d in enumerate(dense) if d]}"
            )
        return k
    return 0


def _moe(cfg: _Keys, family: str, layers: int) -> dict[str, Any]:
    experts = cfg.first_int(("num_local_experts", "num_experts", "n_routed_experts"))
    top_k_key = "num_experts_per_tok" if cfg.get("num_experts_per_tok") is not None else "experts_per_token"
    active = cfg.first_int(("num_experts_per_tok", "experts_per_token"))
    if active > experts:
        raise cfg.error(top_k_key, f"{active} exceeds the number of experts ({experts})")
    ffn_key = "moe_intermediate_size" if family in ("qwen3_moe", "deepseek_v3") else "intermediate_size"
    return {
        "experts": experts,
        "active_experts": active,
        "expert_ffn": cfg.int(ffn_key),
        "shared_experts": cfg.int("n_shared_experts", default=0, minimum=0),
        "first_dense_layers": _first_dense_layers(cfg, family, layers),
    }


def _mla(cfg: _Keys) -> dict[str, Any]:
    return {
        "q_lora_rank": cfg.int("q_lora_rank", default=None),
        "kv_lora_rank": cfg.int("kv_lora_rank"),
        "qk_nope_head_dim": cfg.int("qk_nope_head_dim"),
        "qk_rope_head_dim": cfg.int("qk_rope_head_dim"),
        "v_head_dim": cfg.int("v_head_dim"),
    }


def model_from_hf_config(path: str | Path, name: str | None = None) -> Model:
    """The Model a Hugging Face `config.json` describes (`path`: the file or its folder).

    The name defaults to the folder's name. Raises UnsupportedArchitectureError
    for an architecture outside `SUPPORTED`, and ConfigError naming the file and
    the key for malformed JSON, missing keys, bad values and layer layouts the
    Model cannot express."""
    file = _config_file(path)
    source = str(file)
    data = read_data(file)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")
    cfg = _Keys(data, source)
    family = _family(cfg)

    layers = cfg.int("num_hidden_layers")
    hidden = cfg.int("hidden_size")
    heads = cfg.int("num_attention_heads")
    kv_heads = cfg.int("num_key_value_heads", default=heads)
    head_dim = cfg.int("head_dim", default=None)

    mla = _mla(cfg) if family == "deepseek_v3" else None
    if mla is not None:
        attention = "mla"
        head_dim = mla["v_head_dim"]
    else:
        if heads % kv_heads:
            raise cfg.error("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads={heads}")
        attention = "mha" if kv_heads == heads else "mqa" if kv_heads == 1 else "gqa"
        if head_dim is None:
            if hidden % heads:
                raise ConfigError(
                    f"{source}: missing key 'head_dim' and hidden_size={hidden} is not a multiple of "
                    f"num_attention_heads={heads}"
                )
            head_dim = hidden // heads

    act_dtype = _dtype(cfg)
    weight_dtype = act_dtype
    moe = _moe(cfg, family, layers) if family in ("qwen3_moe", "mixtral", "deepseek_v3", "gpt_oss") else None

    quant = cfg.get("quantization_config")
    if quant is not None:
        method = quant.get("quant_method") if isinstance(quant, dict) else None
        if method == "fp8":
            weight_dtype = "fp8"
        elif method == "mxfp4" and moe is not None:
            moe["expert_dtype"] = "mxfp4"  # gpt-oss: experts only; attention, router and embeddings stay bf16
        else:
            raise cfg.error(
                "quantization_config.quant_method",
                f"{method!r} is not modelled; supported: 'fp8', and 'mxfp4' for MoE experts",
            )

    data_out = {
        "name": name or _default_name(file),
        "family": family,
        "layers": layers,
        "hidden": hidden,
        "ffn": cfg.int("intermediate_size"),
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab": cfg.int("vocab_size"),
        "tied_embeddings": cfg.bool("tie_word_embeddings", False),
        "attention": attention,
        "mla": mla,
        "moe": moe,
        "sliding_window": _sliding_window(cfg, family, layers),
        "weight_dtype": weight_dtype,
        "kv_dtype": act_dtype,
        "act_dtype": act_dtype,
        "max_context": cfg.int("max_position_embeddings", default=None),
        "source": f"{source} (Hugging Face config)",
    }
    return validate(Model, data_out, source)
