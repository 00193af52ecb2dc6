"""Tokenizers built from GGUF metadata, matching llama.cpp token for token (see ``base``)."""
from .base import PRE_TOKENIZERS, BPETokenizer, PreTokenizer, SPMTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "Tokenizer",
    "BPETokenizer",
    "SPMTokenizer",
    "PreTokenizer",
    "PRE_TOKENIZERS",
    "load_tokenizer",
]
