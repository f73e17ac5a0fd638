"""zip pairs and transposes, is a one-shot iterator, truncates unless strict; `*` spreads arguments; collate."""

from __future__ import annotations

import gc
import itertools
import random
import weakref

import pytest
import torch
from torch.utils.data import default_collate

from snippets.python.zip_unpacking import collate_pairs, transpose_pairs
from tests.conftest import assert_close


@pytest.mark.parametrize("seed", range(4))
def test_transpose_matches_zip_star_and_tensor_transpose(seed: int) -> None:
    rng = random.Random(seed)
    n, width = rng.randint(1, 7), rng.randint(1, 5)
    rows = [tuple(rng.randint(-9, 9) for _ in range(width)) for _ in range(n)]
    cols = transpose_pairs(rows)
    assert cols == tuple(zip(*rows))
    assert [list(c) for c in cols] == torch.tensor(rows).T.tolist()  # an independent transpose
    assert len(cols) == width and all(len(c) == n for c in cols)
    assert transpose_pairs(cols) == tuple(rows)  # transposing twice gives the rows back
    assert transpose_pairs(iter(rows)) == cols  # a one-shot iterator of rows is read once, and suffices


def test_the_notes_example(capsys: pytest.CaptureFixture[str]) -> None:
    a = [1, 2, 3]
    b = [4, 5, 6]
    pack = zip(a, b)
    print("pack:", *pack)
    print("pack:", *pack)  # the second *pack prints nothing
    unpack = zip(*zip(a, b))
    print("unpack:", *unpack)
    assert capsys.readouterr().out == "pack: (1, 4) (2, 5) (3, 6)\npack:\nunpack: (1, 2, 3) (4, 5, 6)\n"


def test_zip_of_zip_gives_tuples_not_lists() -> None:
    a, b = [1, 2, 3], [4, 5, 6]
    back = list(zip(*zip(a, b)))
    assert back == [(1, 2, 3), (4, 5, 6)]
    assert all(type(t) is tuple for t in back) and back[0] != a  # tuples: (1, 2, 3) != [1, 2, 3]
    assert [list(t) for t in back] == [a, b]


def test_zip_is_a_one_shot_iterator() -> None:
    z = zip([1, 2], "ab")
    assert iter(z) is z
    assert list(z) == [(1, "a"), (2, "b")]
    assert list(z) == []
    with pytest.raises(StopIteration):
        next(z)
    pairs = list(zip([1, 2], "ab"))  # materialised: reusable
    assert list(pairs) == list(pairs)


def test_zip_stops_at_the_shortest_input_unless_strict() -> None:
    rng = random.Random(0)
    for _ in range(20):
        seqs = [list(range(rng.randint(0, 6))) for _ in range(rng.randint(1, 4))]
        assert len(list(zip(*seqs))) == min(len(s) for s in seqs)
    assert list(zip([1, 2, 3], [4, 5])) == [(1, 4), (2, 5)]  # the 3 is silently dropped
    with pytest.raises(ValueError, match=r"zip\(\) argument 2 is shorter than argument 1"):
        list(zip([1, 2, 3], [4, 5], strict=True))
    with pytest.raises(ValueError, match=r"zip\(\) argument 2 is longer than argument 1"):
        list(zip([1], [4, 5], strict=True))
    assert list(zip([1, 2], [4, 5], strict=True)) == [(1, 4), (2, 5)]
    assert list(itertools.zip_longest([1, 2, 3], [4, 5], fillvalue=0)) == [(1, 4), (2, 5), (3, 0)]


def test_an_exhausted_zip_keeps_its_inputs_until_it_is_unreferenced() -> None:
    class Source:
        """An iterator we can hold a weak reference to."""

        def __init__(self, items: list[int]) -> None:
            self.items = iter(items)

        def __iter__(self) -> Source:
            return self

        def __next__(self) -> int:
            return next(self.items)

    src = Source([1, 2])
    probe = weakref.ref(src)
    pack = zip(src, "ab")
    del src
    assert list(pack) == [(1, "a"), (2, "b")] and list(pack) == []
    gc.collect()
    assert probe() is not None  # used up, but nothing was freed: the zip still references its input
    del pack
    gc.collect()
    assert probe() is None  # freed once the zip object itself is no longer referenced


