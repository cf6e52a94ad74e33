"""Event files of one run, as the training process sees them: records handed to the writer process.

Run "" is the main run; any other name is a sub-run folder (one per layer, so that TensorBoard
gives each layer its own colour). Every method returns at once: the records are built and written
by the writer process (:mod:`.sink`), and :meth:`Events.close` waits until they are on disk.
"""

from __future__ import annotations

from collections.abc import Mapping

from .writer import WriterProcess

__all__ = ["Events"]


class Events:
    """``scalars({(run, tag): value}, step)`` and the other records of one run's log folder."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self._writer = WriterProcess(logdir)
        self._key_ids: dict[tuple, int] = {}

    def scalars(self, values: Mapping[tuple[str, str], float], step: int) -> None:
        # NOTE: a step's (run, tag) keys repeat from step to step: they cross the pipe once, then by number
        keys = tuple(values)
        key_id = self._key_ids.get(keys)
        if key_id is None:
            key_id = self._key_ids[keys] = len(self._key_ids)
            self._writer.send("keys", key_id, keys)
        self._writer.send("scalars", step, key_id, [float(v) for v in values.values()])

    def histograms(self, step: int, rows: list[tuple]) -> None:
        """(run, tag, lo, hi, counts, num, sum, sum of squares) rows, all of ``step``."""
        self._writer.send("histograms", step, rows)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        self._writer.send("text", step, tag, markdown)

    def layout(self, categories: dict) -> None:
        self._writer.send("layout", categories)

    def hparams(self, values: dict, metrics: Mapping[str, float]) -> None:
        self._writer.send("hparams", values, dict(metrics))

    def gradient_flow(self, step: int, tag: str, names: list[str], mean: list[float], maximum: list[float],
                      errors: dict | None = None, tol: float | None = None) -> None:
        self._writer.send("gradient_flow", step, tag, names, mean, maximum, errors, tol)

    def curves(self, step: int, tag: str, series: dict, title: str, png_name: str) -> None:
        self._writer.send("curves", step, tag, series, title, png_name)

    def model_graph(self, step: int, tag: str, facts: list[dict], graph, mermaid: str) -> None:
        self._writer.send("model_graph", step, tag, facts, graph, mermaid)

    def close(self) -> None:
        self._writer.close()
