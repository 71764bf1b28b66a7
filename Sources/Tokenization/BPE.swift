import Foundation

/// Byte-pair encoding over token ids: the merge table and the merge loop shared by
/// tokenizer.json models and GGUF vocabularies.
struct BytePairEncoder: Sendable {
    /// (left id, right id) packed as left << 32 | right → (rank, merged id). Lower ranks merge first.
    let merges: [UInt64: Merge]

    struct Merge: Sendable {
        let rank: Int32
        let result: Int32
    }

    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b)) }

    /// Merges `symbols` in place: repeatedly the adjacent pair of lowest rank, the leftmost
    /// on ties — the order Hugging Face's priority queue produces.
    func encode(_ symbols: inout [Int32]) {
        while symbols.count > 1 {
            var best = Int32.max, position = -1, result: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                if let merge = merges[Self.key(symbols[i], symbols[i + 1])], merge.rank < best {
                    best = merge.rank
                    position = i
                    result = merge.result
                }
            }
            guard position >= 0 else { return }
            symbols[position] = result
            symbols.remove(at: position + 1)
        }
    }
}

/// A BPE model: the vocabulary, merges, and how characters missing from the vocabulary
/// are handled. Words arrive already in the vocabulary's alphabet (byte-level words
/// mapped to GPT-2's byte characters, SentencePiece words with ▁ for spaces).
struct BPEModel: Sendable {
    let vocabulary: [String: Int32]
    let encoder: BytePairEncoder
    /// Ids of single-scalar tokens, so a word's first symbols need no String allocation.
    let scalarIDs: [UInt32: Int32]
    /// Characters missing from the vocabulary become their UTF-8 bytes as `<0xXX>` tokens.
    let byteFallback: Bool
    /// The id of `<unk>` (nil: unknown characters are dropped, as Hugging Face does without one).
    let unknownID: Int32?
    /// Consecutive unknown characters become one `<unk>`.
    let fuseUnknown: Bool
    /// A word that is itself in the vocabulary is emitted whole (Llama 3's ignore_merges).
    let ignoreMerges: Bool
    /// `<0xXX>` ids by byte value (-1 where absent).
    let byteIDs: [Int32]

    init(vocabulary: [String: Int32], encoder: BytePairEncoder, byteFallback: Bool, unknownID: Int32?,
         fuseUnknown: Bool, ignoreMerges: Bool) {
        self.vocabulary = vocabulary
        self.encoder = encoder
        self.byteFallback = byteFallback
        self.unknownID = unknownID
        self.fuseUnknown = fuseUnknown
        self.ignoreMerges = ignoreMerges
        var scalars: [UInt32: Int32] = [:]
        for (token, id) in vocabulary {
            let view = token.unicodeScalars
            if view.count == 1 { scalars[view.first!.value] = id }
        }
        scalarIDs = scalars
        byteIDs = (0..<256).map { byte in vocabulary[String(format: "<0x%02X>", byte)] ?? -1 }
    }

    /// Appends the ids of one pre-tokenized word.
    func encode(word: Substring.UnicodeScalarView, into output: inout [Int], symbols: inout [Int32]) {
        if ignoreMerges, let id = vocabulary[String(word)] {
            output.append(Int(id))
            return
        }
        symbols.removeAll(keepingCapacity: true)
        var previousUnknown = false
        for scalar in word {
            if let id = scalarIDs[scalar.value] {
                symbols.append(id)
                previousUnknown = false
                continue
            }
            if byteFallback {
                var utf8: [UInt8] = []
                utf8.reserveCapacity(4)
                UTF8.encode(scalar) { utf8.append($0) }
                if utf8.allSatisfy({ byteIDs[Int($0)] >= 0 }) {
                    for byte in utf8 { symbols.append(byteIDs[Int(byte)]) }
                    previousUnknown = false
                    continue
                }
            }
            if let unknownID {
                if !(fuseUnknown && previousUnknown) { symbols.append(unknownID) }
                previousUnknown = true
            }
        }
        encoder.encode(&symbols)
        for id in symbols { output.append(Int(id)) }
    }
}
