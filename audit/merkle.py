"""Merkle tree hashing and proofs of RFC 9162 (Certificate Transparency 2.0) section 2.1, as small functions.

- Leaf hash: SHA-256(0x00 || leaf); node hash: SHA-256(0x01 || left || right) (section 2.1.1). The
  prefixes keep a leaf from ever passing for an inner node (second-preimage attacks).
- MTH(D[n]) splits at k, the largest power of two smaller than n (section 2.1.1).
- Inclusion proofs: generation PATH(m, D[n]) (2.1.3.1) and the verification algorithm of 2.1.3.2.
- Consistency proofs: generation PROOF(m, D[n]) (2.1.4.1) and the verification algorithm of 2.1.4.2.

`MerkleTree` keeps only the *perfect* subtrees (aligned blocks of 2**k leaves), level by level, as
one bytes blob per level: every node the RFC recursion asks for, and MTH of any prefix, is a fold of
O(log n) of them (`range_root`), so building is O(n) with about 64 bytes per leaf and every root and
proof after that is O(log n) (1,000,000 leaves: see bench/checkpoint.py). No recursion anywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256() (section 2.1.1)
_LEAF, _NODE = b"\x00", b"\x01"


def leaf_hash(leaf: bytes) -> bytes:
    """SHA-256(0x00 || leaf)."""
    return hashlib.sha256(_LEAF + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE + left + right).digest()


def _split(size: int) -> int:
    """k: the largest power of two smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


class MerkleTree:
    """The RFC 9162 tree over a list of leaves (any prefix of it can be used as a smaller tree)."""

    __slots__ = ("_levels", "size")

    def __init__(self, leaves: Iterable[bytes]) -> None:
        sha256 = hashlib.sha256
        level = b"".join([sha256(_LEAF + leaf).digest() for leaf in leaves])
        levels = [level]
        # levels[k] holds the roots of the blocks [i * 2**k, (i + 1) * 2**k) that lie wholly inside the tree
        while len(level) >= 2 * HASH_SIZE:
            level = b"".join(
                [sha256(_NODE + level[i : i + 64]).digest() for i in range(0, len(level) - 63, 64)]
            )
            levels.append(level)
        self._levels = tuple(levels)
        self.size = len(levels[0]) // HASH_SIZE

    def leaf_hash(self, index: int) -> bytes:
        return self._perfect(0, index)

    def _perfect(self, level: int, index: int) -> bytes:
        start = index * HASH_SIZE
        return self._levels[level][start : start + HASH_SIZE]

    def range_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range the RFC's recursion can produce: `start` a multiple of the
        largest power of two not above end - start (true of every subtree of every prefix tree)."""
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range [{start}, {end}): expected inside [0, {self.size}]")
        if start == end:
            if start:
                raise ValueError(f"range [{start}, {end}): only the whole empty tree has no leaves")
            return EMPTY_ROOT
        top = (end - start).bit_length() - 1
        if start % (1 << top):
            raise ValueError(f"range [{start}, {end}): start expected a multiple of {1 << top}")
        # The binary decomposition of the size, largest block first, are consecutive perfect subtrees;
        # MTH is their right-to-left fold (each split takes the largest power of two off the left).
        blocks = []
        position = start
        for level in range(top, -1, -1):
            if (end - position) >> level:
                blocks.append(self._perfect(level, position >> level))
                position += 1 << level
        root = blocks[-1]
        for block in reversed(blocks[:-1]):
            root = node_hash(block, root)
        return root

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (all by default)."""
        return self.range_root(0, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 section 2.1.3.1, bottom-up."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf {index} of a tree of {size}: expected 0 <= index < size <= {self.size}")
        path = []
        start, end = 0, size
        while end - start > 1:
            middle = start + _split(end - start)
            if index < middle:
                path.append(self.range_root(middle, end))
                end = middle
            else:
                path.append(self.range_root(start, middle))
                start = middle
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[size]) of RFC 9162 section 2.1.4.1 (empty when old_size is 0 or size)."""
        size = self.size if size is None else size
        if not 0 <= old_size <= size <= self.size:
            raise ValueError(f"sizes {old_size} -> {size}: expected 0 <= old <= new <= {self.size}")
        if old_size in (0, size):
            return []
        path = []
        start, end, remaining, whole_old_tree = 0, size, old_size, True
        while remaining != end - start:  # SUBPROOF(m, D[n], b) with m < n
            k = _split(end - start)
            if remaining <= k:
                path.append(self.range_root(start + k, end))
                end = start + k
            else:
                path.append(self.range_root(start, start + k))
                start, remaining, whole_old_tree = start + k, remaining - k, False
        if not whole_old_tree:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
            path.append(self.range_root(start, end))
        path.reverse()
        return path


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does `path` prove leaf data `leaf` at `index` in the tree of `size` with `root`?"""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in path):
        return False
    fn, sn, r = index, size - 1, leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, size: int, old_root: bytes, root: bytes, path: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: does `path` prove the tree (`size`, `root`) extends (`old_size`, `old_root`)?

    Sizes equal: the proof must be empty and the roots equal. An empty old tree is a prefix of every
    tree (empty proof). These two cases are stated by the RFC's text around the algorithm."""
    if not 0 <= old_size <= size or any(len(p) != HASH_SIZE for p in path):
        return False
    if old_size == size:
        return not path and old_root == root
    if old_size == 0:
        return not path and old_root == EMPTY_ROOT
    if not path:
        return False
    proof = list(path)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        proof.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == root and sn == 0


def fold_block_roots(block_roots: Sequence[bytes]) -> bytes:
    """MTH from the roots of consecutive blocks of 2**k leaves (the last may be shorter).

    MTH splits n leaves at the largest power of two below n, which is 2**k times the largest power
    of two below the number of blocks: so the blocks fold with the same split as leaves do."""
    nodes = list(block_roots)
    if not nodes:
        return EMPTY_ROOT
    while len(nodes) > 1:  # pairing level by level, carrying an odd last node up, equals the RFC split
        paired = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
        nodes = paired + nodes[len(paired) * 2 :]
    return nodes[0]
