#!/usr/bin/env python3
"""Reference tokenizers, vocabularies and tiny models for Quill's Tokenization and Models tests.

Everything here is computed by code nobody on Quill wrote: Hugging Face `tokenizers` (training,
encoding, decoding), `transformers` (chat templates, model forward passes, greedy generation)
and the `gguf` package (llama.cpp's Python GGUF writer and reader).

Corpus: the license texts in /usr/share/common-licenses (every regular file, symlinks skipped,
sorted by name). Debian ships them; they are plain ASCII, so every non-ASCII test string
exercises byte handling.

What it writes, all under Tests/Fixtures/ (the script deletes and rewrites the `tokenizers`
and `models` folders there):

tokenizers/byte-level/      GPT-2/Qwen-style byte-level BPE (tokenizer.json,
                            tokenizer_config.json with a ChatML chat template). Its vocabulary
                            has BYTE_LEVEL_VOCAB_SIZE = 512 entries: 3 special tokens, the 256
                            byte characters, 252 merges, and one non-special added token
                            "GNU General" (id 511). 512 rather than 1000, the brief's remedy
                            for size: the models below use this vocabulary, so it sets the size
                            of every embedding, lm_head and logits array.
tokenizers/sentencepiece/   Llama-2/Mistral-style SentencePiece BPE in tokenizer.json form, with
                            a Llama-2 chat template. 1000 entries: <unk> <s> </s> (ids 0-2), the
                            256 byte-fallback tokens <0x00>..<0xFF> (ids 3-258), then the 741
                            tokens the BpeTrainer learned (its characters, then its merges in
                            order). The trainer cannot place byte tokens itself, so it is
                            trained with vocab_size 744 (= 1000 - 256) on the corpus lines, and
                            the model is rebuilt from its vocabulary and merges with the byte
                            tokens inserted after the special tokens. Lines are used (not whole
                            files) so no token contains "\\n": a newline encodes as <0x0A>, as
                            with Llama.
tokenizers/cases.json       Encodings of tricky strings and rendered chat templates, for both.
tokenizers/byte-level.gguf, tokenizers/sentencepiece.gguf
                            The two vocabularies as GGUF metadata (zero tensors), models "gpt2"
                            and "llama". tokenizer.ggml.scores: the token made by merge number r
                            (0-based, in merge order) scores -(r + 1); every token that no merge
                            makes (special, byte, single-character, added tokens) scores 0.0.
                            For the llama vocabulary this is the SentencePiece convention
                            (a higher score is an earlier merge). Token types: 1 normal,
                            2 unknown, 3 control (special added tokens), 4 user-defined
                            ("GNU General"), 6 byte (<0xXX>). Beyond the keys the brief lists:
                            tokenizer.ggml.pre "gpt-2" (gpt2 only), unknown_token_id,
                            padding_token_id, add_eos_token, and add_space_prefix true (llama
                            only; Metaspace prepends "▁" to the first word). The byte-level
                            vocabulary has no BOS token; like Qwen's GGUFs, bos_token_id names
                            <|endoftext|> and add_bos_token is false.
models/<name>/              Six tiny random-weight models saved by transformers (config.json,
                            generation_config.json, model.safetensors, plus the byte-level
                            tokenizer files), logits.json (prompt logits and hidden states) and
                            greedy.json (30 greedy tokens): llama-gqa, llama3-tied,
                            mistral-sliding, qwen2-bias, mixtral-moe, mamba.
models/llama-gqa.f32.gguf, models/qwen2-bias.f32.gguf
                            F32 GGUF exports with llama.cpp's tensor names and metadata keys and
                            the byte-level vocabulary. For arch "llama" the q/k projection rows
                            are permuted the way llama.cpp's converter does (so the file expects
                            RoPE on adjacent pairs); for "qwen2" they are not (NEOX-style RoPE).
                            Checked by reading back with GGUFReader and with transformers' own
                            GGUF importer (load_gguf_checkpoint), which must undo the permutation
                            and give back the exact weights.
models/mixtral-moe.f32.gguf F32 export of mixtral-moe, laid out as llama.cpp's converter does it,
                            from the saved model.safetensors: arch "llama", the llama-gqa metadata
                            plus llama.expert_count 4 and llama.expert_used_count 2; q/k permuted as
                            above; per layer the router blk.N.ffn_gate_inp.weight (4, 32) and the
                            per-expert weights stacked over experts (expert index first):
                            ffn_gate_exps (4, 64, 32) = w1, ffn_up_exps (4, 64, 32) = w3,
                            ffn_down_exps (4, 32, 64) = w2. Checked by GGUFReader, by running the
                            read-back router and experts as a MoE block against the model's own,
                            and by transformers as far as it can: it has no Mixtral GGUF support
                            (it reads arch "llama" as a dense Llama and knows no "mixtral" tensor
                            names), so only the config it parses and its q/k un-permutation are used.
models/mamba.f32.gguf       F32 export of mamba, likewise: arch "mamba"; mamba.context_length 256,
                            embedding_length 32, block_count 2, ssm.conv_kernel 4, ssm.inner_size
                            64, ssm.state_size 8, ssm.time_step_rank 2,
                            attention.layer_norm_rms_epsilon 1e-5, and, as llama.cpp's converter
                            writes them, feed_forward_length 0, attention.head_count 0 and
                            ssm.dt_b_c_rms false. Per layer (from backbone.layers.N.): attn_norm
                            (norm), ssm_in (in_proj), ssm_conv1d.weight (conv1d (64, 1, 4) stored as
                            (64, 4)) and .bias, ssm_x (x_proj), ssm_dt.weight/.bias (dt_proj),
                            ssm_a = -exp(A_log) and ssm_d = D (no ".weight": llama.cpp's names),
                            ssm_out (out_proj); token_embd and output_norm; no output.weight (tied).
                            -exp is computed with torch in float32 (numpy's exp can differ by one
                            ulp: ssm_a holds -7.0000005 where -7 might be expected). transformers'
                            importer reads it back to the model's weights (A_log within 1e-6).
                            Tensor names of both come from gguf's constants (TENSOR_NAMES) and are
                            checked against gguf's TensorNameMap, llama.cpp's HF-to-GGUF name table.

GGUF dimension order: GGUFWriter.add_tensor takes a numpy array in PyTorch order and writes
its dims reversed (ggml order, ne[0] = the contiguous dim); the data bytes are the row-major
array unchanged. So token_embd.weight, (vocab, hidden) in PyTorch, is stored with
ne = [hidden, vocab]. GGUFReader reports `shape` in the stored ggml order and gives `data`
reshaped back to the PyTorch order. The script checks this when it reads the files back.

Weights are re-initialized so attention is far from uniform: every parameter ~ N(0, 0.15),
norm weights 1 + N(0, 0.1); Mamba keeps A_log = log(1..state_size) per channel,
D = 1 + N(0, 0.1) and dt_proj.bias = log(expm1(dt)), dt ~ U(0.001, 0.1). All models run in
float32 with the eager attention implementation. Float values in the JSON files are float32
values written as the shortest decimal that reads back as the same float32.

Run by hand (not by CI), from the repository root; needs no network:
    pip install numpy torch transformers tokenizers safetensors gguf
    python3 Scripts/make_model_fixtures.py
"""
import json
import os
import pathlib
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never try the Hub

