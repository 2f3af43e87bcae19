"""Models: tokenizer and tiny-model factory, Hugging Face loading, value and reward heads."""
