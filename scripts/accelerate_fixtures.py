#!/usr/bin/env python3
"""Write the `--compat accelerate` fixtures: device maps computed by the real Python tools.

Each fixture in `tests/fixtures/accelerate/` holds a small `config.json`, a dtype, a strategy,
a `max_memory` (bytes per key) and the `device_map` that
`AutoModelForCausalLM.from_pretrained(..., device_map=STRATEGY, max_memory=MAX_MEMORY,
dtype=DTYPE)` computes for that config. `tests/it/compat.rs` runs
`stowage plan --compat accelerate` on the same inputs and asserts it finds the same map.

Generated with (also recorded in every fixture, under `versions`):

    torch 2.15.0, transformers 5.24.0, accelerate 1.15.0 (Python 3.11)

How the map is computed: exactly the calls `PreTrainedModel.from_pretrained` makes before it
reads any weight (transformers 5.x, `modeling_utils.py`):

1. the model is instantiated under `cls.get_init_context(dtype, ...)`: the meta device,
   `dtype` as torch's default dtype, and weights not yet tied;
2. `transformers.integrations.accelerate._get_device_map(model, STRATEGY, max_memory, None)`,
   which calls transformers' own `get_balanced_memory` (for `auto`, `balanced`,
   `balanced_low_0`) or `get_max_memory` (for `sequential`), then its own
   `infer_auto_device_map` with the model's `_no_split_modules`, its tied weights
   (`all_tied_weights_keys`) and accelerate's `get_max_layer_size` and `clean_device_map`.

transformers 5.x carries its own copy of accelerate's `infer_auto_device_map`: sizes come from
each parameter's `element_size()` in the model built in `dtype`, tied parameters count zero,
and non-persistent buffers (rotary `inv_freq`) count. No weights are downloaded: a config is
all it needs.

Setup (outside the repository; CPU is enough):

    python3 -m venv /tmp/accvenv
    /tmp/accvenv/bin/pip install torch transformers accelerate
    /tmp/accvenv/bin/python scripts/accelerate_fixtures.py [OUT_DIR]

The script re-executes itself with `PYTHONHASHSEED=0`: `clean_device_map` iterates over a
`set` of module names, so the key order of a map depends on string hashing. Compare maps as
maps; the order in the files is only reproducible, not meaningful.
"""

import json
import logging
import os
import sys
from pathlib import Path

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import accelerate  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig  # noqa: E402
from transformers.integrations.accelerate import _get_device_map  # noqa: E402
from transformers.utils import ContextManagers  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}

# Small configs: every field stowage's config expansion reads is given explicitly, so that
# both sides build the same tensors whatever their defaults.
CONFIGS = {
    "llama": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
    },
    "llama_untied": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": 32,
        "vocab_size": 384,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 448,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
    },
    "opt": {
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "hidden_size": 64,
        "ffn_dim": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "vocab_size": 512,
        "max_position_embeddings": 254,
        "word_embed_proj_dim": 64,
        "do_layer_norm_before": True,
        "enable_bias": True,
        "layer_norm_elementwise_affine": True,
    },
    "opt_proj": {
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "hidden_size": 64,
        "ffn_dim": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "vocab_size": 512,
        "max_position_embeddings": 126,
        "word_embed_proj_dim": 32,
        "do_layer_norm_before": False,
        "enable_bias": True,
        "layer_norm_elementwise_affine": True,
    },
    "gpt2": {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": 64,
        "n_layer": 4,
        "n_head": 4,
        "n_positions": 128,
        "vocab_size": 512,
        "tie_word_embeddings": True,
    },
    "mixtral": {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "vocab_size": 384,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "t5": {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "d_model": 64,
        "d_kv": 16,
        "num_heads": 4,
        "d_ff": 128,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "vocab_size": 512,
        "relative_attention_num_buckets": 32,
        "feed_forward_proj": "relu",
        "tie_word_embeddings": True,
    },
    # T5 v1.1 / FLAN-T5 style: gated feed-forward and, in the config, an untied head.
    "t5_untied": {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "d_model": 64,
        "d_kv": 16,
        "num_heads": 4,
        "d_ff": 96,
        "num_layers": 3,
        "num_decoder_layers": 2,
        "vocab_size": 384,
        "relative_attention_num_buckets": 32,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
    },
}