def test_star_unpacks_into_positional_arguments() -> None:
    def f(*args: object) -> tuple[object, ...]:
        return args

    assert f(*[1, 2, 3]) == f(1, 2, 3) == (1, 2, 3)
    assert f(*zip("ab", "cd")) == (("a", "c"), ("b", "d"))  # each pair becomes one argument
    assert [*zip("ab", "cd")] == list(zip("ab", "cd"))  # a list display with * materialises too
    gen = (i * i for i in range(3))
    assert f(*gen) == (0, 1, 4) and list(gen) == []  # the iterator was consumed to build the arguments
    first, *rest = zip("abc", "def")  # starred assignment collects the remainder in a list
    assert first == ("a", "d") and rest == [("b", "e"), ("c", "f")]


def test_transposing_an_empty_list() -> None:
    with pytest.raises(ValueError, match=r"not enough values to unpack \(expected 2, got 0\)"):
        xs, ys = zip(*[])
    assert transpose_pairs([]) == ()
    xs, ys = transpose_pairs([], width=2)
    assert xs == () and ys == ()


def test_transpose_pairs_rejects_ragged_rows() -> None:
    assert list(zip(*[(1, 2), (3,), (4, 5)])) == [(1, 3, 4)]  # bare zip(*rows): silently cut
    with pytest.raises(ValueError, match=r"rows\[1\] has length 1, expected 2 \(the length of rows\[0\]\)"):
        transpose_pairs([(1, 2), (3,), (4, 5)])
    with pytest.raises(ValueError, match=r"rows\[0\] has length 2, expected 3 \(width=3\)"):
        transpose_pairs([(1, 2)], width=3)
    with pytest.raises(ValueError, match="width must be >= 0, got width=-1"):
        transpose_pairs([], width=-1)
    with pytest.raises(TypeError, match="rows\\[1\\] must be a sequence such as a tuple, got int"):
        transpose_pairs([(1, 2), 3])  # type: ignore[list-item]
    assert transpose_pairs(["ab", "cd"]) == (("a", "c"), ("b", "d"))  # strings are sequences too


@pytest.mark.parametrize("seed", range(3))
def test_collate_pairs_matches_default_collate(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    b, d, c = (int(v) for v in torch.randint(1, 6, (3,), generator=g))
    xs = [torch.randn(d, c, generator=g, dtype=torch.float64).to(device).requires_grad_() for _ in range(b)]
    ys = [torch.randint(0, 10, (), generator=g).to(device) for _ in range(b)]
    ms = [torch.rand(c, generator=g, dtype=torch.float64).to(device) > 0.5 for _ in range(b)]
    samples = list(zip(xs, ys, ms))
    ours, ref = collate_pairs(samples), default_collate(samples)
    assert isinstance(ref, list) and len(ours) == len(ref) == 3
    assert ours[0].shape == (b, d, c) and ours[1].shape == (b,) and ours[2].dtype == torch.bool
    for o, r in zip(ours, ref, strict=True):
        assert o.dtype == r.dtype and o.device == r.device
        assert_close(o, r)
    w = torch.randn(b, d, c, generator=g, dtype=torch.float64).to(device)
    (g_ours,) = torch.autograd.grad((ours[0] * w).sum(), xs[0])
    (g_ref,) = torch.autograd.grad((ref[0] * w).sum(), xs[0])
    assert_close(g_ours, g_ref)
    assert_close(g_ours, w[0])  # d/dx_0 of sum(stack(xs) * w) is w[0]


def test_collate_pairs_rejects_bad_batches() -> None:
    with pytest.raises(ValueError, match="samples is empty"):
        collate_pairs([])
    with pytest.raises(ValueError, match=r"field 0 of the samples must have one shape to be stacked"):
        collate_pairs([(torch.zeros(2), torch.tensor(0)), (torch.zeros(3), torch.tensor(1))])
    with pytest.raises(TypeError, match=r"samples\[1\]\[1\] must be a Tensor, got int"):
        collate_pairs([(torch.zeros(2), torch.tensor(0)), (torch.zeros(2), 1)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"rows\[1\] has length 1, expected 2"):
        collate_pairs([(torch.zeros(2), torch.tensor(0)), (torch.zeros(2),)])