import gguf
import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoTokenizer, LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM,
                          MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM,
                          PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "Fixtures"
TOKENIZERS_DIR = OUT / "tokenizers"
MODELS_DIR = OUT / "models"
CORPUS_DIR = pathlib.Path("/usr/share/common-licenses")

BYTE_LEVEL_VOCAB_SIZE = 512
BYTE_LEVEL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BYTE_LEVEL_ADDED_TOKEN = "GNU General"
SENTENCEPIECE_VOCAB_SIZE = 1000
SENTENCEPIECE_SPECIALS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = ["<0x%02X>" % b for b in range(256)]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The chat template of meta-llama/Llama-2-*-chat-hf, character for character. It renders a leading
# system message inside <<SYS>> and ignores add_generation_prompt.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# A sentence of GPL-3's preamble; its first 20 byte-level ids are the models' prompt.
PROMPT_SENTENCE = ("The licenses for most software and other practical works are designed "
                   "to take away your freedom to share and change the works.")
PROMPT_LENGTH = 20
NEW_TOKENS = 30

CORPUS_SENTENCES = [
    "The GNU General Public License is a free, copyleft license for software and other kinds of works.",
    PROMPT_SENTENCE,
    "Redistribution and use in source and binary forms, with or without modification, are permitted "
    "provided that the following conditions are met:",
    "THIS SOFTWARE IS PROVIDED BY THE REGENTS AND CONTRIBUTORS ``AS IS'' AND ANY EXPRESS OR IMPLIED "
    "WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS "
    "FOR A PARTICULAR PURPOSE ARE DISCLAIMED.",
    "\"Source\" form shall mean the preferred form for making modifications, including but not limited "
    "to software source code, documentation source, and configuration files.",
]

TRICKY_STRINGS = [
    "",
    " ",
    "hello",
    " hello",
    "hello ",
    "hello  world",
    "   leading and trailing   ",
    "tab\tseparated\tvalues",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "line one\nline two\n\nline four\r\nline five",
    "page\x0cbreak",
    "12345678901234567890",
    "3.14159",
    "Version 2.0, January 2004",
    "1,000,000 and 42%",
    "?!...",
    "--",
    "''",
    "(\"quoted\") [brackets] {braces} <angles>",
    "don't",
    "I'll",
    "we're",
    "They've said it's the DON'T case.",
    "café naïve résumé Ångström",
    "Straße und Maß",
    "日本語のテキスト",
    "中文",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "नमस्ते",
    "😀",
    "I ❤️ free software 🎉",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",  # family: four emoji joined by ZWJ
    "\U0001F1EB\U0001F1F7",  # flag of France: two regional indicators
    "\U0001F44D\U0001F3FD",  # thumbs up + skin-tone modifier
    "e\u0301",  # e + combining acute accent
    "cafe\u0301",
    "non\u00a0breaking\u2009spaces",
    "zero\u200bwidth",
    "hello<|im_end|>world",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>",
    "<s>hi</s>",
    "<unk>",
    "<0x41> is not a byte token in text",
    "the GNU General Public License",
    "GNU GeneralGNU General",
    "a▁b ▁c",  # SentencePiece's meta symbol in the input
    "ĠhelloĊ",  # byte-level alphabet characters in the input
    "a" * 300,
    "=" * 64,
    "def f(x):\n    return x**2",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "https://www.gnu.org/licenses/",
] + CORPUS_SENTENCES

CONVERSATIONS = [
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is the GNU General Public License?"}],
    [{"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me about free software."}],
]


# ----------------------------------------------------------------------------------------------
# Small helpers

def f32(value):
    """A float32 as the shortest decimal that reads back as the same float32."""
    return float(str(np.float32(value)))


def f32_rows(tensor):
    """A 2-D tensor as nested lists of float32 values."""
    return [[f32(v) for v in row] for row in tensor.detach().to(torch.float32).numpy()]


def write_json(path, value, indent=None):
    """Writes JSON; without an indent it is compact (no spaces), as the data files are large."""
    separators = (",", ":") if indent is None else (",", ": ")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file, ensure_ascii=False, indent=indent, separators=separators, allow_nan=False)
        file.write("\n")


def versions():
    return {"transformers": transformers.__version__, "torch": torch.__version__,
            "tokenizers": tokenizers.__version__, "gguf": gguf_version(), "numpy": np.__version__}


def gguf_version():
    from importlib.metadata import version
    return version("gguf")


# ----------------------------------------------------------------------------------------------
# 1. Corpus

def read_corpus():
    files = sorted(p for p in CORPUS_DIR.iterdir() if p.is_file() and not p.is_symlink())
    assert files, f"no license texts in {CORPUS_DIR}"
    return [p.read_text(encoding="utf-8") for p in files]


def check_corpus_sentences(texts):
    flat = " ".join(" ".join(texts).split())
    for sentence in CORPUS_SENTENCES:
        assert sentence in flat, f"not in the corpus: {sentence!r}"


# ----------------------------------------------------------------------------------------------
# 2. Tokenizers

def train_byte_level(texts):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    # One id is kept free for the added token below.
    trainer = trainers.BpeTrainer(vocab_size=BYTE_LEVEL_VOCAB_SIZE - 1, special_tokens=BYTE_LEVEL_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens([AddedToken(BYTE_LEVEL_ADDED_TOKEN, normalized=False)])
    assert tokenizer.get_vocab_size() == BYTE_LEVEL_VOCAB_SIZE
    assert tokenizer.token_to_id(BYTE_LEVEL_ADDED_TOKEN) == BYTE_LEVEL_VOCAB_SIZE - 1
    return tokenizer


def train_sentencepiece(texts):
    lines = [line for text in texts for line in text.split("\n") if line.strip()]
    trainee = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainee.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=SENTENCEPIECE_VOCAB_SIZE - len(BYTE_TOKENS),
                                  special_tokens=SENTENCEPIECE_SPECIALS, show_progress=False)
    trainee.train_from_iterator(lines, trainer=trainer)

    # Rebuild the model with the byte tokens right after the special tokens.
    trained = json.loads(trainee.to_str())["model"]
    learned = [token for token, _ in sorted(trained["vocab"].items(), key=lambda item: item[1])
               if token not in SENTENCEPIECE_SPECIALS]
    pieces = SENTENCEPIECE_SPECIALS + BYTE_TOKENS + learned
    vocab = {piece: index for index, piece in enumerate(pieces)}
    assert len(vocab) == SENTENCEPIECE_VOCAB_SIZE
    merges = [tuple(merge) for merge in trained["merges"]]

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                                     byte_fallback=True, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                           decoders.Fuse(), decoders.Strip(content=" ", left=1, right=0)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                  for token in SENTENCEPIECE_SPECIALS])
    check_sentencepiece_bytes(tokenizer)
    return tokenizer