# (name, config, dtype, strategy, budgets[, config overrides]). Budgets are fractions of the
# model's size as transformers counts it (parameters, tied ones once, plus buffers), or a
# function of that size, so the cases keep their meaning if a config changes; the fixture
# stores the resulting bytes.
CASES = [
    ("llama_fits_sequential", "llama", "bf16", "sequential", {"0": 2.0, "cpu": 2.0}),
    ("llama_fits_balanced_1gpu", "llama", "bf16", "balanced", {"0": 2.0, "cpu": 2.0}),
    ("llama_balanced_2gpu", "llama", "bf16", "balanced", {"0": 1.0, "1": 1.0, "cpu": 1.0}),
    ("llama_auto_2gpu_cpu", "llama", "bf16", "auto", {"0": 0.4, "1": 0.3, "cpu": 1.0}),
    (
        "llama_sequential_cpu_disk",
        "llama",
        "bf16",
        "sequential",
        {"0": 0.45, "cpu": 0.45, "disk": 4.0},
    ),
    ("llama_low0_3gpu", "llama", "f32", "balanced_low_0", {"0": 1.0, "1": 0.5, "2": 0.5, "cpu": 1.0}),
    ("llama_untied_seq_2gpu", "llama_untied", "f16", "sequential", {"0": 0.5, "1": 0.4, "cpu": 1.0}),
    ("llama_untied_balanced_3gpu", "llama_untied", "bf16", "balanced", {"0": 1.0, "1": 1.0, "2": 1.0, "cpu": 1.0}),
    ("qwen2_balanced_low0_2gpu", "qwen2", "bf16", "balanced_low_0", {"0": 1.0, "1": 0.6, "cpu": 1.0}),
    ("opt_fits_sequential", "opt", "f16", "sequential", {"0": 1.5, "cpu": 1.0}),
    ("opt_balanced_2gpu", "opt", "f16", "balanced", {"0": 1.0, "1": 1.0, "cpu": 1.0}),
    ("opt_sequential_cpu_disk", "opt", "f16", "sequential", {"0": 0.5, "cpu": 0.6}),
    ("opt_proj_balanced_2gpu_cpu", "opt_proj", "f32", "balanced", {"0": 0.3, "1": 0.3, "cpu": 1.0}),
    ("gpt2_fits_balanced", "gpt2", "f32", "balanced", {"0": 1.5, "cpu": 1.0}),
    ("gpt2_balanced_2gpu", "gpt2", "f32", "balanced", {"0": 1.0, "1": 1.0, "cpu": 1.0}),
    ("gpt2_sequential_cpu_disk", "gpt2", "f16", "sequential", {"0": 0.4, "cpu": 0.5, "disk": 2.0}),
    ("gpt2_low0_3gpu_cpu", "gpt2", "f32", "balanced_low_0", {"0": 0.5, "1": 0.3, "2": 0.3, "cpu": 1.0}),
    ("mixtral_balanced_2gpu", "mixtral", "bf16", "balanced", {"0": 1.0, "1": 1.0, "cpu": 1.0}),
    ("mixtral_sequential_cpu", "mixtral", "bf16", "sequential", {"0": 0.5, "cpu": 1.0}),
    ("t5_balanced_2gpu", "t5", "f32", "balanced", {"0": 1.0, "1": 1.0, "cpu": 1.0}),
    ("t5_sequential_cpu_disk", "t5", "f32", "sequential", {"0": 0.6, "cpu": 0.5}),
    ("t5_auto_3gpu", "t5", "bf16", "auto", {"0": 0.4, "1": 0.4, "2": 0.4, "cpu": 1.0}),
    ("t5_untied_balanced_2gpu_cpu", "t5_untied", "f16", "balanced", {"0": 0.4, "1": 0.4, "cpu": 1.0}),
    # Exactly the model's size: taking `model` off the list leaves no layer to reserve for.
    ("llama_untied_exact_fit", "llama_untied", "bf16", "sequential", {"0": lambda total: total, "cpu": 1.0}),
    # The GPUs could hold the model, but GPU 0 keeps room for the largest layer (accelerate#3041).
    ("llama_untied_reserve_offloads", "llama_untied", "bf16", "sequential", {"0": 0.65, "1": 0.6, "cpu": 1.0}),
    # One byte short because of the rotary buffers alone: without them the model fits whole.
    ("llama_buffers_tip_over", "llama", "bf16", "sequential", {"0": lambda total: total - 1, "cpu": 1.0}),
    # The config says bf16, the model is built in f32: parameters count 4 bytes each.
    ("llama_f32_from_bf16_config", "llama", "f32", "balanced", {"0": 0.6, "1": 0.6, "cpu": 1.0}, {"torch_dtype": "bfloat16"}),
    # A disk budget far too small: infer_auto_device_map never checks it.
    ("gpt2_disk_budget_ignored", "gpt2", "f32", "sequential", {"0": 0.3, "cpu": 0.3, "disk": 0.01}),
]


