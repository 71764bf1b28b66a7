// Decoding: samplers, stop conditions, speculative decoding, the request scheduler and the
// async Generator, the API most programs use. Importing it brings every lower layer with
// it. Its contents arrive with the Generator issue.
@_exported import Models
