#!/usr/bin/env python3
"""config.json fixtures for Quill's configuration tests.

- transformers-5 layout: written by transformers' own config classes (`save_pretrained`),
  so `rope_parameters`, defaults and key names are exactly what transformers writes today.
- transformers-4 layout: the config.json texts Hub checkpoints ship (top-level `rope_theta`,
  `rope_scaling`, `head_dim` absent or null), as literal documents.

Run by hand: python3 Scripts/make_config_fixtures.py (needs transformers). It rewrites
Tests/ModelsTests/Fixtures/configs/.
"""
import json
import pathlib
import tempfile

from transformers import LlamaConfig, MambaConfig, MistralConfig, MixtralConfig, Qwen2Config

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "ModelsTests" / "Fixtures" / "configs"


def save(config, name):
    with tempfile.TemporaryDirectory() as folder:
        config.save_pretrained(folder)
        (OUT / f"{name}.json").write_text((pathlib.Path(folder) / "config.json").read_text())


def transformers5():
    save(LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), "v5-llama-gqa")
    save(LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                     tie_word_embeddings=True, max_position_embeddings=131072,
                     rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                     eos_token_id=[128001, 128008, 128009]), "v5-llama3-tied")
    save(LlamaConfig(hidden_size=1024, num_attention_heads=16, vocab_size=1000, max_position_embeddings=4096,
                     rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                      "original_max_position_embeddings": 1024}), "v5-llama-yarn")
    save(MistralConfig(sliding_window=4096, vocab_size=32000), "v5-mistral")
    save(Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True), "v5-qwen2")
    save(MixtralConfig(vocab_size=32000, num_local_experts=8, num_experts_per_tok=2), "v5-mixtral")
    save(MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16), "v5-mamba")


# transformers-4-era config.json files as published with well-known checkpoints.
V4 = {
    "v4-llama31-8b": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256},
    "v4-mistral-7b": {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
        "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000},
    "v4-qwen2-0.5b": {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
        "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
        "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
        "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936},
    "v4-mixtral-8x7b": {
        "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32,
        "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
        "output_router_logits": False, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.36.0.dev0", "use_cache": True, "vocab_size": 32000},
    "v4-mamba-130m": {
        "architectures": ["MambaForCausalLM"], "bos_token_id": 0, "conv_kernel": 4, "d_inner": 1536, "d_model": 768,
        "eos_token_id": 0, "expand": 2, "fused_add_norm": True, "hidden_act": "silu", "hidden_size": 768,
        "initializer_range": 0.1, "intermediate_size": 1536, "layer_norm_epsilon": 1e-05, "model_type": "mamba",
        "n_layer": 24, "num_hidden_layers": 24, "pad_token_id": 0, "pad_vocab_size_multiple": 8,
        "rescale_prenorm_residual": False, "residual_in_fp32": True, "rms_norm": True, "state_size": 16,
        "time_step_floor": 0.0001, "time_step_init_scheme": "random", "time_step_max": 0.1, "time_step_min": 0.001,
        "time_step_rank": 48, "time_step_scale": 1.0, "torch_dtype": "float32", "transformers_version": "4.39.0.dev0",
        "use_bias": False, "use_cache": True, "use_conv_bias": True, "vocab_size": 50280},
    "v4-llama-head-dim-null": {
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": None, "vocab_size": 1000,
        "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}, "rms_norm_eps": 1e-06},
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    transformers5()
    for name, config in V4.items():
        (OUT / f"{name}.json").write_text(json.dumps(config, indent=2))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
