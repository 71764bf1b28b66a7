import CQuillKernels
import Foundation

/// Which dimensions RoPE rotates together.
public enum RopeLayout: Int32, Sendable {
    /// Dimension i pairs with i + d/2 (Hugging Face's `rotate_half`; GGUF "NEOX" models).
    case halfSplit = 0
    /// Dimensions 2i and 2i+1 pair (Meta's original weights; GGUF arch `llama`).
    case adjacentPairs = 1
}

/// RoPE frequency scaling, as transformers' `rope_type`.
public enum RopeScaling: Sendable, Equatable {
    case none
    /// Divides every frequency by `factor`.
    case linear(factor: Float)
    /// NTK-aware: raises the base once the sequence passes `maxPositionEmbeddings`.
    case dynamic(factor: Float, maxPositionEmbeddings: Int)
    /// Llama 3.1: interpolates by wavelength between the original and the scaled frequency.
    case llama3(factor: Float, lowFrequencyFactor: Float, highFrequencyFactor: Float, originalMaxPositionEmbeddings: Int)
    /// YaRN: ramps between extrapolation and interpolation and scales cos/sin.
    /// `attentionFactor` nil means 0.1·ln(factor)+1 (or the mscale ratio when both are set).
    case yarn(factor: Float, originalMaxPositionEmbeddings: Int, betaFast: Float = 32, betaSlow: Float = 1,
              attentionFactor: Float? = nil, mscale: Float? = nil, mscaleAllDim: Float? = nil, truncate: Bool = true)
}

/// Rotary position embedding for one model: the inverse frequencies (computed with the
/// same float32 steps as transformers) and the rotation of query/key heads in place.
public struct RotaryEmbedding: Sendable {
    /// Number of rotated dimensions per head (head_dim × partial_rotary_factor).
    public let dimension: Int
    /// RoPE base frequency (`rope_theta`).
    public let base: Float
    /// Frequency scaling (`rope_type` and its parameters).
    public let scaling: RopeScaling
    /// Which dimensions rotate together.
    public let layout: RopeLayout
    /// inv_freq[i], i < dimension/2, for sequences within the original context.
    public let inverseFrequencies: [Float]
    /// Multiplier applied to cos and sin (YaRN's attention factor; 1 otherwise).
    public let attentionScaling: Float

    /// Computes inverse frequencies; throws for an odd or < 2 `dimension`, a non-finite or ≤ 1 `base`, or bad scaling.
    public init(dimension: Int, base: Float, scaling: RopeScaling = .none, layout: RopeLayout = .halfSplit) throws {
        guard dimension >= 2, dimension % 2 == 0 else {
            throw TensorError.invalidArgument(operation: "RotaryEmbedding", detail: "rotary dimension \(dimension) must be even and ≥ 2")
        }
        guard base > 1, base.isFinite else {
            throw TensorError.invalidArgument(operation: "RotaryEmbedding", detail: "rope_theta \(base) must be finite and > 1")
        }
        self.dimension = dimension
        self.base = base
        self.scaling = scaling
        self.layout = layout
        let (frequencies, attention) = try Self.frequencies(dimension: dimension, base: base, scaling: scaling)
        self.inverseFrequencies = frequencies
        self.attentionScaling = attention
    }

    /// base^(2i/d) as transformers forms it: a float32 exponent, a float32 power.
    static func positionFrequencies(dimension: Int, base: Float) -> [Float] {
        (0..<dimension / 2).map { i in
            let exponent = Float(2 * i) / Float(dimension)
            return Float(pow(Double(base), Double(exponent)))
        }
    }

    /// inv_freq = 1 / base^(2i/d), rounded twice (power, then reciprocal) exactly as
    /// transformers computes it in float32: rounding once from double differs by an ulp
    /// for a third of the frequencies, which shifts the angle by up to 2e-4 rad at
    /// position 2000.
    static func defaultFrequencies(dimension: Int, base: Float) -> [Float] {
        positionFrequencies(dimension: dimension, base: base).map { 1 / $0 }
    }

