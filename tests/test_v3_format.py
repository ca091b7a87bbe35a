"""kmodel v3 container and layer bodies: byte-exact round trips of every reference file and of every
layer body kmodelpy can write (hypothesis), nncase v0.1's short last body, one clear error for each
kind of bad file, and mutated / truncated v3 files never raising anything but KmodelpyError."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_v3_layers import MAIN, STRATEGIES

import kmodelpy
from kmodelpy.errors import FormatError, KmodelpyError, UnsupportedError
from kmodelpy.format.binio import Reader, Writer
from kmodelpy.v3.kmodel import HEADER_SIZE, KModelV3, LayerEntry, layer_types
from kmodelpy.v3.layer import LAYER_TYPES
from kmodelpy.v3.model import Model

V3 = Path(__file__).resolve().parent.parent / "reference" / "ncc_outputs" / "v3"
CASES = sorted(p.name for p in V3.iterdir() if (p / "model.kmodel").exists())
IRIS = V3 / "nncase_rc5_iris" / "model.kmodel"
MNIST = V3 / "maixpy_mnist" / "model.kmodel"


def _case(name: str) -> dict:
    return json.loads((V3 / name / "case.json").read_text())


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("case", CASES)
def test_reference_files_round_trip_byte_for_byte(case):
    data = (V3 / case / "model.kmodel").read_bytes()
    km = KModelV3.parse(data, case)
    assert km.to_bytes() == data
    names = [LAYER_TYPES[c] for c in layer_types(data, case)]
    assert names == [layer.name for layer in km.layers] == _case(case)["layer_sequence"]
    assert km.main_mem == _case(case)["model"]["main_mem_usage"]


def test_nncase_short_last_body_is_read_as_zeros():
    """The iris file ends 4 bytes into its last body's padding (3 of nncase v0.1's models do)."""
    data = IRIS.read_bytes()
    km = KModelV3.parse(data, "iris")
    assert km.missing_tail == 4
    short = data[:-3]  # 7 bytes short: still accepted
    assert KModelV3.parse(short, "iris").to_bytes() == short
    with pytest.raises(FormatError, match="runs past the end"):
        KModelV3.parse(data[:-4], "iris")  # 8 bytes short: part of the bias is missing
    km.missing_tail = None  # a new model drops the last padding, as nncase v0.1 does
    assert km.to_bytes() == data


@st.composite
def k210_conv_with_gaps(draw):
    layer, _ = draw(STRATEGIES[10240])
    layer.gaps = tuple(draw(st.binary(max_size=9)) for _ in range(4))
    return layer


ANY_LAYER = st.one_of(*(s.map(lambda lm: lm[0]) for s in STRATEGIES.values()), k210_conv_with_gaps())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ANY_LAYER, st.integers(0, 4096))
def test_every_layer_body_round_trips(layer, offset):
    w = Writer(offset)
    layer.write(w)
    body = bytes(w.buf)
    data = bytes(offset) + body
    back = type(layer).read(Reader(data, offset, len(data), "body", "t"))
    assert back == layer
    w2 = Writer(offset)
    back.write(w2)
    assert bytes(w2.buf) == body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(ANY_LAYER, min_size=1, max_size=6), st.lists(st.tuples(st.integers(0, MAIN), st.integers(0, 64)), max_size=3),
       st.binary(max_size=5))
def test_whole_files_round_trip(layers, outputs, trailer):
    km = KModelV3(main_mem=MAIN, outputs=outputs, entries=[LayerEntry(layer) for layer in layers])
    data = km.to_bytes()
    back = KModelV3.parse(data, "t")
    assert back.layers == layers and back.outputs == outputs and back.to_bytes() == data
    if back.missing_tail == 0:  # a whole last body: trailing bytes are kept too
        assert KModelV3.parse(data + trailer, "t").to_bytes() == data + trailer


# ------------------------------------------------------------------ one clear error per bad file
def _with_header(data: bytes, **fields) -> bytes:
    names = ["version", "flags", "arch", "layers_length", "max_start_address", "main_mem_usage", "output_count"]
    vals = list(struct.unpack_from("<7I", data))
    for k, v in fields.items():
        vals[names.index(k)] = v
    return struct.pack("<7I", *vals) + data[HEADER_SIZE:]


def _layer_header_at(data: bytes, k: int) -> int:
    n_out = struct.unpack_from("<I", data, 24)[0]
    return HEADER_SIZE + 8 * n_out + 8 * k


def _set_type(data: bytes, k: int, code: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, _layer_header_at(data, k), code)
    return bytes(b)


def _set_body_size(data: bytes, k: int, size: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, _layer_header_at(data, k) + 4, size)
    return bytes(b)


BAD = [
    (lambda d: d[:20], FormatError, "kmodel v3 header is truncated"),
    (lambda d: d[:HEADER_SIZE + 12], FormatError, "do not fit"),
    (lambda d: d[: len(d) // 2], FormatError, "runs past the end"),
    (lambda d: _set_body_size(d, 0, 1 << 30), FormatError, "runs past the end"),
    (lambda d: _set_type(d, 1, 19), UnsupportedError, "type 19 (QUANTIZED_FULLY_CONNECTED), which the K210 SDK's runtime does not implement"),
    (lambda d: _set_type(d, 0, 99), UnsupportedError, "unknown type 99"),
    (lambda d: _set_type(d, 2, 0x2002), UnsupportedError, "unknown type 8194 (0x2002)"),
    (lambda d: _with_header(d, main_mem_usage=0xFFFFFF00), FormatError, "main memory"),
    (lambda d: _with_header(d, arch=5), FormatError, "arch 5"),
    (lambda d: _with_header(d, flags=0), UnsupportedError, "16-bit weight mode"),
    (lambda d: _with_header(d, layers_length=1 << 20), FormatError, "do not fit"),
]


@pytest.mark.parametrize("mutate, kind, words", BAD)
def test_bad_files_raise_one_clear_line(mutate, kind, words):
    data = mutate(MNIST.read_bytes())
    with pytest.raises(kind) as e:
        kmodelpy.runtime.model_from_bytes(data, "bad.kmodel")
    assert words in str(e.value) and "bad.kmodel" in str(e.value) and "\n" not in str(e.value)


def test_k210_conv_sections_must_lie_in_their_body():
    data = bytearray(MNIST.read_bytes())
    body0 = _layer_header_at(data, 11)  # the first body starts after the 11 layer headers
    struct.pack_into("<I", data, body0 + 12, 10)  # weights_offset points back into the header
    with pytest.raises(FormatError, match="weights .* is not inside the body"):
        KModelV3.parse(bytes(data), "bad.kmodel")


def test_ranges_outside_main_memory_are_refused_at_load():
    data = _with_header(MNIST.read_bytes(), main_mem_usage=1000)
    with pytest.raises(FormatError, match="past the end of main memory"):
        Model.from_bytes(data, "small.kmodel")


def test_a_first_layer_the_sdk_cannot_feed():
    """kpu_run_kmodel feeds only K210_CONV or FULLY_CONNECTED: loading says so, inspect still works."""
    km = KModelV3.parse(MNIST.read_bytes(), "m")
    km.entries = km.entries[2:]  # starts with DEQUANTIZE now
    data = km.to_bytes()
    with pytest.raises(UnsupportedError, match="layer 0 is DEQUANTIZE"):
        Model.from_bytes(data, "m")
    from kmodelpy.inspect_kmodel import describe_bytes

    assert "cannot be fed" in describe_bytes(data, "m")


# ------------------------------------------------------------------ hypothesis: never anything else
def _small_all_types() -> bytes:
    """A small v3 file with every layer type once (valid ranges, meaningless numbers), for the fuzz."""
    from kmodelpy.kpu.layer_args import ActivationTable, BatchNorm, ncc_layer_args
    from kmodelpy.v3.layer import layer_class as L

    la = ncc_layer_args(in_addr=0, out_addr=64 * 100, in_shape=(2, 4, 4), out_shape=(3, 2, 2), kernel_size=3,
                        depthwise=False, pool_type=5, pad_value=7, arg_x=-3, shift_x=0, arg_w=-9, shift_w=0,
                        arg_add=27, main_output=True)
    act = ActivationTable(shift_number=[0] + [4] * 15, y_mul=[0] + [3] * 15, x_start=[-(1 << 35)] + list(range(15)),
                          add=list(range(16)))
    conv = L(10240)(1, 600, la, np.arange(54, dtype=np.uint8), BatchNorm([5, 6, 7], [1, 2, 3], [2, 2, 2]), act)
    q = L(11)(0, 64, 128, 8)
    q.scale, q.bias = 0.5, 1.0
    dq = L(12)(0, 128, 160, 8)
    dq.scale, dq.bias = 0.25, -3.0
    cw = L(24)(0, 128, 192, 2, 4, np.float32([[0.5, 1.0], [2.0, -1.0]]))
    rq = L(13)(0, 128, 136, 8, np.arange(256, dtype=np.uint8)[::-1].copy())
    fc = L(18)(0, 160, 224, 8, 3, 1, np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8), np.float32([0.1, 0.2, 0.3]))
    layers = [
        conv, L(1)(0, 160, 192, 256, 8), L(2)(0, 128, 136, 300, 8, 3, 1 << 10, 4, -2, 1 << 11, 4, 5, 3, 6), q, dq, cw, rq,
        L(5)(0, 160, 288, 4, 2), L(8)(0, 128, 320, 4, 2, 1, 2, 1, 1, 2, 2, 2, 2, 0, 0),
        L(9)(0, 160, 336, 4, 2, 1, 2, 1, 1, 2, 2, 2, 2, 0, 0, 1), L(14)(0, 160, 352, 8), L(15)(0, 160, 384, 8),
        L(25)(0, 160, 416, 8), L(16)(0, 448, 2, [(160, 8), (192, 8)]), L(17)(0, 464, 2, [(128, 4), (136, 4)]), fc,
        L(20)(0, 160, 480, 2, 2, 2), L(22)(0, 160, 512, 2, 2, 2, 3, 3, 0), L(23)(0, 128, 600, 2, 2, 2, 3, 3, 1),
        L(10241)(0, 128, 200, 8), L(10242)(0, 600, 624, 3), L(10243)(0, 128, 300, 4, 1, 2),
    ]
    assert sorted({layer.code for layer in layers}) == sorted(STRATEGIES)
    return KModelV3(main_mem=MAIN, outputs=[(160, 32), (352, 32)], entries=[LayerEntry(x) for x in layers]).to_bytes()


def test_the_fuzz_model_runs():
    m = Model.from_bytes(_small_all_types(), "all")
    m.run(np.arange(32, dtype=np.uint8).reshape(1, 2, 4, 4))
    assert m.output_shapes() == [[8], [1, 8]]


def _work(layer) -> int:
    """A bound on a layer's loop iterations (mutated shapes can ask for huge loops: not run)."""
    g = lambda *names: int(np.prod([max(1, int(getattr(layer, n))) for n in names], dtype=object))  # noqa: E731
    code = layer.code
    if code == 10240:
        la = layer.layer_argument
        (ic, ih, iw), (oc, _, _) = la.in_shape, la.out_shape
        return oc * 9 * ih * iw * (1 if la.depth_wise_layer else ic)
    if code in (8, 9):
        return g("out_width", "out_height", "out_channels", "kernel_width", "kernel_height")
    table = {5: ("kernel_size", "channels"), 18: ("in_channels", "out_channels"), 20: ("width", "height", "channels"),
             22: ("out_width", "out_height", "in_channels"), 23: ("out_width", "out_height", "in_channels"),
             24: ("channels", "channel_size"), 10243: ("width", "height", "channels"), 16: ("input_count",),
             17: ("input_count",)}
    names = table.get(code) or [n for n in ("count", "channels") if n in layer.WORDS]
    return g(*names)


