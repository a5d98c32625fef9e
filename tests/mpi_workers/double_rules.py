"""MPI worker: each rule of rehearsal/'s double of nnabla's NCCL communicator, on 4 ranks.

    mpirun -np 4 python tests/mpi_workers/double_rules.py

MPI is left to the double to start (as nnabla would: MPI_THREAD_SERIALIZED). Rank 0 prints
``RESULT {rule: null | "what went wrong"}``; every rank checks every rule.
"""
import json
import os
import sys
import tempfile
import threading
import time

import rehearsal.communicator as D           # before mpi4py.MPI: the double starts MPI
import nnabla as nn  # noqa: E402
import numpy as np  # noqa: E402
from nnabla.ext_utils import get_extension_context  # noqa: E402

FLOAT = get_extension_context("cpu", type_config="float")
HALF = get_extension_context("cpu", type_config="half")
RULES = {}


def rule(fn):
    RULES[fn.__name__] = fn
    return fn


def nd(values, dtype=np.float32):
    return nn.NdArray.from_numpy_array(np.asarray(values, dtype))


def host(a):
    """The host's view of an array a collective wrote: after the device has run it."""
    D.synchronize()
    return a.data


def raises(fn, kind, *words):
    try:
        fn()
    except kind as e:
        missing = [w for w in words if w not in str(e)]
        assert not missing, f"message lacks {missing}: {e}"
        assert "\n" not in str(e).strip() or kind is RuntimeError, f"not one line: {e}"
        return str(e)
    raise AssertionError(f"{fn} did not raise {kind.__name__}")


@rule
def numpy_rejected(nc, r):
    """pyx casts every item unchecked (<NdArray> x): a numpy array, a Variable or a tuple as
    data would be undefined behaviour on a GPU; the double stops with one line."""
    raises(lambda: nc.all_reduce([np.zeros(3, np.float32)]), D.DoubleError,
           "not an nnabla NdArray", "numpy")
    raises(lambda: nc.bcast((nd([1.0]),), 0), D.DoubleError, "tuple")
    raises(lambda: nc.reduce_scatter([np.zeros(4)], nd([0.0])), D.DoubleError, "numpy")
    raises(lambda: nc.all_reduce([nn.Variable((2,))]), D.DoubleError, "Variable")


@rule
def uninitialised_rejected(nc, r):
    """NdArray(shape) (+ zero()) holds no data: nnabla refuses its dtype ("Array is not
    initialized."), which is what comm/'s packing reads; the communicator itself casts such
    an array and reads zeros (synced_array.cpp), as the double does."""
    a = nn.NdArray((3,))
    a.zero()
    raises(lambda: a.dtype, RuntimeError, "Array is not initialized")
    fresh = nn.NdArray((3,))
    nc.all_reduce([fresh])                        # cast: created as zeros, then summed
    assert fresh.dtype == np.float32 and host(fresh).tolist() == [0, 0, 0], fresh.data
    import comm.nccl as N
    c = N.NcclCommunicator(None, "native", f"{nc.size}x1", timeout_s=0, nnabla_comm=nc)
    raises(lambda: c.all_reduce([a]), N.CommError, "never initialised", "from_numpy_array")


@rule
def fp16_rounding_in_a_half_communicator(nc, r):
    """A half context gets MultiProcessDataParallelCommunicatorNccl<Half>: inputs are cast
    to float16 (their dtype changes) and summed in float16; a float context keeps float32."""
    half = D.MultiProcessDataParallelCommunicator(HALF)
    half.init()
    assert half.dtype == np.float16 and nc.dtype == np.float32
    x = nd([1 + 2 ** -20, 2049 / 4])
    half.all_reduce([x])
    assert x.dtype == np.float16, x.dtype
    assert host(x).tolist() == [4.0, 2048.0], host(x).tolist()   # 1+2^-20 -> 1; 512.25 -> 512
    y = nd([1 + 2 ** -20, 2049 / 4])
    nc.all_reduce([y])
    assert y.dtype == np.float32 and host(y).tolist() == [
        float(np.float32(4 * (1 + 2 ** -20))), 2049.0], host(y).tolist()


@rule
def division_divides_by_the_group_size(nc, r):
    """ncclAvg over a group of 2 is the mean of its 2 members, not of the world's 4."""
    x = nd([r + 1.0])
    group = "pair0" if r < 2 else "pair1"
    nc.all_reduce([x], division=True, group=group)
    want = 1.5 if r < 2 else 3.5
    assert host(x).tolist() == [want], (host(x).tolist(), want)


