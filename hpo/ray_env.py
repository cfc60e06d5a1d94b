"""Ray for a search: starting or joining it, the checks of the cluster it joined (before any
trial is queued), and the Ray Tune settings hpo runs under."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoConfigError, Shown

if TYPE_CHECKING:
    from hpo.config import Experiment

__all__ = ["RaySession", "check_cluster", "check_reachable", "check_resources_fit", "check_shared_storage",
           "ray_session", "runtime_env_of", "tune_settings"]

SHARED_STORAGE_ENV = "HPO_SHARED_STORAGE"
# Ray starts its worker processes at nice 15 by default, so that its own daemons stay responsive.
# For a search that puts every trial below the driver's threads and helpers of normal priority (its
# Tune loop, the MLflow store's first opening): on a machine whose cores the trials fill, those took
# a third of the trials' CPU (trials ran 1.8x their in-process time, benchmarks/overhead.py). hpo's
# own background work runs at nice 19 instead; the trials run at the priority of any other program.
WORKER_NICENESS_ENV = "RAY_worker_niceness"


class RaySession:
    """The Ray a search runs on (``ray``, the module), as :func:`ray_session` hands it out."""

    def __init__(self, ray: Any, started: bool) -> None:
        self.ray = ray
        self.started = started  # this process started it, so shuts it down
        self._closing: threading.Thread | None = None

    def release(self) -> None:
        """The search needs Ray no more: shut down the Ray this process started, in the background,
        so the second or more Ray takes to stop its processes overlaps the search's last records
        (the session's end waits for it). A joined cluster is left as it is."""
        if self.started and self._closing is None:
            self._closing = threading.Thread(target=self.ray.shutdown, name="hpo-ray-shutdown", daemon=True)
            self._closing.start()

    def close(self) -> None:
        if not self.started:
            return
        if self._closing is None:
            self.ray.shutdown()
        else:
            self._closing.join()


@contextmanager
def ray_session(address: str | None, runtime_env: dict[str, Any] | None = None,
                meanwhile: Collection[str] = ()) -> Iterator[RaySession]:
    """Ray for one search: joins ``address`` (a running cluster), else starts Ray on this machine
    (without the head processes a search never uses: :func:`hpo._compat.ray_start.lean_local_start`)
    and shuts it down afterwards (or from :meth:`RaySession.release` on); an already initialised
    Ray is used as it is. ``runtime_env`` (:func:`runtime_env_of`) is the search's job
    environment: Ray uploads its working directory once and every node unpacks it for the
    trials. On a Ray it starts here, the trials run in the workers Ray starts as the driver
    connects (:func:`hpo._compat.ray_start.trainables_in_job_workers`). The modules named in
    ``meanwhile`` are imported in a thread while Ray starts."""
    import ray

    started = False
    if runtime_env:
        from hpo._compat.ray import job_working_dir

        if job_working_dir():
            raise HpoConfigError("working_dir", "must not be given inside a Ray job that has a working directory "
                                 "of its own (ray job submit --working-dir): Ray cannot merge the two",
                                 runtime_env["working_dir"],
                                 "Drop one of them: the job's working directory already reaches every worker.")
    worker_env: dict[str, str] | None = None
    if not ray.is_initialized():
        check_reachable(address)
        # read by the raylet this call starts (a joined cluster keeps what its `ray start` had);
        # a user's own setting stands
        os.environ.setdefault(WORKER_NICENESS_ENV, "0")
        from hpo._compat.ray_start import import_meanwhile, lean_local_start, local_worker_env

        import_meanwhile(meanwhile)  # the caller's later imports wait for this thread's, if need be
        local = address is None and not os.environ.get("RAY_ADDRESS")  # a Ray of this process's own
        with lean_local_start(), local_worker_env() as env:
            ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
                configure_logging=True,
                runtime_env=runtime_env,
            )
        worker_env = env if local and not runtime_env else None
        started = True
    elif runtime_env and not ray.get_runtime_context().runtime_env.get("working_dir"):
        # A job's runtime_env is fixed when it connects: this process's Ray has none to ship.
        raise HpoConfigError("working_dir", "needs hpo to start or join Ray itself, but this process already "
                             "called ray.init without a working_dir", runtime_env["working_dir"],
                             "Leave ray.init to hpo (pass address=...), or call ray.init(runtime_env="
                             "{'working_dir': ...}) yourself.")
    session = RaySession(ray, started)
    try:
        if worker_env is None:
            yield session
        else:
            from hpo._compat.ray_start import trainables_in_job_workers

            with trainables_in_job_workers(worker_env):
                yield session
    finally:
        session.close()


