// Attention: flash-style tiled attention (online softmax), GQA/MQA and the paged KV cache
// with prefix sharing. It sits on TensorCore and under Models; importing it brings
// TensorCore's tensors and kernels with it. Its kernels arrive with the Attention issue.
@_exported import TensorCore
