"""Token attributes, special tokens and the ``Tokenizer`` base class.

What every vocabulary type shares, following llama.cpp's vocab loader: token attributes from
``tokenizer.ggml.token_type``, special token ids (with llama.cpp's defaults and its text-based
auto-detection of EOT/FIM tokens), the end-of-generation set, partitioning of special-token text
out of the input, and detokenization (per-token bytes, control tokens hidden unless ``special``,
BPE "clean spaces" pass). ``bpe`` and ``spm`` subclass ``Tokenizer``.
"""
from __future__ import annotations

import functools
import itertools
import operator
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from .pretokenize import PreTokenizer

# ----------------------------------------------------------------------------------------------
# token types (GGUF tokenizer.ggml.token_type) and attributes (llama.cpp's llama_token_attr)
# ----------------------------------------------------------------------------------------------

TYPE_UNDEFINED, TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_USER_DEFINED, TYPE_UNUSED, TYPE_BYTE = range(7)

ATTR_UNDEFINED = 0
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
ATTR_NORMALIZED = 1 << 6
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8
ATTR_SINGLE_WORD = 1 << 9

_TYPE_TO_ATTR = {
    TYPE_UNDEFINED: ATTR_UNDEFINED,
    TYPE_NORMAL: ATTR_NORMAL,
    TYPE_UNKNOWN: ATTR_UNKNOWN,
    TYPE_CONTROL: ATTR_CONTROL,
    TYPE_USER_DEFINED: ATTR_USER_DEFINED,
    TYPE_UNUSED: ATTR_UNUSED,
    TYPE_BYTE: ATTR_BYTE,
}

# special-token keys in GGUF -> our name. Later entries with the same name (deprecated keys)
# override earlier ones when present, as in llama.cpp.
_SPECIAL_KEYS = (
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("eot", "tokenizer.ggml.eot_token_id"),
    ("eom", "tokenizer.ggml.eom_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),  # sic: the GGUF key is misspelled
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
    ("fim_pre", "tokenizer.ggml.fim_pre_token_id"),
    ("fim_suf", "tokenizer.ggml.fim_suf_token_id"),
    ("fim_mid", "tokenizer.ggml.fim_mid_token_id"),
    ("fim_pad", "tokenizer.ggml.fim_pad_token_id"),
    ("fim_rep", "tokenizer.ggml.fim_rep_token_id"),
    ("fim_sep", "tokenizer.ggml.fim_sep_token_id"),
    ("fim_pre", "tokenizer.ggml.prefix_token_id"),
    ("fim_suf", "tokenizer.ggml.suffix_token_id"),
    ("fim_mid", "tokenizer.ggml.middle_token_id"),
)

# Tokens found by their text when the GGUF does not name them (llama.cpp does the same; it
# takes whichever its hash map yields first, we take the first name of the list present).
_AUTO_SPECIAL_TEXTS = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
            "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
            "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}

# Texts llama.cpp treats as end-of-generation whatever the GGUF says.
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>",
))

# Texts looked up while loading a vocabulary (token_to_id finds them without the full map).
_KNOWN_TEXTS = frozenset((
    *itertools.chain.from_iterable(_AUTO_SPECIAL_TEXTS.values()), *_EOG_TEXTS,
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>",     # gpt-oss
    "<mask>", "[MASK]", "</s>", "<unk>", "<s>", "<|endoftext|>",     # per-model fix-ups
    *map(chr, range(0x80)),                                          # SPM one-byte fallbacks
    "<pyrt-unknown>",                                                # SPM unknown piece
    # what pyrt.chat looks up to pick a template and its stop tokens (kept in sync by a test)
    "<start_of_turn>", "<|start_header_id|>", "<|im_start|>", "<|assistant|>", "[INST]", "[/INST]",
))

_SPECIAL_OR_BYTE = ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN | ATTR_BYTE

# C isspace() in the "C" locale: what llama.cpp strips next to LSTRIP/RSTRIP special tokens.
_C_SPACE = " \t\n\v\f\r"


