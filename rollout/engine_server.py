"""SGLang-native HTTP API over the CPU EngineCore (same paths, field names and semantics as SGLang's server,
plus `meta_info.output_token_weight_versions`, the policy version of each output token)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
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
    meta = {
        "id": res["rid"],
        "finish_reason": res["finish_reason"],
        "prompt_tokens": len(res["input_ids"]),
        "completion_tokens": len(res["output_ids"]),
        "weight_version": str(core.weight_version),
        "output_token_weight_versions": res["versions"],
    }
    if return_logprob:
        meta["output_token_logprobs"] = [[lp, tok, None] for lp, tok in zip(res["logprobs"], res["output_ids"])]
    text = core.tokenizer.decode(res["output_ids"], skip_special_tokens=True)
    return {"text": text, "output_ids": res["output_ids"], "meta_info": meta}


def create_app(core: EngineCore) -> FastAPI:
    app = FastAPI(title="slime-rl CPU engine (SGLang native API)")

    # SGLang answers malformed requests with 400; name the offending field(s) in the message
    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_, exc: RequestValidationError):
        return JSONResponse(status_code=400, content={"error": {"message": _describe(exc.errors())}})

    @app.exception_handler(ValidationError)
    async def _invalid(_, exc: ValidationError):
        return JSONResponse(status_code=400, content={"error": {"message": _describe(exc.errors())}})

    @app.exception_handler(HTTPException)
    async def _http_error(_, exc: HTTPException):
        return JSONResponse(status_code=exc.status_code, content={"error": {"message": exc.detail}})

    def _prompts(req: GenerateReq) -> list[list[int]]:
        if req.input_ids is None and req.text is None:
            raise HTTPException(400, "one of input_ids or text is required")
        if req.input_ids is not None:
            ids = req.input_ids
            if not ids:
                raise HTTPException(400, "input_ids: empty")
            return [ids] if ids and isinstance(ids[0], int) else ids  # type: ignore[list-item]
        texts = [req.text] if isinstance(req.text, str) else req.text
        return [core.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    @app.post("/generate")
    async def generate(req: GenerateReq, http: HttpRequest):
        prompts = _prompts(req)
        batched = isinstance(req.text, list) or bool(req.input_ids) and isinstance(req.input_ids[0], list)
        n = req.sampling_params.n
        if isinstance(req.rid, list) and len(req.rid) != len(prompts):
            raise HTTPException(400, f"rid: {len(req.rid)} ids for {len(prompts)} prompts")
        rids = req.rid if isinstance(req.rid, list) else [req.rid] * len(prompts)
        try:
            for ids in prompts:  # all or nothing: a bad prompt in a batch starts none of them
                core.validate(ids, req.sampling_params)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        on_token = (lambda r: loop.call_soon_threadsafe(queue.put_nowait, r.result())) if req.stream else None
        jobs: list[Request] = []
        shared = batched and isinstance(req.rid, str)
        for i, (ids, rid) in enumerate(zip(prompts, rids)):
            for j in range(n):
                params = req.sampling_params
                if params.seed is not None and j:  # the n samples of a seeded request still differ
                    params = params.model_copy(update={"seed": params.seed + j})
                # a rid shared by several samples/prompts gets suffixes; aborting the rid aborts them all
                sub = None if rid is None else f"{rid}-{i}-{j}" if shared else f"{rid}-{j}" if n > 1 else rid
                jobs.append(core.submit(ids, params, sub, on_token))
        if req.stream:
            return StreamingResponse(_stream(jobs, queue, req.return_logprob), media_type="text/event-stream")
        pending = [asyncio.wrap_future(j.future) for j in jobs]
        while not all(f.done() for f in pending):  # a client that hangs up aborts its requests (as SGLang does)
            await asyncio.wait(pending, timeout=1.0)
            if await http.is_disconnected():
                _abort_unfinished(jobs)
        out = [_response(core, f.result(), req.return_logprob) for f in pending]
        return out if batched or len(out) > 1 else out[0]

    def _abort_unfinished(jobs: list[Request]) -> None:
        for j in jobs:
            if not j.future.done():
                core.abort(j.rid)

    async def _stream(jobs: list[Request], queue: asyncio.Queue, return_logprob: bool):
        index = {j.rid: i for i, j in enumerate(jobs)}
        open_rids = set(index)
        try:
            while open_rids:
                res = await queue.get()
                body = _response(core, res, return_logprob)
                if len(jobs) > 1:
                    body["index"] = index[res["rid"]]
                yield f"data: {json.dumps(body)}\n\n"
                if res["finish_reason"] is not None:
                    open_rids.discard(res["rid"])
        finally:  # also runs when the client disconnects mid-stream
            _abort_unfinished(jobs)
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
        return {
            "model_path": core.model_path,
            "tokenizer_path": core.model_path,
            "is_generation": True,
            "weight_version": str(core.weight_version),
        }

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
            if _flag(body.get("abort_all_requests")):
                await asyncio.wrap_future(core.abort(abort_all=True))
            await asyncio.wrap_future(core.load_weights_from_disk(body["model_path"], _version(body)))
        except Exception as exc:  # a failed update answers success=false and leaves the engine as it was
            return {"success": False, "message": f"update_weights_from_disk failed: {exc}"}
        return {"success": True, "message": f"loaded {body['model_path']}", "weight_version": str(core.weight_version)}

    @app.post("/update_weights_from_tensor")
    async def update_weights_from_tensor(request: HttpRequest):
        from safetensors.torch import load as load_safetensors

        try:
            if request.headers.get("content-type", "").startswith("application/octet-stream"):
                tensors = load_safetensors(await request.body())
                opts: dict[str, Any] = dict(request.query_params)
            else:
                opts = await request.json()
                blobs = opts.get("serialized_named_tensors")
                if not isinstance(blobs, list) or not blobs:
                    raise ValueError(
                        "serialized_named_tensors: a non-empty list of base64 safetensors blobs is required"
                    )
                tensors = {}
                for blob in blobs:
                    tensors.update(load_safetensors(base64.b64decode(blob)))
            if _flag(opts.get("abort_all_requests")):
                await asyncio.wrap_future(core.abort(abort_all=True))
            await asyncio.wrap_future(core.request_weight_swap(tensors, _version(opts)))
        except Exception as exc:  # bad payloads included: never a 500, never a half-applied update
            return {"success": False, "message": f"update_weights_from_tensor failed: {exc}"}
        return {
            "success": True,
            "message": f"updated {len(tensors)} tensors",
            "weight_version": str(core.weight_version),
        }

    @app.post("/update_weight_version")
    async def update_weight_version(body: dict[str, Any]):
        if "new_version" not in body:
            raise HTTPException(400, "new_version is required")
        try:
            version = _version({"weight_version": body["new_version"]})
        except ValueError as exc:
            raise HTTPException(400, f"new_version: {exc}") from None
        if _flag(body.get("abort_all_requests")):
            await asyncio.wrap_future(core.abort(abort_all=True))
        await asyncio.wrap_future(core.set_version(version))
        return {"success": True, "message": f"weight_version={core.weight_version}"}

    return app


def _describe(errors) -> str:
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _version(body: dict[str, Any]) -> int | None:
    v = body.get("weight_version")
    if v is None:
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ValueError(f"weight_version must be an integer, got {v!r}") from None


def _flag(v: Any) -> bool:  # JSON bools, or query strings like "true"/"1"
    return v is True or str(v).lower() in ("true", "1")


def serve(
    model_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 30000,
    max_batch_size: int = 32,
    threads: int = 1,
    weight_version: int = 0,
    dtype: str = "float32",
) -> None:
    import uvicorn

    core = EngineCore(
        model_path, max_batch_size=max_batch_size, weight_version=weight_version, threads=threads, dtype=dtype
    )
    try:
        uvicorn.run(create_app(core), host=host, port=port, log_level="warning", access_log=False)
    finally:
        core.shutdown()
