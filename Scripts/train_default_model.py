#!/usr/bin/env python3
"""Trains Quill's bundled default model and its draft model (run by hand; not part of CI).

    pip install torch transformers safetensors tokenizers
    python3 Scripts/train_default_model.py            # about an hour on one Zen 3 core

The committed target was trained with the defaults (700 steps), then continued with
`ONLY=target RESUME=1 TARGET_STEPS=600 TARGET_LR=1e-3 THREADS=2`; the draft with
`ONLY=draft DRAFT_STEPS=1500 THREADS=2`. Each run writes its figures to training.json.

Corpus: the license texts Debian ships in /usr/share/common-licenses (every distinct file,
symlinks resolved and duplicates dropped, sorted by name; about 263 KB of ASCII English).
Each is free to redistribute verbatim, which is all a model trained to recite them does.

Tokenizer: byte-level BPE (GPT-2/Qwen style) trained with Hugging Face `tokenizers`,
VOCAB_SIZE entries, specials <|endoftext|>, <|im_start|>, <|im_end|>, and a ChatML chat
template in tokenizer_config.json.

Data: the corpus files joined with <|endoftext|>, plus CHAT_FRACTION of training windows drawn
from ChatML conversations made from the corpus (the user quotes the first words of a
paragraph, the assistant answers with the paragraph), so `quill chat` answers with license text.

Models (LlamaForCausalLM, tied embeddings, saved in F16 with transformers' own writer):
  Examples/Models/quill-license     8 layers, hidden 256, 8 heads / 4 KV heads, MLP 768
  Examples/Models/quill-license-draft   2 layers, hidden 128, 4 heads / 2 KV heads, MLP 384
The losses reached are written to each folder's training.json and quoted in the README.
"""
import json, math, os, random, time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Examples" / "Models"
VOCAB_SIZE = 2048
CONTEXT = 512
WINDOW = 256
CHAT_FRACTION = 0.25
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
random.seed(0)
torch.manual_seed(0)


def corpus():
    seen, texts = set(), []
    for path in sorted(Path("/usr/share/common-licenses").iterdir()):
        real = path.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        texts.append(real.read_text(encoding="utf-8"))
    return texts


def conversations(texts):
    chats = []
    for text in texts:
        for paragraph in text.split("\n\n"):
            words = paragraph.split()
            if len(words) < 12:
                continue
            body = " ".join(words)
            chats.append([{"role": "user", "content": " ".join(words[:6])},
                          {"role": "assistant", "content": body}])
    return chats


def render(messages):
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def batches(stream, chat_stream, batch):
    while True:
        rows = []
        for _ in range(batch):
            source = chat_stream if random.random() < CHAT_FRACTION else stream
            start = random.randrange(0, len(source) - WINDOW)
            rows.append(source[start:start + WINDOW])
        yield torch.tensor(rows)


def train(name, shape, steps, batch, lr, tokenizer, stream, chat_stream):
    ids = tokenizer.convert_tokens_to_ids(SPECIALS)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=CONTEXT,
                         tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-5,
                         bos_token_id=ids[0], eos_token_id=[ids[2], ids[0]], **shape)
    # RESUME=1 continues from the weights already saved in the model's folder (a second,
    # shorter schedule on top of the first), e.g. to train a model further.
    resume = OUT / name
    if os.environ.get("RESUME") == "1" and (resume / "model.safetensors").exists():
        model = LlamaForCausalLM.from_pretrained(resume, dtype=torch.float32)
    else:
        model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    started, losses, data = time.time(), [], batches(stream, chat_stream, batch)
    model.train()
    for step in range(steps):
        rows = next(data)
        loss = model(input_ids=rows, labels=rows).loss  # transformers shifts the labels
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == steps - 1:
            print(f"{name} step {step}/{steps} loss {loss.item():.3f} "
                  f"({time.time() - started:.0f}s)", flush=True)
    model.eval()
    with torch.no_grad():  # one pass over the plain corpus, for the README's final loss
        windows = [stream[i:i + WINDOW] for i in range(0, len(stream) - WINDOW, WINDOW)]
        total = sum(model(input_ids=torch.tensor([w]), labels=torch.tensor([w])).loss.item()
                    for w in windows)
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(folder, safe_serialization=True)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    summary = {"parameters": params, "steps": steps, "batch": batch, "window": WINDOW,
               "learning_rate": lr, "final_train_loss_mean_last_25": sum(losses[-25:]) / 25,
               "corpus_loss": total / len(windows), "seconds": round(time.time() - started),
               "threads": torch.get_num_threads()}
    (folder / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(name, summary, flush=True)
    return model


def main():
    texts = corpus()
    tokenizer = train_tokenizer(texts)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    stream = []
    for text in texts:
        stream += tokenizer.encode(text) + [eot]
    chats = conversations(texts)
    chat_stream = []
    for chat in chats:
        chat_stream += tokenizer.encode(render(chat)) + [eot]
    print(f"corpus {sum(map(len, texts))} chars, {len(stream)} tokens, {len(chats)} chats", flush=True)
    only = os.environ.get("ONLY")
    if only in (None, "draft"):
        train("quill-license-draft", dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2),
              steps=int(os.environ.get("DRAFT_STEPS", "400")), batch=16, lr=3e-3,
              tokenizer=tokenizer, stream=stream, chat_stream=chat_stream)
    if only in (None, "target"):
        train("quill-license", dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8,
                                    num_attention_heads=8, num_key_value_heads=4),
              steps=int(os.environ.get("TARGET_STEPS", "700")), batch=16, lr=float(os.environ.get("TARGET_LR", "2e-3")),
              tokenizer=tokenizer, stream=stream, chat_stream=chat_stream)


if __name__ == "__main__":
    main()
