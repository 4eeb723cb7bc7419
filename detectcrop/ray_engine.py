"""Scale-out on Ray Data: file paths in, an actor pool of workers rebuilt from their config, results back in order.

`ray_map` is the engine both folder tools use with ``engine="ray"``. Only small records (entry paths and a JSON
payload per entry) travel through the dataset: each actor decodes its files with the project's own reader, runs the
per-image core and writes its own outputs (crops, annotated copies) into the output folder, which must be on a file
system every node shares; the driver appends the manifest rows in input order, exactly as the local engine does, so
both engines write the same bytes and ``--resume`` works the same way (files already in the manifests are skipped).

Faults: Ray restarts a killed actor and retries its batch. A batch that died before is redone one entry at a time,
counting the tries of each entry in a small counter actor; an entry that kills its worker ``max_attempts`` times
becomes an ``error`` row instead of failing the job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: What a worker returns for one entry: a JSON-able payload; ``worker_error`` makes the payload for an entry that
#: kept killing its worker.
Payload = dict[str, Any]


class RayError(RuntimeError):
    """The Ray engine cannot run: the base of the two errors below, each a one-line message for the user."""


class RayUnavailableError(RayError):
    """The optional package ``ray[data]`` is not installed."""


class RayConnectionError(RayError):
    """The Ray cluster at the given address cannot be joined (not running, or it refuses this machine's token)."""


#: The payload key of an actor that could not write into the output folder (full disk, quota, read-only).
STOP = "__stop__"

#: Where Ray looks for a cluster's token, in its order, when ``RAY_AUTH_MODE=token``.
TOKEN_SOURCES = "RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token"


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            "--engine ray needs the optional package ray[data]: pip install 'detectcrop[ray]'"
        ) from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray.

    Args:
        address: ``None`` starts a new local Ray (this machine's cores); ``"auto"`` (the cluster ``ray start`` runs
            here) or ``"HOST:PORT"`` joins a cluster.
        actors: the actor pool's size, or ``(min, max)`` to let it grow with the work; ``None``: from 1 up to as many
            as the cluster's CPUs allow (``cpus_per_actor`` each).
        cpus_per_actor: CPU cores each actor reserves (and the TensorFlow threads it uses).
        gpus_per_actor: GPUs each actor reserves (0: CPU only).
        batch_size: entries per actor call.
        max_attempts: tries of an entry that kills its worker before it becomes an ``error`` row.
    """

    address: str | None = None
    actors: int | tuple[int, int] | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 8
    max_attempts: int = 3

    def __post_init__(self) -> None:
        low, high = self.pool_size if self.actors is not None else (1, 1)
        if not 1 <= low <= high:
            raise ValueError(f"actors must be N >= 1 or a range MIN,MAX with 1 <= MIN <= MAX, got {self.actors}")
        if self.batch_size < 1 or self.max_attempts < 1 or self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise ValueError("batch_size and max_attempts must be >= 1, cpus_per_actor > 0, gpus_per_actor >= 0")

    @property
    def pool_size(self) -> tuple[int, int]:
        """``(min, max)`` actors; with ``actors=None``, as many as the connected cluster's CPUs allow."""
        if self.actors is None:
            import ray

            cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else (os.cpu_count() or 1)
            return 1, max(1, int(cpus // self.cpus_per_actor))
        return (self.actors, self.actors) if isinstance(self.actors, int) else tuple(self.actors)  # type: ignore

    @classmethod
    def parse_actors(cls, text: str) -> int | tuple[int, int] | None:
        """``"4"`` -> 4, ``"1,8"`` -> (1, 8), ``"auto"`` -> None (the ``--actors`` flag)."""
        if str(text).strip().lower() == "auto":
            return None
        parts = [p.strip() for p in str(text).split(",")]
        try:
            values = [int(p) for p in parts]
        except ValueError as exc:
            raise ValueError(f"--actors must be N or MIN,MAX, got {text!r}") from exc
        if len(values) == 1:
            return values[0]
        if len(values) == 2:
            return values[0], values[1]
        raise ValueError(f"--actors must be N or MIN,MAX, got {text!r}")


def check_cluster(address: str) -> None:
    """Raise `RayConnectionError` with one line saying why, unless the cluster at ``address`` (``"auto"`` or
    ``HOST:PORT``) answers and accepts this machine's token; Ray's own C++ lines of the try go to the DEBUG log.

    Without this, ``ray.init`` retries for about 20 seconds and then reports only that it could not connect, whatever
    the reason; a cluster with token authentication (the default of ``ray start`` since Ray 2.59) refuses a driver
    without its token."""
    ray = import_ray()
    from ray.exceptions import AuthenticationError

    from detectcrop.environment import stderr_lines_to_debug

    try:
        from ray._private.services import canonicalize_bootstrap_address
        from ray._raylet import GcsClient
    except ImportError:  # Ray moved its internals: ray.init reports on its own
        return
    try:
        bootstrap = canonicalize_bootstrap_address(address) or address
    except (ConnectionError, ValueError) as exc:
        raise RayConnectionError(f"--ray-address {address}: {exc}") from exc
    mode = os.environ.get("RAY_AUTH_MODE", "disabled")
    try:
        with stderr_lines_to_debug(source="ray"):
            GcsClient(address=bootstrap)
    except AuthenticationError as exc:
        if mode != "token":
            how = ("it uses token authentication: set RAY_AUTH_MODE=token here (as on its nodes) and give this "
                   f"machine the cluster's token ({TOKEN_SOURCES})")
        else:
            how = f"this machine's token differs from the cluster's (looked up in {TOKEN_SOURCES})"
        raise RayConnectionError(f"the Ray cluster at {address} refused this machine: {how}") from exc
    except ray.exceptions.RayError as exc:
        reason = str(exc).rstrip(".")
        raise RayConnectionError(f"no Ray cluster answers at {address} ({bootstrap}): {reason}; start one with "
                                 "`ray start --head` or check the address") from exc


#: Ray's C++ log lines: ``[2026-12-07 07:58:46,786 I 2707 2707] logging.cc:303: ...``.
_RAY_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [IWEF] \d+ \d+\] [\w./-]+:\d+: ")


def is_ray_log_line(line: str) -> bool:
    """Whether ``line`` is one of Ray's C++ log lines (its core worker's, printed on this process's stderr)."""
    return bool(_RAY_LOG_LINE.match(line))


def connect(options: RayOptions) -> Any:
    """``ray.init`` once per process: a new local Ray with this machine's cores (even where ``ray start`` runs one),
    or the cluster at ``options.address``, checked first (`check_cluster`)."""
    from detectcrop.environment import stderr_lines_to_debug

    ray = import_ray()
    if not ray.is_initialized():
        verbose = logging.getLogger("detectcrop").getEffectiveLevel() <= logging.DEBUG
        for name in ("ray", "ray.data"):  # Ray's own progress and start-up lines, unless asked for
            logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
        # "Progress bars disabled" is a warning, though --no-progress asked for it; so is the notice that the local
        # Ray this engine starts uses token authentication (Ray's default since 2.59)
        for name in ("ray.data._internal.progress", "ray._private.authentication.authentication_token_setup"):
            logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
        # Ray's C++ log lines in this process (e.g. its note on actors whose constructor arguments live in the
        # object store), read by the core worker when it starts; kept in Ray's session logs, shown with DEBUG
        os.environ["RAY_BACKEND_LOG_LEVEL"] = "info" if verbose else "fatal"
        kwargs: dict[str, Any] = {
            "include_dashboard": False, "logging_level": logging.INFO if verbose else logging.WARNING,
            "log_to_driver": verbose,  # actors' logs stay in Ray's session logs; every file's fate is in the rows
            "runtime_env": {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}},
        }
        if options.address is None:
            kwargs["num_cpus"] = os.cpu_count() or 1
        else:
            check_cluster(options.address)
        try:
            with stderr_lines_to_debug(is_ray_log_line, source="ray"):  # "Set ray log level ...", at start-up
                ray.init(address=options.address or "local", **kwargs)
        except ConnectionError as exc:
            raise RayConnectionError(f"could not join the Ray cluster at {options.address}: {exc}") from exc
    return ray


