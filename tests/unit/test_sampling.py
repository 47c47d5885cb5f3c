"""hearth's NumPy sampler (the MLX backend's) and the incremental detokenizer."""

from __future__ import annotations

import numpy as np

from backends.base import SamplingParams
from backends.mlx.sampling import PENALTY_WINDOW, TokenSampler
from backends.text import IncrementalText

LOGITS = np.array([1.0, 3.0, 2.5, 0.5, -1.0, 2.9])


def draws(params: SamplingParams, n: int = 400, logits: np.ndarray = LOGITS) -> list[int]:
    sampler = TokenSampler(params, eog=[], seed=params.seed or 0)
    sampler._remember = lambda token: None  # type: ignore[method-assign]  # no penalties
    return [sampler.sample(logits) for _ in range(n)]


def test_greedy_is_the_argmax_and_ignore_eos_bans_end_tokens() -> None:
    greedy = SamplingParams(temperature=0.0)
    assert TokenSampler(greedy, eog=[1], seed=0).sample(LOGITS) == 1
    banned = SamplingParams(temperature=0.0, ignore_eos=True)
    assert TokenSampler(banned, eog=[1], seed=0).sample(LOGITS) == 5


def test_top_k_top_p_and_min_p_cut_the_candidates() -> None:
    assert set(draws(SamplingParams(temperature=1.0, top_k=2, top_p=1.0, min_p=0.0))) == {1, 5}
    # softmax of the sorted logits: 0.37, 0.33, 0.22, ...; top_p 0.5 keeps two
    assert set(draws(SamplingParams(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0))) == {1, 5}
    # min_p 0.65: e^(2.5-3) = 0.61 of the best is cut, e^(2.9-3) = 0.90 stays
    assert set(draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.65))) == {1, 5}
    wide = set(draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)))
    assert {0, 1, 2, 3, 5} <= wide


def test_temperature_sharpens_and_flattens() -> None:
    def share_of_best(t: float) -> float:
        picks = draws(SamplingParams(temperature=t, top_k=0, top_p=1.0, min_p=0.0, seed=3), 2000)
        return picks.count(1) / len(picks)

    assert share_of_best(0.2) > share_of_best(1.0) > share_of_best(3.0)


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=11)
    assert draws(params, 50) == draws(params, 50)
    other = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=12)
    assert draws(params, 50) != draws(other, 50)


def test_a_top_k_past_the_vocabulary_means_no_top_k() -> None:
    """As in llama.cpp: top_k at or above the number of logits cuts nothing."""
    unlimited = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    for top_k in (LOGITS.size, LOGITS.size + 1, 100_000):
        params = SamplingParams(temperature=1.0, top_k=top_k, top_p=1.0, min_p=0.0, seed=7)
        assert draws(params, 200) == draws(unlimited, 200)


def test_every_64_bit_seed_seeds_a_generator_deterministically() -> None:
    def seeded(seed: int) -> list[int]:
        return draws(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed), 50)

    for seed in (-1, -(2**63), 2**63 - 1):
        assert seeded(seed) == seeded(seed)
    assert seeded(-1) != seeded(-2)
    assert seeded(-1) != seeded(1)


def test_penalties_push_away_from_repeated_tokens() -> None:
    flat = np.zeros(4)
    flat[2] = 1.0
    plain = TokenSampler(SamplingParams(temperature=0.0), eog=[], seed=0)
    assert [plain.sample(flat) for _ in range(3)] == [2, 2, 2]
    penalized = TokenSampler(SamplingParams(temperature=0.0, presence_penalty=1.5), eog=[], seed=0)
    first, second = penalized.sample(flat), penalized.sample(flat)
    assert (first, second) == (2, 0)
    freq = TokenSampler(SamplingParams(temperature=0.0, frequency_penalty=0.4), eog=[], seed=0)
    assert [freq.sample(flat) for _ in range(4)] == [2, 2, 2, 0]  # 1 - 3 * 0.4 < 0


def test_penalties_forget_tokens_past_the_window() -> None:
    sampler = TokenSampler(SamplingParams(temperature=0.0, presence_penalty=5.0), eog=[], seed=0)
    logits = np.zeros(PENALTY_WINDOW + 10)
    picks = [sampler.sample(logits) for _ in range(PENALTY_WINDOW + 1)]
    assert len(set(picks[:PENALTY_WINDOW])) == PENALTY_WINDOW  # each penalized in turn
    assert picks[PENALTY_WINDOW] == PENALTY_WINDOW  # token 0 left the window: fresh ones first


BYTES = {1: b"h", 2: b"\xc3", 3: b"\xa9", 4: b" w", 5: b"\xe4\xbd", 6: b"\xa0"}


def byte_decode(tokens: list[int]) -> str:
    return b"".join(BYTES[t] for t in tokens).decode("utf-8", "replace")


def test_incremental_text_holds_split_characters_until_whole() -> None:
    text = IncrementalText(byte_decode)
    out = [text.feed(t) for t in (1, 2, 3, 4, 5, 6)]
    assert out == ["h", "", "é", " w", "", "你"]
    assert text.flush() == ""


def test_incremental_text_flushes_an_unfinished_character_as_replacement() -> None:
    text = IncrementalText(byte_decode)
    assert text.feed(1) == "h" and text.feed(5) == ""
    assert text.flush() == "\ufffd"
