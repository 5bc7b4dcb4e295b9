"""Error control for the pixel watermark payload: a keyed CRC-32 and a rate-1/3 convolutional code.

Pure functions on numpy arrays. The code is the K=7 rate-1/3 code of LTE (generators 133, 171, 165
octal), terminated with K-1 zero bits, decoded by a soft-decision list Viterbi (the parallel list Viterbi
algorithm: the best `list_size` paths into every state) whose candidates the CRC then selects.
Measured on an AWGN channel at the same energy per message bit (96 bits, 150 blocks, 1-1.2 times
the signal-to-noise ratio the 512 px crops and 256 px photos reach): the rate-1/2 K=7 code with plain
Viterbi recovered 35% / 68% / 86% of the blocks, this code with a list of 8 72% / 94% / 99%, with
a list of 32 82% / 98% / 100% (the detector keeps 16).
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

PAYLOAD_BITS = 64
CRC_BITS = 32
MESSAGE_BITS = PAYLOAD_BITS + CRC_BITS
CONSTRAINT_LENGTH = 7
_GENERATORS = (0o133, 0o171, 0o165)
_RATE = len(_GENERATORS)
_STATES = 1 << (CONSTRAINT_LENGTH - 1)
CODED_BITS = _RATE * (MESSAGE_BITS + CONSTRAINT_LENGTH - 1)

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
    """For each (state, input bit): the next state and the output symbols as ±1."""
    next_state = np.zeros((_STATES, 2), dtype=np.intp)
    outputs = np.zeros((_STATES, 2, _RATE), dtype=np.float64)
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
_PRED_OUTPUTS = _OUTPUTS[_PREDECESSORS, _NEXT_BIT[:, None]]  # (next state, which predecessor, _RATE)


# Each generator's taps by delay: the register holds the input bit at its top (delay 0) and the one
# d steps back at bit K-1-d, so output g at step t is the parity of sum_d tap[g][d] * input[t - d].
_TAPS = np.array(
    [
        [(generator >> (CONSTRAINT_LENGTH - 1 - d)) & 1 for d in range(CONSTRAINT_LENGTH)]
        for generator in _GENERATORS
    ],
    dtype=np.int64,
)


def conv_encode(bits: BitArray) -> BitArray:
    """Rate-1/3 encoding of `bits` followed by K-1 zero tail bits; returns 0/1 coded bits (each step's
    `_RATE` outputs in generator order)."""
    padded = np.concatenate(
        [np.asarray(bits, dtype=np.int64), np.zeros(CONSTRAINT_LENGTH - 1, dtype=np.int64)]
    )
    outputs = [np.convolve(padded, taps)[: len(padded)] & 1 for taps in _TAPS]
    return np.stack(outputs, axis=1).reshape(-1).astype(np.uint8)


def viterbi_decode(soft: FloatArray) -> BitArray:
    """The most likely message. `soft[i] > 0` favours coded bit 0 (symbol +1)."""
    best: BitArray = list_viterbi_decode(soft, 1)[0]
    return best


def codeword_agreement(soft: FloatArray) -> FloatArray:
    """For each row of `soft` (shape (n, CODED_BITS)): the plain Viterbi's best path metric over the sum
    of |soft|, in [-1, 1]: 1 when some codeword agrees in sign with every soft bit.

    A cheap statistic (no list, no back-pointers, every row at once) of how close the soft bits lie to
    the code: random soft bits (an unmarked image) reach about 0.71 (at most 0.77 in 690 reads of 256
    and 512 px photos), a mark the list decoder reads at 512 px 0.87 or more under ordinary edits,
    down to about 0.73 under the heaviest it still reads.
    """
    rows = np.atleast_2d(np.asarray(soft, dtype=np.float64))
    if rows.shape[1:] != (CODED_BITS,):
        raise ValueError(f"soft: expected shape (n, {CODED_BITS}), found {rows.shape}")
    steps = CODED_BITS // _RATE
    n = len(rows)
    # (step, predecessor parity, row, next state): next state ns comes from 2 * (ns mod 32) + parity
    branch = np.einsum("spr,ntr->tpns", _PRED_OUTPUTS, rows.reshape(n, steps, _RATE))
    branch[steps - (CONSTRAINT_LENGTH - 1) :, :, :, _NEXT_BIT == 1] = -np.inf  # tail bits are zero
    branch = np.ascontiguousarray(branch).reshape(steps, 2, n, 2, _STATES // 2)
    metric = np.full((n, _STATES), -np.inf)
    metric[:, 0] = 0.0
    for step in range(steps):
        pairs = metric.reshape(n, 1, _STATES // 2, 2)
        metric = np.maximum(pairs[..., 0] + branch[step, 0], pairs[..., 1] + branch[step, 1]).reshape(
            n, _STATES
        )
    agreement: FloatArray = metric[:, 0] / np.maximum(np.abs(rows).sum(axis=1), 1e-300)
    return agreement


def list_viterbi_decode(soft: FloatArray, list_size: int) -> BitArray:
    """The `list_size` most likely messages, best first, as rows (fewer when fewer paths exist).

    Every state keeps its `list_size` best paths; each step ranks the 2 * `list_size` extensions of its
    two predecessors. Back-pointers index (predecessor, rank) so that distinct paths stay distinct.
    """
    if soft.shape != (CODED_BITS,):
        raise ValueError(f"soft: expected shape ({CODED_BITS},), found {soft.shape}")
    steps = CODED_BITS // _RATE
    size = list_size
    branch = np.einsum("spr,tr->tsp", _PRED_OUTPUTS, soft.reshape(steps, _RATE))  # (step, state, pred)
    branch[steps - (CONSTRAINT_LENGTH - 1) :, _NEXT_BIT == 1] = -np.inf  # tail bits are zero
    metric = np.full((_STATES, size), -np.inf)
    metric[0, 0] = 0.0
    back = np.zeros((steps, _STATES, size), dtype=np.intp)  # winning (predecessor * size + rank)
    rows = np.arange(_STATES)[:, None]
    for step in range(steps):
        candidates = (metric[_PREDECESSORS] + branch[step][:, :, None]).reshape(_STATES, 2 * size)
        if size == 1:
            choice = np.argmax(candidates, axis=1)[:, None]
        else:
            choice = np.argsort(candidates, axis=1)[:, : -size - 1 : -1]  # the best `size`, best first
        back[step] = choice
        metric = candidates[rows, choice]
    ranks = np.arange(size)
    states = np.zeros(size, dtype=np.intp)
    decoded = np.zeros((size, steps), dtype=np.uint8)
    for step in range(steps - 1, -1, -1):
        decoded[:, step] = _NEXT_BIT[states]
        pointer = back[step, states, ranks]
        states = _PREDECESSORS[states, pointer // size]
        ranks = pointer % size
    return decoded[np.isfinite(metric[0]), :MESSAGE_BITS]
