"""The gateway's routing file (TOML at ``ISTORE_GATEWAY_CONFIG``)::

    [models.small]                          # a model key: "use_case/small"
    base_url = "http://127.0.0.1:9000/v1"   # any OpenAI-compatible server
    model = "llama-3.1-8b-instruct"         # the name sent upstream (default: the key)
    api_key_env = "SMALL_API_KEY"           # optional: env var holding the upstream key
    timeout_s = 60                          # optional, seconds (default 60)

    [use_cases.support]
    default_model = "small"
    [use_cases.support.split]               # optional A/B split, sticky per session/user
    small = 0.9
    large = 0.1

    [use_cases."*"]                         # optional: any other use case
    default_model = "small"

A request's ``model`` is ``use_case/model_key`` or ``use_case``. A model key names the
model outright; a bare use case takes its split (the arm is logged as ``ab_campaign``)
or its default model. A use case that is neither listed nor covered by ``"*"`` is a
404, and so is an unknown model key.

``Routing`` is one parsed file; ``RoutingFile`` holds the current one and reloads it
when the file changes (checked at most once a second) or on ``SIGHUP``. A file that
does not parse leaves the previous routing in place and is reported in ``/readyz``."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from store.errors import NotFound, Unavailable, ValidationFailed
from store.schema import check_use_case

log = logging.getLogger("istore.gateway")

WILDCARD = "*"
DEFAULT_TIMEOUT_S = 60.0


class ConfigError(ValueError):
    """The routing file is wrong; the message names the key."""


@dataclass(frozen=True)
class Model:
    key: str
    base_url: str  # without a trailing slash
    model: str  # the name sent upstream
    api_key_env: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def api_key(self) -> str | None:
        """Read at each call, so a rotated key needs no reload."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class UseCase:
    key: str
    default_model: str | None = None
    split: tuple[tuple[str, float], ...] = ()  # (model key, cumulative weight in (0, 1])


@dataclass(frozen=True)
class Route:
    use_case: str
    model: Model
    arm: str | None = None  # the split's arm, when the split chose the model


@dataclass(frozen=True)
class Routing:
    models: dict[str, Model]
    use_cases: dict[str, UseCase]

    def route(
        self, requested: str, sticky: str | None = None, visible: frozenset[str] | None = None
    ) -> Route:
        """``use_case/model_key`` or ``use_case`` → where to send the call. ``sticky``
        (a session id or user) keeps one caller on one arm of a split. ``visible``: the
        use cases the caller may know of (None: all), the only ones an error lists."""
        use_case, _, key = requested.partition("/")
        if not use_case:
            raise ValidationFailed(
                "model: must be 'use_case/model_key' or 'use_case'", param="model"
            )
        try:
            check_use_case(use_case)
        except ValueError as exc:
            raise ValidationFailed(f"model: {exc}", param="model") from None
        uc = self.use_cases.get(use_case) or self.use_cases.get(WILDCARD)
        if uc is None:
            if not key and use_case in self.models:  # "small": a model key, no use case
                raise NotFound(
                    f"model: {use_case!r} is a model key of the routing file, not a use "
                    f"case: give 'use_case/{use_case}', e.g. "
                    f"{self.example(use_case)!r} (the form is 'use_case/model_key', or "
                    "'use_case' for its default model or split)",
                    param="model",
                    code="use_case_not_found",
                )
            names = [u for u in self.use_cases if u != WILDCARD]
            if visible is not None:
                names = [u for u in names if u in visible]
            listed = ", ".join(sorted(names)[:10])
            raise NotFound(
                f"model: use case {use_case!r} is not in the gateway's routing file "
                f"(its use cases: {listed or 'none'}; the form is 'use_case/model_key' "
                "or 'use_case')",
                param="model",
                code="use_case_not_found",
            )
        if key:
            model = self.models.get(key)
            if model is None:
                raise NotFound(
                    f"model: no model {key!r} in the gateway's routing file (its model "
                    f"keys: {', '.join(sorted(self.models)[:20])})",
                    param="model",
                    code="model_not_found",
                )
            return Route(use_case, model)
        if uc.split:
            arm = _pick(uc.split, f"{use_case}\0{sticky}" if sticky else None)
            return Route(use_case, self.models[arm], arm)
        if uc.default_model is None:
            raise NotFound(
                f"model: use case {use_case!r} has no default_model or split; "
                "name a model as 'use_case/model_key'",
                param="model",
                code="model_not_found",
            )
        return Route(use_case, self.models[uc.default_model])

    def example(self, model_key: str) -> str:
        """``use_case/model_key`` with a use case that routes to ``model_key`` (else any)."""
        named = [u for u in self.use_cases.values() if u.key != WILDCARD]
        for uc in named:
            if uc.default_model == model_key or any(arm == model_key for arm, _ in uc.split):
                return f"{uc.key}/{model_key}"
        return f"{named[0].key if named else 'support'}/{model_key}"