    static func frequencies(dimension d: Int, base: Float, scaling: RopeScaling) throws -> ([Float], Float) {
        let plain = defaultFrequencies(dimension: d, base: base)
        switch scaling {
        case .none, .dynamic:
            return (plain, 1)
        case let .linear(factor):
            guard factor > 0 else { throw TensorError.invalidArgument(operation: "rope linear", detail: "factor \(factor) must be > 0") }
            return (plain.map { $0 / factor }, 1)
        case let .llama3(factor, low, high, original):
            guard factor > 0, low > 0, high > low, original > 0 else {
                throw TensorError.invalidArgument(operation: "rope llama3", detail: "needs factor > 0 and high_freq_factor > low_freq_factor > 0")
            }
            let lowWavelength = Float(original) / low, highWavelength = Float(original) / high
            let frequencies = plain.map { frequency -> Float in
                // Float(2π) rounded to nearest, as torch forms it; Swift's Float.pi rounds
                // toward zero and shifts the smoothed band by an ulp.
                let wavelength = Float(2 * Double.pi) / frequency
                let scaled = wavelength > lowWavelength ? frequency / factor : frequency
                guard wavelength >= highWavelength, wavelength <= lowWavelength else { return scaled }
                let smooth = (Float(original) / wavelength - low) / (high - low)
                return (1 - smooth) * scaled / factor + smooth * scaled
            }
            return (frequencies, 1)
        case let .yarn(factor, original, betaFast, betaSlow, attentionFactor, mscale, mscaleAllDim, truncate):
            guard factor > 0, original > 0 else {
                throw TensorError.invalidArgument(operation: "rope yarn", detail: "needs factor > 0 and original_max_position_embeddings > 0")
            }
            func mscaleOf(_ scale: Double, _ m: Double = 1) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
            let attention: Float
            if let attentionFactor {
                attention = attentionFactor
            } else if let mscale, let mscaleAllDim, mscale != 0, mscaleAllDim != 0 {
                attention = Float(mscaleOf(Double(factor), Double(mscale)) / mscaleOf(Double(factor), Double(mscaleAllDim)))
            } else {
                attention = Float(mscaleOf(Double(factor)))
            }
            func correctionDimension(_ rotations: Double) -> Double {
                Double(d) * log(Double(original) / (rotations * 2 * Double.pi)) / (2 * log(Double(base)))
            }
            var low = correctionDimension(Double(betaFast)), high = correctionDimension(Double(betaSlow))
            if truncate { low = floor(low); high = ceil(high) }
            low = max(low, 0)
            high = min(high, Double(d - 1))
            if low == high { high += 0.001 }
            let positionFrequencies = positionFrequencies(dimension: d, base: base)
            let frequencies = plain.indices.map { i -> Float in
                let extrapolation = plain[i]
                let interpolation = 1 / (factor * positionFrequencies[i])
                let ramp = min(max((Float(i) - Float(low)) / Float(high - low), 0), 1)
                let extrapolationFactor = 1 - ramp
                return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
            }
            return (frequencies, attention)
        }
    }

    /// The inverse frequencies for a forward pass whose largest position is
    /// `sequenceLength - 1`; differs from `inverseFrequencies` only for dynamic scaling
    /// beyond the original context, as in transformers' `dynamic_rope_update`.
    public func inverseFrequencies(sequenceLength: Int) -> [Float] {
        guard case let .dynamic(factor, maxPositions) = scaling, sequenceLength > maxPositions else {
            return inverseFrequencies
        }
        let ratio = factor * Float(sequenceLength) / Float(maxPositions) - (factor - 1)
        let scaledBase = base * powf(ratio, Float(dimension) / Float(dimension - 2))
        return (0..<dimension / 2).map { i in 1 / powf(scaledBase, Float(2 * i) / Float(dimension)) }
    }

    /// Writes cos and sin of `position` × each inverse frequency (× the attention scaling)
    /// into tables of `dimension / 2` floats.
    public func fillTables(position: Int, frequencies: [Float], cos cosTable: UnsafeMutablePointer<Float>,
                           sin sinTable: UnsafeMutablePointer<Float>) {
        let p = Float(position)
        for i in 0..<min(frequencies.count, dimension / 2) {
            let angle = Double(p * frequencies[i])  // the float32 product transformers forms
            cosTable[i] = Float(Foundation.cos(angle)) * attentionScaling
            sinTable[i] = Float(Foundation.sin(angle)) * attentionScaling
        }
    }

    /// Rotates `heads` vectors of `headDimension` floats, stored back to back at `vectors`,
    /// using tables filled by `fillTables`.
    public func apply(to vectors: UnsafeMutablePointer<Float>, heads: Int, headDimension: Int,
                      cos cosTable: UnsafePointer<Float>, sin sinTable: UnsafePointer<Float>) throws {
        guard heads >= 0, headDimension >= dimension else {
            throw TensorError.shapeMismatch(operation: "rope", detail: "head dimension \(headDimension) < rotary dimension \(dimension)")
        }
        quill_rope(vectors, Int64(heads), Int64(headDimension), Int64(dimension), cosTable, sinTable, layout.rawValue)
    }
}
