#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An owned, 64-byte aligned matrix of float32 activations: `rows` × `columns`, row-major.
/// Models allocate these once and reuse them for every token.
public final class FloatBuffer {
    /// Number of rows.
    public let rows: Int
    /// Elements per row.
    public let columns: Int
    /// The first element; valid for the buffer's lifetime.
    public let pointer: UnsafeMutablePointer<Float>

    /// Allocates a zeroed `rows` × `columns` buffer.
    public init(rows: Int, columns: Int) throws {
        guard rows >= 0, columns >= 0 else {
            throw TensorError.invalidShape(operation: "FloatBuffer", detail: "\(rows) × \(columns)")
        }
        let (count, overflow) = rows.multipliedReportingOverflow(by: columns)
        guard !overflow, count <= Int.max / 8 else {
            throw TensorError.invalidShape(operation: "FloatBuffer", detail: "\(rows) × \(columns) overflows")
        }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, max(count * 4, 64)) == 0, let raw else {
            throw TensorError.invalidArgument(operation: "FloatBuffer", detail: "cannot allocate \(rows) × \(columns) floats")
        }
        memset(raw, 0, max(count * 4, 64))
        self.rows = rows
        self.columns = columns
        self.pointer = raw.bindMemory(to: Float.self, capacity: max(count, 16))
    }

    /// Copies `values` (rows × columns, row-major) into a new buffer.
    public convenience init(rows: Int, columns: Int, values: [Float]) throws {
        try self.init(rows: rows, columns: columns)
        guard values.count == rows * columns else {
            throw TensorError.shapeMismatch(operation: "FloatBuffer", detail: "\(values.count) values for \(rows) × \(columns)")
        }
        guard !values.isEmpty else { return }
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { free(pointer) }

    /// Number of elements.
    public var count: Int { rows * columns }

    /// The start of row `row` (0 ≤ row < rows; checked).
    public func row(_ row: Int) -> UnsafeMutablePointer<Float> {
        precondition(row >= 0 && row < rows, "row \(row) outside 0..<\(rows)")
        return pointer + row * columns
    }

    /// Element access (checked).
    public subscript(row: Int, column: Int) -> Float {
        get {
            precondition(column >= 0 && column < columns, "column \(column) outside 0..<\(columns)")
            return self.row(row)[column]
        }
        set {
            precondition(column >= 0 && column < columns, "column \(column) outside 0..<\(columns)")
            self.row(row)[column] = newValue
        }
    }

    /// The first `rows` rows as an array (all rows by default).
    public func values(rows count: Int? = nil) -> [Float] {
        let n = min(count ?? rows, rows) * columns
        return Array(UnsafeBufferPointer(start: pointer, count: n))
    }

    /// Row `row` as an array.
    public func values(ofRow row: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: self.row(row), count: columns))
    }
}
