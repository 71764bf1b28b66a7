#!/usr/bin/env bash
# Fuzzes Quill's parsers with libFuzzer (Fuzz/ package, ASan + libFuzzer instrumentation).
#   Scripts/fuzz.sh [seconds per target] [target ...]     (default: 600 s; all targets)
# Seeds come from the committed fixtures; crashing inputs are written to
# Tests/FuzzRegressions/<target>/, where the regression tests replay them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(safetensors gguf tokenizer encode config chattemplate)

log=$(mktemp)
if ! swift build -c release --package-path Fuzz --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library >"$log" 2>&1; then
    cat "$log" >&2
    echo "fuzz build failed (a stale .build-fuzz after moved sources: remove it and retry)" >&2
    exit 1
fi

seeds() {
    case "$1" in
        safetensors) find Tests/TensorCoreTests/Fixtures/safetensors Tests/Fixtures/models/llama-gqa -name '*.safetensors' ;;
        gguf) find Tests/TensorCoreTests/Fixtures/gguf Tests/Fixtures -name '*.gguf' ;;
        tokenizer) find Tests/Fixtures/tokenizers -name 'tokenizer.json' ;;
        encode) python3 -c "import json,sys,pathlib; [pathlib.Path(sys.argv[1], f'case{i}').write_text(c['text']) for i, c in enumerate(json.load(open('Tests/Fixtures/tokenizers/cases.json'))['byte-level'])]" "$corpus"; return ;;
        config) find Tests/ModelsTests/Fixtures/configs Tests/Fixtures/models -name 'config.json' -o -name 'v*.json' ;;
        chattemplate) python3 -c "import json,sys,pathlib; [pathlib.Path(sys.argv[1], name).write_text(t) for name, t in json.load(open('Tests/DecodingTests/Fixtures/chat_templates.json'))['templates'].items()]" "$corpus"; return ;;
    esac
}

for target in "${targets[@]}"; do
    corpus=$(mktemp -d)
    seeds "$target" | while read -r file; do cp "$file" "$corpus/"; done
    maximum=65536
    [ "$target" = encode ] && maximum=4096
    artifacts="Tests/FuzzRegressions/$target"
    mkdir -p "$artifacts"
    echo "fuzzing $target for $seconds s"
    .build-fuzz/release/fuzz-"$target" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$maximum" -artifact_prefix="$artifacts/" -print_final_stats=1 2>&1 | grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|ERROR|SUMMARY|Done" || true
    rm -rf "$corpus"
done
