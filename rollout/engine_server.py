"""SGLang-native HTTP API over the CPU EngineCore (same paths, field names and semantics as SGLang's server,
plus `meta_info.output_token_weight_versions`, the policy version of each output token)."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request as HttpRequest
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .engine_core import EngineCore, Request
from .sampling import SamplingParams

log = logging.getLogger("slime_rl.engine.http")


class GenerateReq(BaseModel):
    model_config = ConfigDict(extra="allow")
    input_ids: list[int] | list[list[int]] | None = None
    text: str | list[str] | None = None
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    return_logprob: bool = False
    rid: str | list[str] | None = None
    stream: bool = False


def _response(core: EngineCore, res: dict[str, Any], return_logprob: bool) -> dict[str, Any]:
    meta = {"id": res["rid"], "finish_reason": res["finish_reason"], "prompt_tokens": len(res["input_ids"]),
            "completion_tokens": len(res["output_ids"]), "weight_version": str(core.weight_version),
            "output_token_weight_versions": res["versions"]}
    if return_logprob:
        meta["output_token_logprobs"] = [[lp, tok, None] for lp, tok in zip(res["logprobs"], res["output_ids"])]
    text = core.tokenizer.decode(res["output_ids"], skip_special_tokens=True)
    return {"text": text, "output_ids": res["output_ids"], "meta_info": meta}


def create_app(core: EngineCore) -> FastAPI:
    app = FastAPI(title="slime-rl CPU engine (SGLang native API)")

    @app.exception_handler(ValidationError)
    async def _invalid(_, exc: ValidationError):
        return JSONResponse(status_code=400, content={"error": {"message": str(exc)}})

    def _prompts(req: GenerateReq) -> list[list[int]]:
        if req.input_ids is None and req.text is None:
            raise HTTPException(400, "one of input_ids or text is required")
        if req.input_ids is not None:
            ids = req.input_ids
            return [ids] if ids and isinstance(ids[0], int) else ids  # type: ignore[list-item]
        texts = [req.text] if isinstance(req.text, str) else req.text
        return [core.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    @app.post("/generate")
    async def generate(req: GenerateReq):
        prompts = _prompts(req)
        n = req.sampling_params.n
        rids = req.rid if isinstance(req.rid, list) else [req.rid] * len(prompts)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        on_token = (lambda r: loop.call_soon_threadsafe(queue.put_nowait, r.result())) if req.stream else None
        jobs: list[Request] = []
        try:
            for i, (ids, rid) in enumerate(zip(prompts, rids)):
                for j in range(n):
                    sub_rid = rid if (rid and n == 1) else f"{rid or 'req'}-{i}-{j}" if rid else None
                    jobs.append(core.submit(ids, req.sampling_params, sub_rid, on_token))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if req.stream:
            return StreamingResponse(_stream(core, jobs, queue, req.return_logprob), media_type="text/event-stream")
        results = [await asyncio.wrap_future(j.future) for j in jobs]
        out = [_response(core, r, req.return_logprob) for r in results]
        return out[0] if len(out) == 1 and not isinstance(req.input_ids and req.input_ids[0], list) else out

    async def _stream(core: EngineCore, jobs: list[Request], queue: asyncio.Queue, return_logprob: bool):
        open_rids = {j.rid for j in jobs}
        while open_rids:
            res = await queue.get()
            yield f"data: {json.dumps(_response(core, res, return_logprob))}\n\n"
            if res["finish_reason"] is not None:
                open_rids.discard(res["rid"])
        yield "data: [DONE]\n\n"

    @app.post("/abort_request")
    async def abort_request(body: dict[str, Any]):
        if not body.get("rid") and not body.get("abort_all"):
            raise HTTPException(400, "abort_request needs rid or abort_all")
        n = await asyncio.wrap_future(core.abort(body.get("rid"), bool(body.get("abort_all"))))
        return {"success": True, "aborted": n}

    @app.post("/pause_generation")
    async def pause_generation(body: dict[str, Any] | None = None):
        mode = (body or {}).get("mode", "abort")
        if mode not in ("abort", "retract", "in_place"):
            raise HTTPException(400, f"mode must be abort, retract or in_place, not {mode!r}")
        await asyncio.wrap_future(core.pause(mode))
        return {"success": True, "mode": mode}

    @app.post("/continue_generation")
    async def continue_generation():
        await asyncio.wrap_future(core.resume())
        return {"success": True}

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache():
        await asyncio.wrap_future(core.flush_cache())
        return {"success": True}

    @app.get("/health")
    async def health():
        return {}

    @app.get("/health_generate")
    async def health_generate():
        job = core.submit([core.tokenizer.bos_token_id or 0], SamplingParams(max_new_tokens=1, temperature=0))
        await asyncio.wrap_future(job.future)
        return {}

    @app.get("/get_model_info")
    async def get_model_info():
        return {"model_path": core.model_path, "tokenizer_path": core.model_path, "is_generation": True,
                "weight_version": str(core.weight_version)}

    @app.get("/server_info")
    async def server_info():
        return core.info()

    @app.get("/get_weight_version")
    async def get_weight_version():
        return {"weight_version": str(core.weight_version)}

    @app.post("/update_weights_from_disk")
    async def update_weights_from_disk(body: dict[str, Any]):
        if "model_path" not in body:
            raise HTTPException(400, "model_path is required")
        try:
            if body.get("abort_all_requests"):
                await asyncio.wrap_future(core.abort(abort_all=True))
            await asyncio.wrap_future(core.load_weights_from_disk(body["model_path"], _version(body)))
        except (OSError, KeyError, ValueError) as exc:
            return {"success": False, "message": str(exc)}
        return {"success": True, "message": f"loaded {body['model_path']}", "weight_version": str(core.weight_version)}

    @app.post("/update_weights_from_tensor")
    async def update_weights_from_tensor(request: HttpRequest):
        from safetensors.torch import load as load_safetensors

        try:
            if request.headers.get("content-type", "").startswith("application/octet-stream"):
                tensors = load_safetensors(await request.body())
                version = request.query_params.get("weight_version")
            else:
                body = await request.json()
                tensors = {}
                for blob in body.get("serialized_named_tensors", []):
                    tensors.update(load_safetensors(base64.b64decode(blob)))
                version = body.get("weight_version")
            await asyncio.wrap_future(core.request_weight_swap(tensors, int(version) if version is not None else None))
        except (KeyError, ValueError, RuntimeError) as exc:
            return {"success": False, "message": str(exc)}
        return {"success": True, "message": f"updated {len(tensors)} tensors", "weight_version": str(core.weight_version)}

    @app.post("/update_weight_version")
    async def update_weight_version(body: dict[str, Any]):
        if "new_version" not in body:
            raise HTTPException(400, "new_version is required")
        if body.get("abort_all_requests"):
            await asyncio.wrap_future(core.abort(abort_all=True))
        await asyncio.wrap_future(core.set_version(int(body["new_version"])))
        return {"success": True, "message": f"weight_version={core.weight_version}"}

    return app


def _version(body: dict[str, Any]) -> int | None:
    v = body.get("weight_version")
    return int(v) if v is not None else None


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 30000, max_batch_size: int = 32,
          threads: int = 1, weight_version: int = 0) -> None:
    import uvicorn

    core = EngineCore(model_path, max_batch_size=max_batch_size, weight_version=weight_version, threads=threads)
    try:
        uvicorn.run(create_app(core), host=host, port=port, log_level="warning", access_log=False)
    finally:
        core.shutdown()
