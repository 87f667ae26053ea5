"""Staged environments: MPA_ENV chooses an overlay of sync.yaml; every overlay is validated whichever is chosen;
and the code location built under one environment syncs into that environment's schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mysql_pg_assets.core.settings import DatabaseUrl, Settings
from mysql_pg_assets.definitions import build_definitions
from mysql_pg_assets.sync.environments import merged
from mysql_pg_assets.sync.spec import SpecError, load_spec

BASE = {
    "source": {"database": "shop"},
    "target": {"schema": "shop"},
    "options": {"freshness": {"fail_after": "PT6H", "warn_after": "PT1H"}, "cdc_max_lag_s": 60},
    "tables": {"orders": {"deletes": "tombstone"}},
    "environments": {
        "dev": {"target": {"schema": "shop_dev"}},
        "staging": {"target": {"schema": "shop_staging"}, "options": {"freshness": {"fail_after": "PT12H"}}},
        "prod": {"options": {"cdc_max_lag_s": 30},
                 "tables": {"orders": {"checks": {"rows_valid": {"max_reject_rate": 0.001}}}}},
    },
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_each_environment_is_its_overlay_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, BASE)
    monkeypatch.delenv("MPA_ENV", raising=False)
    assert load_spec(path).target.schema_name == "shop"  # unset: the file without overlay
    monkeypatch.setenv("MPA_ENV", "staging")
    staging = load_spec(path)
    assert staging.target.schema_name == "shop_staging"
    assert staging.options.freshness.fail_after.total_seconds() == 12 * 3600
    assert staging.options.freshness.warn_after.total_seconds() == 3600  # merged key by key, not replaced
    monkeypatch.setenv("MPA_ENV", "prod")
    prod = load_spec(path)
    assert prod.target.schema_name == "shop" and prod.options.cdc_max_lag_s == 30
    assert prod.tables["orders"].deletes == "tombstone"  # the base's setting of the table kept
    assert prod.tables["orders"].checks.rows_valid.max_reject_rate == 0.001


def test_a_mistake_in_any_environment_fails_every_environment(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    broken = merged(BASE, {"environments": {"prod": {"options": {"cdc_max_lag_s": 0}}}})
    path = _write(tmp_path, broken)
    monkeypatch.setenv("MPA_ENV", "dev")
    with pytest.raises(SpecError, match=r"\(environment prod\): options.cdc_max_lag_s"):
        load_spec(path)


def test_an_environment_that_is_not_there_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPA_ENV", "production")
    with pytest.raises(SpecError, match="MPA_ENV=production: no such environment .*dev, prod, staging"):
        load_spec(_write(tmp_path, BASE))
    without = {k: v for k, v in BASE.items() if k != "environments"}
    with pytest.raises(SpecError, match="MPA_ENV=production, but the file has no environments"):
        load_spec(_write(tmp_path, without))
    monkeypatch.setenv("MPA_ENV", "dev")
    with pytest.raises(SpecError, match="environments.dev: an overlay cannot have environments"):
        load_spec(_write(tmp_path, merged(BASE, {"environments": {"dev": {"environments": {}}}})))


def test_the_code_location_syncs_into_the_chosen_environment(demo_source: DatabaseUrl, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = merged(BASE, {"source": {"database": demo_source.database}, "tables": {}})
    settings = Settings(mysql_url=demo_source, postgres_url=DatabaseUrl.parse("postgresql://unused@127.0.0.1/x"),
                        sync_config=_write(tmp_path, data))
    monkeypatch.setenv("MPA_ENV", "staging")
    keys = {key.path[0] for asset in build_definitions(settings).assets or [] for key in asset.keys}
    assert keys == {"shop_staging"}
