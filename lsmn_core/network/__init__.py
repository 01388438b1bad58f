"""The multitask network: the model, the blocks of its body, their layers and the masked kernels."""
