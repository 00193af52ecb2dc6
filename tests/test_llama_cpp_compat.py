"""Drop-in compatibility with llama-cpp-python: its constructor arguments and
calls, and snippets from its README and docs run unchanged apart from the
import (`from pyrt import Llama` instead of `from llama_cpp import Llama`), on
SmolLM2-135M-Instruct (the default model)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pyrt
from pyrt import Llama
from pyrt._native import UnsupportedError


@pytest.fixture(scope="module")
def model_path(smollm2_path):
    return str(smollm2_path)


@pytest.fixture(scope="module")
def llm(model_path):
    with Llama(model_path=model_path, n_ctx=512, seed=1337, verbose=False) as m:
        yield m


# ---- constructor -------------------------------------------------------------------------------

def test_constructor_accepts_llama_cpp_python_arguments(model_path):
    with Llama(model_path=model_path, n_gpu_layers=0, split_mode=1, main_gpu=0, vocab_only=False,
               use_mmap=True, use_mlock=False, kv_overrides=None, seed=-1, n_ctx=256, n_batch=256,
               n_ubatch=64, n_threads=2, n_threads_batch=2, rope_scaling_type=-1, pooling_type=-1,
               attention_type=-1, rope_freq_base=0.0, rope_freq_scale=0.0, yarn_ext_factor=-1.0,
               yarn_attn_factor=1.0, yarn_beta_fast=32.0, yarn_beta_slow=1.0, yarn_orig_ctx=0,
               logits_all=False, embedding=False, offload_kqv=True, flash_attn=False, op_offload=None,
               swa_full=None, no_perf=False, last_n_tokens_size=32, lora_base=None, lora_scale=1.0,
               lora_path=None, numa=False, chat_format=None, chat_handler=None, draft_model=None,
               tokenizer=None, type_k=None, type_v=None, spm_infill=False, verbose=False) as m:
        assert m.n_ctx() == 256 and m._n_batch == 64      # n_ubatch: the physical batch
        assert m.device == "cpu" and m.seed is None and m.last_n_tokens_size == 32
        assert m.create_completion("Hi", max_tokens=2)["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("kw, words", [
    (dict(lora_path="adapter.gguf"), ["lora_path", "LoRA"]),
    (dict(type_k=3), ["type_k", "q4_1", "q8_0"]),
    (dict(tensor_split=[0.5, 0.5]), ["tensor_split"]),
    (dict(chat_handler=object()), ["chat_handler"]),
    (dict(draft_model=object()), ["draft_model", "speculative"]),
    (dict(pooling_type=2), ["pooling_type", "cls"]),
    (dict(rope_scaling_type=2), ["rope_scaling_type", "yarn"]),
    (dict(yarn_ext_factor=0.5), ["yarn_ext_factor"]),
    (dict(vocab_only=True), ["vocab_only"]),
    (dict(kv_overrides={"x": 1}), ["kv_overrides"]),
])
def test_constructor_rejects_what_does_not_map_naming_the_argument(model_path, kw, words):
    with pytest.raises(UnsupportedError) as e:
        Llama(model_path=model_path, n_ctx=64, **kw)
    for w in words:
        assert w in str(e.value)


def test_constructor_unknown_and_bad_values(model_path):
    with pytest.raises(TypeError, match="n_gpu_layer'.*did you mean 'n_gpu_layers'"):
        Llama(model_path=model_path, n_gpu_layer=1)
    with pytest.raises(ValueError, match="chat_format 'functionary'.*chatml"):
        Llama(model_path=model_path, chat_format="functionary")
    with pytest.raises(ValueError, match="use_mmap"):
        Llama(model_path=model_path, use_mmap="yes")
    with pytest.raises(ValueError, match="n_gpu_layers"):
        Llama(model_path=model_path, n_gpu_layers=-2)


def test_n_gpu_layers_without_cuda_runs_on_cpu_with_a_notice(model_path, capfd):
    if pyrt.device.cuda_device_count() > 0:
        pytest.skip("a GPU is present: n_gpu_layers places the model there")
    with Llama(model_path=model_path, n_ctx=64, n_gpu_layers=-1) as m:
        assert m.device == "cpu"
    err = capfd.readouterr().err
    assert "n_gpu_layers=-1" in err and "CPU" in err and err.count("\n") == 1


@pytest.mark.parametrize("fmt, marker", [("chatml", "<|im_start|>assistant\n"),
                                         ("llama-3", "<|start_header_id|>assistant"),
                                         ("gemma", "<start_of_turn>model\n"),
                                         ("mistral-instruct", "[INST] hi [/INST]"),
                                         ("phi-3", "<|assistant|>\n"),
                                         ("zephyr", "<|user|>\nhi</s>"),
                                         ("alpaca", "### Instruction: hi"),
                                         ("vicuna", "USER: hi ASSISTANT:")])
def test_chat_format_names(model_path, fmt, marker):
    with Llama(model_path=model_path, n_ctx=64, chat_format=fmt) as m:
        assert marker in m.apply_chat_template([{"role": "user", "content": "hi"}])
        assert m.chat_format == fmt


def test_rope_freq_overrides_change_the_model(model_path):
    with Llama(model_path=model_path, n_ctx=64, seed=0) as a, \
            Llama(model_path=model_path, n_ctx=64, rope_freq_base=200000.0, rope_freq_scale=0.5) as b:
        assert b.hparams.rope_freq_base == 200000.0 and b.hparams.rope_freq_scale == 0.5
        ids = a.tokenize("The capital of France is Paris, and")
        assert not np.allclose(a.logits(ids)[-1], b.logits(ids)[-1])


def test_closed_llama_says_so(model_path):
    m = Llama(model_path=model_path, n_ctx=64)
    m.close()
    for call in (lambda: m.tokenize("hi"), lambda: m("hi", max_tokens=1), lambda: m.n_vocab(),
                 lambda: m.create_chat_completion([{"role": "user", "content": "hi"}]),
                 lambda: m.embed("hi"), lambda: m.reset(), lambda: m.save_state()):
        with pytest.raises(ValueError, match="closed"):
            call()


# ---- calls ---------------------------------------------------------------------------------------

def test_detokenize_returns_bytes_and_text_helpers(llm):
    ids = llm.tokenize(b"Hello, world!", add_bos=False)
    assert llm.detokenize(ids) == b"Hello, world!"
    assert llm.detokenize_text(ids) == "Hello, world!"
    assert llm.detokenize(ids[1:], prev_tokens=ids[:1]) == b", world!"
    emoji = llm.tokenize("Party 🎉 in 東京", add_bos=False)
    per_token = [llm.detokenize([t]) for t in emoji]
    assert b"".join(per_token).decode("utf-8") == "Party 🎉 in 東京"
    assert any(len(p) and not _valid_utf8(p) for p in per_token)      # a character split over tokens
    pieces = list(llm.detokenize_stream(emoji))
    assert "".join(pieces) == "Party 🎉 in 東京" and "\ufffd" not in "".join(pieces)
    assert all(_valid_utf8(p.encode()) for p in pieces)


def _valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_low_level_eval_and_sample_match_generate(llm):
    ids = llm.tokenize(b"Q: Name the planets in the solar system? A: ")
    want = list(llm.generate(ids, max_tokens=8, temperature=0))
    llm.reset()
    assert llm.n_tokens == 0 and llm.n_tokens() == 0
    llm.eval(ids)
    assert llm.n_tokens == len(ids)
    assert list(llm.input_ids[:llm.n_tokens]) == ids and llm.input_ids.shape == (llm.n_ctx(),)
    assert llm.scores.shape == (len(ids), llm.n_vocab())
    got = []
    for _ in range(8):
        tok = llm.sample(temp=0)
        got.append(tok)
        llm.eval([tok])
    assert got == want
    llm.n_tokens = len(ids)               # rewind, as llama-cpp-python code does
    assert llm.n_tokens == len(ids)
    with pytest.raises(ValueError, match="eval"):
        llm.sample()                       # the logits of that position are gone


def test_sample_with_logits_processor_and_logits_all(model_path):
    with Llama(model_path=model_path, n_ctx=128, logits_all=True) as m:
        ids = m.tokenize(b"The capital of France is")
        m.eval(ids)
        assert np.abs(m.scores).sum(axis=1).min() > 0          # every row recorded
        np.testing.assert_allclose(m.scores, m.logits(ids), rtol=1e-4, atol=1e-3)
        m.reset()
        m.eval(ids)
        ban = int(np.argmax(m.scores[-1]))

        def no_top(input_ids, scores):
            assert list(input_ids) == ids
            scores[ban] = -np.inf
            return scores
        assert m.sample(temp=0) == ban
        assert m.sample(temp=0, logits_processor=[no_top]) != ban
        assert m.sample(temp=0, idx=len(ids) - 2) == int(np.argmax(m.scores[-2]))
        m.eval([ban])                                          # rows of earlier evals stay
        assert np.abs(m.scores).sum(axis=1).min() > 0 and m.scores.shape[0] == len(ids) + 1
        m.create_completion("Something else entirely", max_tokens=2)
        with pytest.raises(ValueError, match="eval"):
            m.sample()                      # the cache moved: no stale logits from eval()
        assert not m.scores.any()


def test_temp_alias_top_p_zero_and_random_seeds(model_path, llm):
    ids = llm.tokenize("Once upon a time")
    greedy = list(llm.generate(ids, max_tokens=6, temperature=0))
    assert list(llm.generate(ids, max_tokens=6, temp=0)) == greedy
    assert llm("Once upon a time", max_tokens=6, top_p=0, temperature=1.0)["choices"][0]["text"] == \
        llm.detokenize_text(greedy)
    with Llama(model_path=model_path, n_ctx=128) as a, Llama(model_path=model_path, n_ctx=128) as b:
        kw = dict(max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
        assert a.seed is None
        assert a("Once upon a time", **kw)["choices"][0]["text"] != b("Once upon a time", **kw)["choices"][0]["text"]
    kw = dict(max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    outs = {llm("Once upon a time", seed=-1, **kw)["choices"][0]["text"] for _ in range(3)}
    assert len(outs) > 1
    assert len({llm("Once upon a time", seed=7, **kw)["choices"][0]["text"] for _ in range(2)}) == 1


def test_max_tokens_minus_one_runs_to_the_end_of_the_context(model_path):
    with Llama(model_path=model_path, n_ctx=48, seed=1) as m:
        out = m("Count: 1, 2, 3, 4,", max_tokens=-1, temperature=0, stop=[])
        # greedy counting runs on; the last sampled token needs no cache slot
        assert out["choices"][0]["finish_reason"] == "length"
        assert out["usage"]["total_tokens"] == 48 + 1
        assert m("Count: 1, 2,", max_tokens=None, temperature=0)["usage"]["total_tokens"] == 48 + 1


def test_n_choices(llm):
    out = llm("The sky is", n=3, max_tokens=5, seed=11, temperature=1.0)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert out["usage"]["completion_tokens"] <= 15
    texts = [c["text"] for c in out["choices"]]
    assert len(set(texts)) > 1
    single = llm("The sky is", max_tokens=5, seed=12, temperature=1.0)["choices"][0]["text"]
    assert single == texts[1]                                  # choice i: seed + i
    chunks = list(llm.create_chat_completion([{"role": "user", "content": "hi"}], n=2, max_tokens=3,
                                             stream=True, seed=1))
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}
    assert [c["usage"] is not None for c in chunks].count(True) == 1 and chunks[-1]["usage"]
    with pytest.raises(ValueError, match="n must be"):
        llm("x", n=0)
    with pytest.raises(TypeError, match="mirostat_mod"):          # extra keywords reach each choice
        llm("x", n=2, mirostat_mod=2)
    two = llm("The sky is", n=2, max_tokens=5, seed=11, temperature=1.0, mirostat_mode=2, mirostat_tau=0.1)
    assert two["choices"][0]["text"] == two["choices"][1]["text"]     # tau ~ 0: (nearly) greedy


def test_suffix_without_fim_tokens_is_appended_and_fim_prompt_order(llm, monkeypatch):
    out = llm("def add(a, b):", suffix="\n# end", max_tokens=4, temperature=0)
    plain = llm("def add(a, b):", max_tokens=4, temperature=0)
    assert out["choices"][0]["text"] == plain["choices"][0]["text"] + "\n# end"
    # a vocabulary with FIM tokens: <PRE> prompt <SUF> suffix <MID>
    ids = dict(llm.tokenizer.special_ids, fim_pre=10, fim_suf=11, fim_mid=12)
    monkeypatch.setattr(llm.tokenizer, "special_ids", ids)
    toks, _ = llm._fim_prompt("a", "b")
    a, b = llm.tokenize("a", add_bos=False), llm.tokenize("b", add_bos=False)
    assert toks == [10, *a, 11, *b, 12]
    monkeypatch.setattr(llm, "_spm_infill", True)
    assert llm._fim_prompt("a", "b")[0] == [11, *b, 10, *a, 12]


def test_llama_cpp_python_call_arguments_and_clear_rejections(llm):
    out = llm("Hi", max_tokens=2, tfs_z=1.0, mirostat_mode=2, mirostat_tau=4.0, mirostat_eta=0.2,
              logits_processor=None, stopping_criteria=None, stop=[])
    assert out["usage"]["completion_tokens"] <= 2
    with pytest.raises(UnsupportedError, match="tfs_z"):
        llm("Hi", max_tokens=2, tfs_z=0.5)
    with pytest.raises(TypeError, match="mirostat_mod'.*mirostat_mode"):
        llm("Hi", mirostat_mod=2)
    r = llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=4, logprobs=None,
                                   dry_multiplier=0.8, xtc_probability=0.5, xtc_threshold=0.1, seed=3)
    assert r["choices"][0]["message"]["role"] == "assistant"


def test_from_pretrained_maps_onto_the_registry(capfd):
    with Llama.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct", n_ctx=64) as m:
        assert m.model_path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    with Llama.from_pretrained(repo_id="bartowski/SmolLM2-135M-Instruct-GGUF", filename="*q8_0.gguf",
                               n_ctx=64) as m:
        assert m.n_ctx() == 64
    assert "does not match" in capfd.readouterr().err
    with pytest.raises(ValueError, match="Qwen/Qwen2-0.5B-Instruct-GGUF.*known models"):
        Llama.from_pretrained(repo_id="Qwen/Qwen2-0.5B-Instruct-GGUF", filename="*q8_0.gguf")


# ---- snippets from llama-cpp-python's README, docs and examples ----------------------------------
#
# Each runs as written there, with two substitutions only: the import
# (`from llama_cpp import` -> `from pyrt import`, `import llama_cpp` ->
# `import pyrt as llama_cpp`) and the model path (-> SmolLM2-135M-Instruct).
# They run with llama-cpp-python's default context (n_ctx=512, pyrt's is
# 4096), which bounds the snippets that generate until the end of it.
# Sources: README.md (sections named), llama_cpp/llama.py docstrings, examples/
# and tests/test_llama.py of llama-cpp-python 0.3.36.

SNIPPETS = {
    "readme_high_level_completion": '''
from llama_cpp import Llama

llm = Llama(
      model_path="./models/7B/llama-model.gguf",
      # n_gpu_layers=-1, # Uncomment to use GPU acceleration
      # seed=1337, # Uncomment to set a specific seed
      # n_ctx=2048, # Uncomment to increase the context window
)
output = llm(
      "Q: Name the planets in the solar system? A: ", # Prompt
      max_tokens=32, # Generate up to 32 tokens, set to None to generate up to the end of the context window
      stop=["Q:", "\\n"], # Stop generating just before the model would generate a new question
      echo=True # Echo the prompt back in the output
) # Generate a completion, can also call create_completion
print(output)
''',
    "readme_chat_completion": '''
from llama_cpp import Llama
llm = Llama(
      model_path="path/to/llama-2/llama-model.gguf",
      chat_format="llama-2"
)
result = llm.create_chat_completion(
      messages = [
          {"role": "system", "content": "You are an assistant who perfectly describes images."},
          {
              "role": "user",
              "content": "Describe this image in detail please."
          }
      ]
)
''',
    "readme_json_mode": '''
from llama_cpp import Llama
llm = Llama(model_path="path/to/model.gguf", chat_format="chatml")
result = llm.create_chat_completion(
    messages=[
        {
            "role": "system",
            "content": "You are a helpful assistant that outputs in JSON.",
        },
        {"role": "user", "content": "Who won the world series in 2020"},
    ],
    response_format={
        "type": "json_object",
    },
    temperature=0.7,
)
''',
    "readme_embeddings": '''
import llama_cpp

llm = llama_cpp.Llama(model_path="path/to/model.gguf", embedding=True)

embeddings = llm.create_embedding("Hello, world!")

# or create multiple embeddings at once

embeddings = llm.create_embedding(["Hello, world!", "Goodbye, world!"])
''',
    "readme_context_window": '''
from llama_cpp import Llama
llm = Llama(model_path="./models/7B/llama-model.gguf", n_ctx=2048)
''',
    "docstring_completion_with_stop": '''
import llama_cpp
model = llama_cpp.Llama(
    model_path="path/to/model",
)
print(model("The quick brown fox jumps ", stop=["."])["choices"][0]["text"])
''',
    "docstring_chat_llama2": '''
import llama_cpp
model = llama_cpp.Llama(
    model_path="path/to/model",
    chat_format="llama-2",
)
print(model.create_chat_completion(
    messages=[{
        "role": "user",
        "content": "what is the meaning of life?"
    }]
))
''',
    "docstring_generate_tokenize_bytes": '''
from llama_cpp import Llama
llama = Llama("models/ggml-7b.bin")
tokens = llama.tokenize(b"Hello, world!")
pieces = []
for token in llama.generate(tokens, top_k=40, top_p=0.95, temp=1.0, repeat_penalty=1.0):
    print(llama.detokenize([token]))
    pieces.append(llama.detokenize([token]))
''',
    "example_streaming": '''
import json
from llama_cpp import Llama
llm = Llama(model_path="../models/7B/ggml-models.bin")

stream = llm(
    "Question: What are the names of the planets in the solar system? Answer: ",
    max_tokens=48,
    stop=["Q:", "\\n"],
    stream=True,
)

for output in stream:
    print(json.dumps(output, indent=2))
''',
    "example_inference_echo": '''
import json
from llama_cpp import Llama
llm = Llama(model_path="../models/7B/ggml-models.bin")

output = llm(
    "Question: What are the names of the planets in the solar system? Answer: ",
    max_tokens=48,
    stop=["Q:", "\\n"],
    echo=True,
)

print(json.dumps(output, indent=2))
''',
    "example_infill": '''
from llama_cpp import Llama
llm = Llama(model_path="../models/7B/ggml-models.bin", n_gpu_layers=-1, spm_infill=False)
output = llm.create_completion(
    temperature=0.0,
    repeat_penalty=1.0,
    prompt="def add(",
    suffix="\\n    return sum\\n\\n",
)
response = output["choices"][0]["text"]
''',
    "example_embedding": '''
from llama_cpp import Llama
llm = Llama(model_path="../models/7B/ggml-model.bin", embedding=True)
print(llm.create_embedding("Hello world!"))
''',
    "tests_tokenize_special_bytes": '''
import llama_cpp
model = llama_cpp.Llama(model_path="model.gguf", n_ctx=32, n_batch=32, n_ubatch=32, logits_all=False,
                        flash_attn=True)
tokens = model.tokenize(b"Hello, world!", add_bos=True, special=True)
text = model.detokenize(tokens)
''',
    "tests_logits_processor_save_load_state": '''
import llama_cpp
model = llama_cpp.Llama(model_path="model.gguf", n_ctx=32, n_batch=32, n_ubatch=32, n_threads=2,
                        n_threads_batch=2, logits_all=False, flash_attn=True)
output = model.create_completion(
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    max_tokens=6,
    top_k=50,
    top_p=0.9,
    temperature=0.0,
    seed=1337,
)
greedy = output["choices"][0]["text"]

suffix = b"rot"
tokens = model.tokenize(suffix, add_bos=True, special=True)
def logit_processor_func(input_ids, logits):
    for token in tokens:
        logits[token] *= 1000
    return logits

logit_processors = llama_cpp.LogitsProcessorList([logit_processor_func])

output = model.create_completion(
    "The capital of france is par",
    max_tokens=4,
    top_k=50,
    top_p=0.9,
    temperature=0.8,
    seed=1337,
    logits_processor=logit_processors,
)
rot = output["choices"][0]["text"]

model.set_seed(1337)

state = model.save_state()

output = model.create_completion("Pick a number from 1 to 10?:\\n", max_tokens=4, top_k=50, top_p=0.9,
                                 temperature=1.0)
number_1 = output["choices"][0]["text"]

output = model.create_completion("Pick a number from 1 to 10?:\\n", max_tokens=4, top_k=50, top_p=0.9,
                                 temperature=1.0)
number_2 = output["choices"][0]["text"]

model.load_state(state)

output = model.create_completion("Pick a number from 1 to 10?:\\n", max_tokens=4, top_k=50, top_p=0.9,
                                 temperature=1.0)
number_3 = output["choices"][0]["text"]
''',
    "readme_from_pretrained": '''
from llama_cpp import Llama
llm = Llama.from_pretrained(
    repo_id="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
    filename="*Q4_1.gguf",
    verbose=False
)
''',
    "stream_chat_deltas": '''
from llama_cpp import Llama
llm = Llama(model_path="model.gguf", chat_format="chatml")
text = ""
for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": "Say hello."}], stream=True, max_tokens=16):
    delta = chunk["choices"][0]["delta"]
    if "content" in delta:
        text += delta["content"]
''',
}

_PATHS = ("./models/7B/llama-model.gguf", "path/to/llama-2/llama-model.gguf", "path/to/model.gguf",
          "path/to/model", "models/ggml-7b.bin", "../models/7B/ggml-models.bin", "../models/7B/ggml-model.bin",
          "model.gguf")


@pytest.fixture(autouse=True)
def _llama_cpp_python_n_ctx(monkeypatch):
    init = pyrt.api.Llama.__init__
    d = list(init.__defaults__)
    assert init.__code__.co_varnames[2] == "n_ctx" and d[1] == 4096
    d[1] = 512
    monkeypatch.setattr(init, "__defaults__", tuple(d))


def run_snippet(name: str, model_path: str) -> dict:
    code = SNIPPETS[name]
    code = code.replace("from llama_cpp import", "from pyrt import").replace(
        "import llama_cpp\n", "import pyrt as llama_cpp\n")
    for p in _PATHS:
        code = code.replace(f'"{p}"', repr(model_path))
    assert "llama_cpp import" not in code
    ns: dict = {}
    exec(compile(code, f"<snippet {name}>", "exec"), ns)
    return ns


def test_snippet_readme_high_level_completion(model_path, capsys):
    ns = run_snippet("readme_high_level_completion", model_path)
    out = ns["output"]
    assert out["object"] == "text_completion" and out["choices"][0]["finish_reason"] in ("stop", "length")
    text = out["choices"][0]["text"]
    assert text.startswith("Q: Name the planets in the solar system? A: ") and "\n" not in text
    assert "'choices'" in capsys.readouterr().out


def test_snippet_readme_chat_completion(model_path):
    r = run_snippet("readme_chat_completion", model_path)["result"]
    assert r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant"
    choice = r["choices"][0]
    # unseeded, in a template the model was not trained on (llama-2 on SmolLM2): sampling may
    # pick the end token first; then the reply is empty and says why
    assert isinstance(choice["message"]["content"], str)
    assert choice["message"]["content"] or (choice["finish_reason"] == "stop" and
                                            r["usage"]["completion_tokens"] == 0)


def test_snippet_readme_json_mode(model_path):
    try:
        ns = run_snippet("readme_json_mode", model_path)
        r = ns["result"]
    except ValueError as e:
        if "response_format" in str(e):
            pytest.xfail("JSON mode lands with the structured-output work")
        raise
    choice = r["choices"][0]
    if choice["finish_reason"] == "length":
        # the snippet sets no max_tokens and no seed: a sampled JSON value may run on
        # until the context is full, cut before it is complete; that is the only way out
        assert r["usage"]["total_tokens"] >= ns["llm"].n_ctx()   # (the last token is not evaluated)
        return
    assert choice["finish_reason"] == "stop"
    json.loads(choice["message"]["content"])


def test_snippet_readme_embeddings(model_path):
    e = run_snippet("readme_embeddings", model_path)["embeddings"]
    assert [d["index"] for d in e["data"]] == [0, 1]
    assert len(e["data"][0]["embedding"]) == 576 and e["usage"]["prompt_tokens"] > 0


def test_snippet_readme_context_window(model_path):
    assert run_snippet("readme_context_window", model_path)["llm"].n_ctx() == 2048


def test_snippet_docstring_completion_with_stop(model_path, capsys):
    run_snippet("docstring_completion_with_stop", model_path)
    assert "." not in capsys.readouterr().out


def test_snippet_docstring_chat_llama2(model_path, capsys):
    run_snippet("docstring_chat_llama2", model_path)
    assert "'chat.completion'" in capsys.readouterr().out


def test_snippet_docstring_generate_tokenize_bytes(model_path, capsys):
    ns = run_snippet("docstring_generate_tokenize_bytes", model_path)
    pieces = ns["pieces"]
    assert all(isinstance(p, bytes) for p in pieces)
    assert capsys.readouterr().out == "".join(f"{p!r}\n" for p in pieces)
    if not pieces:
        # unseeded sampling at temp 1.0 may draw an end token first (SmolLM2 ranks its EOS
        # third after this prompt): then one must be among the top-40 candidates
        llama = ns["llama"]
        llama.reset()
        llama.eval(ns["tokens"])
        top40 = np.argsort(llama.scores[-1])[-40:]
        assert set(llama.tokenizer.eog_ids) & set(top40.tolist())


def test_snippet_example_streaming(model_path, capsys):
    run_snippet("example_streaming", model_path)
    printed = capsys.readouterr().out
    chunks = [json.loads(c) for c in _json_objects(printed)]
    assert chunks and all(c["object"] == "text_completion" for c in chunks)   # unseeded: may stop at once
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "\n" not in "".join(c["choices"][0]["text"] for c in chunks)


def _json_objects(text: str) -> list[str]:
    dec, out, i = json.JSONDecoder(), [], 0
    while True:
        j = text.find("{", i)
        if j < 0:
            return out
        obj, end = dec.raw_decode(text, j)
        out.append(json.dumps(obj))
        i = end


def test_snippet_example_inference_echo(model_path, capsys):
    run_snippet("example_inference_echo", model_path)
    data = json.loads(capsys.readouterr().out)
    assert data["choices"][0]["text"].startswith("Question: What are the names of the planets")


def test_snippet_example_infill(model_path):
    resp = run_snippet("example_infill", model_path)["response"]
    assert resp.endswith("\n    return sum\n\n")   # no FIM tokens in SmolLM2: the suffix is appended


def test_snippet_example_embedding(model_path, capsys):
    run_snippet("example_embedding", model_path)
    assert "'embedding'" in capsys.readouterr().out


def test_snippet_tests_tokenize_special_bytes(model_path):
    ns = run_snippet("tests_tokenize_special_bytes", model_path)
    assert ns["text"] == b"Hello, world!" and all(isinstance(t, int) for t in ns["tokens"])


def test_snippet_tests_logits_processor_save_load_state(model_path):
    ns = run_snippet("tests_logits_processor_save_load_state", model_path)
    m = ns["model"]
    ids = m.tokenize("The quick brown fox jumps over the lazy dog. The quick brown fox", special=True)
    assert ns["greedy"] == m.detokenize_text(list(m.generate(ids, max_tokens=6, temperature=0)))
    assert ns["rot"].lower().startswith("rot")
    assert ns["number_1"] != ns["number_2"]
    assert ns["number_1"] == ns["number_3"]


def test_snippet_readme_from_pretrained(model_path):
    assert run_snippet("readme_from_pretrained", model_path)["llm"].model_path == model_path


def test_snippet_stream_chat_deltas(model_path):
    assert run_snippet("stream_chat_deltas", model_path)["text"].strip()


def test_stopping_criteria_ends_generation_after_the_token(llm):
    from pyrt import StoppingCriteriaList
    seen = []

    def after_three(input_ids, logits):
        seen.append(len(input_ids))
        return len(seen) >= 3

    out = llm("Once upon a time", max_tokens=20, temperature=0,
              stopping_criteria=StoppingCriteriaList([after_three]))
    assert out["usage"]["completion_tokens"] == 3 and out["choices"][0]["finish_reason"] == "stop"
    greedy = llm("Once upon a time", max_tokens=3, temperature=0)["choices"][0]["text"]
    assert out["choices"][0]["text"] == greedy
    assert seen[1] == seen[0] + 1                      # input_ids grow by the accepted token


def _longest_repeat(toks: list[int]) -> int:
    """Length of the longest token sequence that occurs twice (overlaps allowed)."""
    best = 0
    for i in range(len(toks)):
        for j in range(i + 1, len(toks)):
            k = 0
            while j + k < len(toks) and toks[i + k] == toks[j + k]:
                k += 1
            best = max(best, k)
    return best


def test_dry_breaks_a_greedy_loop_on_the_real_model(llm):
    ids = llm.tokenize("The sky is")
    plain = list(llm.generate(ids, max_tokens=60, temperature=0))
    dry = list(llm.generate(ids, max_tokens=60, temperature=0, dry_multiplier=0.8))
    assert _longest_repeat(plain) >= 10                   # SmolLM2 greedy loops here
    assert _longest_repeat(dry) < _longest_repeat(plain) and _longest_repeat(dry) <= 6
