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
    (dict(type_k=8), ["type_k", "F16"]),
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
