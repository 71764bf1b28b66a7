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
    /// on ties — the order Hugging Face's priority queue produces. Short words use a plain
    /// scan; long ones (a 10,000-character run of punctuation, a whole text for GGUF's
    /// SentencePiece) a heap, so the cost stays O(n log n).
    func encode(_ symbols: inout [Int32]) {
        if symbols.count <= 16 { scanMerge(&symbols) } else { heapMerge(&symbols) }
    }

    func scanMerge(_ symbols: inout [Int32]) {
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

    /// A candidate merge of the symbol at `left` with its right neighbour `right`.
    private struct Candidate: Comparable {
        let rank: Int32
        let left: Int32
        let right: Int32
        static func < (a: Candidate, b: Candidate) -> Bool { a.rank != b.rank ? a.rank < b.rank : a.left < b.left }
    }

    func heapMerge(_ symbols: inout [Int32]) {
        let n = symbols.count
        var next = (0..<n).map { Int32($0 + 1) }  // n means none
        var previous = (0..<n).map { Int32($0 - 1) }
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap<Candidate>()
        func push(_ left: Int32) {
            guard left >= 0 else { return }
            let right = next[Int(left)]
            guard right < n, let merge = merges[Self.key(symbols[Int(left)], symbols[Int(right)])] else { return }
            heap.push(Candidate(rank: merge.rank, left: left, right: right))
        }
        for i in 0..<(n - 1) { push(Int32(i)) }
        while let candidate = heap.pop() {
            let left = Int(candidate.left), right = Int(candidate.right)
            // Stale: a side was merged away, or its id changed since the candidate was made.
            guard alive[left], alive[right], next[left] == candidate.right,
                  let merge = merges[Self.key(symbols[left], symbols[right])], merge.rank == candidate.rank else { continue }
            symbols[left] = merge.result
            alive[right] = false
            next[left] = next[right]
            if next[right] < n { previous[Int(next[right])] = Int32(left) }
            push(previous[left])
            push(Int32(left))
        }
        var output: [Int32] = []
        output.reserveCapacity(n)
        var i = 0
        while i < n { output.append(symbols[i]); i = Int(next[i]) }
        symbols = output
    }
}

/// A binary min-heap.
struct MinHeap<Element: Comparable> {
    private var items: [Element] = []

    mutating func push(_ item: Element) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count, items[left] < items[smallest] { smallest = left }
            if right < items.count, items[right] < items[smallest] { smallest = right }
            guard smallest != parent else { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
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
