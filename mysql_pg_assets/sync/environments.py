"""Staged environments: one ``sync.yaml`` for dev, staging and prod, ``MPA_ENV`` choosing the overlay.

    environments:                 # each is merged over the rest of the file
      dev:     {target: {schema: shop_dev}}
      staging: {target: {schema: shop_staging}, options: {freshness: {fail_after: PT12H}}}
      prod:    {options: {freshness: {fail_after: PT2H}, cdc_max_lag_s: 30},
                tables: {orders: {checks: {rows_valid: {max_reject_rate: 0.001}}}}}

Merging: mappings merge key by key, at every depth; a list or a value replaces the base's. ``MPA_ENV``
unset gives the file without any overlay (a laptop); ``MPA_ENV`` set to a name the file does not have,
or set while the file has no ``environments``, is an error rather than a silent fallback to the base.
Every environment is merged and validated whichever one is chosen, so a mistake in prod's overlay fails
``make check`` and CI in dev already. Secrets stay out of the file: each deployment sets its own
``MYSQL_URL``, ``POSTGRES_URL`` and ``ALERT_WEBHOOK_URL``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ENV_VARIABLE = "MPA_ENV"


def merged(base: object, overlay: object) -> object:
    """``overlay`` over ``base``: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        result = dict(base)
        for key, value in overlay.items():
            result[key] = merged(base[key], value) if key in base else copy.deepcopy(value)
        return result
    return copy.deepcopy(overlay)


def current() -> str | None:
    return os.environ.get(ENV_VARIABLE) or None


def resolve(data: object, origin: str, validate: Callable[[object, str], T],
            error: Callable[[str], Exception]) -> T:
    """The spec for the environment ``MPA_ENV`` names, every environment validated with ``validate``."""
    chosen = current()
    if not isinstance(data, dict) or "environments" not in data:
        if chosen:
            raise error(f"{origin}: {ENV_VARIABLE}={chosen}, but the file has no environments: section "
                        f"(add environments: {{{chosen}: {{...}}}}, or unset {ENV_VARIABLE})")
        return validate(data, origin)
    base = {key: value for key, value in data.items() if key != "environments"}
    environments = data["environments"]
    if not isinstance(environments, dict) or not all(isinstance(v, dict) for v in environments.values()):
        raise error(f"{origin}: environments: a mapping of names to overlays, e.g. environments: "
                    f"{{prod: {{target: {{schema: shop}}}}}}")
    for name, overlay in environments.items():
        if "environments" in overlay:
            raise error(f"{origin}: environments.{name}: an overlay cannot have environments of its own")
        validate(merged(base, overlay), f"{origin} (environment {name})")
    if chosen is None:
        return validate(base, origin)
    if chosen not in environments:
        raise error(f"{origin}: {ENV_VARIABLE}={chosen}: no such environment (the file has: "
                    f"{', '.join(map(str, environments)) or 'none'})")
    return validate(merged(base, environments[chosen]), f"{origin} (environment {chosen})")
