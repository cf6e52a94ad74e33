"""TensorBoard's records, built from plain numbers: scalars, text, the custom-scalars layout, HParams,
histograms and images. No torch: the writer process (:mod:`.sink`) builds them.

Each function returns a ``Summary`` laid out the way TensorBoard's plugins read it (the same fields
``torch.utils.tensorboard`` writes), so the dashboard reads them as it reads any writer's.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

__all__ = ["scalars", "text", "layout", "hparams", "histogram", "image", "png_bytes", "load_all"]


def load_all() -> None:
    """Import now what the records below import when first built (the writer's warm-up; hparams alone is 50 ms)."""
    from tensorboard.plugins.custom_scalar import layout_pb2  # noqa: F401
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2  # noqa: F401
    from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData  # noqa: F401


def _plugin(name: str, content: bytes = b"") -> SummaryMetadata:
    return SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=name, content=content))


def scalars(pairs: Sequence[tuple[str, float]]) -> Summary:
    """One record holding every (tag, value) of a run at a step (one event instead of one per value)."""
    return Summary(value=[Summary.Value(tag=t, simple_value=float(v)) for t, v in pairs])


def text(tag: str, markdown: str) -> Summary:
    """The Text tab's record; TensorBoard shows it under ``tag + "/text_summary"``."""
    from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

    tensor = TensorProto(dtype="DT_STRING", string_val=[markdown.encode()],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=f"{tag}/text_summary", tensor=tensor,
                                        metadata=_plugin("text", TextPluginData(version=0).SerializeToString()))])


def layout(categories: Mapping[str, Mapping[str, tuple[str, list[str]]]]) -> Summary:
    """The custom-scalars layout: ``{category: {chart title: ("Multiline", [tag regex, ...])}}``."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    pb = layout_pb2.Layout(category=[
        layout_pb2.Category(title=category, chart=[
            layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(tags)))
            for title, (_kind, tags) in charts.items()])
        for category, charts in categories.items()])
    tensor = TensorProto(dtype="DT_STRING", string_val=[pb.SerializeToString()], tensor_shape=TensorShapeProto())
    return Summary(value=[Summary.Value(tag="custom_scalars__config__", tensor=tensor, metadata=_plugin("custom_scalars"))])


def hparams(values: Mapping[str, int | float | str | bool], metrics: Sequence[str]) -> list[Summary]:
    """The HParams tab's three records (experiment, session start, session end) for one run."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    infos = []
    for name, v in values.items():
        if isinstance(v, bool):  # NOTE: before int: a bool is an int in Python
            start.hparams[name].bool_value, kind = v, "DATA_TYPE_BOOL"
        elif isinstance(v, (int, float)):
            start.hparams[name].number_value, kind = float(v), "DATA_TYPE_FLOAT64"
        else:
            start.hparams[name].string_value, kind = str(v), "DATA_TYPE_STRING"
        infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DataType.Value(kind)))
    experiment = api_pb2.Experiment(hparam_infos=infos,
                                    metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value("STATUS_SUCCESS"))
    out = []
    for tag, field, message in ((metadata.EXPERIMENT_TAG, "experiment", experiment),
                                (metadata.SESSION_START_INFO_TAG, "session_start_info", start),
                                (metadata.SESSION_END_INFO_TAG, "session_end_info", end)):
        content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **{field: message})
        out.append(Summary(value=[Summary.Value(tag=tag, metadata=_plugin(metadata.PLUGIN_NAME, content.SerializeToString()))]))
    return out


def histogram(tag: str, lo: float, hi: float, counts: Sequence[float], num: int, total: float, squares: float) -> Summary:
    """A histogram of ``num`` values binned evenly on [lo, hi] into ``counts``, with their sum and sum of squares."""
    edges = np.linspace(lo, hi, len(counts) + 1).tolist()
    # NOTE: TensorBoard stores right edges only; an empty first bucket carries the left edge
    histo = HistogramProto(min=lo, max=hi, num=num, sum=total, sum_squares=squares, bucket_limit=edges,
                           bucket=[0.0, *map(float, counts)])
    return Summary(value=[Summary.Value(tag=tag, histo=histo)])


def png_bytes(picture: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 picture as PNG bytes: 8-bit RGB, no row filter, zlib level 1.

    Written here rather than by Pillow, whose encoder tries five row filters per row: 1.0 ms
    against 1.8-3.8 ms for a chart, and the charts are what the trainer waits for at the end of a
    short run. Any PNG reader (TensorBoard's, Pillow's) reads it; a test decodes it pixel for pixel.
    """
    picture = np.ascontiguousarray(picture, dtype=np.uint8)
    height, width, channels = picture.shape
    if channels != 3:
        raise ValueError(f"png_bytes: an RGB picture (H, W, 3) was expected, got shape {picture.shape}")
    rows = np.zeros((height, 1 + 3 * width), np.uint8)  # NOTE: each row starts with its filter type, 0 (none)
    rows[:, 1:] = picture.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # NOTE: 8 bits, truecolour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
            + chunk(b"IEND", b""))


def image(tag: str, png: bytes, height: int, width: int) -> Summary:
    picture = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=picture)])
