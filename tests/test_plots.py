"""The dashboard's charts (handgrad.plots, drawn with Pillow) and the writer's event records.

The charts are checked by their pixels: a bar's height follows its value on the log axis, a
value with no bar (inf, NaN) is said in red, an error over the tolerance is red and one under it
green, every series of a line chart is drawn in its own colour, and a machine without DejaVu Sans
still gets a chart. The records are compared byte for byte with TensorBoard's own writer.
"""

import io

import numpy as np
import pytest
from PIL import ImageColor
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.summary.writer.record_writer import RecordWriter

from handgrad import plots
from handgrad.monitor import protos
from handgrad.monitor.sink import EventFile

NAMES = ["layers.0.weight", "layers.0.bias", "layers.2.weight"]


def rgb(colour: str) -> np.ndarray:
    return np.array(ImageColor.getrgb(colour), dtype=np.uint8)


def column_count(image: np.ndarray, x: int, colour: str) -> int:
    """How many pixels of column ``x`` have exactly ``colour``."""
    return int((image[:, x] == rgb(colour)).all(-1).sum())


def slot_centre(slot: int, slots: int, left: int = 52, right: int = plots.PANEL_W - 12) -> int:
    return int(left + (slot + 0.5) * (right - left) / slots)


def test_a_bar_is_as_tall_as_its_value_on_the_log_axis():
    # NOTE: maxima 1e-1, 1e-2, 1e-3: each light bar one decade shorter than the one before
    image = plots.gradient_flow(NAMES, np.array([1e-4, 1e-4, 1e-4]), np.array([1e-1, 1e-2, 1e-3]), step=7)
    assert image.shape == (plots.HEIGHT, plots.PANEL_W, 3) and image.dtype == np.uint8
    # NOTE: the light bar is wider than the dark one: look beside the dark bar, inside the light one
    heights = [column_count(image, slot_centre(i, 3) + 24, plots._LIGHT) for i in range(3)]
    assert heights[0] > heights[1] > heights[2] > 0
    decade = heights[0] - heights[1]
    assert abs((heights[1] - heights[2]) - decade) <= 2  # NOTE: equal steps: the axis is logarithmic
    dark = [column_count(image, slot_centre(i, 3), plots._DARK) for i in range(3)]
    assert max(dark) - min(dark) <= 1 and dark[0] > 0  # NOTE: equal means, equal dark bars


def test_inf_and_nan_have_no_bar_and_are_said_in_red():
    image = plots.gradient_flow(NAMES, np.array([1e-3, np.nan, 1e-3]), np.array([np.inf, np.nan, 1e-2]), step=1)
    for slot in (0, 1):
        assert column_count(image, slot_centre(slot, 3) + 24, plots._LIGHT) == 0
        box = image[50:80, slot_centre(slot, 3) - 20:slot_centre(slot, 3) + 20]
        assert (box == rgb(plots._BAD)).all(-1).any(), f"slot {slot}: no red word"
    assert column_count(image, slot_centre(2, 3) + 24, plots._LIGHT) > 0
    assert not (image[50:80, slot_centre(2, 3) - 20:slot_centre(2, 3) + 20] == rgb(plots._BAD)).all(-1).any()


def test_the_compare_panel_colours_each_error_against_the_tolerance():
    errors = {NAMES[0]: 1e-7, NAMES[1]: 3e-4, NAMES[2]: 1e-6}
    image = plots.gradient_flow(NAMES, np.full(3, 1e-3), np.full(3, 1e-2), step=1, errors=errors, tol=1e-4)
    assert image.shape == (plots.HEIGHT, 2 * plots.PANEL_W, 3)
    centres = [slot_centre(i, 3, plots.PANEL_W + 52, 2 * plots.PANEL_W - 12) for i in range(3)]
    assert column_count(image, centres[0], plots._GOOD) > 0 and column_count(image, centres[0], plots._BAD) == 0
    assert column_count(image, centres[1], plots._BAD) > column_count(image, centres[0], plots._GOOD)
    assert column_count(image, centres[2], plots._GOOD) > column_count(image, centres[0], plots._GOOD)


def test_every_series_of_a_line_chart_has_its_colour():
    series = {f"s{i}": ([1, 2, 3, 4], [10.0 ** -i, 10.0 ** (-i - 1), 10.0 ** -i, 1e-3]) for i in range(3)}
    image = plots.curves(series, "three series")
    assert image.shape == (plots.HEIGHT, plots.CURVES_W, 3)
    for i in range(3):
        assert (image == rgb(plots._SERIES[i])).all(-1).sum() > 30, f"series {i} is not drawn"
    assert not (image == rgb(plots._SERIES[3])).all(-1).any()


