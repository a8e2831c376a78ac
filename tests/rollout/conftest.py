import pytest

from slime_rl.rollout.engine_launcher import launch_cpu_engine


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    engine = launch_cpu_engine(tiny_model_path, max_batch_size=16, threads=1, log_path=log)
    yield engine
    engine.stop()
