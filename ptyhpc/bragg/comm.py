"""How the Bragg solver's ranks combine the sums of a mini-batch (its parallel decomposition).

Every mini-batch of :func:`ptyhpc.bragg.solver.reconstruct` ends with the same
exchange: the object numerator and denominator (on the batch's box, the
bounding box of its windows) and a vector of probe sums and scalars are summed
over the ranks; each rank updates a share of the box's rows; every rank then
needs the whole updated box, the summed vector and the maximum of the summed
illumination. Two implementations, chosen by :func:`batch_exchange`:

``MessageExchange`` (any ranks, any nodes, NumPy or CuPy)
    a reduce-scatter of all sums in one ``Alltoallv`` plus a local sum, then
    one ``Allgatherv`` of the updated rows, the vector's slices and the rows'
    maxima: two collectives per batch, 20 bytes per box voxel moved.
``SharedExchange`` (all ranks on one node, NumPy)
    the object and one sum buffer per rank live in MPI-3 shared memory
    (``MPI.Win.Allocate_shared``): each rank accumulates into its own buffer,
    and after a barrier sums the buffers of all ranks for its rows and writes
    them into the shared object; after a second barrier every rank sees the
    updated object. No bytes are copied between processes: on the 2-core
    development VM the time in the exchange falls from 5–9 to 2–3 ms per
    iteration with a 32×32×30 window (36 positions, 18 batches) and from 24 to
    9–18 ms with 64×64×30 (``benchmarks/bragg.py``); what remains is the
    ranks waiting for each other at the barriers.

Both sum the same contributions over the same row split, so the solver's
result does not depend on the exchange or on the number of ranks, up to
float32 rounding (bit for bit with two ranks, where the one addition commutes).
"""

from __future__ import annotations

import shutil
import warnings
from types import ModuleType

import numpy as np

from .. import backend

__all__ = ["Allreduce", "MessageExchange", "SharedExchange", "batch_exchange", "row_edges"]


