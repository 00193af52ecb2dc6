"""SentencePiece-style vocabularies (``tokenizer.ggml.model = llama``).

``SPMTokenizer`` runs llama.cpp's SPM merging through the ``sentencepiece`` library, on a model
proto built from the GGUF vocabulary by ``spm_proto`` (see the class docstring).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np

from .base import ATTR_BYTE, Tokenizer
from .spm_proto import _PB_BYTE, _PB_NORMAL, _PB_UNKNOWN, _pb_field, _pb_pieces

_SPACE_ESCAPE = "\u2581"      # '▁', how SPM vocabularies spell a space
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_SPLIT = re.compile("([\ud800-\udfff])")


class SPMTokenizer(Tokenizer):
    """SentencePiece-style vocabulary (GGUF ``tokenizer.ggml.model = llama``: Llama 1/2,
    Mistral v1, Gemma, ...), tokenized like llama.cpp's SPM tokenizer.

    llama.cpp replaces every space by '▁' (and prepends one to a fragment that starts the text
    or follows a special token when ``tokenizer.ggml.add_space_prefix`` is true, the default),
    splits the text into UTF-8 characters and repeatedly merges the adjacent pair whose
    concatenation is a vocabulary token of the highest score (leftmost on ties); characters
    that never became a token are emitted as their ``<0xXX>`` byte tokens.

    The merging runs in the ``sentencepiece`` library, from a model proto built here from the
    GGUF vocabulary: a BPE model with identity normalization (we escape spaces ourselves), the
    GGUF scores, byte fallback, and every token typed NORMAL so that - as in llama.cpp, and
    unlike a stock sentencepiece model - control, unused and user-defined token texts can be
    reached by merges too. BYTE tokens keep their type (sentencepiece wants them for the
    fallback; their text "<0xXX>" is not reachable by merges in real vocabularies) and the
    unknown piece sentencepiece requires is an extra entry past the vocabulary. Lone
    surrogates (not valid UTF-8) cannot merge with anything; they become byte tokens of their
    surrogatepass encoding, as llama.cpp does with the same bytes.
    """

    model_name = "llama"
    default_add_bos = True
    default_clean_spaces = False
    default_special = {"bos": 1, "eos": 2, "unk": 0}

    def __init__(self, meta: Mapping[str, Any]) -> None:
        super().__init__(meta)
        asp = meta.get("tokenizer.ggml.add_space_prefix")
        self.add_space_prefix = True if asp is None else bool(asp)
        n = self.n_vocab
        texts = self._texts
        # byte tokens, and whether the full set exists for sentencepiece's fallback
        self._byte_ids: dict[int, int] = {}
        for i in self._special_candidates:
            t = texts[i]
            if self._attrs[i] & ATTR_BYTE and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                b = int(t[3:5], 16)
                if f"<0x{b:02X}>" == t and b not in self._byte_ids:
                    self._byte_ids[b] = i
        byte_fallback = len(self._byte_ids) == 256
        piece_types = np.full(n, _PB_NORMAL, np.uint8)
        if byte_fallback:
            piece_types[list(self._byte_ids.values())] = _PB_BYTE
        # bytes of a character that formed no token: "<0xXX>", else the one-byte token
        for b in range(256):
            if b not in self._byte_ids:
                tid = self._id_of(chr(b)) if b < 0x80 else None
                if tid is not None:
                    self._byte_ids[b] = tid
        self._unk_piece = n          # id sentencepiece reports for a character it cannot place
        if self._scores is None:
            scores = np.zeros(n, np.float32)
        else:
            scores64 = np.asarray(self._scores, dtype=np.float64)
            with np.errstate(over="ignore"):
                scores = scores64.astype(np.float32)
            bad = np.flatnonzero(~np.isfinite(scores))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"tokenizer.ggml.scores[{i}] = {float(scores64[i])} is not finite"
                                 + ("" if not np.isfinite(scores64[i]) else " as a float32"))
        pieces = _pb_pieces(texts, scores, piece_types)
        unk_text = "<pyrt-unknown>"
        while self._id_of(unk_text) is not None:
            unk_text += "_"
        pieces += _pb_field(1, _pb_field(1, unk_text.encode()) + _pb_field(2, 0.0) + _pb_field(3, _PB_UNKNOWN))
        trainer = (_pb_field(3, 2) + _pb_field(4, n + 1) + _pb_field(35, int(byte_fallback))
                   + _pb_field(40, n) + _pb_field(41, -1) + _pb_field(42, -1) + _pb_field(43, -1))
        normalizer = (_pb_field(1, b"identity") + _pb_field(3, 0) + _pb_field(4, 0) + _pb_field(5, 0))
        proto = pieces + _pb_field(2, trainer) + _pb_field(3, normalizer)
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(proto)
        except Exception as e:   # sentencepiece reports bad vocabularies as RuntimeError/OSError
            self._reject_duplicates()   # one reason it refuses them: name the tokens as BPE does
            raise ValueError(f"cannot build the SPM tokenizer from this vocabulary: {e}") from None
        self._sp = sp
        self._encode = sp.EncodeAsIds

    # -- tokenization

    def _tokenize_fragments(self, frags: list[str | int], out: list[int]) -> None:
        prev_special = True          # the text start counts as "after a special token"
        for frag in frags:
            if type(frag) is int:
                out.append(frag)
                prev_special = True
            else:
                if self.add_space_prefix and prev_special:
                    frag = " " + frag   # type: ignore[operator]
                self._tokenize_text(frag, out)  # type: ignore[arg-type]
                prev_special = False

    def _tokenize_text(self, text: str, out: list[int]) -> None:
        text = text.replace(" ", _SPACE_ESCAPE)
        if _SURROGATE.search(text):
            # lone surrogates (not UTF-8): tokenize the valid runs, surrogates become bytes
            for run in _SURROGATE_SPLIT.split(text):
                if _SURROGATE.fullmatch(run):
                    self._emit_bytes(run.encode("utf-8", "surrogatepass"), out)
                elif run:
                    self._tokenize_text(run, out)
            return
        ids = self._encode(text)
        if self._unk_piece in ids:
            # no full set of byte tokens: fall back per character, as llama.cpp does
            pieces = self._sp.EncodeAsPieces(text)
            for tid, piece in zip(ids, pieces):
                if tid == self._unk_piece:
                    self._emit_bytes(piece.encode("utf-8", "surrogatepass"), out)
                else:
                    out.append(tid)
            return
        out.extend(ids)

    def _emit_bytes(self, data: bytes, out: list[int]) -> None:
        for b in data:
            tid = self._byte_ids.get(b)
            if tid is None:
                raise ValueError(f"cannot tokenize byte 0x{b:02X}: the vocabulary has neither "
                                 f"<0x{b:02X}> nor a one-byte token for it")
            out.append(tid)

    # -- detokenization

    def detokenize(self, ids: Iterable[int], special: bool = False) -> str:
        """Token ids -> text; with ``add_space_prefix`` the first token's leading space is
        dropped (llama.cpp's detokenize)."""
        parts = [self.token_to_bytes(i, special) for i in ids]
        if parts and self.add_space_prefix and parts[0][:1] == b" ":
            parts[0] = parts[0][1:]
        return b"".join(parts).decode("utf-8", errors="replace")

    def _normal_token_bytes(self, text: str) -> bytes:
        return text.replace(_SPACE_ESCAPE, " ").encode("utf-8", "surrogatepass")

