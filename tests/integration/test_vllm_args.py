"""Ingot's vLLM argument mapping checked by vLLM's own classes, in vLLM's interpreter, without weights.

The server command line the runtime builds goes through vLLM's argument parser and
`AsyncEngineArgs(...).create_engine_config()`; the request bodies go through vLLM's pydantic
request models and `to_sampling_params()`. One subprocess checks everything (importing vLLM costs
~15 s on two cores).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.catalog.catalog import ModelCatalog
from engine.generation import Constraint, GenerationRequest, SamplingParams
from engine.hardware import GpuInfo, HardwareProfile
from engine.runtimes.vllm import server_args, server_env
from engine.runtimes.vllm_client import (
    completion_body,
    detokenize_body,
    tokenize_body,
    tokenize_chat_body,
)
from engine.runtimes.vllm_install import default_vllm_python, probe_install
from engine.runtimes.vllm_plan import GIB, VllmPreferences, plan_vllm
from tests.conftest import DEFAULT_HF_ID

PYTHON = default_vllm_python(None)
# scripts/test.sh installs vLLM and sets INGOT_REQUIRE_VLLM, so there a missing vLLM fails.
pytestmark = pytest.mark.skipif(
    not PYTHON.exists() and not os.environ.get("INGOT_REQUIRE_VLLM"),
    reason="vLLM is not installed: run scripts/setup_vllm.sh",
)

PROBE = r"""
import json, os, sys
job = json.load(sys.stdin)
os.environ.update(job["env"])
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve.tokenize.protocol import (
    DetokenizeRequest, TokenizeChatRequest, TokenizeCompletionRequest,
)
from vllm.utils.argparse_utils import FlexibleArgumentParser

out = {"configs": [], "sampling": [], "tokenize": []}
for argv in job["argvs"]:
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    validate_parsed_serve_args(args)
    cfg = AsyncEngineArgs.from_cli_args(args).create_engine_config()
    out["configs"].append({
        "host": args.host, "port": args.port,
        "served": list(cfg.model_config.served_model_name) if isinstance(
            cfg.model_config.served_model_name, (list, tuple)
        ) else [cfg.model_config.served_model_name],
        "max_model_len": cfg.model_config.max_model_len,
        "max_num_seqs": cfg.scheduler_config.max_num_seqs,
        "dtype": str(cfg.model_config.dtype),
        "enforce_eager": cfg.model_config.enforce_eager,
        "gpu_memory_utilization": cfg.cache_config.gpu_memory_utilization,
        "kv_bytes": getattr(cfg.cache_config, "kv_cache_memory_bytes", None),
        "policy": str(cfg.scheduler_config.policy),
        "access_log": not args.disable_uvicorn_access_log,
    })
for body in job["bodies"]:
    req = CompletionRequest(**body)
    sp = req.to_sampling_params(max_tokens=body["max_tokens"])
    so = sp.structured_outputs
    out["sampling"].append({
        "temperature": sp.temperature, "top_p": sp.top_p, "top_k": sp.top_k, "seed": sp.seed,
        "repetition_penalty": sp.repetition_penalty, "max_tokens": sp.max_tokens,
        "stream": req.stream, "usage_each_chunk": req.stream_options.continuous_usage_stats,
        "priority": req.priority, "add_special_tokens": req.add_special_tokens,
        "structured": None if so is None else {
            k: getattr(so, k) for k in ("json", "regex", "grammar") if getattr(so, k) is not None
        },
    })
for kind, body in job["tokenize"]:
    cls = {"chat": TokenizeChatRequest, "prompt": TokenizeCompletionRequest,
           "detok": DetokenizeRequest}[kind]
    out["tokenize"].append(cls(**body).model_dump(exclude_none=True))