def _pick(split: tuple[tuple[str, float], ...], sticky: str | None) -> str:
    if sticky is None:
        x = random.random()
    else:
        digest = hashlib.blake2b(sticky.encode(), digest_size=8).digest()
        x = int.from_bytes(digest, "big") / 2**64
    for arm, upto in split:
        if x < upto:
            return arm
    return split[-1][0]


def parse(text: str) -> Routing:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    _only(raw, {"models", "use_cases"}, "")
    models = {k: _model(k, v) for k, v in _table(raw, "models").items()}
    if not models:
        raise ConfigError("models: define at least one [models.<key>] table")
    use_cases = {k: _use_case(k, v, models) for k, v in _table(raw, "use_cases").items()}
    return Routing(models, use_cases)


def load(path: str | Path) -> Routing:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return parse(text)


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a table")
    return value


def _only(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{name}: unknown key (expected one of {', '.join(sorted(allowed))})")


def _model(key: str, raw: Any) -> Model:
    where = f"models.{key}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    _only(raw, {"base_url", "model", "api_key_env", "timeout_s"}, where)
    base_url = raw.get("base_url")
    if not isinstance(base_url, str):
        raise ConfigError(f"{where}.base_url: required, the upstream's OpenAI-compatible URL")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}.base_url: must be an http:// or https:// URL")
    name = raw.get("model", key)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.model: must be a non-empty string")
    env = raw.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not env):
        raise ConfigError(f"{where}.api_key_env: must be the name of an environment variable")
    timeout = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigError(f"{where}.timeout_s: must be a positive number of seconds")
    return Model(key, base_url.rstrip("/"), name, env, float(timeout))


def _use_case(key: str, raw: Any, models: dict[str, Model]) -> UseCase:
    where = f"use_cases.{key}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    _only(raw, {"default_model", "split"}, where)
    if key != WILDCARD:
        try:
            check_use_case(key)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    default = raw.get("default_model")
    if default is not None and default not in models:
        raise ConfigError(f"{where}.default_model: no model {default!r} under [models]")
    split_raw = raw.get("split", {})
    if not isinstance(split_raw, dict):
        raise ConfigError(f"{where}.split: must be a table of model key = weight")
    weights: list[tuple[str, float]] = []
    for arm, w in split_raw.items():
        if arm not in models:
            raise ConfigError(f"{where}.split.{arm}: no model {arm!r} under [models]")
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"{where}.split.{arm}: the weight must be a number >= 0")
        if w > 0:
            weights.append((arm, float(w)))
    if split_raw and not weights:
        raise ConfigError(f"{where}.split: at least one weight must be positive")
    total = sum(w for _, w in weights)
    split, acc = [], 0.0
    for arm, w in weights:
        acc += w / total
        split.append((arm, acc))
    return UseCase(key, default, tuple(split))


class RoutingFile:
    """The current routing, reloaded when the file changes or on ``reload()``."""

    CHECK_EVERY_S = 1.0

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._routing: Routing | None = None
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.error: str | None = None
        self.loaded_at: float | None = None
        if path is not None:
            self.reload()

    def _stat(self) -> tuple[float, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def reload(self) -> bool:
        """Read the file again; on error keep the routing there was. True if loaded."""
        if self.path is None:
            return False
        with self._lock:
            stamp = self._stat()
            try:
                routing = load(self.path)
            except ConfigError as exc:
                self.error = str(exc)
                self._stamp = stamp
                log.error("gateway routing file %s: %s (keeping the previous routing)",
                          self.path, exc)  # fmt: skip
                return False
            self._routing, self._stamp, self.error = routing, stamp, None
            self.loaded_at = time.time()
            log.info("gateway routing loaded from %s: %d models, %d use cases",
                     self.path, len(routing.models), len(routing.use_cases))  # fmt: skip
            return True

    def current(self) -> Routing:
        """The routing to use now, or 503 saying how to configure one."""
        if self.path is None:
            raise Unavailable(
                "the gateway has no upstream model configured: write a routing file "
                "(see gateway.example.toml) and start the server with "
                "ISTORE_GATEWAY_CONFIG=PATH or `istore serve --gateway-config PATH`",
                code="gateway_not_configured",
                retry_after=60,
            )
        self._check()
        if self._routing is None:
            raise Unavailable(
                f"the gateway's routing file {self.path} could not be loaded: {self.error}",
                code="gateway_not_configured",
                retry_after=10,
            )
        return self._routing

    def _check(self, force: bool = False) -> None:
        """Reload when the file changed (looked at once a second, or now with ``force``)."""
        now = time.monotonic()
        if force or now - self._checked >= self.CHECK_EVERY_S:
            self._checked = now
            if self._stat() != self._stamp:
                self.reload()

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` (no key needed): counts, not the names of models or use cases.
        The file is looked at now, so a broken edit shows here without waiting for a call."""
        if self.path is not None:
            self._check(force=True)
        r = self._routing
        return {
            "configured": self.path is not None,
            "models": len(r.models) if r else 0,
            "use_cases": len(r.use_cases) if r else 0,
            "error": self.error,
        }
