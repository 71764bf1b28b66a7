#!/usr/bin/env python3
"""Reference values for TensorCore's tests, computed by code nobody here wrote.

- Q8_0 / Q4_0 bytes and dequantized values from the `gguf` package (llama.cpp's Python
  port of ggml's reference quantizers, bit-exact with ggml-quants.c).
- float16 / bfloat16 rounding from numpy and torch.
- RoPE inverse frequencies, attention scaling and cos/sin tables from Hugging Face
  transformers' LlamaRotaryEmbedding, for every scaling type Quill supports.
- safetensors files written by the `safetensors` library: one file of mixed dtypes with
  metadata, and a checkpoint sharded in two with its model.safetensors.index.json.
- GGUF files written by the `gguf` package's GGUFWriter: every metadata value type
  (nested arrays included) and tensors of F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K, with
  the values the package's own `dequantize` gives (K-quant blocks are random bytes with
  sane scales, since the package cannot quantize to them).

Run by hand (not by CI):
    pip install numpy torch transformers gguf safetensors
    python3 Scripts/make_tensorcore_fixtures.py
It rewrites Tests/TensorCoreTests/Fixtures/{quantization,rope}.json and
Tests/TensorCoreTests/Fixtures/safetensors/.
"""
import json
import pathlib

import numpy as np
import torch
from gguf import GGMLQuantizationType, dequantize, quantize
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "TensorCoreTests" / "Fixtures"


def quantization_fixture():
    rng = np.random.default_rng(1234)
    blocks = [rng.normal(0, 1, 32) * scale for scale in (1e-3, 0.02, 0.5, 1.0, 7.0, 300.0)]
    blocks += [rng.uniform(-1, 1, 32) for _ in range(20)]
    blocks.append(np.zeros(32))                          # zero block: scale 0
    blocks.append(np.full(32, -2.5))                     # all equal, negative
    blocks.append(np.linspace(-8, 8, 32))                # ties at .5 after scaling
    tie = np.arange(32) - 15.5
    blocks.append(tie * (127 / 16.5) / 127 * 16.5 / 16)  # many x/d near half-integers
    blocks.append(np.where(np.arange(32) % 2 == 0, 1e-6, -3e-6))  # tiny values
    spike = rng.normal(0, 0.01, 32)
    spike[7] = -50.0                                     # one outlier, negative max
    blocks.append(spike)
    values = np.concatenate(blocks).astype(np.float32)

    fixture = {"input": [float(v) for v in values]}
    for name, kind in (("q8_0", GGMLQuantizationType.Q8_0), ("q4_0", GGMLQuantizationType.Q4_0)):
        raw = quantize(values.reshape(1, -1), kind)
        fixture[name] = bytes(raw.reshape(-1)).hex()
        fixture[name + "_dequantized"] = [float(v) for v in dequantize(raw, kind).reshape(-1)]
    fixture["f16_bits"] = [int(v) for v in values.astype(np.float16).view(np.uint16)]
    specials = np.array([65504.0, 65520.0, 1e6, -1e6, 6.0e-8, 2.9e-8, 3.0e-8, 1e-10, -0.0, 5.96e-8,
                         np.inf, -np.inf], dtype=np.float32)
    fixture["f16_special_input"] = [float(v) if np.isfinite(v) else str(v) for v in specials]
    fixture["f16_special_bits"] = [int(v) for v in specials.astype(np.float16).view(np.uint16)]
    fixture["bf16_bits"] = [int(v) for v in torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)]
    return fixture


