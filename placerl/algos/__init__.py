"""Algorithm math (pure tensors) and one module per algorithm."""