def build(config: dict, dtype: str):
    """The model as `from_pretrained` has it when it computes the device map."""
    fields = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = AutoConfig.for_model(config["model_type"], **fields)
    cls = getattr(transformers, config["architectures"][0])
    with ContextManagers(cls.get_init_context(DTYPES[dtype], False, False, None)):
        return cls(hf_config)


def model_size(model) -> int:
    """Bytes as transformers' `compute_module_sizes` counts them."""
    sizes, _ = transformers.integrations.accelerate.compute_module_sizes(model)
    return sizes[""]


def empty_modules(model, device_map: dict) -> list:
    """Keys of the map that hold no parameter (buffers only, or nothing: dropout, rotary)."""
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    holds = lambda k, n: k == "" or n == k or n.startswith(k + ".")  # noqa: E731
    return sorted(k for k in device_map if not any(holds(k, n) for n in names))


def case(
    name: str, config_name: str, dtype: str, strategy: str, budgets: dict, overrides=None
) -> dict:
    config = {**CONFIGS[config_name], "torch_dtype": TORCH_DTYPE_NAMES[dtype], **(overrides or {})}
    model = build(config, dtype)
    total = model_size(model)
    max_memory = {k: f(total) if callable(f) else int(f * total) for k, f in budgets.items()}
    # accelerate wants GPU keys as ints; `_get_device_map` converts and mutates its argument.
    as_torch = {int(k) if k.isdigit() else k: v for k, v in max_memory.items()}
    device_map = _get_device_map(model, strategy, dict(as_torch), None)
    return {
        "name": name,
        "versions": {
            "torch": torch.__version__.split("+")[0],
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        },
        "config": config,
        "dtype": dtype,
        "strategy": strategy,
        "max_memory": max_memory,
        "model_bytes": total,
        "device_map": {k: v for k, v in device_map.items()},
        "empty_modules": empty_modules(model, device_map),
    }


def main() -> None:
    # Budgets name GPUs this machine need not have: silence accelerate's "not available".
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests" / "fixtures" / "accelerate"
    out.mkdir(parents=True, exist_ok=True)
    for spec in CASES:
        fixture = case(*spec)
        path = out / f"{fixture['name']}.json"
        path.write_text(json.dumps(fixture, indent=1) + "\n")
        print(f"{path.name}: {fixture['device_map']}")


if __name__ == "__main__":
    main()
