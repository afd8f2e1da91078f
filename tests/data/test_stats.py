import json

import numpy as np
import pytest

from tests.data.synthetic import MemoryDataset, memory_dataset
from vlaforge.actions.normalize import NormalizationError
from vlaforge.data.episode import DataError
from vlaforge.data.stats import (
    RunningStats,
    aggregate_stats,
    compute_dataset_stats,
    default_action_mask,
    feature_stats,
    load_dataset_statistics,
    openvla_entry,
    save_dataset_statistics,
)


def test_small_data_gives_exact_numpy_statistics_across_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(1000, 3)) * [1, 5, 0.1] + [0, 2, -1]
    stats = RunningStats()
    for chunk in np.array_split(data, 7):
        stats.update(chunk)
    out = stats.result()
    assert stats.is_exact
    for key, q in (("q01", 0.01), ("q10", 0.1), ("q50", 0.5), ("q90", 0.9), ("q99", 0.99)):
        np.testing.assert_allclose(out[key], np.quantile(data, q, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["mean"], data.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(out["std"], data.std(axis=0), atol=1e-12)
    np.testing.assert_array_equal(out["min"], data.min(axis=0))
    np.testing.assert_array_equal(out["max"], data.max(axis=0))
    assert out["count"].tolist() == [1000]


def test_large_data_uses_bounded_memory_and_close_quantile_estimates():
    rng = np.random.default_rng(1)
    stats = RunningStats(exact_limit=2000)
    total = []
    for _ in range(40):
        chunk = rng.uniform(0, 1, size=(2500, 2))
        stats.update(chunk)
        total.append(chunk)
    data = np.concatenate(total)
    out = stats.result()
    assert not stats.is_exact and stats._sample.shape[0] == 2000  # memory stays at exact_limit rows
    # uniform(0, 1): the q-quantile is q; 2000 samples put the rank within ~0.5 percentage points (5 sigma)
    np.testing.assert_allclose(out["q01"], 0.01, atol=0.005)
    np.testing.assert_allclose(out["q99"], 0.99, atol=0.005)
    np.testing.assert_allclose(out["q50"], 0.5, atol=0.02)
    np.testing.assert_allclose(out["mean"], data.mean(axis=0), atol=1e-12)  # exact regardless of size
    np.testing.assert_allclose(out["std"], data.std(axis=0), atol=1e-12)
    assert out["count"].tolist() == [100_000]


def test_aggregate_matches_the_statistics_of_the_union():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, (300, 3)), rng.normal(4, 2, (700, 3))
    merged = aggregate_stats([feature_stats(a), feature_stats(b)])
    union = np.concatenate([a, b])
    np.testing.assert_allclose(merged["mean"], union.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(merged["std"], union.std(axis=0), atol=1e-12)
    np.testing.assert_array_equal(merged["min"], union.min(axis=0))
    assert merged["count"].tolist() == [1000]


def test_dataset_statistics_json_has_the_original_schema(tmp_path):
    ds = memory_dataset("libero_spatial_no_noops", lengths=(20, 30))
    stats = compute_dataset_stats(ds, progress=False)
    entry = openvla_entry(stats, ds.num_episodes)
    assert set(entry) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert set(entry["action"]) == {"mean", "std", "max", "min", "q01", "q99", "mask"}
    assert entry["action"]["mask"] == [True] * 6 + [False]
    assert (entry["num_transitions"], entry["num_trajectories"]) == (50, 2)
    actions = np.concatenate([ds.episode(i).actions for i in range(2)]).astype(np.float64)
    np.testing.assert_allclose(entry["action"]["q99"], np.quantile(actions, 0.99, axis=0))
    path = save_dataset_statistics({ds.name: entry}, tmp_path)
    assert path.name == "dataset_statistics.json"
    assert load_dataset_statistics(tmp_path) == json.loads(path.read_text())
    assert default_action_mask(4) == [True] * 4


def test_bad_statistics_files_and_data_are_reported(tmp_path):
    (tmp_path / "dataset_statistics.json").write_text(json.dumps({"bridge": {"action": {"q01": [0.0]}}}))
    with pytest.raises(NormalizationError, match="'bridge'.*no 'q99'"):
        load_dataset_statistics(tmp_path)
    (tmp_path / "dataset_statistics.json").write_text(json.dumps({"bridge": {"proprio": {}}}))
    with pytest.raises(DataError, match="'bridge' has no 'action'"):
        load_dataset_statistics(tmp_path)
    ds = memory_dataset("nan_data", lengths=(4, 4))
    ds._episodes[1]["action"][2, 3] = np.nan
    with pytest.raises(DataError, match=r"'nan_data', episode 1.*'action'.*NaN.*\[\[2, 3\]\]"):
        compute_dataset_stats(ds, progress=False)
    with pytest.raises(DataError, match="mask has 3 entries but the actions have 7"):
        openvla_entry(compute_dataset_stats(memory_dataset("x"), progress=False), 2, [True] * 3)
    empty = MemoryDataset("empty", [])
    with pytest.raises(DataError, match="no rows"):
        compute_dataset_stats(empty, progress=False)
