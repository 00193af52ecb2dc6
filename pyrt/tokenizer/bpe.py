"""Byte-level BPE (``tokenizer.ggml.model = gpt2``).

``BPETokenizer``: a pre-tokenizer chosen by ``tokenizer.ggml.pre`` (see ``pretokenize``), GPT-2's
byte->unicode mapping, and merges applied lowest rank first (ties: leftmost first), with an LRU
cache of word -> ids.
"""
from __future__ import annotations

import functools
import heapq
import warnings
from typing import Any, Mapping

from .base import Tokenizer
from .pretokenize import _CATEGORY_MARKERS, _NONASCII_WS_TO_VT, PRE_TOKENIZERS

# ----------------------------------------------------------------------------------------------
# GPT-2 byte <-> unicode mapping
# ----------------------------------------------------------------------------------------------

def _gpt2_byte_to_unicode() -> list[str]:
    printable = (list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100)))
    table: list[str] = [""] * 256
    for b in printable:
        table[b] = chr(b)
    n = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + n)
            n += 1
    return table


_BYTE_TO_UNICODE = _gpt2_byte_to_unicode()
_UNICODE_TO_BYTE = {c: b for b, c in enumerate(_BYTE_TO_UNICODE)}
# str.translate table for text decoded as latin-1 (one char per byte)
_BYTE_ENCODE_TABLE = {b: c for b, c in enumerate(_BYTE_TO_UNICODE)}


# ----------------------------------------------------------------------------------------------
# byte-level BPE
# ----------------------------------------------------------------------------------------------

class BPETokenizer(Tokenizer):
    """Byte-level BPE (GGUF ``tokenizer.ggml.model = gpt2``)."""

    model_name = "gpt2"
    default_add_bos = False
    default_clean_spaces = True
    # llama.cpp's defaults for gpt2 vocabularies (ids >= n_vocab are dropped)
    default_special = {"bos": 11, "eos": 11, "unk": None}

    def __init__(self, meta: Mapping[str, Any], cache_size: int = 1 << 16) -> None:
        pre_name = meta.get("tokenizer.ggml.pre")
        if pre_name is None or pre_name == "":
            warnings.warn("GGUF has no tokenizer.ggml.pre: using the 'default' pre-tokenizer "
                          "(generation quality may suffer)", stacklevel=3)
            pre_name = "default"
        if not isinstance(pre_name, str) or pre_name not in PRE_TOKENIZERS:
            raise ValueError(f"unsupported tokenizer.ggml.pre: {pre_name!r} "
                             f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})")
        self.pre_name = pre_name
        self.pre = pre = PRE_TOKENIZERS[pre_name]
        super().__init__(meta, pre=pre)
        if len(self._token_to_id) != self.n_vocab:   # the map is needed to tokenize anyway
            self._reject_duplicates()

        merges = meta.get("tokenizer.ggml.merges")
        if not isinstance(merges, (list, tuple)):
            raise ValueError("gpt2 tokenizer needs a tokenizer.ggml.merges array of strings")
        if not set(map(type, merges)) <= {str}:
            for i, m in enumerate(merges):
                if not isinstance(m, str):
                    raise ValueError(f"tokenizer.ggml.merges[{i}] is not a string")
        # "left right" -> rank of its first occurrence. llama.cpp splits a merge at its first
        # space after the first character; the symbols looked up never hold a space (it is
        # byte-encoded as 'Ġ'), so a merge matches exactly when it is f"{left} {right}".
        self._ranks: dict[str, int] = dict(zip(reversed(merges), range(len(merges) - 1, -1, -1)))
        # (compiled regex, whether it sees non-ASCII whitespace as U+000B)
        import regex
        self._splitters = tuple((regex.compile(p), not any(c in p for c in _CATEGORY_MARKERS))
                                for p in pre.regexes)
        self._ignore_merges = pre.ignore_merges
        self._word_ids = functools.lru_cache(maxsize=cache_size)(self._bpe_word)

    # -- pre-tokenization

    def pre_tokenize(self, text: str) -> list[str]:
        """Split plain text into words (before byte encoding) like llama.cpp's
        unicode_regex_split."""
        pieces = [text]
        for rx, ws_to_vt in self._splitters:
            new: list[str] = []
            append = new.append
            for piece in pieces:
                pos = 0
                for m in rx.finditer(piece.translate(_NONASCII_WS_TO_VT) if ws_to_vt else piece):
                    s, e = m.span()
                    if s > pos:
                        append(piece[pos:s])
                    if e > s:
                        append(piece[s:e])
                    pos = e
                if pos < len(piece):
                    append(piece[pos:])
            pieces = new
        return pieces

    def _tokenize_text(self, text: str, out: list[int]) -> None:
        word_ids = self._word_ids
        for word in self.pre_tokenize(text):
            out.extend(word_ids(word))

    # -- BPE on one word

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        enc = word.encode("utf-8", "surrogatepass").decode("latin-1").translate(_BYTE_ENCODE_TABLE)
        vocab = self._token_to_id
        if self._ignore_merges:
            tid = vocab.get(enc)
            if tid is not None:
                return (tid,)
        syms = list(enc)
        n = len(syms)
        if n > 1:
            ranks = self._ranks
            prev = list(range(-1, n - 1))
            nxt = list(range(1, n + 1))
            nxt[-1] = -1
            heap = []
            for i in range(n - 1):
                r = ranks.get(f"{syms[i]} {syms[i + 1]}")
                if r is not None:
                    heap.append((r, i, i + 1, syms[i] + syms[i + 1]))
            heapq.heapify(heap)
            push, pop = heapq.heappush, heapq.heappop
            while heap:
                _, left, right, merged = pop(heap)
                a, b = syms[left], syms[right]
                if not a or not b or a + b != merged:
                    continue  # stale bigram
                syms[left] = merged
                syms[right] = ""
                r_next = nxt[right]
                nxt[left] = r_next
                if r_next >= 0:
                    prev[r_next] = left
                p = prev[left]
                if p >= 0:
                    r = ranks.get(f"{syms[p]} {merged}")
                    if r is not None:
                        push(heap, (r, p, left, syms[p] + merged))
                if r_next >= 0:
                    r = ranks.get(f"{merged} {syms[r_next]}")
                    if r is not None:
                        push(heap, (r, left, r_next, merged + syms[r_next]))
        ids: list[int] = []
        for s in syms:
            if not s:
                continue
            tid = vocab.get(s)
            if tid is not None:
                ids.append(tid)
                continue
            # not in the vocab: llama.cpp looks up each UTF-8 byte of the symbol as a
            # one-byte token string (only ASCII can match) and drops the rest
            for b in s.encode("utf-8"):
                if b < 0x80:
                    t = vocab.get(chr(b))
                    if t is not None:
                        ids.append(t)
        return tuple(ids)

    # -- detokenization of NORMAL tokens: unicode chars back to bytes

    def _normal_token_bytes(self, text: str) -> bytes:
        out = bytearray()
        for ch in text:
            b = _UNICODE_TO_BYTE.get(ch)
            if b is not None:
                out.append(b)
            else:
                # llama.cpp writes an error marker for chars outside the byte map
                utf8 = ch.encode("utf-8", "surrogatepass")
                out += b"[UNK_BYTE_0x" + utf8.hex().encode() + text.encode("utf-8", "surrogatepass") + b"]"
        return bytes(out)

