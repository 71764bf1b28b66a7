// The umbrella module: `import Quill` brings in the whole public API.
@_exported import TensorCore