def rope_case(name, rope_parameters, head_dim=64, max_positions=2048, positions=(0, 1, 7, 100, 1999, 4095)):
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                         max_position_embeddings=max_positions, rope_parameters=rope_parameters)
    rope = LlamaRotaryEmbedding(config)
    inv_freq = rope.inv_freq.clone()
    x = torch.zeros(1, 1, head_dim)
    case = {"name": name, "head_dim": head_dim, "max_position_embeddings": max_positions,
            "rope_parameters": rope_parameters,
            "inv_freq": [float(v) for v in inv_freq],
            "attention_scaling": float(rope.attention_scaling),
            "positions": list(positions), "cos": [], "sin": []}
    for p in positions:
        # One position per call, as a decode step sees it (dynamic scaling depends on it).
        cos, sin = rope(x, torch.tensor([[p]]))
        half = head_dim // 2
        case["cos"].append([float(v) for v in cos[0, 0, :half]])
        case["sin"].append([float(v) for v in sin[0, 0, :half]])
    # A rotated query (half-split layout) to check the whole rotation.
    torch.manual_seed(0)
    q = torch.randn(1, 2, 1, head_dim)
    cos, sin = rope(x, torch.tensor([[positions[3]]]))
    rotate_half = lambda t: torch.cat((-t[..., head_dim // 2:], t[..., : head_dim // 2]), dim=-1)
    rotated = q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)
    case["query"] = [float(v) for v in q.reshape(-1)]
    case["rotated_query_position"] = positions[3]
    case["rotated_query"] = [float(v) for v in rotated.reshape(-1)]
    return case


def rope_fixture():
    return {"cases": [
        rope_case("default", {"rope_type": "default", "rope_theta": 10000.0}),
        rope_case("default_theta_1e6_dim128", {"rope_type": "default", "rope_theta": 1000000.0}, head_dim=128),
        rope_case("linear", {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
        rope_case("llama3", {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        rope_case("yarn", {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                           "original_max_position_embeddings": 512}),
        rope_case("dynamic", {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, max_positions=256,
                  positions=(0, 5, 100, 200, 255, 300)),
    ]}


def safetensors_fixture():
    from safetensors.torch import save_file
    out = OUT / "safetensors"
    (out / "sharded").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    tensors = {
        "model.embed_tokens.weight": torch.randn(5, 8, generator=g),
        "model.norm.weight": torch.randn(8, generator=g).to(torch.float16),
        "lm_head.weight": torch.randn(3, 8, generator=g).to(torch.bfloat16),
        "quant.codes": torch.randint(-128, 127, (4, 4), generator=g, dtype=torch.int8),
        "quant.bytes": torch.randint(0, 255, (7,), generator=g, dtype=torch.uint8),
        "empty": torch.zeros(0, 8),
    }
    save_file(tensors, str(out / "mixed.safetensors"), metadata={"format": "pt", "note": "fixture"})
    expected = {name: {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                       "values": [float(v) for v in t.float().reshape(-1)]} for name, t in tensors.items()}
    (out / "mixed.json").write_text(json.dumps(expected))
    shard_a = {"a.weight": torch.randn(4, 4, generator=g), "a.bias": torch.randn(4, generator=g)}
    shard_b = {"b.weight": torch.randn(2, 4, generator=g).to(torch.float16)}
    save_file(shard_a, str(out / "sharded" / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    save_file(shard_b, str(out / "sharded" / "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 4 * 16 + 4 * 4 + 2 * 8},
             "weight_map": {**{k: "model-00001-of-00002.safetensors" for k in shard_a},
                            **{k: "model-00002-of-00002.safetensors" for k in shard_b}}}
    (out / "sharded" / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    expected = {name: [float(v) for v in t.float().reshape(-1)] for name, t in {**shard_a, **shard_b}.items()}
    (out / "sharded.json").write_text(json.dumps(expected))


def gguf_fixture():
    from gguf import GGUFWriter, GGUFValueType
    out = OUT / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(9)

    def k_quant_blocks(kind, blocks):
        size = {GGMLQuantizationType.Q4_K: 144, GGMLQuantizationType.Q6_K: 210}[kind]
        raw = rng.integers(0, 256, size=(blocks, size), dtype=np.uint8)
        scale = np.float16(0.01).view(np.uint16)
        if kind == GGMLQuantizationType.Q4_K:   # d, dmin at the start
            raw[:, 0:2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
            raw[:, 2:4] = np.frombuffer(np.float16(0.02).tobytes(), np.uint8)
        else:                                   # d at the end
            raw[:, 208:210] = np.frombuffer(np.float16(0.003).tobytes(), np.uint8)
        return raw

    for name, alignment in (("all-types.gguf", None), ("aligned-64.gguf", 64)):
        writer = GGUFWriter(str(out / name), arch="llama")
        if alignment:
            writer.add_custom_alignment(alignment)
        writer.add_uint8("test.u8", 200)
        writer.add_int8("test.i8", -100)
        writer.add_uint16("test.u16", 60000)
        writer.add_int16("test.i16", -30000)
        writer.add_uint32("test.u32", 4000000000)
        writer.add_int32("test.i32", -2000000000)
        writer.add_float32("test.f32", 0.15625)
        writer.add_uint64("test.u64", 2**62)
        writer.add_int64("test.i64", -(2**61))
        writer.add_float64("test.f64", 3.141592653589793)
        writer.add_bool("test.bool", True)
        writer.add_string("test.string", "héllo ▁wörld 🙂")
        writer.add_array("test.ints", [1, 2, 3])
        writer.add_array("test.strings", ["a", "", "ü"])
        writer.add_key_value("test.nested", [[1, 2], [3]], GGUFValueType.ARRAY, sub_type=GGUFValueType.ARRAY)
        expected = {}
        f32 = rng.normal(0, 1, (3, 64)).astype(np.float32)
        writer.add_tensor("t.f32", f32)
        expected["t.f32"] = {"type": "F32", "shape": [3, 64], "values": f32.reshape(-1).tolist()}
        f16 = rng.normal(0, 1, (2, 64)).astype(np.float16)
        writer.add_tensor("t.f16", f16)
        expected["t.f16"] = {"type": "F16", "shape": [2, 64], "values": f16.astype(np.float32).reshape(-1).tolist()}
        bf16 = torch.from_numpy(rng.normal(0, 1, (2, 32)).astype(np.float32)).to(torch.bfloat16)
        writer.add_tensor("t.bf16", bf16.view(torch.int16).numpy().view(np.uint16).view(np.uint8).reshape(2, 64),
                          raw_dtype=GGMLQuantizationType.BF16)
        expected["t.bf16"] = {"type": "BF16", "shape": [2, 32], "values": bf16.float().reshape(-1).tolist()}
        for kind, label in ((GGMLQuantizationType.Q8_0, "Q8_0"), (GGMLQuantizationType.Q4_0, "Q4_0")):
            values = rng.normal(0, 1, (4, 64)).astype(np.float32)
            raw = quantize(values, kind)
            writer.add_tensor("t." + label.lower(), raw, raw_dtype=kind)
            expected["t." + label.lower()] = {"type": label, "shape": [4, 64],
                                              "values": dequantize(raw, kind).astype(np.float32).reshape(-1).tolist()}
        for kind, label in ((GGMLQuantizationType.Q4_K, "Q4_K"), (GGMLQuantizationType.Q6_K, "Q6_K")):
            raw = k_quant_blocks(kind, 2)
            writer.add_tensor("t." + label.lower(), raw.reshape(1, -1), raw_dtype=kind)
            expected["t." + label.lower()] = {"type": label, "shape": [1, 512],
                                              "values": dequantize(raw.reshape(1, -1), kind).astype(np.float32).reshape(-1).tolist()}
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        (out / name.replace(".gguf", ".json")).write_text(json.dumps(expected))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    safetensors_fixture()
    gguf_fixture()
    (OUT / "quantization.json").write_text(json.dumps(quantization_fixture()))
    (OUT / "rope.json").write_text(json.dumps(rope_fixture()))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
