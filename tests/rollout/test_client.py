"""The engine client: SGLang response parsing (per-token versions, string weight_version) and a real engine."""

import asyncio

import pytest

from slime_rl.rollout.engine_client import EngineClient, EngineError, parse_generate, parse_version


def body(n: int = 2, **meta):
    return {
        "text": "hi",
        "output_ids": list(range(n)),
        "meta_info": {
            "id": "r",
            "finish_reason": {"type": "length"},
            "weight_version": "3",
            "output_token_logprobs": [[-0.5, i, None] for i in range(n)],
            **meta,
        },
    }


def test_versions_come_from_per_token_versions_else_the_response_version():
    stock = parse_generate(body(), "e")  # a stock SGLang server: one string version for the response
    assert stock.versions == [3, 3] and stock.logprobs == [-0.5, -0.5] and stock.finish_reason == "length"
    ours = parse_generate(body(output_token_weight_versions=[2, 3]), "e")
    assert ours.versions == [2, 3]
    assert parse_version("default") == 0 and parse_version(7) == 7 and parse_version("-1") == -1


def test_malformed_responses_are_named():
    with pytest.raises(EngineError, match="1 token versions for 2 output tokens"):
        parse_generate(body(output_token_weight_versions=[1]), "e")
    bad = body()
    bad["meta_info"]["output_token_logprobs"] = []
    with pytest.raises(EngineError, match="0 logprobs for 2 output tokens"):
        parse_generate(bad, "e")


def test_client_against_the_cpu_engine(tiny_engine):
    async def scenario():
        client = EngineClient(tiny_engine.url)
        res = await client.generate([1, 2, 3], {"max_new_tokens": 5, "temperature": 0.0}, rid="c-1")
        assert len(res.output_ids) == len(res.logprobs) == len(res.versions) <= 5
        assert all(lp <= 0 for lp in res.logprobs) and set(res.versions) == {await client.weight_version()}
        many = await client.generate([1, 2, 3], {"max_new_tokens": 3, "temperature": 1.0, "n": 3})
        assert isinstance(many, list) and len(many) == 3
        assert await client.health()
        info = await client.server_info()
        assert isinstance(info, dict)
        with pytest.raises(EngineError, match="HTTP 4"):
            await client.generate([1, 2], {"max_new_tokens": 0})
        await client.close()
        assert not await EngineClient("http://127.0.0.1:9").health(timeout=0.5)

    asyncio.run(scenario())
