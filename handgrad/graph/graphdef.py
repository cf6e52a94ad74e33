"""TensorBoard graph data (the Graphs tab) from plain facts about each node: no torch needed.

:func:`~handgrad.graph.tensorboard.node_facts` reads the facts from a graph that still holds its
tensors; :func:`graph_def_of` turns them into a ``GraphDef`` with TensorBoard's protobufs alone, so
that a process that never imports torch can write it.
"""

from __future__ import annotations

__all__ = ["graph_def_of"]


def _ascii(text: str) -> bytes:
    # NOTE: ASCII only: TensorBoard's info card shows other bytes as octal escapes
    return text.encode("ascii", "replace")


def graph_def_of(facts: list[dict]):
    """A TensorBoard ``GraphDef``: one node per dict of ``facts``.

    Each dict holds ``name``, ``op``, ``inputs`` (names), ``shape`` (a list of ints, or None where
    unknown), ``dtype`` (e.g. ``"float32"``), ``value_norm`` and ``grad_norm`` (floats or None), and
    ``value`` and ``grad`` (floats for one-element tensors, else None). A known shape becomes
    ``_output_shapes`` (TensorBoard writes it on the edges); the rest are attributes shown when the
    node is selected.
    """
    from tensorboard.compat.proto.attr_value_pb2 import AttrValue
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.node_def_pb2 import NodeDef
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.compat.proto.versions_pb2 import VersionDef

    nodes = []
    for fact in facts:
        shape = fact.get("shape")
        attrs = {"shape": AttrValue(s=b"?" if shape is None else _ascii("x".join(map(str, shape)) or "scalar"))}
        if shape is not None:
            dims = [TensorShapeProto.Dim(size=s) for s in shape]
            attrs["_output_shapes"] = AttrValue(list=AttrValue.ListValue(shape=[TensorShapeProto(dim=dims)]))
        if fact.get("dtype") is not None:
            attrs["dtype"] = AttrValue(s=_ascii(fact["dtype"]))
        for key in ("value_norm", "value", "grad_norm", "grad"):
            if fact.get(key) is not None:
                attrs[key] = AttrValue(f=fact[key])
        nodes.append(NodeDef(name=fact["name"], op=fact["op"], input=list(fact.get("inputs", ())), attr=attrs))
    return GraphDef(node=nodes, versions=VersionDef(producer=22))
