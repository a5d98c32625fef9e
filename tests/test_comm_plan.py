"""comm/plan.py and comm.create outside mpirun: grid, groups, buckets, closed forms, errors."""
import itertools

import numpy as np
import pytest

import comm
from comm import plan
from comm.plan import CommError, Grid


@pytest.mark.parametrize("spec,shape", [("2x3", (2, 3)), (" 4X2 ", (4, 2)), ((1, 1), (1, 1)),
                                        ("auto", None), (None, None)])
def test_grid_specs_parse(spec, shape):
    assert plan.parse_grid(spec) == shape


@pytest.mark.parametrize("spec", ["2*3", "2x", "x3", "0x4", "axb", "2x3x4"])
def test_bad_grid_specs_name_the_format(spec):
    with pytest.raises(CommError, match="'auto' or 'XxY'|at least 1"):
        plan.parse_grid(spec)


def test_grid_rows_are_consecutive_ranks_and_columns_stride_by_x():
    g = Grid.from_shape(3, 2, 6)
    assert g.rows == ((0, 1, 2), (3, 4, 5))
    assert g.cols == ((0, 3), (1, 4), (2, 5))
    assert g.position(4) == (1, 1) and g.row_of(4) == (3, 4, 5) and g.col_of(4) == (1, 4)
    # every rank is in exactly one row and one column, and they cross in that rank only
    for r in range(6):
        assert set(g.row_of(r)) & set(g.col_of(r)) == {r}


def test_grid_mismatch_names_the_valid_shapes():
    with pytest.raises(CommError) as e:
        Grid.from_shape(2, 3, 4, spec="2x3")
    msg = str(e.value)
    assert "has 6 ranks but the job has 4" in msg and "1x4, 2x2, 4x1" in msg
    assert "\n" not in msg


def test_auto_grid_makes_one_row_per_node_even_if_ranks_interleave():
    # --map-by node: ranks alternate between two nodes
    g = Grid.from_nodes(["a", "b", "a", "b", "a", "b"])
    assert g.shape == (3, 2) and g.rows == ((0, 2, 4), (1, 3, 5))
    with pytest.raises(CommError, match="same number of ranks on every node"):
        Grid.from_nodes(["a", "a", "b"])


def test_groups_are_listed_in_one_order_and_degenerate_ones_left_out():
    g = Grid.from_shape(2, 3, 6)
    assert g.groups() == [("row0", [0, 1]), ("row1", [2, 3]), ("row2", [4, 5]),
                          ("col0", [0, 2, 4]), ("col1", [1, 3, 5])]
    assert Grid.from_shape(1, 4, 4).groups() == [("col0", [0, 1, 2, 3])]
    assert Grid.from_shape(4, 1, 4).groups() == [("row0", [0, 1, 2, 3])]
    assert Grid.from_shape(1, 1, 1).groups() == []


def names(algorithm, x, y):
    return [p.name for p in plan.phases(algorithm, Grid.from_shape(x, y, x * y))]


def test_phases_skip_groups_of_one_rank():
    assert names("torus2d", 2, 2) == ["rs_row", "ar_col", "ag_row"]
    assert names("torus2d", 1, 4) == ["ar_col"]
    assert names("torus2d", 4, 1) == ["rs_row", "ag_row"]
    assert names("hierarchical", 1, 1) == []
    (column,) = plan.phases("torus2d", Grid.from_shape(1, 4, 4))    # no row: the whole bucket
    assert column.operand == "bucket"
    assert plan.phases("torus2d", Grid.from_shape(2, 2, 4))[1].operand == "shard"
    with pytest.raises(CommError, match="not one of"):
        plan.phases("tree", Grid.from_shape(1, 1, 1))


@pytest.mark.parametrize("x,y", [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 2), (4, 8),
                                 (8, 272)])
def test_torus_moves_the_bandwidth_optimal_volume_in_fewer_steps(x, y):
    """Summing the three phases' volumes gives 2(N-1)/N*S, like the flat ring, while the
    steps fall from 2(N-1) to 2(X-1)+2(Y-1) (the paper's 2,176 GPUs: 8x272)."""
    n, s = x * y, 1.0e6 * x
    shard = s / x
    volume = (plan.collective_bytes("reduce_scatter", s, x)
              + plan.collective_bytes("all_reduce", shard, y)
              + plan.collective_bytes("all_gather", s, x))
    assert volume == pytest.approx(2 * (n - 1) / n * s)
    assert volume == pytest.approx(plan.bytes_per_rank(s, n))
    g = Grid.from_shape(x, y, n)
    assert plan.steps("torus2d", g) == 2 * (x - 1) + 2 * (y - 1)
    assert plan.steps("ring", g) == 2 * (n - 1)
    assert plan.steps("torus2d", g) <= plan.steps("ring", g)
    for algorithm in ("torus2d", "ring"):     # the phases both backends run say the same
        phased = sum(plan.collective_bytes(p.collective, *plan.phase_bytes(p, s, g))
                     for p in plan.phases(algorithm, g))
        assert phased == pytest.approx(plan.bytes_per_rank(s, n))