@rule
def reduce_in_place_with_a_group_refused(nc, r):
    """1.39's in-place reduce drops the group and reduces over the world (it would hang):
    refused with one line; in place on "world", and out of place on a group, work."""
    group = "pair0" if r < 2 else "pair1"
    message = raises(lambda: nc.reduce([nd([1.0])], 0, inplace=True, group=group),
                     D.DoubleError, "inplace=False", "world")
    assert "\n" not in message
    x = nd([r + 1.0])
    nc.reduce([x], 0, inplace=False, group=group)
    assert host(x).tolist() == ([3.0] if r == 0 else [7.0] if r == 2 else [r + 1.0])
    w = nd([1.0])
    nc.reduce([w], 0, inplace=True)
    assert host(w).tolist() == ([4.0] if r == 0 else [1.0])


@rule
def group_rank_numbering(nc, r):
    """The rank inside a group is the position in its ranks: in ("back", [3, 1]) src=0 and
    dst=0 are world rank 3; ranks outside the group are refused."""
    if r in (3, 1):
        x = nd([10.0 * r])
        nc.bcast([x], 0, group="back")
        assert host(x).tolist() == [30.0], host(x).tolist()
        y = nd([r])
        nc.reduce([y], 0, group="back")
        assert host(y).tolist() == ([4.0] if r == 3 else [1.0]), host(y).tolist()
        out = nd([0.0])
        nc.reduce_scatter([nd([r, 10.0 * r])], out, group="back")   # member i gets chunk i
        assert host(out).tolist() == ([4.0] if r == 3 else [40.0]), host(out).tolist()
    else:
        raises(lambda: nc.bcast([nd([0.0])], 0, group="back"), RuntimeError,
               f"self (rank={r}) is not included in back")


@rule
def local_rank_is_the_index_on_the_host(nc, r):
    """init(): local_rank counts the lower ranks whose host-name hash (the name up to its
    first '.') equals this rank's -- not the world rank, and not Open MPI's local rank
    (OMPI_COMM_WORLD_LOCAL_RANK follows its mapping: here rank 1 may get local rank 2)."""
    assert nc.local_rank == r, nc.local_rank           # one host: the index is the rank
    hosts = ["a.x", "a", "b", "a.y", "b.z"]
    hashes = [D._host_hash(h) for h in hosts]
    local = [sum(1 for h in hashes[:i] if h == hashes[i]) for i in range(len(hosts))]
    assert local == [0, 1, 0, 2, 1], local
    assert nc.ctx.device_id == str(nc.local_rank)


@rule
def groups_created_in_another_order_refused(nc, r):
    """Every rank must create every group in the same order: checked, one line, no hang."""
    names = [("o1", [0, 1]), ("o2", [2, 3])]
    if r == 2:
        names.reverse()
    c = D.MultiProcessDataParallelCommunicator(FLOAT)
    c.init()
    raises(lambda: [c.new_group(n) for n in names], D.DoubleError, "same order")


@rule
def zeroed_arrays_are_skipped(nc, r):
    """all_reduce skips arrays that still hold their zero() on every member (their dtype is
    left alone); one zeroed on some ranks only is reduced."""
    a = nn.NdArray((2,))
    a.zero()
    nc.all_reduce([a])
    raises(lambda: a.dtype, RuntimeError, "Array is not initialized")
    b = nn.NdArray((2,))
    if r == 0:
        b.data = np.array([1.0, 2.0], np.float32)
    else:
        b.zero()
    nc.all_reduce([b])
    assert host(b).tolist() == [1.0, 2.0], host(b).tolist()


@rule
def out_of_bounds_reduce_scatter_refused(nc, r):
    """NCCL reads group_size * n elements from the packed list: a shorter list is refused."""
    raises(lambda: nc.reduce_scatter([nd([1.0, 2.0])], nd([0.0])), D.DoubleError,
           "out of bounds")
    out = nd([0.0])
    nc.reduce_scatter([nd([1.0, 2.0]), nd([3.0, 4.0])], out)      # 4 elements for 4 ranks
    assert host(out).tolist() == [4.0 * (r + 1)], host(out).tolist()


