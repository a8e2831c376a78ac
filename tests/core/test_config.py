import pytest

from slime_rl.config import ConfigError, RunConfig, load_config, parse_overrides


def test_defaults_are_valid_and_run_on_cpu():
    cfg = RunConfig()
    assert cfg.engines.kind == "cpu"
    assert cfg.trainer.parallel.tensor == 1
    assert cfg.loss.kind == "bilateral"


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("trainer:\n  lr: 1.0e-5\nrollout:\n  group_size: 8\n")
    cfg = load_config(path, ["trainer.lr=2e-6", "loss.kind=tis", "rollout.sampling.temperature=0.7"])
    assert cfg.trainer.lr == 2e-6
    assert cfg.rollout.group_size == 8
    assert cfg.loss.kind == "tis"
    assert cfg.rollout.sampling.temperature == 0.7


@pytest.mark.parametrize(
    "override, path, words",
    [
        ("trainer.lrr=1e-6", "trainer.lrr", "unknown key"),
        ("rollout.group_size=many", "rollout.group_size", "integer"),
        ("trainer.lr=-1", "trainer.lr", "greater than 0"),
        ("loss.kind=ppo2", "loss.kind", "bilateral"),
        ("loss.eps_low=1.5", "loss.eps_low", "less than 1"),
        ("rollout.sampling.top_p=1.5", "rollout.sampling.top_p", "less than or equal"),
    ],
)
def test_bad_values_name_the_dotted_path(override, path, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    paths = [p for p, _ in info.value.problems]
    assert path in paths
    assert words in str(info.value)


def test_unknown_key_in_yaml_is_reported(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("buffer:\n  high_watermark: 3\n")
    with pytest.raises(ConfigError, match=r"buffer\.high_watermark: unknown key"):
        load_config(path)


def test_malformed_override_is_rejected():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_overrides(["trainer.lr"])


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_model_dtype_auto_is_settled_at_load_to_what_the_machine_computes_natively(monkeypatch):
    from slime_rl.config import model as model_cfg

    monkeypatch.setattr(model_cfg, "native_bf16", lambda: True)
    assert model_cfg.ModelConfig(dtype="auto").dtype == "bfloat16"
    monkeypatch.setattr(model_cfg, "native_bf16", lambda: False)
    assert model_cfg.ModelConfig(dtype="auto").dtype == "float32"
    assert model_cfg.ModelConfig(dtype="bfloat16").dtype == "bfloat16"  # an explicit choice is kept
    with pytest.raises(ValueError, match="dtype"):
        model_cfg.ModelConfig(dtype="int8")


def test_each_loss_kind_takes_exactly_its_own_options():
    cfg = load_config(None, ["loss.kind=tis", "loss.cap=3"])
    assert (cfg.loss.kind, cfg.loss.cap, cfg.loss.clip_high) == ("tis", 3.0, 0.28)
    assert load_config(None, ["loss.eps_low=0.1"]).loss.kind == "bilateral"  # a section without a kind: the default
    with pytest.raises(ConfigError) as info:
        load_config(None, ["loss.kind=tis", "loss.eps_low=0.1"])  # a bilateral option on another kind
    assert info.value.problems == [("loss.eps_low", "not an option of loss.kind=tis")]
