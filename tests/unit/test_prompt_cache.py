"""The worker's prompt cache policy (onnx_session.PromptCache), with stand-in generators."""

from __future__ import annotations

from engine.runtimes.onnx_session import KEEP_BYTES, PromptCache

KEY = (("do_sample", False),)


class Gen:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rewound: int | None = None

    def rewind_to(self, n: int) -> None:
        self.rewound = n


def prompt(prefix: int, rest: int, start: int = 0, tail: int = 9000) -> list[int]:
    """`prefix` tokens counting from `start`, then `rest` from `tail`."""
    return list(range(start, start + prefix)) + [tail + i for i in range(rest)]


def test_the_generator_sharing_the_longest_prefix_is_taken_and_rewound() -> None:
    cache = PromptCache(bytes_per_position=1)
    short, long = Gen("short"), Gen("long")
    cache.keep(short, KEY, 512, prompt(20, 5))
    cache.keep(long, KEY, 512, prompt(40, 5))
    got = cache.take(prompt(40, 30, tail=20_000), KEY, need=100)
    assert got is not None and got[0] is long and got[1:] == (40, 512)
    assert long.rewound == 40 and cache.hits == 1 and cache.reused_tokens == 40
    # Two prompt tokens are always left to prefill, even for the very same prompt.
    cache.keep(long, KEY, 512, prompt(40, 5))
    same = cache.take(prompt(40, 5), KEY, need=100)
    assert same is not None and same[1] == 43


def test_other_search_options_or_too_short_a_buffer_are_not_taken() -> None:
    cache = PromptCache(bytes_per_position=1)
    cache.keep(Gen("g"), KEY, 256, prompt(40, 5))
    assert cache.take(prompt(40, 5), (("do_sample", True),), need=100) is None
    assert cache.take(prompt(40, 5), KEY, need=300) is None
    assert cache.take([1], KEY, need=10) is None
    assert cache.held  # none of these took it


def test_a_short_prefix_takes_a_free_slot_then_recycles_the_oldest() -> None:
    cache = PromptCache(bytes_per_position=1)
    chat = Gen("chat")
    cache.keep(chat, KEY, 512, prompt(100, 5))
    unrelated = prompt(3, 40, start=5000)
    assert cache.take(unrelated, KEY, need=100) is None  # a fresh one: keep the chat's prefix
    for name in ("a", "b"):
        cache.keep(Gen(name), KEY, 512, prompt(3, 40, start=7000 + ord(name)))
    got = cache.take(unrelated, KEY, need=100)  # all slots used: the oldest is recycled
    assert got is not None and got[0] is chat and chat.rewound == 0


def test_slots_and_memory_are_bounded() -> None:
    cache = PromptCache(bytes_per_position=KEEP_BYTES // 1000)
    gens = [Gen(str(i)) for i in range(4)]
    for i, g in enumerate(gens):
        cache.keep(g, KEY, 300, prompt(30, 5, start=100 * i))
    assert [k.gen for k in cache._kept] == gens[1:]  # three slots, and 900 of 1000 positions
    cache.keep(Gen("big"), KEY, 500, prompt(30, 5))
    assert sum(k.max_length for k in cache._kept) <= 1000
    cache.keep(Gen("huge"), KEY, 1001, prompt(30, 5))  # more than the budget alone: not kept
    assert all(k.gen.name != "huge" for k in cache._kept)
    cache.drop()
    assert not cache.held
