// Models: the architectures (dense Llama family, Mixtral-style mixture of experts, Mamba)
// and the model-file readers, turning weights into logits. Importing it brings Attention,
// TensorCore and Tokenization with it.
@_exported import Attention
@_exported import Tokenization
