"""kmodelpy's graph IR (ncc's HLIR): nodes with ordered input/output connectors, 4-D tensors NCHW."""
from .graph import Graph, InputConnector, Node, OutputConnector  # noqa: F401
