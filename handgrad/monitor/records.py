"""What a run writes once: its configuration, the HParams entry and the model's graph."""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["RunRecords"]


class RunRecords:
    """Mixed into :class:`handgrad.monitor.Monitor`: uses its ``events`` and ``_config``."""

    def model_graph(self, model, x, target, step: int = 0, tag: str = "graph/model") -> None:
        """The objective's autograd graph on one batch: Graphs-tab data, the picture in Images, mermaid in Text.

        Read here (one forward and one ``autograd.grad``, every ``.grad`` left as it was; the
        monitor's forward hooks do not count it), drawn by the writer process.
        """
        if self.events is None:
            return
        from ..graph import tensorboard as graph_tb
        from ..graph.model import read_model
        from ..graph.reading import detached

        capture, self._capture = self._capture, False
        try:
            graph = read_model(model, x, target, backward=True, draw_input=True)
        finally:
            self._capture = capture
        self.events.model_graph(step, tag, graph_tb.node_facts(graph), detached(graph), graph_tb.mermaid_markdown(graph))

    def config(self, config: Mapping) -> None:
        self._config = dict(config)
        if self.events is not None:
            self.events.text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(config.items())))

    def hparams(self, config: Mapping, metrics: Mapping[str, float]) -> None:
        if self.events is None or self._hparams_done:
            return
        self._hparams_done = True
        hp = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in config.items() if v is not None}
        self.events.hparams(hp, {f"hparam/{k}": float(v) for k, v in metrics.items()})
