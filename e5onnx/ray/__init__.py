"""e5onnx on Ray: :class:`E5Embedder` for ``Dataset.map_batches`` and the corpus job's Ray backend
(:func:`ray_windows`, ``e5onnx corpus --ray``). Needs the ``ray`` extra: ``pip install 'e5onnx[ray]'``.

Inside this package ``import ray`` is the real Ray (absolute imports); importing it without Ray installed raises
:class:`RayUnavailableError` (an ImportError and an E5OnnxError) saying what to install.
"""

from ._ray import RayUnavailableError
from .connect import connect
from .embedder import E5Embedder
from .plan import ActorPlan, actor_plan, node_resources
from .windows import RecordsDatasource, ray_windows

__all__ = ["ActorPlan", "E5Embedder", "RayUnavailableError", "RecordsDatasource", "actor_plan", "connect",
           "node_resources", "ray_windows"]
