#!/usr/bin/env python3
"""Random-weight GGUF models of realistic shapes, for comparing Quill with llama.cpp on the
very same files (run by hand; the files are hundreds of MB to GB and are never committed).

    python3 Scripts/make_benchmark_ggufs.py OUT_DIR [--llama-quantize PATH] [--only llama-110m,...]

Writes OUT_DIR/<model>-f16.gguf with the `gguf` package (llama.cpp's own writer), llama.cpp's
tensor names and metadata, and a synthetic 32000-token SentencePiece vocabulary. With
--llama-quantize, also <model>-q8_0.gguf and <model>-q4_0.gguf made by llama.cpp's
`llama-quantize --pure` (every matrix in the one type, so both engines read identical
bytes; without --pure it would keep the output head in Q6_K). Mamba's quantized files are
written here with gguf's reference quantizer instead, because early-2025 llama-quantize
refuses its dt projection (48 columns, not a whole number of 32-blocks): that tensor, the
convolution and the vectors stay F16/F32 in both engines' files.

Shapes (the performance issue's):
  llama-110m   hidden 768, 12 layers, 12 heads, MLP 2048
  llama-1.1b   hidden 2048, 22 layers, 32 heads / 4 KV heads, MLP 5632
  moe-8x       hidden 1024, 8 layers, 16 heads / 8 KV heads, 8 experts (top 2) of MLP 2816
  mamba-130m   hidden 768, 24 layers, state 16, conv 4, expand 2 (dt rank 48)
"""
import argparse
import subprocess
from pathlib import Path

import gguf
import numpy as np

VOCAB = 32000
RNG = np.random.default_rng(0)


def random(*shape, scale=0.02, dtype=np.float16):
    return (RNG.standard_normal(shape, dtype=np.float32) * scale).astype(dtype)


def vocabulary(writer):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(VOCAB - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    types += [gguf.TokenType.NORMAL] * (VOCAB - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(VOCAB - 259)])
    writer.add_token_types([int(t) for t in types])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)


def llama(path, hidden, layers, heads, kv_heads, mlp, experts=0):
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name(path.stem)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(8192)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(mlp)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // heads)
    if experts:
        writer.add_expert_count(experts)
        writer.add_expert_used_count(2)
    vocabulary(writer)
    kv = kv_heads * (hidden // heads)
    writer.add_tensor("token_embd.weight", random(VOCAB, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("output.weight", random(VOCAB, hidden))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", random(hidden, hidden))
        writer.add_tensor(p + "attn_k.weight", random(kv, hidden))
        writer.add_tensor(p + "attn_v.weight", random(kv, hidden))
        writer.add_tensor(p + "attn_output.weight", random(hidden, hidden))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        if experts:
            writer.add_tensor(p + "ffn_gate_inp.weight", random(experts, hidden, dtype=np.float32))
            writer.add_tensor(p + "ffn_gate_exps.weight", random(experts, mlp, hidden))
            writer.add_tensor(p + "ffn_up_exps.weight", random(experts, mlp, hidden))
            writer.add_tensor(p + "ffn_down_exps.weight", random(experts, hidden, mlp))
        else:
            writer.add_tensor(p + "ffn_gate.weight", random(mlp, hidden))
            writer.add_tensor(p + "ffn_up.weight", random(mlp, hidden))
            writer.add_tensor(p + "ffn_down.weight", random(hidden, mlp))
    finish(writer)


def mamba(path, quantization=None, hidden=768, layers=24, state=16, kernel=4):
    inner, rank = 2 * hidden, (hidden + 15) // 16

    def matrix(*shape):
        array = random(*shape, dtype=np.float32)
        if quantization is None or shape[-1] % 32 != 0:
            return array.astype(np.float16), None
        return gguf.quants.quantize(array, quantization), quantization

    writer = gguf.GGUFWriter(str(path), arch="mamba")
    writer.add_name(path.stem)
    writer.add_context_length(1 << 20)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_block_count(layers)
    writer.add_ssm_conv_kernel(kernel)
    writer.add_ssm_inner_size(inner)
    writer.add_ssm_state_size(state)
    writer.add_ssm_time_step_rank(rank)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type({None: gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
                          gguf.GGMLQuantizationType.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0}[quantization])
    vocabulary(writer)

    def add(name, pair):
        array, kind = pair
        writer.add_tensor(name, array, raw_dtype=kind) if kind is not None else writer.add_tensor(name, array)

    add("token_embd.weight", matrix(VOCAB, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(hidden, dtype=np.float32))
        add(p + "ssm_in.weight", matrix(2 * inner, hidden))
        writer.add_tensor(p + "ssm_conv1d.weight", random(inner, kernel, dtype=np.float32))
        writer.add_tensor(p + "ssm_conv1d.bias", random(inner, dtype=np.float32))
        add(p + "ssm_x.weight", matrix(rank + 2 * state, inner))
        add(p + "ssm_dt.weight", matrix(inner, rank))
        writer.add_tensor(p + "ssm_dt.bias", random(inner, dtype=np.float32))
        a = -np.exp(np.log(np.tile(np.arange(1, state + 1, dtype=np.float32), (inner, 1))))
        writer.add_tensor(p + "ssm_a", a)
        writer.add_tensor(p + "ssm_d", np.ones(inner, dtype=np.float32))
        add(p + "ssm_out.weight", matrix(hidden, inner))
    finish(writer)


def finish(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


MODELS = {
    "llama-110m": lambda path: llama(path, 768, 12, 12, 12, 2048),
    "llama-1.1b": lambda path: llama(path, 2048, 22, 32, 4, 5632),
    "moe-8x": lambda path: llama(path, 1024, 8, 16, 8, 2816, experts=8),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--llama-quantize")
    parser.add_argument("--only", default="llama-110m,llama-1.1b,moe-8x,mamba-130m")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        source = out / f"{name}-f16.gguf"
        if name == "mamba-130m":
            for kind, suffix in [(None, "f16"), (gguf.GGMLQuantizationType.Q8_0, "q8_0"), (gguf.GGMLQuantizationType.Q4_0, "q4_0")]:
                target = out / f"{name}-{suffix}.gguf"
                if not target.exists():
                    print("writing", target, flush=True)
                    mamba(target, kind)
            continue
        if not source.exists():
            print("writing", source, flush=True)
            MODELS[name](source)
        if args.llama_quantize:
            for kind in ["q8_0", "q4_0"]:
                target = out / f"{name}-{kind}.gguf"
                if not target.exists():
                    subprocess.run([args.llama_quantize, "--pure", str(source), str(target), kind.upper()], check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    print("wrote", target, flush=True)


if __name__ == "__main__":
    main()