def check_sentencepiece_bytes(tokenizer):
    for index, token in enumerate(BYTE_TOKENS):
        assert tokenizer.token_to_id(token) == 3 + index
    assert tokenizer.encode("\n", add_special_tokens=False).tokens == ["▁", "<0x0A>"]
    tokens = tokenizer.encode("😀", add_special_tokens=False).tokens
    assert tokens == ["▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"], tokens
    assert tokenizer.decode(tokenizer.encode("a 😀\n").ids) == "a 😀\n"


def save_tokenizer(tokenizer, folder, config):
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    write_json(folder / "tokenizer_config.json", config, indent=2)


def byte_level_config():
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False, "add_eos_token": False,
            "clean_up_tokenization_spaces": False, "chat_template": CHATML_TEMPLATE}


def sentencepiece_config():
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
            "pad_token": None, "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
            "clean_up_tokenization_spaces": False, "chat_template": LLAMA2_TEMPLATE}


def load_with_transformers(folder):
    """Loads the folder both ways the brief names and checks they agree."""
    auto = AutoTokenizer.from_pretrained(str(folder))
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    direct = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                     bos_token=config["bos_token"], eos_token=config["eos_token"],
                                     unk_token=config["unk_token"], pad_token=config["pad_token"])
    sample = "Hello <|im_end|> <s> wörld\n"
    assert auto(sample)["input_ids"] == direct(sample)["input_ids"]
    return auto


# ----------------------------------------------------------------------------------------------
# 3. Test cases

def encode_case(tokenizer, hf_tokenizer, text):
    plain = tokenizer.encode(text, add_special_tokens=False)
    special = tokenizer.encode(text, add_special_tokens=True)
    decoded = tokenizer.decode(plain.ids, skip_special_tokens=False)
    # transformers must agree with tokenizers, or the reference is ambiguous.
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == plain.ids, text
    assert hf_tokenizer(text, add_special_tokens=True)["input_ids"] == special.ids, text
    assert hf_tokenizer.decode(plain.ids, skip_special_tokens=False) == decoded, text
    return {"text": text, "ids": plain.ids, "ids_with_special": special.ids,
            "tokens": plain.tokens, "decoded": decoded}


def chat_ids(hf_tokenizer, messages, add_generation_prompt):
    encoded = hf_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                               add_generation_prompt=add_generation_prompt)
    return list(encoded["input_ids"])


def chat_cases(hf_tokenizer):
    cases = []
    for messages in CONVERSATIONS:
        for add_generation_prompt in (False, True):
            rendered = hf_tokenizer.apply_chat_template(messages, tokenize=False,
                                                        add_generation_prompt=add_generation_prompt)
            ids = chat_ids(hf_tokenizer, messages, add_generation_prompt)
            # The templates write their own special tokens, so the text is encoded without more.
            assert ids == hf_tokenizer(rendered, add_special_tokens=False)["input_ids"]
            cases.append({"messages": messages, "add_generation_prompt": add_generation_prompt,
                          "rendered": rendered, "ids": ids})
    return cases


def make_cases(named):
    fixture = {"note": ("For each tokenizer: ids = encode(text, add_special_tokens=False); ids_with_special = "
                        "encode(text, add_special_tokens=True); tokens = the token strings of ids; decoded = "
                        "decode(ids, skip_special_tokens=False). Computed with tokenizers and checked "
                        "equal to transformers. chat[name] holds apply_chat_template renderings and their ids "
                        "(encoded without adding special tokens, as apply_chat_template(tokenize=True) does)."),
               "versions": versions(), "chat": {}}
    for name, (tokenizer, hf_tokenizer) in named.items():
        fixture[name] = [encode_case(tokenizer, hf_tokenizer, text) for text in TRICKY_STRINGS]
        fixture["chat"][name] = {"template": hf_tokenizer.chat_template, "cases": chat_cases(hf_tokenizer)}
    fixture["chat"]["byte-level"]["note"] = "ChatML; every role renders."
    fixture["chat"]["sentencepiece"]["note"] = (
        "Llama-2 chat template: a leading system message is folded into the first user turn inside "
        "<<SYS>>...<</SYS>>, and add_generation_prompt has no effect, so each pair of cases renders the same.")
    return fixture


# ----------------------------------------------------------------------------------------------
# 4. GGUF vocabularies

def vocabulary(folder):
    """Token strings, types, scores and merges of a saved tokenizer.json, by id."""
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    size = len(model["vocab"]) + sum(1 for t in data["added_tokens"] if t["content"] not in model["vocab"])
    tokens = [None] * size
    types = [gguf.TokenType.NORMAL] * size
    for token, index in model["vocab"].items():
        tokens[index] = token
        if model.get("byte_fallback") and token in BYTE_TOKENS:
            types[index] = gguf.TokenType.BYTE
    for added in data["added_tokens"]:
        tokens[added["id"]] = added["content"]
        if added["content"] == model.get("unk_token"):
            types[added["id"]] = gguf.TokenType.UNKNOWN
        elif added["special"]:
            types[added["id"]] = gguf.TokenType.CONTROL
        else:
            types[added["id"]] = gguf.TokenType.USER_DEFINED
    assert None not in tokens
    pairs = [merge if isinstance(merge, list) else merge.split(" ") for merge in model["merges"]]
    merges = [" ".join(pair) for pair in pairs]
    rank = {}  # token -> index of the first merge that makes it
    for index, (left, right) in enumerate(pairs):
        if left + right not in rank:
            rank[left + right] = index
    scores = []
    for token, kind in zip(tokens, types):
        made_by_merge = token in rank and kind == gguf.TokenType.NORMAL
        scores.append(-(rank[token] + 1.0) if made_by_merge else 0.0)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    return {"tokens": tokens, "types": [int(t) for t in types], "scores": scores, "merges": merges,
            "config": config}


def add_vocabulary(writer, vocab, ggml_model):
    tokens = vocab["tokens"]
    config = vocab["config"]
    writer.add_tokenizer_model(ggml_model)
    if ggml_model == "gpt2":
        writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(vocab["types"])
    writer.add_token_scores(vocab["scores"])
    writer.add_token_merges(vocab["merges"])
    # The byte-level vocabulary has no BOS token; like Qwen's GGUFs it names <|endoftext|>.
    bos = config["bos_token"] or "<|endoftext|>"
    writer.add_bos_token_id(tokens.index(bos))
    writer.add_eos_token_id(tokens.index(config["eos_token"]))
    if config["unk_token"]:
        writer.add_unk_token_id(tokens.index(config["unk_token"]))
    if config["pad_token"]:
        writer.add_pad_token_id(tokens.index(config["pad_token"]))
    writer.add_add_bos_token(config["add_bos_token"])
    writer.add_add_eos_token(config["add_eos_token"])
    if ggml_model == "llama":
        writer.add_add_space_prefix(True)  # Metaspace prepend_scheme "first"
    writer.add_chat_template(config["chat_template"])