def runtime_env_of(exp: Experiment, tracking_uri: str | None = None) -> dict[str, Any] | None:
    """The Ray ``runtime_env`` of a search: its ``working_dir`` with what never ships (version
    control, environments, the storage path, MLflow stores: :func:`hpo.validate.working_dir_excludes`),
    or None without one.

    Example:
        >>> from hpo.config import Experiment
        >>> exp = Experiment.from_dict({"name": "d", "space": {"lr": 0.1}, "metric": "m", "working_dir": "/code"})
        >>> runtime_env_of(exp)["working_dir"]
        '/code'
    """
    if exp.working_dir is None:
        return None
    from hpo.validate import working_dir_excludes

    uri = tracking_uri if exp.tracking.enabled else None
    return {"working_dir": exp.working_dir, "excludes": working_dir_excludes(exp.working_dir, exp.storage_path, uri)}


@contextmanager
def tune_settings() -> Iterator[Callable[[int], None]]:
    """The Ray Tune settings a search runs under, restored afterwards. Yields ``queue(slots)``,
    which sets how many trials Ray Tune keeps waiting for a worker (see :func:`trial_slots`)."""
    # Ray's per-trial JSON/CSV loggers are off (results reach hpo through callbacks), so its
    # end-of-run ExperimentAnalysis finds no result files: that warning is expected noise.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # hpo checks metrics itself (with a clearer error); Ray's own tables are replaced by Progress.
    env = {
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        # Signals are hpo's (hpo.lifecycle.catch_signals): running trials are cut and recorded.
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
    }
    old = {k: os.environ.get(k) for k in (*env, _PENDING)}
    os.environ.update(env)

    def queue(slots: int) -> None:
        # Ray Tune keeps one trial waiting for a worker when a searcher (not its own variant
        # generator) suggests trials without a ConcurrencyLimiter: the next trial then takes the
        # actor the last one freed (actors are reused) before a new worker elsewhere has started,
        # so a search of short trials ran one at a time on a single node however many it had.
        if old[_PENDING] is None:  # the user's own setting stands
            os.environ[_PENDING] = str(max(1, slots))

    try:
        yield queue
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_PENDING = "TUNE_MAX_PENDING_TRIALS_PG"


def trial_slots(request: Mapping[str, float], nodes: Iterable[Mapping[str, float]]) -> int:
    """How many trials asking ``request`` each (``{"CPU": 1, "GPU": 0.25}``) the ``nodes`` (their
    total resources) hold at once; at least 1.

    Example:
        >>> trial_slots({"CPU": 1, "GPU": 0}, [{"CPU": 2}, {"CPU": 1, "GPU": 1}])
        3
        >>> trial_slots({"CPU": 1, "GPU": 0.25}, [{"CPU": 16, "GPU": 1}, {"CPU": 8}])
        4
    """
    wanted = {k: v for k, v in request.items() if v and v > 0}
    total = 0
    for node in nodes:
        total += min((int(node.get(k, 0) / v + 1e-9) for k, v in wanted.items()), default=0)
    return max(1, total)


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds when ``address`` (``host:port`` or ``ray://host:port``) does
    not answer: ``ray.init`` itself retries an unreachable address for minutes. ``None``,
    ``auto`` and ``local`` are Ray's to resolve (``auto`` fails at once when no cluster runs)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise HpoConfigError("--address", "must be HOST:PORT (the head node's GCS port, 6379 by default), "
                             "'auto' or ray://HOST:PORT", address)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise HpoConfigError("--address", f"must reach a running Ray cluster within {timeout:g} s "
                             f"({exc.strerror or exc})", address,
                             "Start one with `ray start --head --port=PORT` (or `ray up`), check the host "
                             "and port, and that a firewall lets this machine reach it.") from None


def _fmt_resources(res: Mapping[str, float]) -> str:
    parts = [f"{k} {v:g}" for k, v in (("CPU", res.get("CPU", 0)), ("GPU", res.get("GPU", 0)))]
    if res.get("memory"):
        parts.append(f"memory {res['memory'] / 2**30:.1f} GiB")
    return ", ".join(parts)


