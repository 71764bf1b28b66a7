// Tokenization: tokenizer.json BPE (byte-level and SentencePiece-style) and GGUF
// vocabularies, with a streaming detokenizer that only emits complete UTF-8. It depends
// on nothing but the standard library; its contents arrive with the model-files issue.