def _covered(layout, sizes):
    seen = [np.zeros(n, int) for n in sizes]
    for b in layout.buckets:
        used = np.zeros(b.padded, int)
        for s in b.segments:
            seen[s.index][s.offset:s.offset + s.length] += 1
            used[s.bucket_offset:s.bucket_offset + s.length] += 1
        assert (used[:b.length] == 1).all() and (used[b.length:] == 0).all()
    return seen


@pytest.mark.parametrize("bucket_bytes,multiple", [(64, 1), (64, 3), (100, 4), (4 << 20, 2),
                                                    (8, 6)])
def test_buckets_cover_every_element_once_and_split_into_equal_chunks(bucket_bytes, multiple):
    sizes = [7, 15, 0, 1, 33, 16, 1001, 0, 2]
    dtypes = [np.float32] * 4 + [np.float16, np.float64, np.float32, np.float16, np.float64]
    layout = plan.bucket_layout(sizes, dtypes, bucket_bytes, multiple)
    for seen in _covered(layout, sizes):
        assert (seen == 1).all()
    for b in layout.buckets:
        assert b.padded % multiple == 0 and b.padded - b.length < multiple
        cap = max(multiple, bucket_bytes // b.wire.itemsize // multiple * multiple)
        assert 0 < b.length <= cap
        assert len({np.dtype(dtypes[s.index]) for s in b.segments}) == 1   # one dtype per bucket
    assert layout.elements == sum(sizes)


def test_many_small_arrays_share_one_bucket_and_a_big_one_spans_several():
    layout = plan.bucket_layout([10] * 50, [np.float32] * 50, 4 << 20, 2)
    assert len(layout.buckets) == 1 and len(layout.buckets[0].segments) == 50
    layout = plan.bucket_layout([3 << 20], [np.float32], 4 << 20, 2)   # 12 MB in 4 MB buckets
    assert [b.length for b in layout.buckets] == [1 << 20] * 3


def test_wire_dtype_narrows_only_wider_arrays():
    layout = plan.bucket_layout([4, 4, 4], [np.float64, np.float32, np.float16], 1 << 20,
                                wire_dtype="float16")
    assert [b.wire for b in layout.buckets] == [np.dtype(np.float16)]
    layout = plan.bucket_layout([4, 4], [np.float64, np.float16], 1 << 20, wire_dtype="float32")
    assert sorted(str(b.wire) for b in layout.buckets) == ["float16", "float32"]
    with pytest.raises(CommError, match="int32"):
        plan.bucket_layout([4], [np.int32], 1 << 20)


def test_create_outside_mpirun_is_a_one_rank_communicator(monkeypatch):
    for var in comm.LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    c = comm.create("torus2d", "1x1")
    assert (c.rank, c.size, c.local_rank, c.local_size, c.grid) == (0, 1, 0, 1, (1, 1))
    grads = [np.arange(5, dtype=np.float32)]
    c.all_reduce(grads, average=True)
    assert (grads[0] == np.arange(5)).all()
    assert c.counters()["calls"] == 0
    with pytest.raises(CommError, match="has 4 ranks but the job has 1"):
        comm.create("torus2d", "2x2")


@pytest.mark.parametrize("kwargs,message", [
    ({"algorithm": "tree"}, "comm.algorithm='tree' is not one of"),
    ({"wire_dtype": "bfloat16"}, "comm.wire_dtype='bfloat16'"),
    ({"bucket_mb": 0}, "comm.bucket_mb=0 must be positive"),
    ({"timeout_s": -1}, "comm.timeout_s=-1"),
    ({"backend": "gloo"}, "backend 'gloo'"),
    ({"bucket": 4}, "unknown option"),
    ({"column_phase": "tree"}, "comm.column_phase='tree' is not one of auto, ring, allreduce"),
    # nnabla's communicator has no point-to-point calls: NCCL picks its own ring or tree
    ({"backend": "nccl", "column_phase": "ring"}, "comm.column_phase=ring is MPI-only"),
])
def test_create_rejects_bad_arguments_in_one_line(kwargs, message):
    with pytest.raises(CommError) as e:
        comm.create(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_phase_has_a_fixed_code():
    names = {p.name for p in itertools.chain.from_iterable(
        plan.phases(a, Grid.from_shape(2, 2, 4)) for a in plan.ALGORITHMS)}
    assert names <= set(plan.PHASE_NAMES)