@pytest.mark.parametrize("case", ["empty", "one point", "all nan"])
def test_charts_of_degenerate_inputs_are_still_drawn(case):
    if case == "empty":
        images = [plots.gradient_flow([], np.zeros(0), np.zeros(0), step=1), plots.curves({}, "nothing")]
    elif case == "one point":
        images = [plots.curves({"a": ([5], [0.5])}, "one point")]
    else:
        images = [plots.gradient_flow(NAMES, np.full(3, np.nan), np.full(3, np.nan), step=1),
                  plots.curves({"a": ([1, 2], [np.nan, np.nan])}, "nan")]
    for image in images:
        assert image.ndim == 3 and image.shape[2] == 3 and image.min() < 255  # NOTE: something is drawn


def test_without_dejavu_the_charts_use_pillows_font_and_plain_ascii(monkeypatch):
    from PIL import ImageFont

    real = ImageFont.truetype

    def no_files(font, *args, **kwargs):  # NOTE: a font file by name or path is missing; Pillow's own loads
        if isinstance(font, (str, bytes)):
            raise OSError("cannot open resource")
        return real(font, *args, **kwargs)

    plots._font.cache_clear(), plots._stamp.cache_clear()
    monkeypatch.setattr(ImageFont, "truetype", no_files)
    try:
        font, symbols = plots._font(12)
        assert not symbols
        image = plots.gradient_flow(NAMES, np.full(3, 1e-3), np.full(3, 1e-2), step=1)
        assert image.shape == (plots.HEIGHT, plots.PANEL_W, 3)
        assert "|∂L/∂θ|, input → output".translate(plots._ASCII) == "|dL/dtheta|, input -> output"
    finally:
        plots._font.cache_clear(), plots._stamp.cache_clear()


def test_the_event_records_are_byte_for_byte_tensorboards(tmp_path):
    events = [Event(summary=protos.scalars([("loss", 0.5), ("lr", 0.1)]), step=3, wall_time=1000.0),
              Event(summary=protos.image("picture", protos.png_bytes(np.zeros((4, 5, 3), np.uint8)), 4, 5), step=4,
                    wall_time=1001.0)]
    ours = EventFile(tmp_path, 0)
    for event in events:
        ours.add_event(event)
    ours.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    theirs = io.BytesIO()
    writer = RecordWriter(theirs)
    first = Event()
    first.ParseFromString(_first_record(path.read_bytes()))  # NOTE: the file_version record, with its wall time
    for event in [first, *events]:
        writer.write(event.SerializeToString())
    assert path.read_bytes() == theirs.getvalue()


def _first_record(blob: bytes) -> bytes:
    length = int.from_bytes(blob[:8], "little")
    return blob[12:12 + length]


@pytest.mark.parametrize("shape", [(1, 1, 3), (37, 53, 3), (plots.HEIGHT, plots.PANEL_W, 3)])
def test_png_bytes_decode_to_the_same_pixels(shape):
    from PIL import Image

    picture = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    png = protos.png_bytes(picture)
    decoded = Image.open(io.BytesIO(png))
    decoded.load()  # NOTE: Pillow checks every chunk's CRC and the zlib stream here
    assert decoded.mode == "RGB" and decoded.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(decoded), picture)


def test_png_bytes_refuses_a_picture_that_is_not_rgb():
    with pytest.raises(ValueError, match="RGB"):
        protos.png_bytes(np.zeros((4, 4, 4), np.uint8))


@pytest.mark.parametrize("tol", [None, 0.0, -1.0, float("nan"), float("inf")])
def test_the_compare_panel_draws_whatever_the_tolerance(tol):
    image = plots.gradient_flow(NAMES, np.full(3, 1e-3), np.full(3, 1e-2), step=1, errors={n: 1e-6 for n in NAMES}, tol=tol)
    assert image.shape == (plots.HEIGHT, 2 * plots.PANEL_W, 3)


def test_a_parameter_without_an_error_gets_a_grey_dash_not_a_red_nan():
    image = plots.gradient_flow(NAMES, np.full(3, 1e-3), np.full(3, 1e-2), step=1, errors={NAMES[0]: 1e-6}, tol=1e-4)
    centre = slot_centre(2, 3, plots.PANEL_W + 52, 2 * plots.PANEL_W - 12)
    box = image[40:80, centre - 20:centre + 20]
    assert (box == rgb(plots._MISSING)).all(-1).any() and not (box == rgb(plots._BAD)).all(-1).any()


def test_all_zero_gradients_still_get_an_axis():
    image = plots.gradient_flow(NAMES, np.zeros(3), np.zeros(3), step=1)
    left_margin = image[30:plots.HEIGHT - 40, :45]
    assert (left_margin < 128).any()  # NOTE: the decade labels are drawn (an inverted axis had none)
