"""How many embedding actors, of how many CPUs and onnxruntime threads each: :func:`actor_plan`.

The rule: **one single-threaded actor per CPU of every node** (``num_cpus=1``, 1 onnxruntime thread), as many as
the node's memory allows at :data:`ACTOR_MEMORY` each. Ray's read task asks for no CPU (``num_cpus=0``, see
:mod:`e5onnx.ray.windows`), so the actors may take every CPU without starving it.

Measured on this project's 2-core machine (``ray.init(num_cpus=2)``, e5-small-shaped int8, the 1,728 passages of
SciFact ``corpus.part1.jsonl``, 562,158 tokens; in-process Embedder with 2 threads and ``local_windows`` vs
``ray_windows``, rounds interleaved, medians, Ray start-up not timed but actor start-up and model load timed)::

    python benchmarks/ray_plans.py models/e5-small-shaped ../shared/data/scifact/corpus.part1.jsonl \\
        --variant int8 --repeats 3 --plans 2x1x1,1x2x2

Result (2026-12-02, tokens/s; the machine is shared, so the script flags runs during which other processes used
more than 5 % of the cores; medians of the clean runs, all runs in brackets)::

    in process, 1 Embedder, 2 threads          8,940   (58.3 / 67.4 / 74.3* s: 8,346)
    2 actors x num_cpus 1 x 1 thread  (rule)   9,145   (71.3* / 59.7 / 63.3 s: 8,878)   1.02x  (all: 1.06x)
    1 actor  x num_cpus 2 x 2 threads          7,325   (81.1* / 90.8* / 76.7 s: 6,929)  0.82x  (all: 0.83x)
                                                                      (* = shared with another process)

An earlier round of the same pair (before the runs were checked for other load) gave 0.92x and 0.75x.

One actor with all the node's threads loses because onnxruntime's threads wait for each other at every operator:
whenever anything else runs on the node (the driver turning batches into windows, Ray's own processes; Ray
also runs its workers at nice 15), the whole pass waits for the one pre-empted thread. Single-threaded actors
have nothing to wait for. An actor with 1 thread and ``num_cpus`` below 1 (more actors than CPUs) would only
oversubscribe the cores, and more threads than reserved CPUs likewise.
"""

import math
from collections import namedtuple
from collections.abc import Mapping

from ..errors import E5OnnxError, InvalidInputError
from ..runtime.arguments import whole_number

#: A plan for ``map_batches(E5Embedder, compute=ActorPoolStrategy(size=size), num_cpus=num_cpus, memory=memory,
#: fn_constructor_kwargs={"threads": threads, ...})``; ``memory`` in bytes.
ActorPlan = namedtuple("ActorPlan", "size num_cpus threads memory", defaults=(None,))

#: onnxruntime threads of an actor by default (see the module doc).
ACTOR_THREADS = 1
#: Memory reserved per actor, bytes: an e5-small actor's resident size measured 370 MB (int8) to ~500 MB (fp32)
#: after SciFact passages (the Embedder 220 / 342 MB, Ray and pyarrow in the worker ~150 MB), with margin.
ACTOR_MEMORY = 768 * 1024 * 1024


def node_resources():
    """The ``Resources`` dict (``{"CPU": 2.0, "memory": ..., ...}``) of each alive Ray node; Ray must be initialised."""
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def actor_plan(nodes, threads=None, actor_memory=ACTOR_MEMORY, spare_cpus=0):
    """The actor pool for a cluster: one actor per ``threads`` CPUs of each node (default :data:`ACTOR_THREADS`),
    at most as many per node as its memory holds at ``actor_memory`` each, ``spare_cpus`` per node left out.

    Args:
        nodes: one entry per node: its Ray resources (a mapping with ``"CPU"`` and optionally ``"memory"``, as
            :func:`node_resources` gives) or just its CPU count (a number).
        threads: onnxruntime threads (and reserved CPUs) per actor; more than the smallest node's CPUs reserves
            that node's CPUs only (the actor must fit a node) but still runs ``threads`` threads.
        actor_memory: bytes reserved per actor (``memory=`` of ``map_batches``); None reserves none.
        spare_cpus: Ray CPUs per node left to the pipeline's other tasks. The corpus job needs none (its read
            task asks for 0 CPU); ``ray.data.read_parquet`` runs 1-CPU list and read tasks, which never start
            while the actors hold every CPU (the job hangs): start Ray with one CPU more than the cores
            (``ray.init(num_cpus=os.cpu_count() + 1)``, ``ray start --num-cpus``) and pass ``spare_cpus=1``.

    Returns:
        :data:`ActorPlan` ``(size, num_cpus, threads, memory)``.

    Raises:
        InvalidInputError: a bad ``threads``.
        E5OnnxError: no node has a CPU (or the memory for one actor).
    """
    threads = ACTOR_THREADS if threads is None else whole_number("threads", threads)
    spare_cpus = whole_number("spare_cpus", spare_cpus, 0)
    usable = []
    for node in nodes:
        cpus = float(node.get("CPU", 0) if isinstance(node, Mapping) else node) - spare_cpus
        memory = node.get("memory") if isinstance(node, Mapping) else None
        if cpus >= 1 and (memory is None or actor_memory is None or memory >= actor_memory):
            usable.append((cpus, memory))
    if not usable:
        raise E5OnnxError("the Ray cluster has no node with a whole CPU and "
                          f"{(actor_memory or 0) / 2**20:.0f} MiB of memory for an embedding actor "
                          "(ray start --num-cpus N)")
    num_cpus = float(min(threads, math.floor(min(c for c, _ in usable))))
    size = 0
    for cpus, memory in usable:
        fits = math.floor(cpus / num_cpus)
        if memory is not None and actor_memory:
            fits = min(fits, math.floor(memory / actor_memory))
        size += max(1, fits)
    return ActorPlan(size, num_cpus, threads, actor_memory)


def check_plan(plan):
    """``plan`` as an :data:`ActorPlan` (a 3- or 4-tuple), checked. Raises InvalidInputError."""
    plan = ActorPlan(*plan)
    whole_number("plan.size", plan.size)
    whole_number("plan.threads", plan.threads)
    if not isinstance(plan.num_cpus, (int, float)) or plan.num_cpus < 0:
        raise InvalidInputError(f"plan.num_cpus must be a number >= 0, got {plan.num_cpus!r}")
    return plan