def check_resources_fit(request: Mapping[str, float], nodes: Iterable[Mapping[str, float]],
                        startable: Iterable[Mapping[str, float]] = ()) -> None:
    """Refuse a per-trial ``request`` (``{"CPU": 2, "GPU": 0.5}``) that no single node can hold:
    neither an alive node (its total resources) nor a node type the autoscaler may still start.
    Ray would otherwise keep the trial pending, silently, for ever.

    Example:
        >>> check_resources_fit({"CPU": 64, "GPU": 0}, [{"CPU": 8, "GPU": 1}, {"CPU": 16}])
        Traceback (most recent call last):
        ...
        hpo.errors.HpoConfigError: resources: each trial must fit on one node, but got CPU 64, GPU 0 \
per trial; the largest node has CPU 16, GPU 0. Lower resources.cpu/resources.gpu/resources.memory, or add a node \
(or an autoscaler node type) that large
    """
    shapes = [dict(n) for n in [*nodes, *startable]]
    need = {k: v for k, v in request.items() if v > 0}
    if not shapes or any(all(n.get(k, 0) >= v for k, v in need.items()) for n in shapes):
        return
    order = ("GPU", "CPU") if need.get("GPU") else ("CPU", "GPU")  # the largest in what is asked for most
    largest = max(shapes, key=lambda n: tuple(n.get(k, 0) for k in (*order, "memory")))
    raise HpoConfigError("resources", "each trial must fit on one node",
                         Shown(f"{_fmt_resources(request)} per trial; the largest node has "
                               f"{_fmt_resources(largest)}"),
                         "Lower resources.cpu/resources.gpu/resources.memory, or add a node (or an autoscaler "
                         "node type) that large")


def check_shared_storage(storage_path: str, node_ips: Iterable[str], local_ips: Iterable[str],
                         env: Mapping[str, str] | None = None) -> None:
    """Refuse a run directory on this machine's own disk when some alive node is another host:
    since Ray 2.7 trials on other nodes write their checkpoints to ``storage_path`` themselves,
    and Ray only says so when the first checkpoint syncs. Nodes that are all on this machine (a
    ``ray start`` head and workers on one host) share its disk. ``HPO_SHARED_STORAGE=1`` says the
    path is shared (an NFS, EFS or Filestore mount, a mounted bucket, at the same path on every node).

    Example:
        >>> check_shared_storage("hpo_results", ["10.0.0.1", "10.0.0.2"], ["10.0.0.1"], env={})
        Traceback (most recent call last):
        ...
        hpo.errors.HpoConfigError: storage_path: must be shared storage on a cluster of several hosts \
(nodes 10.0.0.2 are other machines), but got 'hpo_results'. Mount shared storage (NFS, EFS, Filestore) \
at the same path on every node, point storage_path there and set HPO_SHARED_STORAGE=1
    """
    env = os.environ if env is None else env
    if env.get(SHARED_STORAGE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return
    local = set(local_ips) | {"127.0.0.1", "::1", "localhost"}
    others = sorted({ip for ip in node_ips if ip not in local})
    if others:
        raise HpoConfigError("storage_path", f"must be shared storage on a cluster of several hosts "
                             f"(nodes {', '.join(others)} are other machines)", storage_path,
                             "Mount shared storage (NFS, EFS, Filestore) at the same path on every node, "
                             f"point storage_path there and set {SHARED_STORAGE_ENV}=1")


def _local_ips(ray: Any) -> set[str]:
    ips = {ray.util.get_node_ip_address()}
    try:
        ips |= {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    return ips


AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the cluster's config on the head node


def _startable_node_types(bootstrap: str = AUTOSCALING_CONFIG) -> list[dict[str, float]]:
    """Resources of the node types an autoscaler may still start: from the cluster config the
    autoscaler reported to the GCS (KubeRay, autoscaler v2), else from ``ray up``'s config on the
    head node (a driver submitted with ``ray job submit`` runs there); none when neither is there."""
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
        if config:
            return [dict(g.resources) for g in config.node_group_configs if g.max_count != 0]
    except Exception:  # a private API: without it, the config file and alive nodes count
        pass
    path = os.path.expanduser(bootstrap)
    if not os.path.isfile(path):
        return []
    import yaml

    try:
        with open(path) as f:
            types = (yaml.safe_load(f) or {}).get("available_node_types") or {}
    except (OSError, yaml.YAMLError):
        return []
    return [{k: float(v) for k, v in (t.get("resources") or {}).items()} for t in types.values()
            if isinstance(t, dict) and t.get("max_workers", 1) != 0]


def check_cluster(exp: Experiment, ray: Any, storage_path: str) -> int:
    """The checks of the joined Ray cluster before any trial is queued: every trial's resources
    fit on some node (alive, or startable by the autoscaler), and ``storage_path`` is shared when
    the nodes span several hosts. Returns how many trials the alive nodes hold at once.

    Raises:
        HpoConfigError: naming ``resources`` (with the largest node) or ``storage_path``.
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    request = {"CPU": exp.resources.cpu, "GPU": exp.resources.gpu, "memory": float(exp.resources.memory_bytes or 0)}
    check_resources_fit(request, [n.get("Resources", {}) for n in nodes], _startable_node_types())
    check_shared_storage(storage_path, [n.get("NodeManagerAddress", "") for n in nodes], _local_ips(ray))
    return trial_slots(request, [n.get("Resources", {}) for n in nodes])
