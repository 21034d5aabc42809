from __future__ import annotations

import random
from datetime import datetime

import pytest

from coordinator.sizing import (
    actions_in_key,
    balance,
    file_limit,
    in_window,
    is_batch_file,
    parse_hour,
    shard_action_share,
    shard_count,
)
from witple_batch.errors import ConfigError
from witple_batch.run_layout import InputFile
from witple_batch.settings import partition_root


def _files(n: int, seed: int = 1) -> list[InputFile]:
    rng = random.Random(seed)
    return [
        InputFile(
            f"user-actions/year=2025/month=01/day=15/hour={i % 24:02d}/batch-{i}-10-abcd{i:04d}.json",
            rng.randint(100, 100_000),
            f"etag{i}",
        )
        for i in range(n)
    ]


def test_only_batch_files_are_kept() -> None:
    assert is_batch_file("x/year=2025/batch-1-2-ab.json")
    assert is_batch_file("x/batch-1-2-ab.json.gz")
    assert not is_batch_file("x/batch-1.csv")
    assert not is_batch_file("x/_SUCCESS.json")
    assert not is_batch_file("x/batch-dir/other.json")


def test_balance_is_even_by_bytes_and_deterministic() -> None:
    files = _files(500)
    shards = balance(files, 7)
    loads = [sum(f.size for f in shard) for shard in shards]
    assert sorted(f.key for shard in shards for f in shard) == sorted(f.key for f in files)
    assert max(loads) - min(loads) <= max(f.size for f in files)
    assert balance(list(reversed(files)), 7) == shards


def test_shard_count_from_target_size_and_caps() -> None:
    files = [InputFile(f"batch-{i}.json", 10 * 1024 * 1024, "e") for i in range(10)]
    assert shard_count(files, None, 25.0) == 4
    assert shard_count(files, 50, 64.0) == 10  # never more shards than files
    assert shard_count([], 5, 64.0) == 0
    many = [InputFile(f"k{i}", 1 << 20, "e") for i in range(1_000)]
    assert shard_count(many, None, 1.0) == 1_000
    assert shard_count(many, None, 1.0, max_records=250_000) == 4  # shares of at least 100,000 actions
    assert shard_count(many, 50, 1.0, max_records=250_000) == 4
    assert shard_count(many, None, 1.0, max_records=1) == 1
    dense = [InputFile(f"p/batch-1-100000-{i:08d}.json.gz", 1 << 20, "e") for i in range(30)]  # gzip: 3 M actions
    assert shard_count(dense, None, 64.0) == 6  # by the names, 500,000 a shard; by bytes it would be 1


def test_each_shard_gets_its_share_of_the_runs_action_cap() -> None:
    assert shard_action_share(None, 4) is None  # no run cap: only MAX_ACTIONS_PER_SHARD
    assert shard_action_share(10_000_000, 4) == 3_125_000  # 1.25 x a quarter
    assert shard_action_share(560, 2) == 350
    assert shard_action_share(1, 3) == 1  # never 0: a shard always takes its first file
    assert shard_action_share(100, 0) is None


def test_since_until() -> None:
    files = _files(48)
    chosen = [f for f in files if in_window(f.key, parse_hour("2025-01-15T08"), datetime(2025, 1, 15, 12))]
    hours = [int(f.key.split("hour=")[1][:2]) for f in chosen]
    assert sorted(set(hours)) == [8, 9, 10, 11]
    assert not in_window("user-actions/batch-1-1-a.json", None, datetime(2025, 1, 15, 12))  # no partition: out
    assert in_window("user-actions/batch-1-1-a.json", None, None)
    assert parse_hour("2025-01-15T23:30+09:00") == datetime(2025, 1, 15, 14)


def test_max_records_counts_the_actions_in_the_file_names() -> None:
    prefix = "user-actions/year=2025/month=01/day=15/hour=14/"
    assert actions_in_key(prefix + "batch-1736950123354-250-560396de.json") == 250
    assert actions_in_key(prefix + "batch-1736950123354-7-560396de.json.gz") == 7
    assert actions_in_key(prefix + "batch-odd-name.json") == 1  # no count in the name: one action
    files = [InputFile(prefix + f"batch-17369501233{i:02d}-100-abcdef{i:02d}.json", 10, "e") for i in range(10)]
    assert file_limit(files, None, None) is None
    assert file_limit(files, None, 350) == 3  # 300 fit, the fourth file would make 400
    assert file_limit(files, 2, 350) == 2
    assert file_limit(files, None, 50) == 1  # a file larger than the cap still goes, alone
    assert file_limit(files, None, 5_000) is None  # all fit: no limit from records


def test_an_input_prefix_must_hold_the_hour_partitions() -> None:
    assert partition_root("S3_PREFIX", "/user-actions") == "user-actions/"
    assert partition_root("S3_PREFIX", "logs/fiscal_year=2025") == "logs/fiscal_year=2025/"
    with pytest.raises(ConfigError, match="S3_PREFIX must be the folder holding the year=YYYY/ partitions"):
        partition_root("S3_PREFIX", "user-actions/year=2025/month=01")