def finish_gguf(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_vocabulary_gguf(folder, path, ggml_model):
    vocab = vocabulary(folder)
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name(f"quill-fixture-{folder.name}-vocabulary")
    add_vocabulary(writer, vocab, ggml_model)
    finish_gguf(writer)
    reader = gguf.GGUFReader(str(path))
    assert len(reader.tensors) == 0
    check_vocabulary(reader, vocab, ggml_model)


def field_value(reader, key):
    return reader.get_field(key).contents()


def check_vocabulary(reader, vocab, ggml_model):
    assert field_value(reader, "tokenizer.ggml.model") == ggml_model
    assert field_value(reader, "tokenizer.ggml.tokens") == vocab["tokens"]
    assert field_value(reader, "tokenizer.ggml.token_type") == vocab["types"]
    assert field_value(reader, "tokenizer.ggml.merges") == vocab["merges"]
    assert np.allclose(field_value(reader, "tokenizer.ggml.scores"), vocab["scores"])
    assert field_value(reader, "tokenizer.chat_template") == vocab["config"]["chat_template"]
    assert field_value(reader, "tokenizer.ggml.add_bos_token") == vocab["config"]["add_bos_token"]
    eos = field_value(reader, "tokenizer.ggml.eos_token_id")
    assert vocab["tokens"][eos] == vocab["config"]["eos_token"]


# ----------------------------------------------------------------------------------------------
# 5. Tiny models

def common_settings(eos_id, pad_id):
    return {"vocab_size": BYTE_LEVEL_VOCAB_SIZE, "hidden_size": 32, "num_hidden_layers": 2,
            "bos_token_id": None, "eos_token_id": eos_id, "pad_token_id": pad_id}


def transformer_settings(eos_id, pad_id):
    return dict(common_settings(eos_id, pad_id), intermediate_size=64, num_attention_heads=4,
                max_position_embeddings=256, rms_norm_eps=1e-5, attention_dropout=0.0)


def default_rope():
    return {"rope_type": "default", "rope_theta": 10000.0}


def model_specs(eos_id, pad_id):
    """(name, seed, model class, config) for each fixture model.

    Seeds are 1000 + position, except llama3-tied: with 1001 its greedy continuation collapses into
    one repeated token after 14 steps, which makes a weak decode test. (Mamba's does that with
    every seed tried: its tied embeddings dominate the residual stream.)"""
    base = transformer_settings(eos_id, pad_id)
    llama3_rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    return [
        ("llama-gqa", 1000, LlamaForCausalLM,
         LlamaConfig(**base, num_key_value_heads=2, rope_parameters=default_rope(), tie_word_embeddings=False)),
        ("llama3-tied", 1005, LlamaForCausalLM,
         LlamaConfig(**base, num_key_value_heads=4, rope_parameters=llama3_rope, tie_word_embeddings=True)),
        ("mistral-sliding", 1002, MistralForCausalLM,
         MistralConfig(**base, num_key_value_heads=2, sliding_window=8, rope_parameters=default_rope(),
                       tie_word_embeddings=False)),
        ("qwen2-bias", 1003, Qwen2ForCausalLM,
         Qwen2Config(**base, num_key_value_heads=2, rope_parameters=default_rope(), tie_word_embeddings=False,
                     use_sliding_window=False)),
        ("mixtral-moe", 1004, MixtralForCausalLM,
         MixtralConfig(**base, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                       sliding_window=None, rope_parameters=default_rope(), tie_word_embeddings=False)),
        ("mamba", 1005, MambaForCausalLM,
         MambaConfig(**common_settings(eos_id, pad_id), state_size=8, expand=2, conv_kernel=4,
                     time_step_rank="auto", use_bias=False, use_conv_bias=True, tie_word_embeddings=True,
                     layer_norm_epsilon=1e-5)),
    ]


def is_norm_weight(name):
    module = name.rsplit(".", 1)[0].split(".")[-1]
    return "norm" in module


@torch.no_grad()
def randomize(model):
    """Re-initializes every parameter (call after torch.manual_seed)."""
    for name, parameter in model.named_parameters():
        if is_norm_weight(name):
            parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
        elif name.endswith("mixer.A_log"):
            channels, state_size = parameter.shape
            parameter.copy_(torch.log(torch.arange(1, state_size + 1, dtype=torch.float32)).repeat(channels, 1))
        elif name.endswith("mixer.D"):
            parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
        elif name.endswith("dt_proj.bias"):
            dt = torch.empty_like(parameter).uniform_(0.001, 0.1)
            parameter.copy_(torch.log(torch.expm1(dt)))
        else:
            parameter.normal_(0.0, 0.15)


def build_model(model_class, config, seed):
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_class(config).to(torch.float32)
    randomize(model)
    model.eval()
    return model


def prompt_ids(tokenizer):
    ids = tokenizer.encode(PROMPT_SENTENCE, add_special_tokens=False).ids
    assert len(ids) >= PROMPT_LENGTH, "prompt sentence too short; pick a longer one"
    return ids[:PROMPT_LENGTH]


def model_parts(model):
    """(embedding module, decoder layers, final norm) of a model."""
    if hasattr(model, "backbone"):
        return model.backbone.embeddings, model.backbone.layers, model.backbone.norm_f
    return model.model.embed_tokens, model.model.layers, model.model.norm


def capture_activations(model, ids):
    """Runs the model once, recording what each part outputs, and returns (outputs, named activations)."""
    embedding, layers, norm = model_parts(model)
    named = [("embedding output", embedding)] + [(f"layer {i} output", layer) for i, layer in enumerate(layers)]
    named.append(("final norm output", norm))
    captured = {}
    handles = []
    for label, module in named:
        def hook(_module, _inputs, output, label=label):
            captured[label] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        handles.append(module.register_forward_hook(hook))
    outputs = model(ids, output_hidden_states=True, use_cache=False)
    for handle in handles:
        handle.remove()
    return outputs, [(label, captured[label]) for label, _ in named]


def describe_hidden_states(hidden_states, activations):
    descriptions = []
    for state in hidden_states:
        matches = [label for label, value in activations if torch.equal(state, value)]
        descriptions.append(matches[0] if matches else "unidentified")
    return descriptions


def logits_fixture(name, model, ids):
    outputs, activations = capture_activations(model, ids)
    entries = describe_hidden_states(outputs.hidden_states, activations)
    assert "unidentified" not in entries, entries
    missing = [label for label, _ in activations if label not in entries]
    note = (f"hidden_states[i] for i in 0..{len(entries) - 1} is: " + "; ".join(entries) + ". "
            + (f"Not among them: {', '.join(missing)}. " if missing else "")
            + "final_norm_output is the final norm's output, which the logits are computed from.")
    final_norm = dict(activations)["final norm output"]
    return {"model": name, "model_type": model.config.model_type, "architecture": type(model).__name__,
            "versions": versions(), "attn_implementation": "eager", "dtype": "float32",
            "prompt_text": PROMPT_SENTENCE, "prompt_ids": ids[0].tolist(),
            "vocab_size": model.config.vocab_size, "hidden_size": model.config.hidden_size,
            "logits": f32_rows(outputs.logits[0]),
            "hidden_states": [f32_rows(state[0]) for state in outputs.hidden_states],
            "hidden_states_entries": entries, "hidden_states_note": note,
            "final_norm_output": f32_rows(final_norm[0])}


def greedy_fixture(name, model, ids):
    model.generation_config.eos_token_id = None  # generate exactly NEW_TOKENS tokens
    result = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                            pad_token_id=model.config.pad_token_id,
                            return_dict_in_generate=True, output_logits=True)
    sequence = result.sequences
    generated = sequence[0, ids.shape[1]:].tolist()
    assert len(generated) == NEW_TOKENS
    chosen_logits = [f32(step[0, token]) for step, token in zip(result.logits, generated)]
    # Cross-check the cached decode against one uncached forward pass over the whole sequence.
    logits = model(sequence[:, :-1], use_cache=False).logits[0, ids.shape[1] - 1:]
    assert logits.argmax(-1).tolist() == generated, name
    return {"model": name, "model_type": model.config.model_type, "architecture": type(model).__name__,
            "versions": versions(), "prompt_ids": ids[0].tolist(), "max_new_tokens": NEW_TOKENS,
            "generated_ids": generated, "generated_logits": chosen_logits, "sequence": sequence[0].tolist(),
            "note": ("model.generate(do_sample=False) with eos_token_id None: pure argmax with the KV cache "
                     "(Mamba: recurrent state), exactly 30 new tokens. generated_logits[i] is the raw logit "
                     "of generated_ids[i] at its step.")}


