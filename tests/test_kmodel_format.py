"""kmodel v4 container: byte-exact round trips of every reference kmodel, the quirks real files have,
one clear error for each kind of bad file, and (hypothesis) mutated / truncated files never raise
anything but KmodelpyError, neither when parsed nor when run."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from refcases import CASES, cases_with

from kmodelpy.errors import FormatError, KmodelpyError, UnsupportedError
from kmodelpy.format.kmodel import HEADER_SIZE, KModel, node_opcodes
from kmodelpy.runtime import Model

KMODEL_CASES = cases_with("ncc.kmodel")
# small models covering most op families (bodies, KPU layers, NNIL programs, const ranges)
SMALL = [
    "kmodel__iris",
    "synth__binary_s1_op0_noact",
    "synth__conv2d_c3",
    "synth__kpu_c00_p0_7x9_N3_ic2_oc2_k0_dw0_big",
    "synth__matmul_1x5x3",
    "synth__nnil_noret",
    "synth__pad_copy_concat_lut_pad_dt0_0",
    "synth__qbinary_s1_op0_t0",
    "synth__quant_zp0_s1",
    "synth__reduce_op0_ax0123",
    "synth__resize_m0_ac0_13x5_dt0",
    "synth__softmax_b0.37_1x50",
    "synth__transpose_slice_tr_dt0_p0123",
]


def _bytes(case: str) -> bytes:
    return (CASES / case / "ncc.kmodel").read_bytes()


def _parse_or_skip(data: bytes, case: str) -> KModel:
    from test_reference_emulation import _missing_ops

    missing = _missing_ops(case)
    if missing:
        pytest.skip(f"opcodes not implemented yet: {missing}")
    return KModel.parse(data, case)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("case", KMODEL_CASES)
def test_round_trip_byte_for_byte(case):
    data = _bytes(case)
    km = _parse_or_skip(data, case)
    assert len(km.nodes) == len(node_opcodes(data))
    assert km.to_bytes() == data


def test_real_file_quirks_are_present_in_the_reference():
    """The quirks the reader must tolerate do occur: trailing bytes (CanMV face model, MaixPy ASR)
    and reserved0 garbage."""
    face = KModel.parse(_bytes("kmodel__canmv__face_recognization__feature_extraction"), "face")
    asr = KModel.parse(_bytes("kmodel__maixpy__asr"), "asr")
    assert len(face.trailer) == 16 and len(asr.trailer) == 997632
    yolo = KModel.parse(_bytes("kmodel__yolo20"), "yolo")
    assert yolo.reserved0 == 0xCCCCCCCC


@pytest.mark.parametrize("case", ["kmodel__iris", "synth__conv2d_c3"])
def test_missing_last_padding_and_trailer_round_trip(case):
    data = _bytes(case)
    km = KModel.parse(data, case)
    # a file whose last body padding was never written (ncc quirk)...
    pad = len(data) - len(data.rstrip(b"\0"))
    for cut in range(1, min(pad, 7) + 1):
        short = data[:-cut]
        assert KModel.parse(short, case).to_bytes() == short
    # ...trailing bytes after the last body, and garbage in reserved0
    longer = data + b"trailing junk"
    assert KModel.parse(longer, case).to_bytes() == longer
    junk = data[:36] + b"\xef\xbe\xad\xde" + data[40:]
    assert KModel.parse(junk, case).to_bytes() == junk
    # a new model (missing_tail None) is written as ncc writes it: no padding after the last body
    km.missing_tail = None
    out = km.to_bytes()
    assert data.startswith(out) and not any(data[len(out):]) and len(data) - len(out) < 8


# ------------------------------------------------------------------ one clear error per bad file
def _header(data: bytes, **fields) -> bytes:
    names = ["identifier", "version", "flags", "target", "constants", "main_mem", "nodes", "inputs",
             "outputs", "reserved0"]
    vals = list(struct.unpack_from("<10I", data))
    for k, v in fields.items():
        vals[names.index(k)] = v
    return struct.pack("<10I", *vals) + data[HEADER_SIZE:]


IRIS = CASES / "kmodel__iris" / "ncc.kmodel"


@pytest.mark.parametrize(
    "mutate, kind, words",
    [
        (lambda d: b"PK\x03\x04" + d[4:], FormatError, "not a kmodel"),
        (lambda d: d[:5], FormatError, "too short"),
        (lambda d: d[:60], FormatError, "truncated"),
        (lambda d: struct.pack("<I", 3) + d[4:], UnsupportedError, "kmodel v3"),
        (lambda d: _header(d, version=5), UnsupportedError, "nncase >= 1.0 and MaixPy cannot load it"),
        (lambda d: _header(d, version=9), UnsupportedError, "version 9"),
        (lambda d: _header(d, target=7), FormatError, "target 7"),
        (lambda d: _header(d, main_mem=0xFFFFFFF0), FormatError, "main memory"),
        (lambda d: _header(d, constants=1 << 30), FormatError, "damaged"),
        (lambda d: _header(d, nodes=0xFFFFFF), FormatError, "damaged"),
        (lambda d: d[: len(d) - 200], FormatError, "truncated"),
    ],
)
def test_bad_files_raise_one_clear_line(mutate, kind, words):
    data = mutate(IRIS.read_bytes())
    with pytest.raises(kind) as e:
        KModel.parse(data, "bad.kmodel")
    msg = str(e.value)
    assert words in msg and "bad.kmodel" in msg and "\n" not in msg


def test_unknown_opcode_and_body_past_the_end():
    data = bytearray(IRIS.read_bytes())
    _, _, _, _, n_const, _, n_nodes, n_in, n_out, _ = struct.unpack_from("<10I", data)
    headers = HEADER_SIZE + 32 * n_in + 16 * n_out + n_const
    bad = bytearray(data)
    struct.pack_into("<I", bad, headers + 8, 0x77)
    with pytest.raises(UnsupportedError, match=r"node 1 has unknown opcode 0x0077"):
        KModel.parse(bytes(bad), "bad.kmodel")
    bad = bytearray(data)
    struct.pack_into("<I", bad, headers + 4, 1 << 24)
    with pytest.raises(FormatError, match="past the end"):
        KModel.parse(bytes(bad), "bad.kmodel")


def test_range_outside_memory_is_refused_at_load():
    data = bytearray(IRIS.read_bytes())
    # output 0 descriptor starts after the input descriptor and shape (one input)
    struct.pack_into("<I", data, HEADER_SIZE + 32 + 8, 1 << 20)
    with pytest.raises(FormatError, match="past the end of main memory"):
        Model(KModel.parse(bytes(data), "bad.kmodel"), "bad.kmodel")


# ------------------------------------------------------------------ hypothesis: never anything else
def _zero_input(model: Model) -> np.ndarray:
    return np.zeros(model.input_shape, dtype=model.input_dtype)


MAX_WORK = 1 << 16  # elements: mutated shapes can ask kernels for huge loops; skip running those


def _small_enough(km: KModel) -> bool:
    """Limit the work per example: every shape-like i32 run of the bodies is bounded by the
    ranges (checked at load), but loops can multiply dimensions; run only small models."""
    if km.main_mem > MAX_WORK * 4:
        return False
    for op in km.ops:
        for name, v in vars(op).items():
            if isinstance(v, (list, tuple)) and v and all(isinstance(d, (int, np.integer)) for d in v):
                if int(np.prod([max(1, abs(int(d))) for d in v], dtype=object)) > MAX_WORK:
                    return False
            elif isinstance(v, (int, np.integer)) and name not in ("opcode",) and abs(int(v)) > MAX_WORK:
                return False
    return True


def _parse_and_run(data: bytes) -> None:
    try:
        km = KModel.parse(data, "mutant.kmodel")
        model = Model(km, "mutant.kmodel")
        if _small_enough(km):
            model.run(_zero_input(model))
            model.output_bytes()
    except KmodelpyError as e:
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def small_models():
    from test_reference_emulation import _missing_ops

    return [_bytes(c) for c in SMALL if not _missing_ops(c)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_files_only_raise_kmodelpy_errors(small_models, data):
    raw = bytearray(data.draw(st.sampled_from(small_models)))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    _parse_and_run(bytes(raw))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_truncated_files_only_raise_kmodelpy_errors(small_models, data):
    raw = data.draw(st.sampled_from(small_models))
    _parse_and_run(raw[: data.draw(st.integers(0, len(raw) - 1))])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_header_words_only_raise_kmodelpy_errors(small_models, data):
    """Whole u32 fields replaced (sizes, offsets, counts, shapes) reach deeper than byte flips."""
    raw = bytearray(data.draw(st.sampled_from(small_models)))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) // 4 - 1)) * 4
        word = data.draw(st.sampled_from([0, 1, 2, 3, 4, 7, 8, 255, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1))
        struct.pack_into("<I", raw, pos, word)
    _parse_and_run(bytes(raw))
