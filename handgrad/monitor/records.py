"""What a run writes once: its configuration, the model's graph picture, the HParams entry."""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["RunRecords"]


class RunRecords:
    """Mixed into :class:`handgrad.monitor.Monitor`: uses its ``writer``, ``events`` and ``_config``."""

    def graph(self, image, mermaid: str) -> None:
        """The model's autograd graph for one batch: the picture (HWC uint8) in Images, the mermaid source in Text."""
        if self.writer is not None:
            self.events.image("graph/model", image, 0)
            self.events.text("graph/mermaid", "\n".join("    " + line for line in mermaid.splitlines()))

    def graph_later(self, draw) -> None:
        """:meth:`graph` of ``draw()`` (image, mermaid), drawn on the picture thread; an ImportError skips it."""
        if self.writer is not None:
            self.pictures.later(draw, lambda picture: self.graph(*picture))

    def config(self, config: Mapping) -> None:
        self._config = dict(config)
        if self.writer is not None:
            self.events.text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(config.items())))

    def hparams(self, config: Mapping, metrics: Mapping[str, float]) -> None:
        if self.writer is None or self._hparams_done:
            return
        self._hparams_done = True
        hp = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in config.items() if v is not None}
        self.writer.add_hparams(hp, {f"hparam/{k}": float(v) for k, v in metrics.items()}, run_name=".")
