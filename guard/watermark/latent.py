"""Latent watermark, Gaussian-Shading style: keyed initial noise that is still exactly N(0, 1).

Embedding (Yang et al., "Gaussian Shading", CVPR 2024, adapted):
1. The 64-bit mark id is spread over the n noise values: each value carries one message bit,
   the assignment a keyed permutation, so every bit has n/64 replicas scattered over channels
   and positions (inversion errors are spatially correlated; scattering decorrelates them).
2. Each replicated bit is XORed with a ChaCha20 keystream derived from the key and a per-image
   nonce, so the same mark id under two nonces leaves no common pattern, and the bits are uniform.
3. Each bit picks a half of the standard normal: z = Phi^-1(u), u uniform in [0, 1/2) for bit 0
   and [1/2, 1) for bit 1, the uniform also drawn from the keystream. With uniform bits, z is
   exactly standard normal, so the watermark costs no image quality.

Detection takes the recovered noise (from DDIM inversion, pipeline/inversion.py), reads the sign
of each value, removes the keystream, and votes per bit over its replicas. Without the nonce
(recorded in the audit row) nothing can be read.

Pure numpy + the `cryptography` ChaCha20; no torch, so that `genguard verify` stays light.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from genguard.guard.errors import BadInputError
from genguard.guard.watermark._keys import check_key, hkdf_sha256

MESSAGE_BITS = 64
NONCE_BYTES = 16
ALGORITHM = "genguard.latent.gaussian-shading.v1"
# Below this p-value the watermark is reported present. Under "no watermark" (wrong key, other
# nonce, or unmarked image) the decrypted signs are fair coin flips, so the p-value is exact.
DEFAULT_P_THRESHOLD = 1e-6

_DOMAIN = b"genguard latent watermark v1"
_FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LatentDetection:
    """What detection read from one recovered noise tensor.

    mark_id: the 64-bit id decoded by majority vote over each bit's replicas.
    sign_agreement: the fraction of noise values whose decrypted half agrees with the bits it was
        compared to (the expected id's when given, else the decoded ones); 0.5 means no signal.
    bit_accuracy: the fraction of the 64 decoded bits equal to `expected_mark_id`'s (None without one).
    p_value: the probability of at least this much agreement if no watermark of this key and
        nonce were present (normal approximation of the exact null distribution).
    detected: p_value <= the threshold used.
    """

    mark_id: int
    sign_agreement: float
    bit_accuracy: float | None
    p_value: float
    detected: bool
    num_values: int
    expected_mark_id: int | None = None

    @property
    def matches_expected(self) -> bool:
        return self.expected_mark_id is not None and self.mark_id == self.expected_mark_id


def new_nonce() -> bytes:
    """A fresh per-image nonce; the caller records it with the image (detection needs it)."""
    return os.urandom(NONCE_BYTES)


def embed_latent(mark_id: int, shape: tuple[int, ...], key: bytes, nonce: bytes) -> npt.NDArray[np.float32]:
    """Standard-normal noise of `shape` carrying `mark_id`, keyed by `key` and `nonce`.

    `shape` is one image's unpacked latent shape, e.g. (4, 64, 64); at least 64 values.
    """
    bits = _message_bits(mark_id)
    layout = _Layout.derive(_check_shape(shape), check_key(key), _check_nonce(nonce))
    carried = bits[layout.assignment] ^ layout.mask
    # The lower-half quantile, mirrored for bit 1: Phi^-1(1/2 + v/2) = -Phi^-1((1 - v)/2).
    # Working with lower tails only keeps full precision near u = 1.
    lower = np.where(carried == 1, (1.0 - layout.uniform) / 2.0, layout.uniform / 2.0)
    z = _lower_half_normal_quantile(lower)
    z = np.where(carried == 1, -z, z)
    return z.astype(np.float32).reshape(shape)


def detect_latent(
    z_recovered: npt.NDArray[np.floating],
    key: bytes,
    nonce: bytes,
    expected_mark_id: int | None = None,
    threshold: float = DEFAULT_P_THRESHOLD,
) -> LatentDetection:
    """Read the mark id from recovered initial noise (one image, any shape with the embedded size).

    With `expected_mark_id` the test is "is this id present" (agreement with its bits); without,
    the id is decoded blindly by majority vote and the test is the vote margin.
    """
    z = np.asarray(z_recovered, dtype=np.float64)
    if not np.all(np.isfinite(z)):
        raise BadInputError("z_recovered: expected finite values, found NaN or infinity")
    layout = _Layout.derive(_check_shape(z.shape), check_key(key), _check_nonce(nonce))
    decrypted = (z.reshape(-1) > 0).astype(np.uint8) ^ layout.mask
    ones = np.bincount(layout.assignment, weights=decrypted, minlength=MESSAGE_BITS)
    replicas = np.bincount(layout.assignment, minlength=MESSAGE_BITS).astype(np.float64)
    decoded = (2 * ones > replicas).astype(np.uint8)
    mark_id = _bits_to_int(decoded)
    n = decrypted.size
    if expected_mark_id is None:
        agreeing = float(np.sum(np.maximum(ones, replicas - ones)))
        mean, variance = _vote_margin_null(replicas)
        bit_accuracy = None
    else:
        expected = _message_bits(expected_mark_id)
        agreeing = float(np.sum(decrypted == expected[layout.assignment]))
        mean, variance = n / 2.0, n / 4.0
        bit_accuracy = float(np.mean(decoded == expected))
    p_value = _upper_tail(agreeing, mean, variance)
    return LatentDetection(
        mark_id=mark_id,
        sign_agreement=agreeing / n,
        bit_accuracy=bit_accuracy,
        p_value=p_value,
        detected=p_value <= threshold,
        num_values=n,
        expected_mark_id=expected_mark_id,
    )


@dataclass(frozen=True)
class _Layout:
    """The per-image keyed material: which bit each value carries, its mask bit, its uniform draw."""

    assignment: npt.NDArray[np.intp]
    mask: npt.NDArray[np.uint8]
    uniform: _FloatArray  # in (0, 1), never 0 or 1

    @classmethod
    def derive(cls, n: int, key: bytes, nonce: bytes) -> _Layout:
        stream = _keystream(key, nonce, n * (4 + 8) + (n + 7) // 8)
        order_keys = np.frombuffer(stream, dtype="<u4", count=n)
        draws = np.frombuffer(stream, dtype="<u8", count=n, offset=4 * n)
        mask = np.unpackbits(np.frombuffer(stream, dtype=np.uint8, offset=12 * n))[:n]
        # A keyed permutation; position k in it carries bit k mod 64, so replica counts differ by at most one.
        assignment = np.empty(n, dtype=np.intp)
        assignment[np.argsort(order_keys, kind="stable")] = np.arange(n) % MESSAGE_BITS
        uniform = ((draws >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)
        return cls(assignment=assignment, mask=mask, uniform=uniform)


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    # Domain-separated sub-key per image: HKDF(key, info = domain || nonce), then ChaCha20 with a
    # zero counter and nonce (the sub-key is never reused across images).
    subkey = hkdf_sha256(key, _DOMAIN + b"\x00" + nonce, 32)
    encryptor = Cipher(algorithms.ChaCha20(subkey, bytes(16)), mode=None).encryptor()
    return encryptor.update(bytes(length))


def _check_shape(shape: tuple[int, ...]) -> int:
    if len(shape) == 0 or any(int(size) <= 0 for size in shape):
        raise BadInputError(f"shape: expected positive dimensions, found {tuple(shape)}")
    n = math.prod(int(size) for size in shape)
    if n < MESSAGE_BITS:
        raise BadInputError(f"shape: expected at least {MESSAGE_BITS} values, found {n} in {tuple(shape)}")
    return n


def _check_nonce(nonce: bytes) -> bytes:
    if not isinstance(nonce, bytes | bytearray):
        raise BadInputError(f"nonce: expected bytes, found {type(nonce).__name__}")
    if len(nonce) < 12:
        raise BadInputError(f"nonce: expected at least 12 random bytes, found {len(nonce)}")
    return bytes(nonce)


def _message_bits(mark_id: int) -> npt.NDArray[np.uint8]:
    if isinstance(mark_id, bool) or not isinstance(mark_id, int | np.integer):
        raise BadInputError(f"mark_id: expected an int, found {type(mark_id).__name__}")
    if not 0 <= int(mark_id) < 2**MESSAGE_BITS:
        raise BadInputError(f"mark_id: expected 0 <= mark_id < 2**{MESSAGE_BITS}, found {mark_id}")
    return np.array(
        [(int(mark_id) >> (MESSAGE_BITS - 1 - i)) & 1 for i in range(MESSAGE_BITS)], dtype=np.uint8
    )


def _bits_to_int(bits: npt.NDArray[np.uint8]) -> int:
    return int("".join(str(int(bit)) for bit in bits), 2)


def _vote_margin_null(replicas: _FloatArray) -> tuple[float, float]:
    """Mean and variance of sum_j max(K_j, r_j - K_j) with K_j ~ Binomial(r_j, 1/2) independent."""
    mean = variance = 0.0
    for r, count in zip(*np.unique(replicas.astype(np.int64), return_counts=True), strict=True):
        k = np.arange(int(r) + 1)
        # log C(r, k) by a cumulative sum, stable for thousands of replicas
        log_comb = np.concatenate(([0.0], np.cumsum(np.log((int(r) - k[1:] + 1) / k[1:]))))
        pmf = np.exp(log_comb - int(r) * math.log(2.0))
        margin = np.maximum(k, int(r) - k).astype(np.float64)
        m = float(np.sum(pmf * margin))
        mean += count * m
        variance += count * float(np.sum(pmf * (margin - m) ** 2))
    return mean, variance


def _upper_tail(observed: float, mean: float, variance: float) -> float:
    """P(X >= observed) for X approximately normal(mean, variance), with a continuity correction."""
    if variance <= 0:
        return 1.0 if observed <= mean else 0.0
    score = (observed - 0.5 - mean) / math.sqrt(variance)
    return 0.5 * math.erfc(score / math.sqrt(2.0))


# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9, far below
# float32 resolution); vectorised because numpy has no ndtri and scipy is not a dependency.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)  # fmt: skip
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def _polynomial(coefficients: tuple[float, ...], x: _FloatArray) -> _FloatArray:
    result = np.zeros_like(x)
    for coefficient in coefficients:
        result = result * x + coefficient
    return result


def _lower_half_normal_quantile(p: _FloatArray) -> _FloatArray:
    """Phi^-1(p) for p in (0, 1/2]."""
    p = np.asarray(p, dtype=np.float64)
    tail = p < _P_LOW
    q_tail = np.sqrt(-2.0 * np.log(np.where(tail, p, _P_LOW)))
    x_tail = _polynomial(_C, q_tail) / (_polynomial(_D, q_tail) * q_tail + 1.0)
    q = p - 0.5
    r = q * q
    x_central = _polynomial(_A, r) * q / (_polynomial(_B, r) * r + 1.0)
    result: _FloatArray = np.where(tail, x_tail, x_central)
    return result
