"""Async client for the SGLang native API, used unchanged for a real SGLang server and the built-in CPU engine.

On GPU machines: `pip install "slime-rl[sglang]"`, then either let the run start servers (engines.kind: sglang,
through `engine_launcher.launch_sglang_server`, i.e. `python -m sglang.launch_server --model-path M --port P`)
or start them yourself and list them (engines.kind: external, engines.urls: [http://host:port, ...]).
Token versions: SGLang reports one `weight_version` string per response; the CPU engine also sends
`output_token_weight_versions` (one int per token, so a request that spans a weight swap carries both versions).
The client uses the per-token list when present, else the response's version for every token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx


class EngineError(RuntimeError):
    pass


@dataclass
class GenerateResult:
    output_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: str  # stop | length | abort
    text: str
    engine: str


def parse_generate(body: dict[str, Any], engine: str) -> GenerateResult:
    meta = body.get("meta_info") or {}
    ids = list(body.get("output_ids") or [])
    lps = [float(x[0]) for x in meta.get("output_token_logprobs") or []]
    if len(lps) != len(ids):
        raise EngineError(f"{engine}: {len(lps)} logprobs for {len(ids)} output tokens (was return_logprob set?)")
    versions = meta.get("output_token_weight_versions")
    if versions is None:  # a stock SGLang server reports one version per response
        versions = [parse_version(meta.get("weight_version"))] * len(ids)
    elif len(versions) != len(ids):
        raise EngineError(f"{engine}: {len(versions)} token versions for {len(ids)} output tokens")
    finish = (meta.get("finish_reason") or {}).get("type", "stop")
    return GenerateResult(ids, lps, [int(v) for v in versions], finish, body.get("text", ""), engine)


def parse_version(v: Any) -> int:
    """SGLang reports weight_version as a string; ours hold an int. Anything else (e.g. "default") counts as 0."""
    if isinstance(v, int):
        return v
    s = str(v).strip() if v is not None else ""
    return int(s) if s.lstrip("-").isdigit() else 0


class EngineClient:
    def __init__(self, url: str, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        # an AsyncClient is bound to the event loop it first ran on; make one per loop
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            self._http = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.timeout,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
            self._loop = loop
        return self._http

    async def generate(
        self, input_ids: list[int], sampling_params: dict[str, Any], rid: str | None = None
    ) -> GenerateResult | list[GenerateResult]:
        payload = {"input_ids": input_ids, "sampling_params": sampling_params, "return_logprob": True}
        if rid:
            payload["rid"] = rid
        body = await self._post("/generate", payload)
        if isinstance(body, list):
            return [parse_generate(b, self.url) for b in body]
        return parse_generate(body, self.url)

    async def abort(self, rid: str | None = None, abort_all: bool = False) -> None:
        await self._post("/abort_request", {"rid": rid, "abort_all": abort_all})

    async def health(self, timeout: float = 2.0) -> bool:
        try:
            return (await self.http.get("/health", timeout=timeout)).status_code == 200
        except httpx.HTTPError:
            return False

    async def server_info(self) -> dict[str, Any]:
        return (await self.http.get("/server_info")).json()

    async def weight_version(self) -> int:
        try:
            resp = await self.http.get("/get_weight_version")
        except httpx.HTTPError as exc:
            raise EngineError(f"{self.url}/get_weight_version: {type(exc).__name__}: {exc}") from None
        return parse_version(resp.json().get("weight_version"))

    async def _post(self, path: str, payload: dict[str, Any]) -> Any:
        try:
            resp = await self.http.post(path, json=payload)
        except httpx.HTTPError as exc:
            raise EngineError(f"{self.url}{path}: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise EngineError(f"{self.url}{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    async def close(self) -> None:
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = None
