#!/usr/bin/env python3
"""The Hugging Face side of the tokenizer speed benchmark (run by files-bench, or by hand).

Builds a corpus from the copyright and license texts Debian ships (/usr/share/doc/*/copyright,
/usr/share/common-licenses), trains a 16K-vocabulary byte-level BPE and a 16K SentencePiece-
style BPE on it with `tokenizers` (once; cached in the output folder), and times
`Tokenizer.encode` of the whole corpus on one thread. Writes <out>/hf.json with the
throughput and the ids, which the Swift benchmark compares with its own.

    python3 Benchmarks/tokenizer_speed.py /tmp/quill-tokenizer-bench
"""
import glob
import json
import os
import pathlib
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/quill-tokenizer-bench")
out.mkdir(parents=True, exist_ok=True)
corpus_path = out / "corpus.txt"
if not corpus_path.exists():
    files = sorted(glob.glob("/usr/share/doc/*/copyright")) + sorted(glob.glob("/usr/share/common-licenses/*"))
    texts = []
    for name in files:
        try:
            texts.append(pathlib.Path(name).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, IsADirectoryError, OSError):
            pass
    corpus_path.write_text("\n".join(texts))
corpus = corpus_path.read_text()


def train(kind):
    folder = out / kind
    if (folder / "tokenizer.json").exists():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    folder.mkdir(exist_ok=True)
    if kind == "byte-level":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=16000, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1, right=0)])
        trainer = trainers.BpeTrainer(vocab_size=16000, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])
    tok.train_from_iterator(corpus.splitlines(), trainer)
    tok.save(str(folder / "tokenizer.json"))
    return tok


result = {"corpus_bytes": len(corpus.encode()), "tokenizers": {}}
for kind in ["byte-level", "sentencepiece"]:
    tok = train(kind)
    tok.encode(corpus[:10000])  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        encoding = tok.encode(corpus, add_special_tokens=False)
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[2]
    lines = corpus.split("\n")
    batch_times = []
    for _ in range(3):
        start = time.perf_counter()
        tok.encode_batch(lines, add_special_tokens=False)  # one Rayon thread: no Python loop overhead
        batch_times.append(time.perf_counter() - start)
    lines_seconds = sorted(batch_times)[1]
    result["tokenizers"][kind] = {"seconds": seconds, "mb_per_s": len(corpus.encode()) / seconds / 1e6,
                                  "lines_mb_per_s": len(corpus.encode()) / lines_seconds / 1e6, "ids": encoding.ids}
    print(f"Hugging Face tokenizers {kind}: {len(encoding.ids)} tokens, whole text {len(corpus.encode()) / seconds / 1e6:.2f} MB/s, "
          f"line by line {len(corpus.encode()) / lines_seconds / 1e6:.2f} MB/s")
(out / "hf.json").write_text(json.dumps(result))
