"""handgrad.graph for the dashboard: the Graphs tab's GraphDef; the picture (values, gradients, input drawn, no edge on a label).

Expected numbers come from torch directly (norms of the parameters, gradients of a real backward),
never from the code under test; the edge-through-label check is written here, independently of
the layout's own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from handgrad import graph as G
from handgrad.graph.layout import edge_texts
from handgrad.graph.tensorboard import PICTURE_WIDTH_PX
from models.mlp import MLP

ROOT = Path(__file__).resolve().parents[1]


def _model(kind="hand", weight_decay=0.01):
    torch.manual_seed(0)
    model = MLP(kind, in_features=12, hidden=(6,), classes=4, weight_decay=weight_decay)
    x, y = torch.randn(5, 12), torch.tensor([0, 1, 2, 3, 0])
    return model, x, y


def _attrs(node) -> dict:
    return {k: (v.f if v.WhichOneof("value") == "f" else v.s.decode() if v.WhichOneof("value") == "s" else v)
            for k, v in node.attr.items()}


# ---------------------------------------------------------------------------------------------
# the GraphDef: a node per op, parameter, input and the output, with shapes and norms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hand", "native"])
def test_graph_def_has_a_node_per_op_parameter_and_input(kind):
    model, x, y = _model(kind)
    gd = G.graph_def(G.read_model(model, x, y))
    ops = sorted(n.op for n in gd.node)
    params = {n.name for n in gd.node if n.op == "Parameter"}
    assert params == {"layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"}
    assert [n.name for n in gd.node if n.op == "Input"] == ["x"]
    assert [n.name for n in gd.node if n.op == "Output"] == ["J"]
    if kind == "hand":  # typed from the model: Affine, ReLU, Affine, CrossEntropy, L2 penalty, J = L + s
        assert ops == sorted(["Affine", "ReLU", "Affine", "CrossEntropy", "L2", "Add", "Input", "Output", *["Parameter"] * 4])
    names = {n.name for n in gd.node}
    for n in gd.node:  # every input names a node of the graph
        assert set(n.input) <= names, n


def test_graph_def_wiring_follows_the_model():
    model, x, y = _model()
    gd = {n.name: n for n in G.graph_def(G.read_model(model, x, y)).node}
    first = next(n for n in gd.values() if n.op == "Affine" and "x" in n.input)
    assert sorted(first.input) == sorted(["x", "layers.0.weight", "layers.0.bias"])
    l2 = next(n for n in gd.values() if n.op == "L2")
    assert sorted(l2.input) == ["layers.0.weight", "layers.2.weight"]
    assert [gd[i].op for i in gd["J"].input] == ["Add"]


def test_graph_def_attributes_are_torchs_own_numbers():
    model, x, y = _model()
    gd = {n.name: n for n in G.graph_def(G.read_model(model, x, y)).node}
    total = model.objective(x, y)[0]
    total.backward()  # NOTE: a real backward: the gradients the attributes must match
    for name, p in model.named_parameters():
        a = _attrs(gd[name])
        assert a["shape"] == "x".join(map(str, p.shape)) and a["dtype"] == "float32"
        assert a["value_norm"] == pytest.approx(p.detach().norm().item(), rel=1e-6)
        # layers.0.weight feeds Affine and L2: its grad_norm is the norm of the summed gradient
        assert a["grad_norm"] == pytest.approx(p.grad.norm().item(), rel=1e-5)
        shapes = gd[name].attr["_output_shapes"].list.shape[0]
        assert [d.size for d in shapes.dim] == list(p.shape)
    xa = _attrs(gd["x"])
    assert xa["shape"] == "5x12" and xa["value_norm"] == pytest.approx(x.norm().item(), rel=1e-6)
    assert _attrs(gd["J"])["value"] == pytest.approx(total.item(), rel=1e-6) and _attrs(gd["J"])["grad"] == 1.0


def test_graph_def_strings_are_ascii():
    model, x, y = _model()
    for n in G.graph_def(G.read_model(model, x, y)).node:
        for k, v in n.attr.items():
            assert v.s.decode("ascii") is not None, (n.name, k)  # NOTE: TensorBoard shows other bytes as escapes


# ---------------------------------------------------------------------------------------------
# write_model_graph: Graphs tab, Images and Text from one call
# ---------------------------------------------------------------------------------------------


def test_write_model_graph_writes_graph_image_and_text(tmp_path):
    model, x, y = _model()
    before = [p.detach().clone() for p in model.parameters()]
    writer = SummaryWriter(tmp_path)
    G.write_model_graph(writer, model, x, y, step=3)
    writer.close()
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    gd = events.Graph()
    assert {"x", "layers.0.weight", "J"} <= {n.name for n in gd.node}
    assert any(n.op == "Affine" for n in gd.node)
    assert sorted(t for t in events.Tags()["images"]) == [f"graph/model/{k}" for k in ("1", "2", "3", "full")]  # 2 layers, the loss
    (image,) = events.Images("graph/model/full")
    assert image.step == 3 and 600 <= image.width <= PICTURE_WIDTH_PX
    assert image.encoded_image_string[:4] == b"\x89PNG"
    for k in ("1", "2", "3"):  # NOTE: TensorBoard's Time Series shows an image in a 367 x 215 px box
        (card,) = events.Images(f"graph/model/{k}")
        assert card.step == 3 and card.width <= 367 and card.height <= 215
    assert "graph/model/mermaid/text_summary" in events.Tags()["tensors"]


def test_picture_of_the_default_mlp_fits_the_card():
    torch.manual_seed(0)
    model = MLP("hand", weight_decay=1e-4)  # 784-256-128-10: the widest labels handgrad draws
    graph = G.read_model(model, torch.randn(128, 784), torch.randint(0, 10, (128,)))
    image = G.image_of(graph, direction="TB", both=True, max_width_px=960)
    assert 700 <= image.shape[1] <= 960 and image.shape[0] > image.shape[1]  # top down


def test_picture_draws_the_input_and_both_values_and_gradients():
    model, x, y = _model()
    graph = G.read_model(model, x, y)
    assert any(n.label == "x" and n.kind == "leaf" for n in graph.nodes)
    texts = edge_texts(graph, both=True)
    assert all(len(lines) == 2 and lines[1].startswith("∂ ") for lines in texts)
    assert "?" not in "".join(line for lines in texts for line in lines)
    xx = x.clone().requires_grad_()
    grad_x = torch.autograd.grad(model.objective(xx, y)[0], xx)[0]
    x_edge = next(lines for e, lines in zip(graph.edges, texts) if e.src == "x")
    assert x_edge == [f"5×12, ‖·‖={G.format_number(x.norm().item())}", f"∂ ‖·‖={G.format_number(grad_x.norm().item())}"]


# ---------------------------------------------------------------------------------------------
# no edge runs through a label (checked here, independently of the layout's own test)
# ---------------------------------------------------------------------------------------------


def _crosses(box, p, q, steps=400) -> bool:
    """Sampling the segment p-q: does any point fall strictly inside ``box`` (shrunk by a hair)?"""
    x0, x1 = box.x - box.w / 2 + 1e-3, box.x + box.w / 2 - 1e-3
    y0, y1 = box.y - box.h / 2 + 1e-3, box.y + box.h / 2 - 1e-3
    for k in range(steps + 1):
        t = k / steps
        x, y = p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])
        if x0 < x < x1 and y0 < y < y1:
            return True
    return False


def _edges_through_labels(lay) -> list:
    hits = []
    for i, label in enumerate(lay.labels):
        for j, path in enumerate(lay.paths):
            if j != i and any(_crosses(label, p, q) for p, q in zip(path, path[1:])):
                hits.append((j, i))
    return hits


def test_the_crossing_check_can_fail():
    lay = G.Layout(4, 4, {}, [[(0, 0), (1, 1)], [(0, 2), (4, 2)]], [G.Box(0.5, 0.5, 0.3, 0.2), G.Box(2, 2.05, 0.5, 0.2)])
    assert _edges_through_labels(lay) == []  # a label on its own edge is where it belongs
    lay.labels[0] = G.Box(2, 2, 0.5, 0.2)  # label of edge 0 sits on edge 1
    assert (1, 0) in _edges_through_labels(lay)


def _graphs():
    model, x, y = _model()
    yield "model", G.read_model(model, x, y)
    torch.manual_seed(0)
    big = MLP("hand", weight_decay=1e-4)
    yield "default mlp", G.read_model(big, torch.randn(16, 784), torch.randint(0, 10, (16,)))
    for name in G.EXAMPLES:
        yield name, G.build(*G.example(name), backward=True)


def _check_page(lay, name):
    assert _edges_through_labels(lay) == [], name
    boxes = [*(b for b in lay.labels if b.w), *lay.nodes.values()]  # NOTE: a cut edge's far half has no label
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)], name
    for box in boxes:  # everything on the page
        assert 0 <= box.x - box.w / 2 and box.x + box.w / 2 <= lay.width + 1e-9, name
        assert 0 <= box.y - box.h / 2 and box.y + box.h / 2 <= lay.height + 1e-9, name


def test_cards_of_the_default_mlp_are_legible_in_the_card_box_and_no_edge_crosses_a_label():
    from handgrad.graph.cards import CARD_PX, card_spacing, cards

    torch.manual_seed(0)
    graph = G.read_model(MLP("hand", weight_decay=1e-4), torch.randn(128, 784), torch.randint(0, 10, (128,)))
    small = G.read_model(*_model())
    for caption, piece in [*cards(graph), *cards(small)]:
        sp, px = card_spacing(piece, caption)
        lay = G.layout(piece, "LR", True, caption, dense=sp)
        _check_page(lay, caption)
        # NOTE: TensorBoard scales the picture to fit its box: the labels' font size in px as shown
        shown = sp.label_pt / 72 * min(CARD_PX[0] / lay.width, CARD_PX[1] / lay.height)
        assert shown >= 9 and sp.node_pt >= sp.label_pt, (caption, shown)
        assert px == pytest.approx(shown)


@pytest.mark.parametrize("direction, both", [("TB", True), ("LR", False), ("LR", True), ("TB", False)])
def test_no_edge_runs_through_a_label(direction, both):
    for name, graph in _graphs():
        _check_page(G.layout(graph, direction, both), name)


# ---------------------------------------------------------------------------------------------
# the house: no private torch name in handgrad.graph, modules small
# ---------------------------------------------------------------------------------------------


def test_no_private_torch_name_outside_compat():
    private = re.compile(r"_saved_|_forward_cls|_input_metadata|_get_file_writer|torch\._C|torch\._")
    for path in sorted((ROOT / "handgrad" / "graph").glob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not private.search(line), f"{path.name}:{n}: {line.strip()}"


def test_modules_are_small():
    for path in sorted((ROOT / "handgrad" / "graph").glob("*.py")):
        assert len(path.read_text(encoding="utf-8").splitlines()) < 500, path.name


def test_the_package_is_installed_with_its_subpackage():
    import tomllib
    from setuptools import find_packages

    include = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]["find"]["include"]
    # NOTE: setuptools installs only the packages it finds with this pattern; graph must be among them
    assert "handgrad.graph" in find_packages(str(ROOT), include=include)
