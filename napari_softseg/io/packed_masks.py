"""Rater masks packed as bits: the R binary masks of a case in one integer volume (bit r is rater r + 1).

As a ``uint8 (R, X, Y, Z)`` stack, R raters cost R bytes per voxel; packed they cost one byte (R ≤ 8) or two
(R ≤ 16). The viewer's reader keeps only the packed volume and shows each rater, and the mean soft label,
as :class:`LazyArray` views that unpack just what napari slices for the screen (``(bits[key] >> r) & 1`` and a
256- or 65536-entry lookup table of the mean), so opening a 512×512×300 case with 5 raters holds 75 MB of
masks instead of 375 MB plus a 300 MB float32 soft label. The values are exact: the lazy mean is the same
float32 as :func:`napari_softseg.analysis.softlabels.weighted_mean` (the count divided by R).

:class:`PackedMasks` also behaves like the stack where the core needs one: ``len``, ``shape``, indexing a
rater, iteration and ``np.asarray`` (which unpacks the whole stack). The analysis functions that take rater
masks (consensus, counts, soft-label mean, leave-one-rater-out, disagreement, PR references) accept it as it
is and never unpack the whole stack, so the docks hold the raters of a 512 × 512 × 300 case in 75 MB.

Example:
    >>> import numpy as np
    >>> masks = np.array([[[[1]], [[0]]], [[[1]], [[1]]]], dtype=np.uint8)   # 2 raters of a 2x1x1 volume
    >>> packed = PackedMasks.from_stack(masks)
    >>> packed.bits.ravel().tolist(), packed[1].ravel().tolist(), packed.mean().ravel().tolist()
    ([3, 2], [1, 1], [1.0, 0.5])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

#: Most raters one packed volume holds (bits of a ``uint16``).
MAX_PACKED_RATERS = 16


def _bits_dtype(n_raters: int) -> np.dtype:
    return np.dtype(np.uint8 if n_raters <= 8 else np.uint16)


class PackedMasks:
    """``n_raters`` binary masks of one volume, bit ``r`` of :attr:`bits` being rater ``r``.

    Args:
        bits: ``uint8`` (≤ 8 raters) or ``uint16`` (≤ 16) volume.
        n_raters: How many raters the bits hold.

    Raises:
        ValueError: More than :data:`MAX_PACKED_RATERS` raters, or a dtype too narrow for them.
    """

    def __init__(self, bits: np.ndarray, n_raters: int):
        if not 0 <= n_raters <= MAX_PACKED_RATERS:
            raise ValueError(f"{n_raters} raters cannot be packed (at most {MAX_PACKED_RATERS})")
        if bits.dtype not in (np.uint8, np.uint16) or np.iinfo(bits.dtype).bits < n_raters:
            raise ValueError(f"{bits.dtype} cannot hold {n_raters} rater bits")
        self.bits = bits
        self.n_raters = int(n_raters)

    # -- building -----------------------------------------------------------------------------------
    @classmethod
    def empty(cls, n_raters: int, shape: Sequence[int]) -> PackedMasks:
        """No rater marked anywhere yet; fill with :meth:`set_rater`."""
        return cls(np.zeros(tuple(shape), dtype=_bits_dtype(n_raters)), n_raters)

    @classmethod
    def from_stack(cls, masks: np.ndarray) -> PackedMasks:
        """Pack a ``(R, X, Y, Z)`` stack of binary masks."""
        masks = np.asarray(masks)
        packed = cls.empty(masks.shape[0], masks.shape[1:])
        for r, mask in enumerate(masks):
            packed.set_rater(r, mask)
        return packed

    def set_rater(self, r: int, mask: np.ndarray) -> None:
        """OR rater ``r``'s binary mask (values 0/1, any integer or bool dtype) into the bits, in place."""
        if not 0 <= r < self.n_raters:
            raise IndexError(f"rater {r} out of range for {self.n_raters} raters")
        # one temporary of the bits' size: the mask shifted into place
        shifted = np.left_shift(np.asarray(mask, dtype=self.bits.dtype), r, dtype=self.bits.dtype)
        np.bitwise_or(self.bits, shifted, out=self.bits)

    # -- stack-like view ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_raters, *self.bits.shape)

    @property
    def ndim(self) -> int:
        return 1 + self.bits.ndim

    dtype = np.dtype(np.uint8)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)

    def __len__(self) -> int:
        return self.n_raters

    def __getitem__(self, r: int) -> np.ndarray:
        """Rater ``r`` (0-based) as a new ``uint8`` mask in ``{0, 1}``."""
        if isinstance(r, (int, np.integer)):
            r = int(r) + self.n_raters if r < 0 else int(r)
            if not 0 <= r < self.n_raters:
                raise IndexError(f"rater {r} out of range for {self.n_raters} raters")
            return _unpack(self.bits, r)
        return np.asarray(self)[r]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[r] for r in range(self.n_raters))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        stack = np.empty(self.shape, dtype=np.uint8)
        for r in range(self.n_raters):
            stack[r] = _unpack(self.bits, r)
        return stack if dtype is None else stack.astype(dtype)

    # -- what the viewer shows ----------------------------------------------------------------------
    def counts_table(self) -> np.ndarray:
        """How many raters each possible bits value marks (its population count)."""
        values = np.arange(2 ** np.iinfo(self.bits.dtype).bits, dtype=np.uint32)
        return np.array([bin(v).count("1") for v in values], dtype=np.uint8)

    def mean_table(self) -> np.ndarray:
        """The float32 mean of the raters for each possible bits value (count / R, as ``weighted_mean``)."""
        return np.divide(self.counts_table(), max(self.n_raters, 1), dtype=np.float32)

    def counts(self) -> np.ndarray:
        """How many raters marked each voxel, ``uint8`` (a whole new volume, one byte per voxel)."""
        return self.counts_table()[self.bits]

    def mean(self) -> np.ndarray:
        """The mean of the raters, ``float32`` (a whole new volume)."""
        return self.mean_table()[self.bits]

    def lazy_rater(self, r: int, view: Callable[[np.ndarray], np.ndarray] | None = None) -> LazyArray:
        """Rater ``r`` over ``view(bits)`` (e.g. the display order), unpacked only where it is indexed."""
        if not 0 <= r < self.n_raters:
            raise IndexError(f"rater {r} out of range for {self.n_raters} raters")
        return LazyArray(self.bits if view is None else view(self.bits), _unpack, (r,), np.uint8)

    def lazy_mean(self, view: Callable[[np.ndarray], np.ndarray] | None = None) -> LazyArray:
        """The mean soft label (``float32``) over ``view(bits)``, looked up only where it is indexed."""
        return LazyArray(self.bits if view is None else view(self.bits), _look_up, (self.mean_table(),),
                         np.float32)