# ----------------------------------------------------------------------------------------------
# base tokenizer
# ----------------------------------------------------------------------------------------------

class Tokenizer:
    """Vocabulary, special tokens, special-token partitioning and detokenization.

    Subclasses implement ``_tokenize_text`` (one plain-text fragment -> ids) and
    ``_normal_token_bytes`` (bytes of a NORMAL token).
    """

    model_name = ""
    default_add_bos = False
    default_clean_spaces = False
    #: llama.cpp's default special ids for this vocab type (used when the GGUF has no key)
    default_special: dict[str, int | None] = {"bos": 1, "eos": 2, "unk": 0}

    n_vocab: int
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool
    add_eos: bool
    eog_ids: frozenset[int]

    def __init__(self, meta: Mapping[str, Any], *, pre: PreTokenizer | None = None) -> None:
        tokens = meta.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, (list, tuple)) or not tokens:
            raise ValueError("GGUF metadata has no tokenizer.ggml.tokens array")
        n = len(tokens)
        self.n_vocab = n

        texts: list[str] = list(tokens)
        if not set(map(type, texts)) <= {str}:
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise ValueError(f"tokenizer.ggml.tokens[{i}] is not a string")
        if "" in texts:
            texts = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(texts)]
        self._texts = texts
        # Duplicate texts are rejected by the subclasses, which learn whether there are any
        # for free (BPE: building the text -> id map; SPM: sentencepiece refuses them).
        # The full text -> id map (tens of ms for a 262k vocabulary) is built on first use;
        # the texts looked up while loading are found by one scan.
        self._known_ids = {texts[i]: i for i in
                           itertools.compress(range(n), map(_KNOWN_TEXTS.__contains__, texts))}

        types = meta.get("tokenizer.ggml.token_type")
        if types is not None:
            if not isinstance(types, (list, tuple)) or len(types) != n:
                raise ValueError(f"tokenizer.ggml.token_type has {len(types) if isinstance(types, (list, tuple)) else '?'}"
                                 f" entries for {n} tokens")
            if set(map(type, types)) <= {int}:
                attrs = list(map(_TYPE_TO_ATTR.get, types, itertools.repeat(ATTR_UNDEFINED)))
            else:
                attrs = [_TYPE_TO_ATTR.get(int(t), ATTR_UNDEFINED) for t in types]
        else:
            attrs = [ATTR_NORMAL] * n
        self._attrs = attrs
        # Every id whose attributes can matter below (special or byte ones). Attributes change
        # below only for tokens found by text, all among _known_ids: with them, this list holds
        # every id that may later carry a special or byte attribute, so that no rule below
        # needs another scan of the whole vocabulary.
        self._special_candidates = sorted(set(_ids_with(attrs, _SPECIAL_OR_BYTE))
                                          .union(self._known_ids.values()))

        scores = meta.get("tokenizer.ggml.scores")
        if scores is not None and (not isinstance(scores, (list, tuple)) or len(scores) != n):
            raise ValueError(f"tokenizer.ggml.scores has {len(scores) if isinstance(scores, (list, tuple)) else '?'}"
                             f" entries for {n} tokens")
        self._scores = scores

        # --- special token ids: defaults, then GGUF keys
        special: dict[str, int | None] = {k: None for k, _ in _SPECIAL_KEYS}
        special.update(self.default_special)
        if pre is not None and pre.no_bos:
            special["bos"] = None
        for name, v in list(special.items()):
            if v is not None and v >= n:
                special[name] = None
        for name, key in _SPECIAL_KEYS:
            if key not in meta:
                continue
            v = meta[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{key} must be an integer, got {v!r}")
            if not 0 <= v < n:
                raise ValueError(f"{key} = {v} is out of range for a vocabulary of {n} tokens")
            special[name] = v

        add_bos = meta.get("tokenizer.ggml.add_bos_token")
        add_eos = meta.get("tokenizer.ggml.add_eos_token")
        default_add_bos = pre.add_bos if pre is not None and pre.add_bos else self.default_add_bos
        self.add_bos = bool(add_bos) if add_bos is not None else default_add_bos
        self.add_eos = bool(add_eos) if add_eos is not None else False

        # --- auto-detect EOT / EOM / FIM tokens by text (forcing them to CONTROL)
        for name, candidates in _AUTO_SPECIAL_TEXTS.items():
            if special[name] is not None:
                continue
            for text in candidates:
                tid = self._id_of(text)
                if tid is not None:
                    special[name] = tid
                    attrs[tid] |= ATTR_CONTROL
                    break

        # control tokens whose text says "unused" are unused
        for i in self._special_candidates:
            if attrs[i] & ATTR_CONTROL and "unused" in texts[i]:
                attrs[i] |= ATTR_UNUSED

        # --- end-of-generation set
        eog: set[int] = set()
        for name in ("fim_pad", "fim_rep", "fim_sep"):
            if special[name] is not None:
                eog.add(special[name])  # type: ignore[arg-type]
        for text in _EOG_TEXTS:
            tid = self._id_of(text)
            if tid is not None:
                eog.add(tid)
                attrs[tid] |= ATTR_CONTROL
        # gpt-oss: these are always rendered
        for text in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):
            tid = self._id_of(text)
            if tid is not None:
                attrs[tid] = ATTR_USER_DEFINED
        for name in ("eos", "eot", "eom"):
            if special[name] is not None:
                eog.add(special[name])  # type: ignore[arg-type]
        eog_texts = {texts[i]: i for i in eog}
        # o200k_harmony / solar-open: "<|end|>" ends a message, not the generation
        if "<|end|>" in eog_texts and (("<|return|>" in eog_texts and ("<|call|>" in eog_texts or "<|calls|>" in eog_texts))
                                       or (("<|call|>" in eog_texts or "<|calls|>" in eog_texts) and "<|flush|>" in eog_texts)):
            end_id = eog_texts["<|end|>"]
            eog.discard(end_id)
            attrs[end_id] = ATTR_USER_DEFINED
        # gemma4 / plamo: "</s>" is an ordinary token there
        if "</s>" in eog_texts and ("<|tool_response>" in eog_texts or "<|plamo:eos|>" in eog_texts):
            s_id = eog_texts["</s>"]
            eog.discard(s_id)
            attrs[s_id] = ATTR_NORMAL

        self.special_ids: dict[str, int | None] = special
        self.bos_id = special["bos"]
        self.eos_id = special["eos"]
        self.eot_id = special["eot"]
        self.eog_ids = frozenset(eog)
        if self.add_bos and self.bos_id is None:
            raise ValueError("tokenizer.ggml.add_bos_token is true but the model has no BOS token")
        if self.add_eos and self.eos_id is None:
            raise ValueError("tokenizer.ggml.add_eos_token is true but the model has no EOS token")

        # --- special-token cache: longest text first (llama.cpp's order of partitioning)
        special_list = [i for i in self._special_candidates
                        if attrs[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)]
        special_list.sort(key=lambda i: (-_utf8_len(texts[i]), i))

        # per-model attribute fix-ups (llama.cpp keys them on names)
        model_name = str(meta.get("general.name", "")).lower()
        pre_name = str(meta.get("tokenizer.ggml.pre", ""))
        arch = str(meta.get("general.architecture", ""))

        def set_attr(text: str, attr: int, value: bool) -> None:
            tid = self._id_of(text)
            if tid is not None:
                attrs[tid] = (attrs[tid] | attr) if value else (attrs[tid] & ~attr)

        if any(s in pre_name for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or \
                any(s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
            set_attr("<mask>", ATTR_LSTRIP, True)
        elif "phi-3" in model_name or "phi3" in model_name:
            for tid in special_list:
                attrs[tid] |= ATTR_RSTRIP
            set_attr("</s>", ATTR_RSTRIP, True)
            for text in ("<unk>", "<s>", "<|endoftext|>"):
                set_attr(text, ATTR_RSTRIP, False)
        elif "modern-bert" in model_name:
            set_attr("[MASK]", ATTR_LSTRIP, True)

        self._special_all = [(texts[i], i, bool(attrs[i] & ATTR_LSTRIP), bool(attrs[i] & ATTR_RSTRIP))
                             for i in special_list]
        # without special parsing, only USER_DEFINED tokens are still split out
        self._special_user = [s for s in self._special_all
                              if not attrs[s[1]] & (ATTR_CONTROL | ATTR_UNKNOWN)]

        self.clean_spaces = pre.clean_spaces if pre is not None else self.default_clean_spaces
        self._piece_cache: list[bytes | None] = [None] * n

    # ------------------------------------------------------------------ public API

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Text -> token ids.

        ``add_bos=None`` applies the model's rule (llama.cpp's ``add_special=True``: BOS if the
        model adds BOS, EOS if it adds EOS); ``True`` forces a BOS (EOS per model rule);
        ``False`` adds neither. ``special=True`` parses special-token text such as
        ``<|im_start|>`` into its token; user-defined tokens are split out either way.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        out: list[int] = []
        want_bos = self.add_bos if add_bos is None else bool(add_bos)
        want_eos = self.add_eos if add_bos is None else (self.add_eos and bool(add_bos))
        if want_bos:
            if self.bos_id is None:
                raise ValueError("this model has no BOS token")
            out.append(self.bos_id)
        if text:
            self._tokenize_fragments(self._partition(text, special), out)
        if want_eos:
            out.append(self.eos_id)  # type: ignore[arg-type]
        return out

    def detokenize(self, ids: Iterable[int], special: bool = False) -> str:
        """Token ids -> text. ``special=False`` renders control tokens as '' (llama.cpp's
        default); invalid UTF-8 becomes U+FFFD."""
        data = b"".join([self.token_to_bytes(i, special) for i in ids])
        if self.clean_spaces:
            data = _clean_up_spaces(data)
        return data.decode("utf-8", errors="replace")

    def token_to_bytes(self, id: int, special: bool = False) -> bytes:
        """Raw bytes of one token as llama.cpp's token_to_piece gives them (may be a partial
        UTF-8 sequence: decode a stream with an incremental decoder)."""
        if not 0 <= id < self.n_vocab:
            raise IndexError(f"token id {id} out of range [0, {self.n_vocab})")
        attr = self._attrs[id]
        if not special and attr & (ATTR_UNKNOWN | ATTR_CONTROL):
            return b""
        piece = self._piece_cache[id]
        if piece is None:
            piece = self._piece_bytes(id)
            self._piece_cache[id] = piece
        return piece

    def token_to_piece(self, id: int) -> str:
        """The vocabulary string of a token (as stored in the GGUF)."""
        if not 0 <= id < self.n_vocab:
            raise IndexError(f"token id {id} out of range [0, {self.n_vocab})")
        return self._texts[id]

    def token_attr(self, id: int) -> int:
        return self._attrs[id]

    def token_to_id(self, piece: str) -> int | None:
        return self._id_of(piece)

    def is_eog(self, id: int) -> bool:
        return id in self.eog_ids

    def is_control(self, id: int) -> bool:
        return bool(self._attrs[id] & ATTR_CONTROL)

    def __len__(self) -> int:
        return self.n_vocab

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_vocab={self.n_vocab}, bos={self.bos_id}, eos={self.eos_id}, "
                f"add_bos={self.add_bos})")

    # ------------------------------------------------------------------ internals

    def _reject_duplicates(self) -> None:
        """Raise ValueError naming the first duplicate token text, if there is one."""
        first: dict[str, int] = {}
        for i, t in enumerate(self._texts):
            if t in first:
                raise ValueError(f"tokenizer.ggml.tokens[{i}] = {t!r} duplicates "
                                 f"tokenizer.ggml.tokens[{first[t]}]")
            first[t] = i

    @functools.cached_property
    def _token_to_id(self) -> dict[str, int]:
        return dict(zip(self._texts, range(self.n_vocab)))

    def _id_of(self, text: str) -> int | None:
        """Id of a token text; the texts of ``_KNOWN_TEXTS`` without building the full map."""
        if text in _KNOWN_TEXTS:
            return self._known_ids.get(text)
        return self._token_to_id.get(text)

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Split special-token text out of ``text`` (llama.cpp's tokenizer_st_partition):
        for each special token, longest first, every occurrence in every remaining text
        fragment becomes that token."""
        frags: list[str | int] = [text]
        chars = set(text) if len(text) > 64 else text  # cheap prefilter for big special lists
        for stext, sid, lstrip, rstrip in (self._special_all if parse_special else self._special_user):
            if stext[0] not in chars or stext not in text:
                continue
            new: list[str | int] = []
            for frag in frags:
                if type(frag) is int or stext not in frag:  # type: ignore[operator]
                    new.append(frag)
                    continue
                pos = 0
                end = len(frag)  # type: ignore[arg-type]
                while True:
                    m = frag.find(stext, pos)  # type: ignore[union-attr]
                    if m < 0:
                        break
                    left = frag[pos:m]  # type: ignore[index]
                    if lstrip:
                        left = left.rstrip(_C_SPACE)
                    if left:
                        new.append(left)
                    new.append(sid)
                    pos = m + len(stext)
                    if rstrip:
                        while pos < end and frag[pos] in _C_SPACE:  # type: ignore[index]
                            pos += 1
                if pos < end:
                    new.append(frag[pos:])  # type: ignore[index]
            frags = new
        return frags

    def _piece_bytes(self, id: int) -> bytes:
        attr = self._attrs[id]
        text = self._texts[id]
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED):
            return text.encode("utf-8", "surrogatepass")
        if attr & ATTR_NORMAL:
            return self._normal_token_bytes(text)
        if attr & ATTR_BYTE:
            return bytes((int(text[3:5], 16),))
        return b""  # unused / undefined tokens render as nothing

    def _tokenize_fragments(self, frags: list[str | int], out: list[int]) -> None:
        """Append the ids of ``_partition``'s output: special token ids, tokenized text."""
        for frag in frags:
            if type(frag) is int:
                out.append(frag)
            else:
                self._tokenize_text(frag, out)  # type: ignore[arg-type]

    def _tokenize_text(self, text: str, out: list[int]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _normal_token_bytes(self, text: str) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _ids_with(attrs: list[int], mask: int) -> list[int]:
    """Ids whose attributes have any bit of ``mask`` (ascending), without a Python-level loop."""
    return list(itertools.compress(range(len(attrs)), map(operator.and_, attrs, itertools.repeat(mask))))


def _clean_up_spaces(data: bytes) -> bytes:
    """llama.cpp's clean_spaces passes over detokenized bytes (HF's
    clean_up_tokenization_spaces), done in place on one buffer as llama.cpp does."""
    t = bytearray(data)
    SP, AP = 0x20, 0x27
    # 1: " ?", " !", " .", " ," -> drop the space
    n = len(t)
    out = 1 if n else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == SP and x in b"?!.,":
            out -= 1
        t[out] = x
        out += 1
    # 2: " ' " -> "'"
    n = out
    out = 1 if n else 0
    i = 1
    while i < n:
        x = t[i]
        if x == AP and i + 1 < n and t[i - 1] == SP and t[i + 1] == SP:
            out -= 1
            i += 1
            t[i] = 0
        t[out] = x
        out += 1
        i += 1
    # 3: " 's", " 'm", " 're", " 've" -> drop the space
    n = out
    out = 1 if n else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == SP and x == AP and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"td":
                pass
            elif x1 in b"sm":
                out -= 1
            elif i + 2 < n:
                x2 = t[i + 2]
                if (x1, x2) in ((0x72, 0x65), (0x76, 0x65)):  # "re", "ve"
                    out -= 1
        t[out] = x
        out += 1
    return bytes(t[:out])