print(json.dumps(out))
"""


def hf_folder() -> Path:
    from tests.support.models import build_default_model
    from tests.support.paths import TEST_BUILD_ROOT

    return build_default_model(TEST_BUILD_ROOT)[0]


def probe(job: dict[str, Any]) -> dict[str, Any]:
    r = subprocess.run(
        [str(PYTHON), "-c", PROBE],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = hf_folder()
    cat = ModelCatalog.default()
    v = cat.get(DEFAULT_HF_ID)
    assert v is not None
    hw = HardwareProfile("test", 2, 2, 24 * GIB, 20 * GIB)
    cpu_plan = plan_vllm(v, hw, "cpu")
    pinned = plan_vllm(v, hw, "cpu", VllmPreferences(max_model_len=2048, max_num_seqs=3))
    # A CUDA plan's flags parse on the CPU build too (the device comes from the platform).
    gpu_hw = replace(hw, gpus=(GpuInfo(0, "test", 24 * GIB, 20 * GIB),))
    cuda_plan = plan_vllm(replace(v, device="cuda"), gpu_hw, "cuda")
    plans = [cpu_plan, pinned, cuda_plan]
    env = server_env(cpu_plan, tmp_path_factory.mktemp("vllm-cache"))
    requests = [
        GenerationRequest(
            "hi",
            SamplingParams(
                max_tokens=7, temperature=0.3, top_p=0.8, top_k=20, seed=5, repetition_penalty=1.2
            ),
            priority=0,
        ),
        GenerationRequest("hi", constraint=Constraint("json_schema", '{"type": "object"}')),
        GenerationRequest("hi", constraint=Constraint("regex", "[a-z]+")),
        GenerationRequest("hi", constraint=Constraint("lark_grammar", 'start: "yes" | "no"')),
    ]
    bodies = [
        completion_body(requests[0], model=v.id, prompt=[1, 2, 3], max_tokens=7),
        *(completion_body(r, model=v.id, prompt="hi", max_tokens=16) for r in requests[1:]),
    ]
    tokenize = [
        ("chat", tokenize_chat_body(v.id, [{"role": "user", "content": "hi"}])),
        ("prompt", tokenize_body(v.id, "hi")),
        ("detok", detokenize_body(v.id, [1, 2, 3])),
    ]
    job = {
        "env": {k: env[k] for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_HOST_IP", "HF_HUB_OFFLINE")},
        "argvs": [server_args(folder, v.id, 18000 + i, p) for i, p in enumerate(plans)],
        "bodies": bodies,
        "tokenize": tokenize,
    }
    out = probe(job)
    out["plans"] = plans
    return out


def test_the_installed_build_is_the_cpu_build() -> None:
    inst = probe_install(str(PYTHON))
    assert inst.build == "cpu" and inst.version == "0.32.0"


def test_the_server_command_line_means_the_plan_to_vllm(checked: dict[str, Any]) -> None:
    cpu, pinned, cuda = checked["configs"]
    plan = checked["plans"][0]
    assert cpu["host"] == "127.0.0.1" and cpu["port"] == 18000 and not cpu["access_log"]
    assert cpu["served"] == [DEFAULT_HF_ID]
    assert (cpu["max_model_len"], cpu["max_num_seqs"]) == (plan.max_model_len, plan.max_num_seqs)
    assert cpu["dtype"] == "torch.float32" and cpu["enforce_eager"] is True
    assert cpu["policy"].endswith("priority")
    # The CPU build sized its KV cache from the plan's VLLM_CPU_KVCACHE_SPACE.
    assert cpu["kv_bytes"] == plan.kv_cache_bytes == GIB
    assert (pinned["max_model_len"], pinned["max_num_seqs"]) == (2048, 3)
    assert cuda["gpu_memory_utilization"] == pytest.approx(
        checked["plans"][2].gpu_memory_utilization
    )


def test_sampling_settings_reach_vllms_sampling_params(checked: dict[str, Any]) -> None:
    s = checked["sampling"][0]
    assert s == {
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 20,
        "seed": 5,
        "repetition_penalty": 1.2,
        "max_tokens": 7,
        "stream": True,
        "usage_each_chunk": True,
        "priority": 0,
        "add_special_tokens": False,
        "structured": None,
    }


def test_constraints_reach_vllms_structured_outputs(checked: dict[str, Any]) -> None:
    _, js, rx, lark = checked["sampling"]
    assert js["structured"] == {"json": {"type": "object"}}
    assert rx["structured"] == {"regex": "[a-z]+"}
    assert lark["structured"] == {"grammar": 'start: "yes" | "no"'}
    # Unset sampling values stay unset, so vLLM applies the model's generation config.
    assert js["seed"] is None and js["add_special_tokens"] is True


def test_tokenizer_requests_are_valid_for_vllm(checked: dict[str, Any]) -> None:
    chat, prompt, detok = checked["tokenize"]
    assert chat["add_generation_prompt"] is True and chat["messages"][0]["content"] == "hi"
    assert prompt["prompt"] == "hi" and prompt["add_special_tokens"] is True
    assert detok["tokens"] == [1, 2, 3]
