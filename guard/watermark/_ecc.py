"""Error control for the pixel watermark payload: a keyed CRC-32 and a rate-1/2 convolutional code.

Pure functions on numpy arrays. The code is the NASA/Voyager K=7 code (generators 133, 171 octal),
terminated with K-1 zero bits, decoded by soft-decision Viterbi.
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

PAYLOAD_BITS = 64
CRC_BITS = 32
MESSAGE_BITS = PAYLOAD_BITS + CRC_BITS
CONSTRAINT_LENGTH = 7
_GENERATORS = (0o133, 0o171)
_STATES = 1 << (CONSTRAINT_LENGTH - 1)
CODED_BITS = 2 * (MESSAGE_BITS + CONSTRAINT_LENGTH - 1)

BitArray = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]


def int_to_bits(value: int, width: int) -> BitArray:
    """Big-endian bits of a non-negative integer."""
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.uint8)


def bits_to_int(bits: BitArray) -> int:
    value = 0
    for bit in bits.tolist():
        value = (value << 1) | int(bit)
    return value


def keyed_crc(mark_id: int, crc_mask: int) -> int:
    """CRC-32 of the 8-byte id, XOR a keyed mask so that a mark made under one key never checks under another."""
    return (zlib.crc32(mark_id.to_bytes(8, "big")) ^ crc_mask) & 0xFFFFFFFF


def message_bits(mark_id: int, crc_mask: int) -> BitArray:
    """The 96 message bits: 64-bit id then its keyed CRC."""
    return np.concatenate(
        [int_to_bits(mark_id, PAYLOAD_BITS), int_to_bits(keyed_crc(mark_id, crc_mask), CRC_BITS)]
    )


def _parity(x: int) -> int:
    return (x).bit_count() & 1


def _trellis() -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """For each (state, input bit): the next state and the two output symbols as ±1."""
    next_state = np.zeros((_STATES, 2), dtype=np.intp)
    outputs = np.zeros((_STATES, 2, 2), dtype=np.float64)
    for state in range(_STATES):
        for bit in range(2):
            register = (bit << (CONSTRAINT_LENGTH - 1)) | state
            next_state[state, bit] = register >> 1
            for g, generator in enumerate(_GENERATORS):
                outputs[state, bit, g] = 1.0 - 2.0 * _parity(register & generator)
    return next_state, outputs


_NEXT_STATE, _OUTPUTS = _trellis()
# Next state ns = (bit << K-2) | (state >> 1): its input bit is its top bit, and its two predecessors are
# 2*(ns mod 2^(K-2)) and that plus one.
_NEXT_BIT = (np.arange(_STATES) >> (CONSTRAINT_LENGTH - 2)).astype(np.uint8)
_PREDECESSORS = np.stack(
    [2 * (np.arange(_STATES) % (_STATES // 2)), 2 * (np.arange(_STATES) % (_STATES // 2)) + 1], axis=1
)
_PRED_OUTPUTS = _OUTPUTS[_PREDECESSORS, _NEXT_BIT[:, None]]  # (next state, which predecessor, 2)


def conv_encode(bits: BitArray) -> BitArray:
    """Rate-1/2 encoding of `bits` followed by K-1 zero tail bits; returns 0/1 coded bits."""
    state = 0
    coded: list[int] = []
    for bit in [*bits.tolist(), *([0] * (CONSTRAINT_LENGTH - 1))]:
        symbols = _OUTPUTS[state, bit]
        coded.extend(int(s < 0) for s in symbols)
        state = int(_NEXT_STATE[state, bit])
    return np.array(coded, dtype=np.uint8)


def viterbi_decode(soft: FloatArray) -> BitArray:
    """Soft-decision Viterbi. `soft[i] > 0` favours coded bit 0 (symbol +1). Returns the message bits."""
    if soft.shape != (CODED_BITS,):
        raise ValueError(f"soft: expected shape ({CODED_BITS},), found {soft.shape}")
    steps = CODED_BITS // 2
    pairs = soft.reshape(steps, 2)
    metric = np.full(_STATES, -np.inf)
    metric[0] = 0.0
    survivors = np.zeros((steps, _STATES), dtype=np.intp)  # winning predecessor of each next state
    for step in range(steps):
        # all branch metrics, then the better of the two predecessors of every next state
        candidates = metric[_PREDECESSORS] + _PRED_OUTPUTS @ pairs[step]
        if step >= steps - (CONSTRAINT_LENGTH - 1):
            candidates[_NEXT_BIT == 1] = -np.inf  # tail bits are zero
        choice = np.argmax(candidates, axis=1)
        survivors[step] = _PREDECESSORS[np.arange(_STATES), choice]
        metric = candidates[np.arange(_STATES), choice]
    state = 0
    decoded = np.zeros(steps, dtype=np.uint8)
    for step in range(steps - 1, -1, -1):
        decoded[step] = _NEXT_BIT[state]
        state = int(survivors[step, state])
    return decoded[:MESSAGE_BITS]
