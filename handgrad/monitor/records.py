"""What a run writes once: its configuration and the HParams entry (the model graph: handgrad.graph.write_model_graph)."""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["RunRecords"]


class RunRecords:
    """Mixed into :class:`handgrad.monitor.Monitor`: uses its ``writer``, ``events`` and ``_config``."""

    def graph_later(self, write) -> None:
        """``write(writer)`` on the picture thread (the model graph: about a second of reading and drawing).

        A missing optional package (ImportError, e.g. matplotlib for the picture) skips what is left of it.
        """
        if self.writer is not None:
            self.pictures.later(lambda: self.writer, write)

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