@rule
def callback_checks_every_gradient_on_the_host(nc, r):
    """all_reduce_callback: a blocking world MPI_Allreduce per listed gradient before it is
    packed; the mean lands in the gradients; a second backward on the same callback and a
    gradient finishing twice (shared parameters) are refused."""
    import nnabla.functions as F
    import nnabla.parametric_functions as PF
    from training.device import backward
    nn.clear_parameters()
    x = nn.Variable((2, 3))
    x.d = np.full((2, 3), r + 1.0, np.float32)
    with nn.parameter_scope("cb"):
        loss = F.mean(PF.affine(PF.affine(x, 4, name="a"), 1, name="b"))
    params = nn.get_parameters()
    for p in params.values():
        p.grad.zero()
    loss.forward()
    before = nc.host_checks
    cb = nc.all_reduce_callback([p.grad for p in params.values()], 5, division=True)
    backward(loss, 1.0, cb)
    assert nc.host_checks - before == len(params) == 4, nc.host_checks - before
    mine = {k: p.g.copy() for k, p in params.items()}
    every = D.MPI.COMM_WORLD.allgather(mine)
    for k in mine:
        assert all(np.array_equal(e[k], mine[k]) for e in every), k
    raises(lambda: backward(loss, 1.0, cb), D.DoubleError, "one backward")
    with nn.parameter_scope("shared"):
        h = PF.affine(x, 3, name="s")
        out = F.mean(PF.affine(h, 3, name="s"))       # the same weights used twice
    shared = nn.get_parameters()
    out.forward()
    cb2 = nc.all_reduce_callback([p.grad for k, p in shared.items() if k.startswith("shared")],
                                 64)
    raises(lambda: backward(out, 1.0, cb2), D.DoubleError, "shared parameters")


@rule
def abort_from_a_thread_needs_thread_multiple(nc, r):
    """MPI here was started by the double at MPI_THREAD_SERIALIZED (as nnabla does): an
    abort() from a second thread while the main thread waits inside MPI is refused."""
    assert D.MPI.Query_thread() == D.MPI.THREAD_SERIALIZED, D.MPI.Query_thread()
    flag = D.MPI.COMM_WORLD.bcast(
        os.path.join(tempfile.mkdtemp(), "attempted") if r == 0 else None, root=0)
    outcome = []
    if r == 0:
        def attempt():
            time.sleep(0.2)
            try:
                nc.abort()
                outcome.append("aborted")
            except D.DoubleError as e:
                outcome.append(str(e))
            open(flag, "w").close()
        t = threading.Thread(target=attempt)
        t.start()
        nc.barrier()                       # rank 1 enters only after the attempt
        t.join()
        os.unlink(flag)
        os.rmdir(os.path.dirname(flag))
        assert outcome and "MPI_THREAD_MULTIPLE" in outcome[0], outcome
    else:
        if r == 1:
            deadline = time.monotonic() + 60
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.01)
        nc.barrier()


@rule
def results_hidden_until_synchronize(nc, r):
    """The real collectives only enqueue (.cu:738-758: ncclAllReduce on a stream, then
    return): a host read before the device is synchronised reads NaN here (on a GPU it
    would stall the host). Later collectives see earlier results (one device, in order)."""
    x = nd([r + 1.0, 1.0])
    nc.all_reduce([x])
    early = x.data.tolist()
    assert all(np.isnan(early)), early
    nc.all_reduce([x])                         # sees the first sum: program order
    assert host(x).tolist() == [40.0, 16.0], x.data.tolist()
    assert x.data.tolist() == [40.0, 16.0]     # stays visible


@rule
def every_listed_array_is_checked_on_the_host(nc, r):
    """all_reduce(list): one blocking host MPI_Allreduce per array, whether it is zeroed
    (get_modified_arrays, .cu:335-346 out of place; mpi_check_all, .cu:743 in place), and
    one collective call for the whole list."""
    arrays = [nd([1.0]), nd([2.0, 3.0]), nd([4.0])]
    checks, calls = nc.host_checks, nc.calls
    nc.all_reduce(arrays, division=True, inplace=False)
    assert nc.host_checks - checks == 3 and nc.calls - calls == 1, (nc.host_checks, nc.calls)
    assert [host(a).tolist() for a in arrays] == [[1.0], [2.0, 3.0], [4.0]]


def main():
    nc = D.MultiProcessDataParallelCommunicator(FLOAT)
    nc.init()
    for name, ranks in (("pair0", [0, 1]), ("pair1", [2, 3]), ("back", [3, 1])):
        nc.new_group((name, ranks))
    results = {}
    for name, fn in RULES.items():
        try:
            fn(nc, nc.rank)
            results[name] = None
        except Exception as e:           # noqa: BLE001 (reported per rule)
            results[name] = f"rank {nc.rank}: {type(e).__name__}: {e}"
        nc.barrier()
    every = D.MPI.COMM_WORLD.allgather(results)
    if nc.rank == 0:
        merged = {k: next((e[k] for e in every if e[k]), None) for k in RULES}
        print("RESULT " + json.dumps(merged), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