def as_masks(masks) -> PackedMasks | np.ndarray:
    """Rater masks as the analysis functions take them: :class:`PackedMasks` as they are (never unpacked as a
    stack), anything else as a numpy array."""
    return masks if isinstance(masks, PackedMasks) else np.asarray(masks)


class LazyArray:
    """A read-only array computed element-wise from another array only where it is indexed.

    ``lazy[key]`` is ``func(source[key], *args)``, which equals ``func(source, *args)[key]`` for any numpy
    key because ``func`` works element by element; ``np.asarray(lazy)`` computes the whole array. napari
    takes it as layer data like any array-like (it needs ``shape``, ``dtype``, ``ndim`` and indexing), and
    slices it one plane at a time. No cache: browsing does not grow memory.

    Args:
        source: The array indexed (a numpy array or view; never copied).
        func: Element-wise ``func(block, *args) -> array`` of ``dtype``.
        args: Extra arguments of ``func``.
        dtype: The result's dtype.
    """

    def __init__(self, source: np.ndarray, func: Callable[..., np.ndarray], args: tuple, dtype):
        self._source, self._func, self._args = source, func, tuple(args)
        self.dtype = np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._source.shape)

    @property
    def ndim(self) -> int:
        return self._source.ndim

    @property
    def size(self) -> int:
        return int(self._source.size)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self._func(np.asarray(self._source[key]), *self._args), dtype=self.dtype)

    def __setitem__(self, key, value) -> None:
        raise TypeError("this layer is computed from the raters' files and is read-only: draw in a new Labels "
                        "layer (Rater comparison dock: Add my annotation layer), or copy it with np.asarray(layer.data)")

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, func={self._func.__name__})"


def _unpack(bits: np.ndarray, r: int) -> np.ndarray:
    out = np.right_shift(bits, r)
    np.bitwise_and(out, 1, out=out)
    return out.astype(np.uint8, copy=False)


def _look_up(bits: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[bits]