def limit_threads(cpus: float) -> None:
    """Size the numerical libraries' thread pools to this actor's share of the cores: OpenMP, OpenCV, the LiteRT
    interpreters (``DETECTCROP_NUM_THREADS``, `detectcrop.runtime.default_threads`) and TensorFlow (its environment
    variables, read when it starts; set directly only where it is loaded already, so a LiteRT actor never imports
    it)."""
    n = max(1, int(cpus))
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "DETECTCROP_NUM_THREADS"):
        os.environ[var] = str(n)
    import cv2

    cv2.setNumThreads(n)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # already initialised: the environment variables above still apply
            pass


class _Attempts:
    """Counts unfinished tries per entry key (a Ray actor): a try begins, and ends unless its worker died."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def begin(self, keys: list[str]) -> int:
        """Start a try of ``keys``; returns how many earlier tries of any of them never ended."""
        before = max((self.open.get(k, 0) for k in keys), default=0)
        for k in keys:
            self.open[k] = self.open.get(k, 0) + 1
        return before

    def end(self, keys: list[str]) -> None:
        for k in keys:
            self.open.pop(k, None)


class _Actor:
    """One Ray Data actor: builds its worker once, then processes batches of entries."""

    def __init__(self, make_worker: Callable[[], Any], counter: Any, cpus: float, max_attempts: int) -> None:
        limit_threads(cpus)
        logging.getLogger("detectcrop").setLevel(logging.WARNING)
        self.worker = make_worker()
        self.counter, self.max_attempts = counter, max_attempts

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:

        try:
            return self._process(batch)
        except OSError as exc:  # the output's disk is full or read-only: the driver stops the job with one line
            from detectcrop.io import OUTPUT_FULL_ERRNOS

            if exc.errno not in OUTPUT_FULL_ERRNOS:
                raise
            stop = json.dumps({STOP: {"errno": exc.errno, "message": str(exc.strerror)}})
            return {"payload": [stop] * len(batch["item"])}

    def _process(self, batch: dict[str, Any]) -> dict[str, Any]:
        import ray

        items = [json.loads(s) for s in batch["item"]]
        keys = [str(i["key"]) for i in items]
        if ray.get(self.counter.begin.remote(keys)) == 0:
            payloads = self.worker.process(items)
            self.counter.end.remote(keys)
        else:  # this batch killed a worker before: one entry at a time, so only the culprit is given up
            payloads = []
            for key, item in zip(keys, items, strict=True):
                died = ray.get(self.counter.begin.remote([f"single:{key}"]))
                if died >= self.max_attempts - 1:
                    payloads.append(self.worker.died(item, died + 1))
                else:
                    payloads.extend(self.worker.process([item]))
                self.counter.end.remote([f"single:{key}"])
            self.counter.end.remote(keys)
        return {"payload": [json.dumps(p) for p in payloads]}


def ray_map(
    items: Sequence[Payload], make_worker: Callable[[], Any], options: RayOptions, show_progress: bool = False
) -> Iterator[Payload]:
    """Run ``make_worker().process(batch_of_items)`` on a Ray Data actor pool; yield one payload per item, in order.

    ``items`` are JSON-able dicts with a unique ``key``; ``make_worker`` must be picklable (it runs in each actor) and
    its worker needs ``process(items) -> payloads`` (one per item, same order) and ``died(item, tries) -> payload``.
    """
    if not items:
        return
    ray = connect(options)
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in input order: manifests as the local engine's
    ctx.enable_progress_bars = show_progress
    low, high = options.pool_size
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # the counter lives on the driver's node: a worker node that dies takes its actors' batches elsewhere, and must
    # not take the job's bookkeeping with it
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    counter = ray.remote(num_cpus=0, scheduling_strategy=here)(_Attempts).remote()
    blocks = min(len(items), max(2 * high, -(-len(items) // options.batch_size)))
    ds = ray.data.from_items([{"item": json.dumps(i)} for i in items], override_num_blocks=blocks)
    ds = ds.map_batches(
        _Actor,
        fn_constructor_kwargs={"make_worker": make_worker, "counter": counter, "cpus": options.cpus_per_actor,
                               "max_attempts": options.max_attempts},
        compute=ActorPoolStrategy(min_size=low, max_size=high),
        batch_size=options.batch_size,
        num_cpus=options.cpus_per_actor,
        num_gpus=options.gpus_per_actor or None,
        batch_format="pandas",
    )
    for row in ds.iter_rows():
        payload = json.loads(row["payload"])
        if STOP in payload:
            from detectcrop.io import OutputUnwritableError

            raise OutputUnwritableError(payload[STOP]["errno"], payload[STOP]["message"])
        yield payload