@pytest.fixture(scope="module")
def fuzz_models():
    return [IRIS.read_bytes(), MNIST.read_bytes(), _small_all_types()]


def _parse_and_run(data: bytes) -> None:
    try:
        m = kmodelpy.runtime.model_from_bytes(data, "mutant.kmodel")
        if m.kmodel.main_mem <= 1 << 20 and all(_work(layer) <= 1 << 22 for layer in m.kmodel.layers):
            m.run(np.zeros(m.input_shape, m.input_dtype))
            m.output_bytes()
            m.output_shapes()
        from kmodelpy.inspect_kmodel import describe_bytes

        describe_bytes(data, "mutant.kmodel")
    except KmodelpyError as e:
        assert "\n" not in str(e)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_files_only_raise_kmodelpy_errors(fuzz_models, data):
    raw = bytearray(data.draw(st.sampled_from(fuzz_models)))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, min(len(raw) - 1, 4096)))  # headers and the first bodies
        raw[pos] = data.draw(st.integers(0, 255))
    _parse_and_run(bytes(raw))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_words_only_raise_kmodelpy_errors(fuzz_models, data):
    raw = bytearray(data.draw(st.sampled_from(fuzz_models)))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, min(len(raw), 4096) // 4 - 1)) * 4
        word = data.draw(st.sampled_from([0, 1, 3, 7, 8, 64, 255, 1 << 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
                         | st.integers(0, 2**32 - 1))
        struct.pack_into("<I", raw, pos, word)
    _parse_and_run(bytes(raw))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_truncated_files_only_raise_kmodelpy_errors(fuzz_models, data):
    raw = data.draw(st.sampled_from(fuzz_models))
    _parse_and_run(raw[: data.draw(st.integers(0, len(raw) - 1))])


CLI_BAD = [b for b in BAD if b[2] in ("kmodel v3 header is truncated", "runs past the end", "unknown type 99", "main memory")]


@pytest.mark.parametrize("mutate, kind, words", CLI_BAD + [BAD[4]])
@pytest.mark.parametrize("command", ["infer", "run", "inspect"])
def test_bad_files_through_the_cli(mutate, kind, words, command, tmp_path, capsys):
    from kmodelpy import cli

    bad = tmp_path / "bad.kmodel"
    bad.write_bytes(mutate(MNIST.read_bytes()))
    sample = V3 / "maixpy_mnist" / "inputs" / "digit0_idx0.bin"
    out = tmp_path / "out"
    argv = {"infer": ["infer", bad, out, "--dataset", sample, "--dataset-format", "raw"],
            "run": ["run", bad, sample, "--save", out], "inspect": ["inspect", bad]}[command]
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and words in err and str(bad) in err
    assert not out.exists() or not any(out.iterdir())