def sliding_window_difference(model, config, ids):
    """Max |logit difference| between the sliding-window model and the same weights without it."""
    unlimited_config = MistralConfig.from_dict(config.to_dict())
    unlimited_config.sliding_window = None
    unlimited_config._attn_implementation = "eager"
    unlimited = MistralForCausalLM(unlimited_config).to(torch.float32)
    unlimited.load_state_dict(model.state_dict())
    unlimited.eval()
    difference = (model(ids).logits - unlimited(ids).logits).abs()
    early = difference[0, :8].max().item()  # positions 0..7 see at most 8 tokens either way
    late = difference[0, 8:].max().item()
    assert early == 0.0 and late > 1e-3, (early, late)
    return late


def save_model(name, model, byte_level_dir):
    folder = MODELS_DIR / name
    model.save_pretrained(str(folder))
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(byte_level_dir / file, folder / file)
    return folder


@torch.no_grad()
def make_models(byte_level_tokenizer, byte_level_dir):
    eos_id = byte_level_tokenizer.token_to_id("<|im_end|>")
    pad_id = byte_level_tokenizer.token_to_id("<|endoftext|>")
    ids = torch.tensor([prompt_ids(byte_level_tokenizer)])
    built = {}
    for name, seed, model_class, config in model_specs(eos_id, pad_id):
        model = build_model(model_class, config, seed)
        folder = save_model(name, model, byte_level_dir)
        logits = logits_fixture(name, model, ids)
        if name == "mistral-sliding":
            logits["sliding_window_note"] = (
                "sliding_window 8: the query at position p attends to keys p-7..p. Without the window the "
                "logits of positions 8.. would differ by up to max_abs_difference_without_window.")
            logits["max_abs_difference_without_window"] = f32(sliding_window_difference(model, config, ids))
        write_json(folder / "logits.json", logits)
        write_json(folder / "greedy.json", greedy_fixture(name, model, ids))
        check_saved_model(model_class, folder, model, ids)
        if name == "mixtral-moe":
            check_mixtral_checkpoint(folder, model)
        built[name] = model
        print("wrote", folder.relative_to(ROOT))
    return built


def check_saved_model(model_class, folder, model, ids):
    """The saved folder reloads to the same logits."""
    reloaded = model_class.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32)
    reloaded.eval()
    assert torch.equal(reloaded(ids).logits, model(ids).logits), folder.name


def check_mixtral_checkpoint(folder, model):
    """The saved per-expert tensors, read as Mixtral's w1 (gate), w3 (up), w2 (down), reproduce the
    model's first MoE block: softmax router, top-k experts, weights renormalized over the top k."""
    from safetensors.torch import load_file
    weights = load_file(str(folder / "model.safetensors"))
    prefix = "model.layers.0.block_sparse_moe."
    config = model.config
    torch.manual_seed(5)
    x = torch.randn(7, config.hidden_size)
    gate, down, up = (torch.stack([weights[f"{prefix}experts.{expert}.{n}.weight"]
                                   for expert in range(config.num_local_experts)]) for n in ("w1", "w2", "w3"))
    expected = moe_block(x, weights[prefix + "gate.weight"], gate, up, down, config.num_experts_per_tok)
    actual = model.model.layers[0].mlp(x[None])
    actual = actual[0] if isinstance(actual, tuple) else actual
    assert torch.allclose(actual[0], expected, atol=1e-5), (actual[0] - expected).abs().max()


def moe_block(x, router, gate_exps, up_exps, down_exps, top_k):
    """Mixtral's sparse MoE block on x (tokens, hidden), written out: softmax router, top-k experts, weights
    renormalized over the top k; expert e computes down[e] @ (silu(gate[e] @ x) * (up[e] @ x))."""
    probabilities = torch.softmax(x @ router.T, dim=-1)
    top_weights, top_experts = probabilities.topk(top_k, dim=-1)
    top_weights = top_weights / top_weights.sum(-1, keepdim=True)
    out = torch.zeros_like(x)
    for row in range(x.shape[0]):
        for weight, expert in zip(top_weights[row], top_experts[row].tolist()):
            hidden = torch.nn.functional.silu(gate_exps[expert] @ x[row]) * (up_exps[expert] @ x[row])
            out[row] += weight * (down_exps[expert] @ hidden)
    return out


# ----------------------------------------------------------------------------------------------
# 6. GGUF F32 model exports