def row_edges(n: int, size: int) -> np.ndarray:
    """First and last+1 index of each rank's share of n items (``np.array_split`` sizes), (size + 1,) int."""
    sizes = [n // size + (r < n % size) for r in range(size)]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int)


class Allreduce:
    """Sum of host arrays over ranks (a no-op without a communicator); for set-up and ML sums."""

    def __init__(self, comm):
        self.comm = comm

    def __call__(self, a):
        if self.comm is None or self.comm.Get_size() == 1:
            return a
        from mpi4py import MPI  # noqa: PLC0415  (optional dependency, only with a communicator)

        a = np.ascontiguousarray(backend.to_host(a))
        out = np.empty_like(a)
        self.comm.Allreduce(a, out, op=MPI.SUM)
        return out


class MessageExchange:
    """Batch sums by messages: reduce-scatter (``Alltoallv`` + local sum) and ``Allgatherv``.

    Parameters
    ----------
    comm : mpi4py communicator or None
    boxes : list of tuple of slice
        Each batch's box on the object grid.
    xp : module
        numpy or cupy (device arrays go through host buffers).
    """

    def __init__(self, comm, boxes, xp: ModuleType = np):
        self.comm = comm
        self.boxes = boxes
        self.xp = xp
        self.size = 1 if comm is None else comm.Get_size()
        self.rank = 0 if comm is None else comm.Get_rank()

    def object(self, obj):
        """The array the solver updates in place (here: ``obj`` itself)."""
        return obj

    def buffers(self, k):
        """Zeroed (complex64 numerator, float32 denominator) of batch k's box shape."""
        shape = tuple(sl.stop - sl.start for sl in self.boxes[k])
        return self.xp.zeros(shape, dtype=np.complex64), self.xp.zeros(shape, dtype=np.float32)

    def reduce(self, k, num, den, vec):
        """Sum over ranks; keep this rank's rows.

        Returns ``(num_rows, den_rows, (r0, r1), vec_part)``: the summed rows ``r0:r1``
        of the box's first axis and this rank's summed slice of ``vec`` (1-D float32; all
        of it without a communicator).
        """
        n_rows = num.shape[0]
        if self.size == 1:
            return num, den, (0, n_rows), vec
        from mpi4py import MPI  # noqa: PLC0415

        rows, parts = row_edges(n_rows, self.size), row_edges(len(vec), self.size)
        plane = int(np.prod(num.shape[1:]))
        h_num = np.ascontiguousarray(backend.to_host(num), dtype=np.complex64).reshape(n_rows, -1).view(np.float32)
        h_den = np.ascontiguousarray(backend.to_host(den), dtype=np.float32).reshape(n_rows, -1)
        segments, counts = [], []
        for r in range(self.size):
            seg = [h_num[rows[r]:rows[r + 1]].ravel(), h_den[rows[r]:rows[r + 1]].ravel(), vec[parts[r]:parts[r + 1]]]
            segments += seg
            counts.append(sum(len(x) for x in seg))
        # a reduce-scatter as an all-to-all and a local sum: MPICH's Reduce_scatter takes
        # 0.2–0.9 ms for the 0.2–0.5 MB of a batch (recursive halving below its size switch),
        # the all-to-all 0.04–0.07 ms (mpich 4 wheel, 2 ranks bound to the dev VM's 2 cores)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        mine = counts[self.rank]
        got = np.empty((self.size, mine), dtype=np.float32)
        self.comm.Alltoallv([np.concatenate(segments), counts, displs, MPI.FLOAT],
                            [got, [mine] * self.size, [mine * r for r in range(self.size)], MPI.FLOAT])
        recv = got.sum(axis=0)
        a, b = int(rows[self.rank]), int(rows[self.rank + 1])
        shape = (b - a, *num.shape[1:])
        n_o = 2 * plane * (b - a)
        return (self.xp.asarray(recv[:n_o].view(np.complex64).reshape(shape)),
                self.xp.asarray(recv[n_o:n_o + plane * (b - a)].reshape(shape)), (a, b), recv[n_o + plane * (b - a):])

    def commit(self, k, obj, upd, rows, vec_part, n_vec, value):
        """Write the updated rows ``upd`` of batch k into ``obj`` on every rank.

        Returns ``(vec, value_max)``: the whole summed vector and the maximum of the
        scalar ``value`` over ranks (one ``Allgatherv``).
        """
        bx = self.boxes[k]
        if self.size == 1:
            obj[bx] = upd
            return vec_part, value
        from mpi4py import MPI  # noqa: PLC0415

        n_rows = bx[0].stop - bx[0].start
        edges, parts = row_edges(n_rows, self.size), row_edges(n_vec, self.size)
        plane = int(np.prod(upd.shape[1:]))
        counts = [2 * plane * int(edges[r + 1] - edges[r]) + int(parts[r + 1] - parts[r]) + 1 for r in range(self.size)]
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        recv = np.empty(sum(counts), dtype=np.float32)
        send = np.concatenate([np.ascontiguousarray(backend.to_host(upd), dtype=np.complex64).view(np.float32).ravel(),
                               np.asarray(vec_part, dtype=np.float32), np.array([value], dtype=np.float32)])
        self.comm.Allgatherv(send, [recv, counts, displs.tolist(), MPI.FLOAT])
        box = np.empty((n_rows, *upd.shape[1:]), dtype=np.complex64)
        vec = np.empty(n_vec, dtype=np.float32)
        for r, d in enumerate(displs):
            n_o = 2 * plane * int(edges[r + 1] - edges[r])
            box[edges[r]:edges[r + 1]] = recv[d:d + n_o].view(np.complex64).reshape((-1, *upd.shape[1:]))
            vec[parts[r]:parts[r + 1]] = recv[d + n_o:d + counts[r] - 1]
        obj[bx] = self.xp.asarray(box)
        return vec, float(recv[displs + np.asarray(counts) - 1].max())

    def mask_object(self, obj, keep):
        """``obj *= keep`` (shrink-wrap) on every rank's view of the object."""
        obj *= keep

    def result(self, obj):
        """Host copy of ``obj``; releases what the exchange holds (call once, at the end)."""
        return backend.to_host(obj).astype(np.complex64)


class SharedExchange(MessageExchange):
    """Batch sums through MPI-3 shared memory (all ranks of ``comm`` on one node, NumPy arrays).

    Parameters
    ----------
    comm : mpi4py communicator
        Every rank on the same node (see :func:`batch_exchange`).
    boxes : list of tuple of slice
    object_shape : (int, int, int)
    vec_max : int
        Largest vector of probe sums and scalars a batch will send (float32 entries).
    """

    @staticmethod
    def _layout(size, boxes, object_shape, vec_max):
        """(voxels of the largest box, floats per rank's slot, floats in all) of the shared window."""
        vox = max(int(np.prod([sl.stop - sl.start for sl in bx])) for bx in boxes)
        slot = 3 * vox + int(vec_max) + 1
        slot += slot % 2            # every slot starts 8-byte aligned, for its complex64 view
        return vox, slot, 2 * int(np.prod(object_shape)) + size * slot

    @classmethod
    def bytes_needed(cls, size, boxes, object_shape, vec_max) -> int:
        """Bytes of the shared window for ``size`` ranks."""
        return 4 * cls._layout(size, boxes, object_shape, vec_max)[2]

    def __init__(self, comm, boxes, object_shape, vec_max: int):
        from mpi4py import MPI  # noqa: PLC0415

        super().__init__(comm, boxes, np)
        self._vox, self._slot, n_float = self._layout(self.size, boxes, object_shape, vec_max)
        n_obj = int(np.prod(object_shape))
        lead = self.rank == 0
        # one window: the object (complex64 as float32 pairs), then a slot per rank
        self.win = MPI.Win.Allocate_shared(4 * n_float if lead else 0, 4, comm=comm)
        buf, _ = self.win.Shared_query(0)
        mem = np.frombuffer(buf, dtype=np.float32, count=n_float)
        self._obj = mem[:2 * n_obj].view(np.complex64).reshape(object_shape)
        self._slots = mem[2 * n_obj:].reshape(self.size, self._slot)
        self.win.Lock_all(MPI.MODE_NOCHECK)

    def _sync(self):
        """All ranks' writes to the window are visible to all (unified memory model: sync, barrier, sync)."""
        self.win.Sync()
        self.comm.Barrier()
        self.win.Sync()

    def object(self, obj):
        if self.rank == 0:
            self._obj[...] = backend.to_host(obj)
        self._sync()
        return self._obj

    def _views(self, r, k, n_vec=0):
        shape = tuple(sl.stop - sl.start for sl in self.boxes[k])
        v = int(np.prod(shape))
        s = self._slots[r]
        return (s[:2 * v].view(np.complex64).reshape(shape), s[2 * v:3 * v].reshape(shape),
                s[3 * self._vox:3 * self._vox + n_vec])

    def buffers(self, k):
        num, den, _ = self._views(self.rank, k)
        num[...] = 0
        den[...] = 0
        return num, den

    def reduce(self, k, num, den, vec):
        _, _, mine = self._views(self.rank, k, len(vec))
        mine[...] = vec
        self._sync()
        n_rows = num.shape[0]
        edges = row_edges(n_rows, self.size)
        a, b = int(edges[self.rank]), int(edges[self.rank + 1])
        # summed in place into this rank's own rows of its own slot: the other ranks read only
        # their rows of it (addition of two terms commutes exactly, so 2 ranks match 1 bit for bit)
        num_rows, den_rows = num[a:b], den[a:b]
        total = np.zeros(len(vec), dtype=np.float32)
        for r in range(self.size):
            n_r, d_r, v_r = self._views(r, k, len(vec))
            total += v_r
            if r != self.rank:
                num_rows += n_r[a:b]
                den_rows += d_r[a:b]
        return num_rows, den_rows, (a, b), total

    def commit(self, k, obj, upd, rows, vec_part, n_vec, value):
        bx = self.boxes[k]
        a, b = rows
        obj[(slice(bx[0].start + a, bx[0].start + b), bx[1], bx[2])] = upd
        # the rows' maxima go in the last entry of each slot (no batch sends a vector that long)
        self._slots[self.rank, -1] = value
        self._sync()
        return vec_part, float(self._slots[:, -1].max())

    def mask_object(self, obj, keep):
        if self.rank == 0:
            obj *= keep
        self._sync()

    def result(self, obj):
        out = np.array(obj, dtype=np.complex64)
        self._sync()
        self.win.Unlock_all()
        self.win.Free()
        return out


def batch_exchange(comm, boxes, object_shape, vec_max: int, xp: ModuleType = np, mode: str = "auto"):
    """The exchange for a run: shared memory where every rank is on one node and arrays are NumPy.

    Parameters
    ----------
    comm : mpi4py communicator or None
    boxes : list of tuple of slice
        Each batch's box on the object grid.
    object_shape : (int, int, int)
    vec_max : int
        Largest vector of probe sums and scalars per batch.
    xp : module
    mode : {"auto", "shared", "messages"}

    Returns
    -------
    MessageExchange or SharedExchange

    Raises
    ------
    ValueError
        Unknown ``mode``, or ``"shared"`` where the ranks span several nodes or ``xp`` is not NumPy.
    """
    if mode not in ("auto", "shared", "messages"):
        raise ValueError(f"unknown exchange {mode!r}; use 'auto', 'shared' or 'messages'")
    if comm is None or comm.Get_size() == 1 or mode == "messages":
        return MessageExchange(comm, boxes, xp)
    from mpi4py import MPI  # noqa: PLC0415

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    one_node = comm.allreduce(int(node.Get_size() == comm.Get_size()), op=MPI.MIN) == 1
    node.Free()
    need = SharedExchange.bytes_needed(comm.Get_size(), boxes, object_shape, vec_max)
    room = _shm_free_bytes()
    fits = comm.allreduce(int(room is None or need < 0.8 * room), op=MPI.MIN) == 1
    if one_node and xp is np and fits:
        return SharedExchange(comm, boxes, object_shape, vec_max)
    why = ("every rank on one node" if not one_node else "NumPy arrays" if xp is not np
           else f"{need / 2**20:.0f} MiB of shared memory (/dev/shm has {room / 2**20:.0f} MiB free)")
    if mode == "shared":
        raise ValueError(f"exchange='shared' needs {why}; use 'auto' or 'messages'")
    if one_node and xp is np and comm.Get_rank() == 0:
        # a shared window larger than /dev/shm would end in SIGBUS, not in an error
        warnings.warn(f"Bragg solver: batch sums by messages, shared memory needs {why}", RuntimeWarning, stacklevel=3)
    return MessageExchange(comm, boxes, xp)


def _shm_free_bytes():
    """Free bytes of /dev/shm, where MPI places shared windows on Linux (None if there is none)."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None
