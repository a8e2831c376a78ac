"""A config names the model; the name means the model store's folder from any working directory (a `ray job submit`
job runs in an uploaded copy of the project without `.cache/`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slime_rl.config import load_config
from slime_rl.model_store import DEFAULT_NAME, ensure, is_converted, resolve, store_dir

REPO = Path(__file__).resolve().parents[2]


def test_example_config_finds_the_model_from_another_working_directory(real_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as a job's copy of the project: no .cache/ here
    cfg = load_config(REPO / "examples" / "math" / "config.yaml")
    assert cfg.model.path == real_model_path == store_dir() / DEFAULT_NAME
    assert cfg.model.path.is_absolute() and is_converted(cfg.model.path)


def test_names_folders_and_the_store_location(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIME_RL_MODELS", str(tmp_path / "store"))
    monkeypatch.chdir(tmp_path)
    assert resolve(DEFAULT_NAME) == tmp_path / "store" / DEFAULT_NAME
    (tmp_path / DEFAULT_NAME).mkdir()  # a folder of that name here is a folder, not the name
    assert resolve(DEFAULT_NAME) == Path(DEFAULT_NAME)
    assert resolve("not-a-model") == Path("not-a-model")  # neither: left for `ensure` to report


def test_a_missing_model_fails_with_its_name_not_a_hub_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model.path '\.cache/models/gone'.*SmolLM2-135M-Instruct"):
        ensure(".cache/models/gone")
