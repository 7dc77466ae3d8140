"""Tokenizers: one interface; o200k_harmony (offline) and Hugging Face tokenizer.json."""