def permute_for_adjacent_rope(weight, n_head):
    """Reorders q/k projection rows from half-split RoPE pairs to adjacent pairs (llama.cpp's permute)."""
    rows, columns = weight.shape
    head_dim = rows // n_head
    return weight.reshape(n_head, 2, head_dim // 2, columns).swapaxes(1, 2).reshape(rows, columns)


def gguf_tensor_names(config):
    """Hugging Face parameter name -> GGUF tensor name."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm.weight": "attn_norm.weight",
                 "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
                 "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
                 "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
                 "self_attn.o_proj.weight": "attn_output.weight",
                 "post_attention_layernorm.weight": "ffn_norm.weight",
                 "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                 "mlp.down_proj.weight": "ffn_down.weight"}
    for layer in range(config.num_hidden_layers):
        for hf_name, gguf_name in per_layer.items():
            names[f"model.layers.{layer}.{hf_name}"] = f"blk.{layer}.{gguf_name}"
    return names


def gguf_tensors(model, arch):
    """(GGUF name, float32 numpy array in PyTorch order) for every tensor, q/k permuted for llama."""
    config = model.config
    names = gguf_tensor_names(config)
    tensors = []
    for hf_name, tensor in model.state_dict().items():
        array = tensor.detach().to(torch.float32).numpy().copy()
        gguf_name = names[hf_name]
        if arch == "llama" and gguf_name.endswith("attn_q.weight"):
            array = permute_for_adjacent_rope(array, config.num_attention_heads)
        elif arch == "llama" and gguf_name.endswith("attn_k.weight"):
            array = permute_for_adjacent_rope(array, config.num_key_value_heads)
        tensors.append((gguf_name, np.ascontiguousarray(array, dtype=np.float32)))
    return tensors


def add_model_metadata(writer, config):
    head_dim = config.hidden_size // config.num_attention_heads
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)


def export_gguf(model, arch, path, vocab):
    tensors = gguf_tensors(model, arch)
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_name(f"quill-fixture-{path.name.split('.')[0]}")
    add_model_metadata(writer, model.config)
    add_vocabulary(writer, vocab, "gpt2")
    for name, array in tensors:
        writer.add_tensor(name, array)
    finish_gguf(writer)
    check_model_gguf(path, arch, model, tensors, vocab)
    print("wrote", path.relative_to(ROOT))


def check_model_gguf(path, arch, model, tensors, vocab):
    reader = gguf.GGUFReader(str(path))
    config = model.config
    assert field_value(reader, "general.architecture") == arch
    assert field_value(reader, f"{arch}.block_count") == config.num_hidden_layers
    assert field_value(reader, f"{arch}.attention.head_count_kv") == config.num_key_value_heads
    assert reader.get_field("general.alignment") is None  # default alignment, 32
    check_vocabulary(reader, vocab, "gpt2")
    check_gguf_tensors(reader, tensors)
    q = dict((t.name, t.data) for t in reader.tensors)["blk.0.attn_q.weight"]
    original = model.state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy()
    assert np.array_equal(q, original) == (arch != "llama")
    check_with_transformers_gguf_loader(path, model)


def check_gguf_tensors(reader, tensors):
    """The file holds exactly these (name, PyTorch-order array) tensors, in this order, as F32: dims
    reversed on disk (ggml order), data unchanged, each at a 32-byte aligned offset."""
    assert [tensor.name for tensor in reader.tensors] == [name for name, _ in tensors]
    for tensor, (name, array) in zip(reader.tensors, tensors):
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == list(reversed(array.shape)), tensor.name  # ggml order on disk
        assert tensor.data.shape == array.shape and np.array_equal(tensor.data, array), tensor.name
        assert tensor.data_offset % 32 == 0


def check_with_transformers_gguf_loader(path, model):
    """transformers' own GGUF importer, which undoes llama.cpp's q/k permutation, gives back the weights."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    loaded = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    expected = model.state_dict()
    assert set(loaded) == set(expected), set(loaded) ^ set(expected)
    for name, tensor in expected.items():
        assert torch.equal(torch.as_tensor(loaded[name]), tensor), name


def rope_half_split(x, positions, theta):
    """Hugging Face RoPE (rotate_half) on x of shape (positions, head_dim)."""
    half = x.shape[1] // 2
    angles = positions[:, None] * theta ** (-np.arange(half) * 2.0 / x.shape[1])[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    first, second = x[:, :half], x[:, half:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=1)


def rope_adjacent_pairs(x, positions, theta):
    """llama.cpp's normal RoPE: rotates pairs (2i, 2i+1)."""
    half = x.shape[1] // 2
    angles = positions[:, None] * theta ** (-np.arange(half) * 2.0 / x.shape[1])[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    even, odd = x[:, 0::2], x[:, 1::2]
    out = np.empty_like(x)
    out[:, 0::2] = even * cos - odd * sin
    out[:, 1::2] = odd * cos + even * sin
    return out


def check_permutation():
    """Adjacent-pair RoPE on permuted rows equals half-split RoPE on the originals, permuted."""
    rng = np.random.default_rng(7)
    head_dim, n_head, columns = 16, 4, 8
    weight = rng.normal(size=(head_dim * n_head, columns))
    x = rng.normal(size=(columns, 5))
    positions = np.arange(5, dtype=np.float64)
    for head in range(n_head):
        rows = slice(head * head_dim, (head + 1) * head_dim)
        reference = rope_half_split((weight[rows] @ x).T, positions, 10000.0)
        permuted = permute_for_adjacent_rope(weight, n_head)[rows]
        ours = rope_adjacent_pairs((permuted @ x).T, positions, 10000.0)
        assert np.allclose(permute_for_adjacent_rope(reference.T, 1).T, ours)


# ----------------------------------------------------------------------------------------------
# 7. GGUF F32 exports of the MoE and Mamba models, from their saved model.safetensors

MAMBA_CONTEXT_LENGTH = 256  # Mamba has no context limit; llama.cpp's converter writes an arbitrary value

T = gguf.MODEL_TENSOR  # llama.cpp's tensor kinds; gguf.TENSOR_NAMES gives their names

# Mixtral's three expert weights, stacked over experts into one tensor each:
# (GGUF tensor, name of the per-expert weight in the checkpoint)
MIXTRAL_EXPERT_TENSORS = ((T.FFN_GATE_EXP, "w1"), (T.FFN_UP_EXP, "w3"), (T.FFN_DOWN_EXP, "w2"))

# (GGUF tensor, suffix, checkpoint name under backbone.layers.N.) for each Mamba layer. llama.cpp names
# A and D without a ".weight" suffix: its converter maps mixer.A_log and mixer.D, which have none.
MAMBA_LAYER_TENSORS = (
    (T.ATTN_NORM, ".weight", "norm.weight"),
    (T.SSM_IN, ".weight", "mixer.in_proj.weight"),
    (T.SSM_CONV1D, ".weight", "mixer.conv1d.weight"),
    (T.SSM_CONV1D, ".bias", "mixer.conv1d.bias"),
    (T.SSM_X, ".weight", "mixer.x_proj.weight"),
    (T.SSM_DT, ".weight", "mixer.dt_proj.weight"),
    (T.SSM_DT, ".bias", "mixer.dt_proj.bias"),
    (T.SSM_A, "", "mixer.A_log"),
    (T.SSM_D, "", "mixer.D"),
    (T.SSM_OUT, ".weight", "mixer.out_proj.weight"),
)


def tensor_name(kind, layer=None, suffix=".weight"):
    """A llama.cpp tensor name from gguf's constants: (MODEL_TENSOR.SSM_A, 0, "") -> "blk.0.ssm_a"."""
    return gguf.TENSOR_NAMES[kind].format(bid=layer) + suffix


def arch_enum(arch):
    return next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch)


def check_tensor_names(arch, block_count, sources):
    """Each (GGUF name, checkpoint name) pair is what gguf's TensorNameMap, the table llama.cpp's converter
    renames tensors with, gives for the checkpoint name, and each name is one of the arch's MODEL_TENSORS."""
    name_map = gguf.get_tensor_name_map(arch_enum(arch), block_count)
    known = {gguf.TENSOR_NAMES[kind].format(bid=layer)
             for kind in gguf.MODEL_TENSORS[arch_enum(arch)] for layer in range(block_count)}
    for gguf_name, source in sources:
        assert name_map.get_name(source, try_suffixes=(".weight", ".bias")) == gguf_name, (gguf_name, source)
        assert gguf_name.removesuffix(".weight").removesuffix(".bias") in known, gguf_name


def load_checkpoint(folder):
    from safetensors.torch import load_file
    return load_file(str(folder / "model.safetensors"))


def as_f32_array(tensor):
    return np.ascontiguousarray(tensor.detach().to(torch.float32).numpy(), dtype=np.float32)


def mixtral_gguf_tensors(weights, config):
    """([(GGUF name, array in PyTorch order)], [(GGUF name, checkpoint name)]) for a Mixtral checkpoint.
    The per-expert w1/w3/w2 are stacked over experts (expert index first), as llama.cpp's converter merges
    them; the stacks' checkpoint name is the one it gives the merged tensor (experts.w1.weight, ...)."""
    used = set()

    def take(name):
        assert name not in used, name
        used.add(name)
        return weights[name]

    tensors, sources = [], []

    def add(gguf_name, array, source):
        tensors.append((gguf_name, as_f32_array(array)))
        sources.append((gguf_name, source))

    add(tensor_name(T.TOKEN_EMBD), take("model.embed_tokens.weight"), "model.embed_tokens.weight")
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        moe = prefix + "block_sparse_moe."
        for kind, name in ((T.ATTN_NORM, "input_layernorm.weight"), (T.ATTN_Q, "self_attn.q_proj.weight"),
                           (T.ATTN_K, "self_attn.k_proj.weight"), (T.ATTN_V, "self_attn.v_proj.weight"),
                           (T.ATTN_OUT, "self_attn.o_proj.weight"),
                           (T.FFN_NORM, "post_attention_layernorm.weight"),
                           (T.FFN_GATE_INP, "block_sparse_moe.gate.weight")):
            tensor = take(prefix + name)
            if kind == T.ATTN_Q:
                tensor = permute_for_adjacent_rope(tensor, config.num_attention_heads)
            elif kind == T.ATTN_K:
                tensor = permute_for_adjacent_rope(tensor, config.num_key_value_heads)
            add(tensor_name(kind, layer), tensor, prefix + name)
        for kind, weight in MIXTRAL_EXPERT_TENSORS:
            stacked = torch.stack([take(f"{moe}experts.{expert}.{weight}.weight")
                                   for expert in range(config.num_local_experts)])
            add(tensor_name(kind, layer), stacked, f"{moe}experts.{weight}.weight")
    add(tensor_name(T.OUTPUT_NORM), take("model.norm.weight"), "model.norm.weight")
    add(tensor_name(T.OUTPUT), take("lm_head.weight"), "lm_head.weight")
    assert used == set(weights), set(weights) - used
    return tensors, sources


def export_mixtral_gguf(model, folder, path, vocab):
    config = model.config
    tensors, sources = mixtral_gguf_tensors(load_checkpoint(folder), config)
    check_tensor_names("llama", config.num_hidden_layers, sources)
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name(f"quill-fixture-{folder.name}")
    add_model_metadata(writer, config)
    writer.add_expert_count(config.num_local_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    add_vocabulary(writer, vocab, "gpt2")
    for name, array in tensors:
        writer.add_tensor(name, array)
    finish_gguf(writer)
    check_mixtral_gguf(path, model, tensors, sources, vocab)
    print("wrote", path.relative_to(ROOT))


@torch.no_grad()
def check_mixtral_gguf(path, model, tensors, sources, vocab):
    reader = gguf.GGUFReader(str(path))
    config = model.config
    assert field_value(reader, "general.architecture") == "llama"
    assert field_value(reader, "llama.block_count") == config.num_hidden_layers
    assert field_value(reader, "llama.attention.head_count_kv") == config.num_key_value_heads
    assert field_value(reader, "llama.feed_forward_length") == config.intermediate_size
    assert field_value(reader, "llama.expert_count") == config.num_local_experts == 4
    assert field_value(reader, "llama.expert_used_count") == config.num_experts_per_tok == 2
    check_vocabulary(reader, vocab, "gpt2")
    check_gguf_tensors(reader, tensors)
    read = {tensor.name: torch.from_numpy(np.array(tensor.data)) for tensor in reader.tensors}
    for layer in range(config.num_hidden_layers):
        # The stacked experts and the router, as read back, reproduce the model's MoE block.
        x = torch.randn(7, config.hidden_size, generator=torch.Generator().manual_seed(5 + layer))
        expected = moe_block(x, read[tensor_name(T.FFN_GATE_INP, layer)], read[tensor_name(T.FFN_GATE_EXP, layer)],
                             read[tensor_name(T.FFN_UP_EXP, layer)], read[tensor_name(T.FFN_DOWN_EXP, layer)],
                             config.num_experts_per_tok)
        actual = model.model.layers[layer].mlp(x[None])
        actual = actual[0] if isinstance(actual, tuple) else actual
        assert torch.allclose(actual[0], expected, atol=1e-5), (actual[0] - expected).abs().max()
    check_mixtral_with_transformers(path, model, read, sources)


def check_mixtral_with_transformers(path, model, read, sources):
    """transformers' GGUF importer cannot load this file into a Mixtral model: its name table has no
    "mixtral" model type (load_gguf_checkpoint(model_to_load=<Mixtral>) raises NotImplementedError), and
    it reads arch "llama" as a dense Llama config, mapping no llama.expert_* key. What it can do is
    checked: the config it parses, and its LlamaTensorProcessor undoing the q/k permutation, after which
    every tensor but the stacked experts (checked above through moe_block) equals the model's own."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor, load_gguf_checkpoint
    config = model.config
    parsed = load_gguf_checkpoint(str(path))["config"]
    for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "vocab_size"):
        assert parsed[key] == getattr(config, key), key
    assert parsed["model_type"] == "llama" and parsed["tie_word_embeddings"] is False
    processor = LlamaTensorProcessor(config=parsed)
    state = model.state_dict()
    for gguf_name, source in sources:
        if ".experts." in source:
            continue
        restored = processor.process(weights=read[gguf_name].numpy(), name=gguf_name).weights
        original = state[source.replace(".block_sparse_moe.", ".mlp.")]  # the router is mlp.gate in memory
        assert torch.equal(torch.from_numpy(np.array(restored)), original), gguf_name


def mamba_gguf_tensors(weights, config):
    """([(GGUF name, array in PyTorch order)], [(GGUF name, checkpoint name)]) for a Mamba checkpoint:
    conv1d.weight (inner, 1, kernel) is stored as (inner, kernel), A as -exp(A_log), the rest unchanged.
    The embeddings are tied, so there is no output.weight."""
    used = set()
    tensors, sources = [], []

    def add(gguf_name, source, transform=lambda tensor: tensor):
        assert source not in used, source
        used.add(source)
        tensors.append((gguf_name, as_f32_array(transform(weights[source]))))
        sources.append((gguf_name, source))

    def squeeze_conv(weight):
        assert weight.shape == (config.intermediate_size, 1, config.conv_kernel), weight.shape
        return weight.reshape(config.intermediate_size, config.conv_kernel)

    transforms = {T.SSM_A: lambda a_log: -torch.exp(a_log), T.SSM_CONV1D: squeeze_conv}
    add(tensor_name(T.TOKEN_EMBD), "backbone.embeddings.weight")
    for layer in range(config.num_hidden_layers):
        for kind, suffix, name in MAMBA_LAYER_TENSORS:
            transform = transforms.get(kind) if suffix != ".bias" else None
            add(tensor_name(kind, layer, suffix), f"backbone.layers.{layer}.{name}", transform or (lambda t: t))
    add(tensor_name(T.OUTPUT_NORM), "backbone.norm_f.weight")
    assert used == set(weights), set(weights) - used
    return tensors, sources


def export_mamba_gguf(model, folder, path, vocab):
    config = model.config
    assert config.tie_word_embeddings
    tensors, sources = mamba_gguf_tensors(load_checkpoint(folder), config)
    check_tensor_names("mamba", config.num_hidden_layers, sources)
    writer = gguf.GGUFWriter(str(path), arch="mamba")
    writer.add_name(f"quill-fixture-{folder.name}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(MAMBA_CONTEXT_LENGTH)
    writer.add_embedding_length(config.hidden_size)
    # llama.cpp's converter also writes these two; Mamba has no feed-forward or attention heads.
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_ssm_conv_kernel(config.conv_kernel)
    writer.add_ssm_inner_size(config.intermediate_size)
    writer.add_ssm_state_size(config.state_size)
    writer.add_ssm_time_step_rank(config.time_step_rank)
    writer.add_layer_norm_rms_eps(config.layer_norm_epsilon)
    writer.add_ssm_dt_b_c_rms(False)  # plain Mamba: no RMS norm on dt, B, C (Falcon-Mamba has one)
    add_vocabulary(writer, vocab, "gpt2")
    for name, array in tensors:
        writer.add_tensor(name, array)
    finish_gguf(writer)
    check_mamba_gguf(path, model, tensors, vocab)
    print("wrote", path.relative_to(ROOT))


def check_mamba_gguf(path, model, tensors, vocab):
    reader = gguf.GGUFReader(str(path))
    config = model.config
    expected_fields = {"general.architecture": "mamba", "mamba.context_length": MAMBA_CONTEXT_LENGTH,
                       "mamba.embedding_length": 32, "mamba.block_count": 2, "mamba.ssm.conv_kernel": 4,
                       "mamba.ssm.inner_size": 64, "mamba.ssm.state_size": 8, "mamba.ssm.time_step_rank": 2,
                       "mamba.feed_forward_length": 0, "mamba.attention.head_count": 0,
                       "mamba.ssm.dt_b_c_rms": False}
    for key, value in expected_fields.items():
        assert field_value(reader, key) == value, (key, field_value(reader, key))
    assert (config.hidden_size, config.num_hidden_layers, config.conv_kernel, config.intermediate_size,
            config.state_size, config.time_step_rank) == (32, 2, 4, 64, 8, 2)
    eps = field_value(reader, "mamba.attention.layer_norm_rms_epsilon")
    assert eps == np.float32(config.layer_norm_epsilon) == np.float32(1e-5)
    check_vocabulary(reader, vocab, "gpt2")
    check_gguf_tensors(reader, tensors)
    read = {tensor.name: np.array(tensor.data) for tensor in reader.tensors}
    assert "output.weight" not in read
    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    # A = -exp(A_log) in float32, computed with torch as llama.cpp's converter does; numpy's exp can differ
    # by one ulp (here A_log = log(1..8), and torch gives 7.0000005 where numpy gives 7, 5.0000005 for 5).
    a_log = state["backbone.layers.0.mixer.A_log"]
    assert np.array_equal(read["blk.0.ssm_a"], (-torch.exp(torch.from_numpy(a_log))).numpy())
    assert np.allclose(read["blk.0.ssm_a"], -np.exp(a_log), rtol=1e-6, atol=0) and (read["blk.0.ssm_a"] < 0).all()
    assert np.array_equal(read["blk.1.ssm_conv1d.weight"], state["backbone.layers.1.mixer.conv1d.weight"][:, 0, :])
    assert np.array_equal(read["blk.1.ssm_d"], state["backbone.layers.1.mixer.D"])
    check_mamba_with_transformers(path, model)


def check_mamba_with_transformers(path, model):
    """transformers' GGUF importer (arch "mamba") gives back every weight: exactly, except A_log, which
    it recovers as log(-ssm_a) = log(exp(A_log)), within float32 rounding. lm_head is tied, so absent."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
    config = model.config
    for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "state_size", "conv_kernel",
                "time_step_rank", "vocab_size"):
        assert parsed["config"][key] == getattr(config, key), key
    assert parsed["config"]["model_type"] == "mamba" and parsed["config"]["tie_word_embeddings"] is True
    loaded = parsed["tensors"]
    expected = {name: tensor for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    assert set(loaded) == set(expected), set(loaded) ^ set(expected)
    for name, tensor in expected.items():
        actual = torch.as_tensor(loaded[name])
        assert actual.shape == tensor.shape, name
        if name.endswith("A_log"):
            assert torch.allclose(actual, tensor, rtol=0, atol=1e-6), (actual - tensor).abs().max()
        else:
            assert torch.equal(actual, tensor), name


# ----------------------------------------------------------------------------------------------

def main():
    transformers.utils.logging.disable_progress_bar()
    shutil.rmtree(TOKENIZERS_DIR, ignore_errors=True)
    shutil.rmtree(MODELS_DIR, ignore_errors=True)
    TOKENIZERS_DIR.mkdir(parents=True)
    MODELS_DIR.mkdir(parents=True)

    texts = read_corpus()
    check_corpus_sentences(texts)

    byte_level_dir = TOKENIZERS_DIR / "byte-level"
    sentencepiece_dir = TOKENIZERS_DIR / "sentencepiece"
    byte_level = train_byte_level(texts)
    save_tokenizer(byte_level, byte_level_dir, byte_level_config())
    sentencepiece = train_sentencepiece(texts)
    save_tokenizer(sentencepiece, sentencepiece_dir, sentencepiece_config())

    named = {"byte-level": (byte_level, load_with_transformers(byte_level_dir)),
             "sentencepiece": (sentencepiece, load_with_transformers(sentencepiece_dir))}
    write_json(TOKENIZERS_DIR / "cases.json", make_cases(named))
    print("wrote", (TOKENIZERS_DIR / "cases.json").relative_to(ROOT))

    write_vocabulary_gguf(byte_level_dir, TOKENIZERS_DIR / "byte-level.gguf", "gpt2")
    write_vocabulary_gguf(sentencepiece_dir, TOKENIZERS_DIR / "sentencepiece.gguf", "llama")
    print("wrote", TOKENIZERS_DIR.relative_to(ROOT), "GGUF vocabularies")

    built = make_models(byte_level, byte_level_dir)

    check_permutation()
    vocab = vocabulary(byte_level_dir)
    export_gguf(built["llama-gqa"], "llama", MODELS_DIR / "llama-gqa.f32.gguf", vocab)
    export_gguf(built["qwen2-bias"], "qwen2", MODELS_DIR / "qwen2-bias.f32.gguf", vocab)
    export_mixtral_gguf(built["mixtral-moe"], MODELS_DIR / "mixtral-moe", MODELS_DIR / "mixtral-moe.f32.gguf", vocab)
    export_mamba_gguf(built["mamba"], MODELS_DIR / "mamba", MODELS_DIR / "mamba.f32.gguf", vocab)


if __name__ == "__main__":
    main()
