#!/usr/bin/env python3
"""Plots decode tokens/s against context length from context-bench's JSON.

    swift run --package-path Benchmarks -c release context-bench --json Benchmarks/results/context.json
    python3 Scripts/plot_context.py Benchmarks/results/context.json Documentation/decode-vs-context.png

Needs matplotlib (pip install matplotlib); run by hand, not part of CI.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {"dense": "Llama 1.1B", "moe": "MoE 8 experts, top-2", "mamba": "Mamba 130M"}


def main(source, target):
    runs = json.load(open(source))
    figure, axes = plt.subplots(figsize=(7, 4), dpi=120)
    for run in runs:
        points = run["points"]
        label = f"{NAMES.get(run['family'], run['family'])} ({run['type']})"
        axes.plot([p["depth"] for p in points], [p["tokens_per_second"] for p in points], marker="o", label=label)
    threads = runs[0]["threads"] if runs else 0
    axes.set_xlabel("context length (tokens already in the sequence)")
    axes.set_ylabel("decode tokens/s (median step)")
    axes.set_title(f"Quill decode speed vs context, {threads} threads, AMD EPYC Zen 3")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(target)
    print("wrote", target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
