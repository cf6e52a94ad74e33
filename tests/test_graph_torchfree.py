"""Drawing a graph and building its TensorBoard graph data in a process that never imports torch."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import torch

from handgrad import graph as G
from handgrad.graph.nodes import Graph
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


_CARDS = """
import pickle, sys
graph = pickle.load(sys.stdin.buffer)
from handgrad.graph.cards import card_images
for suffix, image in card_images(graph):
    print(suffix, image.shape[0], image.shape[1], image.dtype, int(image.min()))
print("torch" in sys.modules)
"""


def test_a_process_without_torch_draws_the_cards():
    out = _run(_CARDS, pickle.dumps(G.detached(_mlp_graph()))).splitlines()
    assert out[-1] == "False"
    rows = [line.split() for line in out[:-1]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "full"]  # 3 layers, then loss and penalty, then the whole
    for suffix, h, w, dtype, darkest in rows:
        assert dtype == "uint8" and int(darkest) < 100, suffix
        if suffix != "full":  # NOTE: TensorBoard's box is 367 x 215: a card fills it in one direction
            assert int(w) <= 367 and int(h) <= 215 and (int(w) >= 350 or int(h) >= 205), (suffix, h, w)


def test_cards_keep_every_edge_with_both_numbers_and_cut_edges_show_on_both_sides():
    from handgrad.graph.cards import cards
    from handgrad.graph.layout import edge_texts

    graph = G.detached(_mlp_graph())
    parts = cards(graph)
    assert len(parts) == 4
    assert [c.split(":")[0] for c, _ in parts] == ["1/4 Affine, ReLU", "2/4 Affine, ReLU", "3/4 Affine", "4/4 CrossEntropy, L2, Add"]
    labelled = [(e.value_norm, e.grad_norm) for _, p in parts for e in p.edges if e.value]
    assert sorted(labelled) == sorted((e.value_norm, e.grad_norm) for e in graph.edges)  # every edge's numbers, once
    ghosts = [n.label for _, p in parts for n in p.nodes if n.kind == "ghost"]
    assert sorted(ghosts) == sorted(["Affine (2/4)", "ReLU (1/4)", "Affine (3/4)", "ReLU (2/4)", "CrossEntropy (4/4)",
                                     "Affine (3/4)"])
    assert any(n.label == "x" for n in parts[0][1].nodes)  # the input is drawn
    w0 = [k for k, (_, p) in enumerate(parts) if any(n.label == "layers.0.weight" for n in p.nodes)]
    assert w0 == [0, 3]  # in its layer and beside the penalty
    x_edge = next(e for e in parts[0][1].edges if e.src == "x")
    assert edge_texts(Graph([], [x_edge], True), both=True) == [
        [f"{float(f'{x_edge.value_norm:.3g}'):g}", f"∂ {float(f'{x_edge.grad_norm:.3g}'):g}"]]
    assert not any("×" in line for _, p in parts for lines in edge_texts(p, both=True) for line in lines)
