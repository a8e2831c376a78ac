"""Everything a run starts, in order, and stops in reverse: Redis, Ray, engines, relay, trainer, rollout
workers, dashboard. This is the one place in core that imports the components."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .config import RunConfig, dump_config
from .model_store import ensure as ensure_model
from .net import write_pid
from .reaper import guard
from .redis_server import EmbeddedRedis
from .run_keys import RunKeys
from .watchdog import RunStalled

log = logging.getLogger("slime_rl.run")


class RunContext:
    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool = False):
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.keys = RunKeys.of(cfg)  # the run's Redis names; a resumed run's config.yaml carries the same id
        self.stack = ExitStack()
        self.redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.engines: list[Any] = []  # EngineProcess handles (CPU / SGLang engines we started)
        self.engine_urls: list[str] = []
        self.relay = None
        self.trainer = None
        self.workers: list[Any] = []
        self.eval_worker = None
        self.dashboard = None
        self.held_out: list[dict[str, Any]] = []
        self.metrics = None  # MetricsSink of the launcher (eval results, buffer stats)
        self._supervisor_stop = threading.Event()
        self.restarts: dict[str, int] = {}

    # --- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> RunContext:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._supervisor_stop.set()
        self.stack.close()

    def _start(self) -> None:
        cfg = self.cfg
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        dump_config(cfg, self.run_dir / "config.yaml")
        guard()  # whatever the run starts ends with this process, however it ends
        if cfg.engines.kind == "cpu":  # its engines load the model here: convert a store model, or fail by name now
            ensure_model(cfg.model.path)
        self._start_redis()
        from .metrics import MetricsSink

        self.metrics = MetricsSink("launcher", self.redis_url, self.run_dir, keys=self.keys)
        self._start_ray()
        self._start_engines()
        self._start_relay()
        self._start_trainer()
        self._start_workers()
        if cfg.dashboard.enabled:
            self._start_dashboard()
        supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        supervisor.start()

    def _start_redis(self) -> None:
        url = self.cfg.buffer.redis_url or os.environ.get("REDIS_URL")
        if url:
            self.redis_url = url
            return
        port_file = self.run_dir / "redis" / "port"
        port = int(port_file.read_text()) if self.resume and port_file.exists() else None
        self.redis = EmbeddedRedis(self.run_dir / "redis", port=port).start()
        port_file.write_text(str(self.redis.port))
        write_pid(self.run_dir, "redis", self.redis.proc.pid)
        self.redis_url = self.redis.url
        self.stack.callback(lambda: self.redis and self.redis.stop())  # the supervisor may have replaced it
        log.info("embedded redis-server at %s (AOF in %s)", self.redis_url, self.run_dir / "redis")

    def _start_ray(self) -> None:
        import ray

        if not ray.is_initialized() and start_ray():
            self.stack.callback(ray.shutdown)
        self._link_actor_logs()

    def _link_actor_logs(self) -> None:
        """Each Ray actor logs to its own files in Ray's session folder: reach them from RUN_DIR/logs/actors."""
        try:
            import ray._private.worker as ray_worker

            session_logs = Path(ray_worker._global_node.get_session_dir_path()) / "logs"
        except (AttributeError, ImportError):  # connected as a client, or Ray moved it: nothing to link
            return
        link = self.run_dir / "logs" / "actors"
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.symlink_to(session_logs, target_is_directory=True)

    def _start_engines(self) -> None:
        ecfg = self.cfg.engines
        if ecfg.kind == "external":
            if not ecfg.urls:
                raise ValueError("engines.urls: kind=external needs at least one engine URL")
            self.engine_urls = list(ecfg.urls)
            return
        from slime_rl.rollout.engine_launcher import launch_cpu_engine, launch_sglang_server

        for i in range(ecfg.num_engines):
            log_path = self.run_dir / "logs" / f"engine-{i}.log"
            if ecfg.kind == "sglang":
                proc = launch_sglang_server(self.cfg.model.path, port=None)
            else:
                proc = launch_cpu_engine(
                    self.cfg.model.path,
                    max_batch_size=ecfg.max_batch_size,
                    threads=ecfg.threads,
                    log_path=log_path,
                    dtype=self.cfg.model.dtype,
                )
            self.engines.append(proc)
            write_pid(self.run_dir, f"engine-{i}", proc.pid)
            self.stack.callback(lambda i=i: self.engines[i].stop())
        self.engine_urls = [e.url for e in self.engines]

    def _start_relay(self) -> None:
        from slime_rl.relay.group import RelayGroup

        self.relay = RelayGroup.start(
            self.cfg.relay, self.redis_url, self.engine_urls, str(self.run_dir), keys=self.keys
        )
        self.stack.callback(self.relay.stop)

    def _start_trainer(self) -> None:
        import ray

        from slime_rl.trainer.actor import TrainerActor

        self.trainer = TrainerActor.options(num_cpus=0, name=None).remote(
            self.cfg, self.redis_url, str(self.run_dir), consumer="trainer-0", resume=self.resume
        )
        self.stack.callback(lambda: ray.kill(self.trainer))

    def _start_workers(self) -> None:
        import ray

        from slime_rl.rollout.worker import RolloutWorker

        for i in range(self.cfg.rollout.num_workers):
            w = RolloutWorker.options(num_cpus=0, max_restarts=3, max_task_retries=0).remote(
                self.cfg, self.engine_urls, self.redis_url, i, str(self.run_dir)
            )
            self.workers.append(w)
        self.eval_worker = RolloutWorker.options(num_cpus=0).remote(
            self.cfg, self.engine_urls, self.redis_url, 1000, str(self.run_dir)
        )

        def _stop_workers():
            for w in self.workers + [self.eval_worker]:
                try:
                    ray.get(w.stop.remote(), timeout=10)
                    ray.get(w.close.remote(), timeout=30)  # the env's shared resources: a kill would leak them
                except Exception:
                    pass
                ray.kill(w)

        self.stack.callback(_stop_workers)

    def _start_dashboard(self) -> None:
        from slime_rl.dashboard.app import start_dashboard

        d = self.cfg.dashboard
        self.dashboard = start_dashboard(
            self.redis_url, self.keys, run_dir=self.run_dir, host=d.host, port=d.port, token=d.token
        )
        self.stack.callback(self.dashboard.stop)

    def wait_until_ready(self, timeout: float = 300.0) -> None:
        """Block until the trainer and the rollout workers have finished constructing (weights loaded, tokenizer
        read), so a training loop starts with every part able to work; a constructor's error is raised here."""
        actors = [self.trainer.step.remote()] + [w.stats.remote() for w in [*self.workers, self.eval_worker]]
        wait_ready(actors, timeout)

    def call(self, refs, what: str):
        """ray.get with the run's deadline for one call to a component; a call past it stops the run, naming it."""
        import ray

        timeout = self.cfg.watchdog.call_timeout_s
        try:
            return ray.get(refs, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise RunStalled(f"{what} did not finish within {timeout:g} s (watchdog.call_timeout_s)") from None

    def buffer_stats(self) -> dict[str, int]:
        from .buffer import TrajectoryBuffer

        buf = TrajectoryBuffer(self.cfg.buffer, self.redis_url, consumer="launcher", keys=self.keys)
        try:
            return vars(buf.stats())
        finally:
            buf.close()

    def rollout_stats(self) -> dict[str, Any]:
        import ray

        stats = ray.get([w.stats.remote() for w in self.workers], timeout=60)
        tokens = sum(s.get("tokens", 0) for s in stats)
        busy = max((s.get("active_s", 0.0) for s in stats), default=0.0)
        return {"tokens": tokens, "tokens_per_s": tokens / busy if busy else 0.0, "per_worker": stats}

    # --- supervision: restart what died, with the same address, so clients reconnect ------------------
    def _supervise(self) -> None:
        while not self._supervisor_stop.wait(1.0):
            if self.redis and self.redis.proc and self.redis.proc.poll() is not None:
                log.warning("redis-server exited; restarting on the same AOF")
                self.redis = EmbeddedRedis(self.redis.data_dir, port=self.redis.port).start()
                write_pid(self.run_dir, "redis", self.redis.proc.pid)
                self._count("redis")
            for i, eng in enumerate(self.engines):
                if eng.proc.poll() is not None and not self._supervisor_stop.is_set():
                    log.warning("engine %s exited; restarting", eng.url)
                    self.engines[i] = eng.restart()
                    write_pid(self.run_dir, f"engine-{i}", self.engines[i].pid)
                    self._count(f"engine-{i}")

    def _count(self, what: str) -> None:
        self.restarts[what] = self.restarts.get(what, 0) + 1


def start_ray() -> bool:
    """Join the cluster in RAY_ADDRESS (inside `ray job submit`), or start a private local Ray; True if started here.

    Without RAY_ADDRESS the run always starts its own instance (`address="local"`) and never joins a Ray that happens
    to run on this machine: Ray's default would join whatever its "current cluster" file names (a head a user
    started for job submission, or a stale record of one that died), so a run's fate would hang on a cluster it
    does not own. To run on a cluster, submit the run as a job (Ray sets RAY_ADDRESS for it).
    Local Ray runs its workers at niceness 0, not Ray's default 15: the trainer, rollout workers and relays are Ray
    actors while the engines are plain processes, and on a small machine niced actors starve behind the engines."""
    import ray

    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env={"env_vars": env}, log_to_driver=False)
        started = False
    else:
        guard()  # Ray's own processes carry this process's tag: none of them outlives it
        ray.init(
            address="local",
            num_cpus=max(8, os.cpu_count() or 2),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env},
            _system_config={"worker_niceness": 0},
        )
        started = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)  # ray.init installs its own; the caller's decides how to stop
    return started


def wait_ready(refs: list, timeout: float = 300.0) -> None:
    import ray

    try:
        ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise TimeoutError(
            f"the trainer and rollout workers were not constructed within {timeout:.0f} s (see RUN_DIR/logs/actors)"
        ) from None
