// The umbrella module: `import Quill` brings in the whole public API, every layer from
// Decoding down to TensorCore.
@_exported import Decoding
