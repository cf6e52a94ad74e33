"""handgrad.graph: the notes' pictures from live tensors.

The expected numbers are typed from the notes (seed 000's two flowcharts, seeds 002/003), never
computed by the code under test; diagrams are checked by parsing the mermaid and DOT they emit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import handgrad as hg
from handgrad import graph as G
from handgrad import registry, twins
from models.mlp import MLP

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# parsing what the module writes
# ---------------------------------------------------------------------------------------------

_MERMAID_NODE = re.compile(r'^\s*(\w+)(\(\(|\[)"(.*)"(\)\)|\])\s*$')
_MERMAID_EDGE = re.compile(r'^\s*(\w+) (-->|-\.->)\|("[^"]*"|[^|"]*)\| (\w+)\s*$')


def parse_mermaid(text: str):
    """(direction, {id: (label, shape)}, [(src, dst, label)], set of arrow kinds); fails on any other line."""
    lines = text.strip().splitlines()
    head = re.fullmatch(r"flowchart (LR|RL)", lines[0])
    assert head, lines[0]
    nodes, edges, arrows = {}, [], set()
    for line in lines[1:]:
        if m := _MERMAID_NODE.match(line):
            nodes[m[1]] = (m[3], "circle" if m[2] == "((" else "box")
        elif m := _MERMAID_EDGE.match(line):
            edges.append((m[1], m[4], m[3].strip('"')))
            arrows.add(m[2])
        else:
            raise AssertionError(f"unexpected mermaid line: {line!r}")
    for src, dst, _ in edges:
        assert src in nodes and dst in nodes, (src, dst)
    return head[1], nodes, edges, arrows


def parse_dot(text: str):
    """({id: label}, [(src, dst, label)]) of the DOT text, checking its structure on the way."""
    assert text.startswith("digraph ") and text.count("{") == text.count("}") == 1 and text.rstrip().endswith("}")
    nodes, edges = {}, []
    for line in text.splitlines()[1:-1]:
        if m := re.fullmatch(r'\s*"(\w+)" -> "(\w+)" \[label="([^"]*)"(, [^\]]*)?\];', line):
            edges.append((m[1], m[2], m[3]))
        elif m := re.fullmatch(r'\s*"(\w+)" \[label="([^"]*)", shape=(box|circle)\];', line):
            nodes[m[1]] = m[2]
        else:
            assert re.fullmatch(r"\s*(rankdir=(LR|RL)|node \[.*\]|edge \[.*\]);", line), line
    for src, dst, _ in edges:
        assert src in nodes and dst in nodes, (src, dst)
    return nodes, edges


# ---------------------------------------------------------------------------------------------
# seed 000: the shopping graph, both diagrams, exactly the notes' numbers on the same edges
# ---------------------------------------------------------------------------------------------

# Typed from the notes' two flowcharts (their x1, x2, +1, x3 are mul1, mul2, add1, mul3 here).
SHOPPING_FORWARD = {
    ("a_num", "mul1", "2"), ("apple", "mul1", "100"), ("mul1", "add1", "200"), ("pear", "mul2", "150"),
    ("p_num", "mul2", "3"), ("mul2", "add1", "450"), ("add1", "mul3", "650"), ("tax", "mul3", "1.1"),
    ("mul3", "price", "715"),
}
SHOPPING_BACKWARD = {
    ("price", "mul3", "1"), ("mul3", "add1", "1.1"), ("add1", "mul1", "1.1"), ("add1", "mul2", "1.1"),
    ("mul1", "a_num", "110"), ("mul1", "apple", "2.2"), ("mul2", "pear", "3.3"), ("mul2", "p_num", "165"),
    ("mul3", "tax", "650"),
}
NOTES_IDS = {"x1": "mul1", "x2": "mul2", "x3": "mul3", "+1": "add1"}


def shopping(ops, dtype=torch.float64):
    v = {k: torch.tensor(x, dtype=dtype, requires_grad=True)
         for k, x in dict(apple=100.0, a_num=2.0, pear=150.0, p_num=3.0, tax=1.1).items()}
    price = ops.mul(ops.add(ops.mul(v["apple"], v["a_num"]), ops.mul(v["pear"], v["p_num"])), v["tax"])
    return price, {**v, "price": price}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_shopping_diagrams_carry_the_notes_numbers(dtype):
    price, names = shopping(hg.get_ops("hand"), dtype)
    direction, nodes, edges, arrows = parse_mermaid(G.mermaid(price, names))
    assert direction == "LR" and arrows == {"-->"}
    assert set(edges) == SHOPPING_FORWARD and len(edges) == len(SHOPPING_FORWARD)
    assert {k: v for k, v in nodes.items() if v[1] == "circle"} == {
        "mul1": ("Mul", "circle"), "mul2": ("Mul", "circle"), "add1": ("Add", "circle"), "mul3": ("Mul", "circle")}

    direction, nodes, edges, arrows = parse_mermaid(G.mermaid(price, names, backward=True))
    assert direction == "RL" and arrows == {"-.->"}  # dotted, drawn right to left, as the notes do
    assert set(edges) == SHOPPING_BACKWARD and len(edges) == len(SHOPPING_BACKWARD)


def test_the_cli_example_is_the_notes_graph():
    price, names = G.example("shopping")
    assert set(parse_mermaid(G.mermaid(price, names))[2]) == SHOPPING_FORWARD
    assert set(parse_mermaid(G.mermaid(price, names, backward=True))[2]) == SHOPPING_BACKWARD


def _notes_edges(block: str):
    """(src, dst, label) of a mermaid block as the notes write it: ``a --->|2|x1((x))``, ``x3-..->|1.1|+1``."""
    found = re.findall(r"([\w+]+)(?:\(\([^)]*\)\))?\s*-[-.]*>\s*\|([^|]*)\|\s*([\w+]+)", block)
    return {(NOTES_IDS.get(a, a), NOTES_IDS.get(b, b), label) for a, label, b in found}


def test_same_edges_as_the_notes_own_flowcharts():
    seeds = sorted((ROOT.parent.parent / "shared" / "seeds").glob("000_*.txt")) or sorted(
        (ROOT.parent / "shared" / "seeds").glob("000_*.txt"))
    if not seeds:
        pytest.skip("the notes (shared/seeds) are not beside this checkout")
    forward, backward = re.findall(r"```mermaid(.*?)```", seeds[0].read_text(encoding="utf-8"), flags=re.S)[:2]
    assert _notes_edges(forward) == SHOPPING_FORWARD
    assert _notes_edges(backward) == SHOPPING_BACKWARD


# ---------------------------------------------------------------------------------------------
# seeds 002/003: (x + y) z and the sigmoid neuron
# ---------------------------------------------------------------------------------------------


def test_xyz_values_and_gradients():
    f, names = G.example("xyz")
    assert set(parse_mermaid(G.mermaid(f, names))[2]) == {
        ("x", "add1", "-2"), ("y", "add1", "5"), ("add1", "mul1", "q = 3"), ("z", "mul1", "-4"), ("mul1", "f", "-12")}
    assert set(parse_mermaid(G.mermaid(f, names, backward=True))[2]) == {
        ("f", "mul1", "1"), ("mul1", "add1", "dq = -4"), ("mul1", "z", "3"), ("add1", "x", "-4"), ("add1", "y", "-4")}


def test_neuron_gradients_are_seed_002s():
    # ddot = (1 - f) f with f = sigmoid(1) = 0.7311: 0.1966; dx = [w0, w1] ddot, dw = [x0, x1, 1] ddot
    f, names = G.example("neuron")
    assert ("sigmoid1", "f", "0.7311") in parse_mermaid(G.mermaid(f, names))[2]
    edges = set(parse_mermaid(G.mermaid(f, names, backward=True))[2])
    assert {("mul1", "x0", "0.3932"), ("mul2", "x1", "-0.5898"), ("mul1", "w0", "-0.1966"),
            ("mul2", "w1", "-0.3932"), ("add2", "w2", "0.1966"), ("sigmoid1", "add2", "0.1966")} <= edges


# ---------------------------------------------------------------------------------------------
# handgrad and native alike
# ---------------------------------------------------------------------------------------------


def _neuron(ops):
    values = dict(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    v = {k: torch.tensor(x, dtype=torch.float64, requires_grad=True) for k, x in values.items()}
    f = ops.sigmoid(ops.add(ops.add(ops.mul(v["w0"], v["x0"]), ops.mul(v["w1"], v["x1"])), v["w2"]))
    return f, v


@pytest.mark.parametrize("build", [shopping, _neuron], ids=["shopping", "neuron"])
@pytest.mark.parametrize("backward", [False, True])
def test_native_expression_draws_the_same_graph(build, backward):
    hand = G.mermaid(*build(hg.get_ops("hand")), backward=backward)
    native = G.mermaid(*build(hg.get_ops("native")), backward=backward)
    assert parse_mermaid(native) == parse_mermaid(hand)
    assert "?" not in hand


def _labels(output) -> list[str]:
    return sorted(n.label for n in G.build(output).nodes if n.kind == "op")


def _x(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


LABEL_CASES = [
    # (name, expression, op labels of its graph)
    ("hand relu", lambda: hg.relu(_x(3)), ["ReLU"]),
    ("hand sigmoid", lambda: hg.sigmoid(_x(3)), ["Sigmoid"]),
    ("hand maximum", lambda: hg.maximum(_x(3), _x(3)), ["Max"]),
    ("hand affine", lambda: hg.affine(torch.randn(2, 3, dtype=torch.float64), _x(4, 3), _x(4)), ["Affine"]),
    ("hand l2", lambda: hg.l2_penalty([_x(2, 2), _x(3)], 0.1), ["L2"]),
    ("hand cross_entropy", lambda: hg.cross_entropy(_x(2, 3), torch.tensor([0, 2])), ["CrossEntropy"]),
    ("hand mse", lambda: hg.mse_loss(_x(2, 3), torch.zeros(2, 3, dtype=torch.float64)), ["MSE"]),
    ("setup_context op", lambda: twins.FUNCTIONS["Mul"].apply(_x(3), _x(3)), ["Mul"]),
    ("compile twin", lambda: twins.COMPILED["Add"].apply(_x(3), _x(3)), ["Add"]),
    ("native relu, sum", lambda: torch.relu(_x(3)).sum(), ["ReLU", "Sum"]),
    ("native maximum, mean", lambda: torch.maximum(_x(3), _x(3)).mean(), ["Max", "Mean"]),
    ("native linear", lambda: F.linear(torch.randn(2, 3, dtype=torch.float64), _x(4, 3), _x(4)), ["Affine", "Transpose"]),
    ("native expand, sub", lambda: _x(1, 3).expand(2, 3) - _x(2, 3), ["Expand", "Sub"]),
    ("native mse", lambda: F.mse_loss(_x(2, 3), torch.zeros(2, 3, dtype=torch.float64)), ["MSE"]),
    ("native cross_entropy", lambda: F.cross_entropy(_x(2, 3), torch.tensor([0, 2])), ["LogSoftmax", "NLLLoss"]),
]


@pytest.mark.parametrize("name, expr, labels", LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
def test_op_labels(name, expr, labels):
    assert _labels(expr()) == labels


# typed from the notes' pictures, not read from the declarations under test
HAND_LABELS = {"Add": "Add", "Mul": "Mul", "Maximum": "Max", "ReLU": "ReLU", "Sigmoid": "Sigmoid", "Affine": "Affine",
               "L2Penalty": "L2", "CrossEntropy": "CrossEntropy", "MSELoss": "MSE"}


def test_every_handgrad_op_has_a_label_in_every_twin():
    assert {s.key for s in registry.specs()} == set(HAND_LABELS)
    for table in (twins.FUNCTIONS, twins.FAST, twins.COMPILED):
        assert set(table) == set(HAND_LABELS)
        for name, cls in table.items():
            node = type("Fake", (), {"_forward_cls": cls})()
            assert G.op_label(node) == HAND_LABELS[name]


def test_hand_and_native_model_graphs_agree_on_the_values_into_each_activation():
    torch.manual_seed(0)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])

    def into(kind, label):
        torch.manual_seed(1)
        model = MLP(kind, in_features=6, hidden=(4,), classes=3, weight_decay=0.01)
        graph = G.build(model.objective(x, y)[0], G.model_names(model))
        ids = {n.id for n in graph.nodes if n.label == label}
        return sorted(e.value for e in graph.edges if e.dst in ids), graph

    hand, graph = into("hand", "ReLU")
    assert hand == into("native", "ReLU")[0] and hand[0].startswith("5×4, ‖·‖=")
    assert into("hand", "CrossEntropy")[0] == into("native", "LogSoftmax")[0]
    assert not any("?" in e.value for e in graph.edges)  # every hand value found or recomputed


# ---------------------------------------------------------------------------------------------
# names, labels, errors
# ---------------------------------------------------------------------------------------------


def test_unnamed_tensors_get_stable_labels():
    def expr():
        a, b, c = (torch.tensor(v, requires_grad=True) for v in (1.0, 2.0, 3.0))
        return hg.mul(hg.add(a, b), c), c

    out, c = expr()
    first = G.mermaid(out, {"c": c})
    assert first == G.mermaid(out, {"c": c}) == G.mermaid(*(lambda o, c: (o, {"c": c}))(*expr()))
    _, nodes, edges, _ = parse_mermaid(first)
    assert {("t0", "add1", "1"), ("t1", "add1", "2"), ("c", "mul1", "3"), ("mul1", "output", "9")} <= set(edges)
    assert nodes["t0"] == ("t0", "box") and nodes["output"] == ("output", "box")


def _rebuilt(ops, make):
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    return make(ops, a, w, torch.tensor(5.0, dtype=torch.float64), torch.tensor([[1.0, 2.0]], dtype=torch.float64))


# Values nothing in the graph keeps (an Add saves nothing), so they are recomputed from the op's inputs.
RECOMPUTED = [
    ("times a constant tensor", lambda o, a, w, c, x: o.add(o.mul(c, a), a), "10"),
    ("times a number", lambda o, a, w, c, x: o.add(o.mul(a, 5.0), a), "10"),
    ("affine without bias", lambda o, a, w, c, x: o.add(o.affine(x, w), a), "11"),  # [1, 2]·[3, 4]
]


@pytest.mark.parametrize("kind", ["hand", "native"])
@pytest.mark.parametrize("name, make, value", RECOMPUTED, ids=[r[0] for r in RECOMPUTED])
def test_values_the_graph_does_not_keep_are_recomputed(kind, name, make, value):
    graph = G.build(_rebuilt(hg.get_ops(kind), make))
    add = next(n.id for n in graph.nodes if n.label == "Add")
    into_add = [e.value for e in graph.edges if e.dst == add]
    assert value in into_add and "?" not in into_add


def test_a_named_intermediate_shows_a_value_the_graph_does_not_keep():
    a = torch.tensor(2.0, requires_grad=True)
    b = a + 1.0  # AddBackward1 saves nothing, and exp saves only its own output
    out = torch.exp(b)
    assert ("add1", "exp1", "?") in parse_mermaid(G.mermaid(out))[2]
    assert ("add1", "exp1", "b = 3") in parse_mermaid(G.mermaid(out, {"b": b}))[2]


@pytest.mark.parametrize("value, text", [
    (715.0000000001, "715"), (110.00000000000001, "110"), (3.3000000000000003, "3.3"), (1.100000023841858, "1.1"),
    (-0.0, "0"), (0.7310585786300049, "0.7311"), (-0.19661193324148185, "-0.1966"), (1e-7, "1e-07"),
    (float("nan"), "nan"), (float("-inf"), "-inf"),
])
def test_number_format(value, text):
    assert G.format_number(value) == text


def test_tensors_show_shape_and_norm():
    assert G.describe(torch.ones(2, 3)) == "2×3, ‖·‖=2.449"  # √6
    assert G.describe(torch.tensor([4.0])) == "4"
    assert G.describe(None) == "?"


@pytest.mark.parametrize("make", [
    lambda: torch.tensor(3.0),
    lambda: torch.tensor(3.0, requires_grad=True).detach() * 2,
])
def test_a_tensor_without_graph_is_a_clear_error(make):
    one_sentence = r"^handgrad.graph: the output has no autograd graph \(no grad_fn and requires_grad=False\); [^\n]*\.$"
    with pytest.raises(ValueError, match=one_sentence):
        G.mermaid(make())


def test_bad_names_are_clear_errors():
    a = torch.tensor(1.0, requires_grad=True)
    out = hg.mul(a, 2.0)
    with pytest.raises(ValueError, match=r"names\['stranger'\] is not a tensor of the output's graph"):
        G.mermaid(out, {"stranger": torch.tensor(1.0, requires_grad=True)})
    with pytest.raises(TypeError, match="names must map strings to tensors"):
        G.mermaid(out, {"a": 1.0})
    with pytest.raises(TypeError, match="output must be a torch.Tensor"):
        G.mermaid(1.0)


def test_a_leaf_output_is_one_edge():
    w = torch.tensor(5.0, requires_grad=True)
    assert parse_mermaid(G.mermaid(w, {"w": w}, backward=True))[2] == [("w_out", "w", "1")]


# ---------------------------------------------------------------------------------------------
# gradients: computed without touching .grad, one share per edge
# ---------------------------------------------------------------------------------------------


def test_drawing_gradients_leaves_grads_and_graph_alone():
    price, names = shopping(hg.get_ops("hand"))
    names["apple"].grad = torch.tensor(7.0, dtype=torch.float64)
    G.mermaid(price, names, backward=True)
    G.to_image(price, names, backward=True, dpi=30)
    assert names["apple"].grad.item() == 7.0 and names["tax"].grad is None
    price.backward()  # the graph is still there
    assert names["tax"].grad.item() == 650.0 and names["apple"].grad.item() == 7.0 + 2.2


def test_each_edge_carries_its_own_share_where_a_tensor_branches():
    x = torch.tensor(3.0, requires_grad=True)
    out = hg.add(hg.mul(x, x), x)  # d/dx = 2x + 1 = 7, as 3 + 3 + 1 on three edges
    edges = parse_mermaid(G.mermaid(out, {"x": x}, backward=True))[2]
    assert sorted(label for src, dst, label in edges if dst == "x") == ["1", "3", "3"]


def test_gradients_after_backward_freed_the_graph_are_a_clear_error():
    price, names = shopping(hg.get_ops("native"))
    price.backward()
    with pytest.raises(ValueError, match=r"freed by an earlier backward\(\); draw it before"):
        G.mermaid(price, names, backward=True)
    # the forward values are still found (leaves, and each op recomputed from them)
    assert set(parse_mermaid(G.mermaid(price, names))[2]) == SHOPPING_FORWARD


# ---------------------------------------------------------------------------------------------
# DOT, pictures, layout
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backward", [False, True])
def test_dot_has_the_same_graph_as_mermaid(backward):
    price, names = shopping(hg.get_ops("hand"))
    nodes, edges = parse_dot(G.dot(price, names, backward=backward))
    assert set(edges) == (SHOPPING_BACKWARD if backward else SHOPPING_FORWARD)
    assert nodes["mul3"] == "Mul" and nodes["price"] == "price"
    assert ("rankdir=RL;" if backward else "rankdir=LR;") in G.dot(price, names, backward=backward)


def test_parsers_reject_broken_text():
    with pytest.raises(AssertionError):
        parse_dot('digraph g {\n    "a" -> "b" [label="1"];\n}\n')  # edge to undeclared nodes
    with pytest.raises(AssertionError):
        parse_mermaid("flowchart LR\n    a -->|1| b\n")


def test_render_writes_png_and_svg(tmp_path):
    price, names = shopping(hg.get_ops("hand"))
    png = G.render(price, tmp_path / "shop.png", names)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    svg = G.render(price, tmp_path / "shop.svg", names, backward=True)
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert "650" in svg.read_text(encoding="utf-8") or "<path" in svg.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.png", "shop.svg"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert png.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private temporary
    with pytest.raises(ValueError, match=r"must end in \.png or \.svg, got 'shop\.jpg'"):
        G.render(price, tmp_path / "shop.jpg", names)


def test_to_image_is_an_rgb_picture():
    image = G.to_image(*G.example("xyz"), dpi=50)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (image < 128).any() and (image == 255).all(axis=2).mean() > 0.5  # dark ink on a white page


def _overlaps(lay: G.Layout) -> list:
    boxes = [("label", b) for b in lay.labels] + [(k, b) for k, b in lay.nodes.items()]
    return [(a, c) for i, (a, b) in enumerate(boxes) for c, d in boxes[i + 1:] if b.overlaps(d)]


def test_overlap_check_can_fail():
    lay = G.Layout(3, 3, {"a": G.Box(1, 1, 1, 1)}, [], [G.Box(1.4, 1.2, 0.5, 0.2)])
    assert _overlaps(lay) == [("label", "a")]


def _small_model_graph(backward):
    torch.manual_seed(0)
    model = MLP("hand", in_features=12, hidden=(8, 6), classes=4, weight_decay=0.01)
    total = model.objective(torch.randn(7, 12), torch.tensor([0, 1, 2, 3, 0, 1, 2]))[0]
    return G.build(total, G.model_names(model, J=total), backward)


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("name", [*G.EXAMPLES, "model"])
def test_labels_overlap_nothing(name, backward):
    graph = _small_model_graph(backward) if name == "model" else G.build(*G.example(name), backward=backward)
    lay = G.layout(graph)
    assert _overlaps(lay) == []
    for box in [*lay.labels, *lay.nodes.values()]:  # and everything is on the page
        assert 0 <= box.x - box.w / 2 and box.x + box.w / 2 <= lay.width and 0 <= box.y - box.h / 2 <= lay.height


# ---------------------------------------------------------------------------------------------
# the dashboard helper
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ops", ["hand", "native"])
def test_model_graph_for_tensorboard(ops):
    torch.manual_seed(0)
    model = MLP(ops, in_features=10, hidden=(5,), classes=3, weight_decay=0.01)
    image, text = G.model_graph(model, torch.randn(4, 10), torch.tensor([0, 1, 2, 0]), backward=True, dpi=40)
    assert image.dtype == np.uint8 and image.shape[2] == 3 and image.shape[1] > image.shape[0]
    _, nodes, edges, _ = parse_mermaid(text)
    labels = {label for label, _ in nodes.values()}
    assert {"layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias", "J"} <= labels
    assert [(nodes[dst][0], label) for src, dst, label in edges if src == "J"] == [("Add", "1")]
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "handgrad.graph", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})


def test_cli_shopping_backward_mermaid():
    run = _cli("--example", "shopping", "--backward")
    assert run.returncode == 0, run.stderr
    assert set(parse_mermaid(run.stdout)[2]) == SHOPPING_BACKWARD


def test_cli_xyz_dot():
    run = _cli("--example", "xyz", "--format", "dot")
    assert run.returncode == 0, run.stderr
    assert ("mul1", "f", "-12") in parse_dot(run.stdout)[1]


def test_cli_neuron_png_default_name(tmp_path):
    run = _cli("--example", "neuron", "--format", "png", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "wrote graph-neuron.png"
    assert (tmp_path / "graph-neuron.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_mlp_svg(tmp_path):
    run = _cli("--example", "mlp", "--backward", "--output", str(tmp_path / "mlp.svg"))
    assert run.returncode == 0, run.stderr
    assert ET.parse(tmp_path / "mlp.svg").getroot().tag.endswith("svg")


def test_cli_mistakes_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        G.main(["--example", "shopping", "--format", "png", "--output", "x.svg"])
    assert stop.value.code == 2 and "--format png does not match" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        G.main(["--example", "nope"])
    assert stop.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    assert G.main(["--example", "xyz", "--output", str(tmp_path / "missing" / "g.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
