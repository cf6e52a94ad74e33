"""Drawing a graph and building its TensorBoard graph data in a process that never imports torch."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import torch

from handgrad import graph as G
from handgrad.graph.tensorboard import node_facts
from models.mlp import MLP

ROOT = Path(__file__).resolve().parents[1]

_DRAW = """
import pickle, sys
graph, facts = pickle.load(sys.stdin.buffer)
from handgrad.graph.draw import image_of
from handgrad.graph.graphdef import graph_def_of
image = image_of(graph, direction="TB", both=True, max_width_px=500)
gd = graph_def_of(facts)
print(image.shape[0], image.shape[1], int(image.min()), len(gd.node), "torch" in sys.modules)
"""


def _mlp_graph():
    torch.manual_seed(0)
    model = MLP("hand", weight_decay=5e-4)
    return G.read_model(model, torch.randn(8, 784), torch.randint(0, 10, (8,)))


def _run(code: str, stdin: bytes = b"") -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_drawing_modules_import_without_torch():
    out = _run("import sys, handgrad.graph.draw, handgrad.graph.layout, handgrad.graph.nodes, handgrad.graph.graphdef; "
               "print('torch' in sys.modules)")
    assert out.split() == ["False"]


def test_detached_graph_keeps_labels_and_drops_tensors():
    graph = _mlp_graph()
    assert all(t is not None for e in graph.edges for t in e.tensors)
    light = G.detached(graph)
    assert all(e.tensors == (None, None) for e in light.edges)
    assert [(e.src, e.dst, e.value, e.grad, e.shape, e.value_norm, e.grad_norm) for e in light.edges] == \
        [(e.src, e.dst, e.value, e.grad, e.shape, e.value_norm, e.grad_norm) for e in graph.edges]
    assert light.nodes == graph.nodes and light.nodes[0] is not graph.nodes[0]
    assert graph.edges[0].tensors[0] is not None  # the original keeps its tensors
    # NOTE: the tensors behind the labels (the 256x784 weight among them) are megabytes; the labels a few kB
    assert len(pickle.dumps(light)) < 20_000 < 1_000_000 < len(pickle.dumps(graph))


def test_a_process_without_torch_draws_a_pickled_graph_and_its_graph_data():
    graph = _mlp_graph()
    out = _run(_DRAW, pickle.dumps((G.detached(graph), node_facts(graph))))
    height, width, darkest, n_nodes, torch_loaded = out.split()
    assert int(width) <= 500 and int(height) > 100 and int(darkest) < 100  # something drawn, in ink
    assert n_nodes == str(len(graph.nodes)) and torch_loaded == "False"


def test_pieces_keep_every_edge_and_cut_edges_show_on_both_sides():
    from handgrad.graph.cards import pieces
    from handgrad.graph.layout import layout, segment_hits_box

    graph = _mlp_graph()
    parts = pieces(graph, 3)
    assert len(parts) == 3
    kept = [(e.value_norm, e.grad_norm) for p in parts for e in p.edges]
    for e in graph.edges:  # every edge is drawn, a cut one twice (once in each piece)
        assert kept.count((e.value_norm, e.grad_norm)) >= 1
    assert len(kept) > len(graph.edges)
    assert sum(n.kind == "ghost" for p in parts for n in p.nodes) == 2 * (len(kept) - len(graph.edges))
    assert not any("×" in e.value for p in parts for e in p.edges)  # shapes left to the Graphs tab
    for p in parts:
        lay = layout(p, "LR", True)
        hits = [(i, j) for i, box in enumerate(lay.labels) for j, path in enumerate(lay.paths)
                if i != j and any(segment_hits_box(box, a, b) for a, b in zip(path, path[1:]))]
        assert hits == []
