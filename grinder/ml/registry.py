"""The registry's aliases and the promotion record: who is `champion`, who is `challenger`, and how they got there.

Loaders only ever read an alias (`models:/NAME@champion`); how it got to its version is recorded
beside it, as tags:

- on the registered model, `champion.version`, `champion.set_by` (`promote` or `rollback`) and
  `champion.at`: the version `grinder ml promote` / `rollback` last put under `champion`. An alias
  that points elsewhere was moved by hand (the MLflow UI): it still loads, and `grinder ml models`
  says "set by hand";
- on each version, its latest event as `promotion` (`promoted`, `refused`, `replaced`,
  `rolled back`, `reinstated`) and the time of each kind of event as `<event>_at` (UTC, ISO 8601 to
  the microsecond), with the gate's evidence under `promoted.*` or `refused.*` (see `grinder.ml.promote`).

The registry keeps one value per tag, so `history` holds each version's latest event of each kind;
every gate's two backtests stay in the tracking store as runs tagged `promotion_of=NAME/V`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grinder.errors import ConfigError, TrackingError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER = "champion", "challenger"
# Registered-model tags: the version our commands last made champion, by which command, when.
CHAMPION_VERSION, CHAMPION_SET_BY, CHAMPION_AT = "champion.version", "champion.set_by", "champion.at"
# Version tags: the latest event, and when each kind of event last happened to the version.
STATUS = "promotion"
EVENTS = ("promoted", "refused", "replaced", "rolled back", "reinstated")
PREVIOUS_CHAMPION = "previous_champion"  # on a promoted version: the version it replaced, or "none"
NONE = "none"
HAND = "set by hand"


def event_tag(event: str) -> str:
    """The version tag holding when `event` (one of EVENTS) last happened: `promoted_at`, `rolled_back_at`, ..."""
    return event.replace(" ", "_") + "_at"


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the microsecond (sorts as text in time order)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def open_registry(mlruns: Path) -> MlflowClient:
    """An MlflowClient on the registry of the store at `mlruns` (the same sqlite database as the runs)."""
    from grinder.track.mlflow_store import open_store

    return open_store(Path(mlruns))[0]


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    """Version `version` of registered model `name`; ConfigError when the model or the version does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise ConfigError(f"no registered model {name!r}: train one with `grinder ml train`") from None
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise ConfigError(f"registered model {name!r} has no version {version}") from None


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version `alias` points to in registered model `name`, None when it points nowhere."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases or {}
    except MlflowException:
        raise ConfigError(f"no registered model {name!r}: train one with `grinder ml train`") from None
    v = aliases.get(alias)
    return None if v is None else str(v)


def set_alias(client: MlflowClient, name: str, alias: str, version: str | int) -> None:
    """Point `alias` of registered model `name` at `version` (moving it from wherever it was)."""
    _write(lambda: client.set_registered_model_alias(name, alias, str(version)), f"set alias {alias!r} of {name}")


def clear_alias(client: MlflowClient, name: str, alias: str) -> None:
    """Remove `alias` from registered model `name`; nothing when it is not set."""
    if alias_version(client, name, alias) is not None:
        _write(lambda: client.delete_registered_model_alias(name, alias), f"clear alias {alias!r} of {name}")


def tag_version(client: MlflowClient, name: str, version: str | int, tags: Mapping[str, object]) -> None:
    """Set tags on one version (values as text)."""
    for k, v in tags.items():
        _write(lambda k=k, v=v: client.set_model_version_tag(name, str(version), k, str(v)),
               f"tag {name}/{version} {k}")  # fmt: skip


def make_champion(client: MlflowClient, name: str, version: str | int, set_by: str, at: str) -> None:
    """Point `champion` at `version` and record on the registered model that `set_by` (promote, rollback) did."""
    set_alias(client, name, CHAMPION, version)
    for k, v in {CHAMPION_VERSION: str(version), CHAMPION_SET_BY: set_by, CHAMPION_AT: at}.items():
        _write(lambda k=k, v=v: client.set_registered_model_tag(name, k, v), f"tag {name} {k}")


def champion_origin(client: MlflowClient, name: str) -> tuple[str | None, str | None]:
    """(the champion's version, how it got there: `promote`, `rollback` or HAND); (None, None) with no champion.

    HAND when the alias points to another version than the one our commands last put there (or
    they never did): someone moved it in the MLflow UI, or with MLflow's own client."""
    version = alias_version(client, name, CHAMPION)
    if version is None:
        return None, None
    tags = client.get_registered_model(name).tags or {}
    if tags.get(CHAMPION_VERSION) != version:
        return version, HAND
    return version, tags.get(CHAMPION_SET_BY, HAND)


@dataclass(frozen=True)
class Event:
    """One promotion event of a version, as its tags record it: when (UTC ISO), which version, what happened."""

    at: str
    version: str
    event: str
    detail: str


def history(client: MlflowClient, name: str) -> list[Event]:
    """The promotion events of registered model `name`'s versions, oldest first (each kind's latest per version)."""
    out = []
    for mv in versions(client, name):
        tags = dict(mv.tags or {})
        for event in EVENTS:
            at = tags.get(event_tag(event))
            if at:
                out.append(Event(at, str(mv.version), event, _detail(event, tags)))
    # A promotion and the replacement it causes share their time: the cause first.
    return sorted(out, key=lambda e: (e.at, EVENTS.index(e.event), int(e.version)))


def _detail(event: str, tags: Mapping[str, str]) -> str:
    if event == "promoted":
        return f"over {tags.get(PREVIOUS_CHAMPION, '?')}: {gate_text(tags, event)}"
    if event == "refused":
        return gate_text(tags, event)
    if event == "replaced":
        return f"by version {tags.get('replaced_by', '?')}"
    if event == "rolled back":
        return f"champion back to version {tags.get('rolled_back_to', '?')}"
    return "champion again by a rollback"


def gate_text(tags: Mapping[str, str], verdict: str) -> str:
    """A version's last gate with `verdict` (promoted, refused) in a few words: metric, values, baseline, window."""
    ev = {k.removeprefix(verdict + "."): v for k, v in tags.items() if k.startswith(verdict + ".")}
    if "metric" not in ev:
        return "no gate evidence"
    ours, theirs = _num(ev.get("challenger_value")), _num(ev.get("baseline_value"))
    return f"{ev['metric']} {ours} vs {theirs} of {ev.get('baseline', '?')} on {ev.get('window', '?')}"


def _num(text: str | None) -> str:
    try:
        return f"{float(text):.6g}"
    except (TypeError, ValueError):
        return str(text)


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of registered model `name`, by version number."""
    found = client.search_model_versions(f"name = '{_quoted(name)}'")
    return sorted(found, key=lambda mv: int(mv.version))


@dataclass(frozen=True)
class VersionInfo:
    """One version as `grinder ml models` lists it: aliases, what it predicts from what, and its promotion status."""

    version: str
    aliases: tuple[str, ...]
    label: str
    feature_set_version: str
    status: str


@dataclass(frozen=True)
class ModelInfo:
    """One registered model and its versions (oldest first)."""

    name: str
    versions: tuple[VersionInfo, ...]


def list_models(client: MlflowClient) -> list[ModelInfo]:
    """Every registered model in the store, by name, with its versions and their status."""
    out = []
    for rm in sorted(_registered_models(client), key=lambda m: m.name):
        champ, origin = champion_origin(client, rm.name)
        rows = []
        for mv in versions(client, rm.name):
            tags = dict(mv.tags or {})
            aliases = tuple(sorted(a for a, v in (rm.aliases or {}).items() if str(v) == str(mv.version)))
            rows.append(VersionInfo(str(mv.version), aliases, tags.get("label", "?"),
                                    tags.get("feature_set_version", "?"),
                                    version_status(tags, str(mv.version) == champ, origin)))  # fmt: skip
        out.append(ModelInfo(rm.name, tuple(rows)))
    return out


def version_status(tags: Mapping[str, str], is_champion: bool, origin: str | None) -> str:
    """A version's promotion status in a few words (`origin`: how the champion got there, champion_origin's)."""
    last = tags.get(STATUS)
    if is_champion:
        if origin == HAND:
            promoted = tags.get(event_tag("promoted"))
            return f"champion, {HAND}" + (f" (promoted by a gate earlier, {promoted})" if promoted
                                          else " (no gate evidence)")  # fmt: skip
        if origin == "rollback":
            return f"champion again by a rollback ({tags.get(event_tag('reinstated'), '?')})"
        return f"champion: promoted {tags.get(event_tag('promoted'), '?')}, {gate_text(tags, 'promoted')}"
    if last is None:
        return "never judged"
    if last in ("promoted", "reinstated"):  # the alias was moved away by hand afterwards
        return f"{last} {tags.get(event_tag(last), '?')}, champion moved away by hand"
    if last == "refused":
        return f"refused {tags.get(event_tag('refused'), '?')}: {gate_text(tags, 'refused')}"
    return f"{last} {tags.get(event_tag(last), '?')}: {_detail(last, tags)}"


def _registered_models(client: MlflowClient) -> list:
    """All registered models, every page."""
    out, token = [], None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def _quoted(name: str) -> str:
    """A name inside a single-quoted MLflow search string."""
    return name.replace("\\", "\\\\").replace("'", "\\'")


def _write(call, what: str) -> None:
    """One registry write; TrackingError (the store refused it) names what was being done."""
    from mlflow.exceptions import MlflowException

    try:
        call()
    except MlflowException as e:
        raise TrackingError(f"cannot {what}: {e.message.splitlines()[0] if e.message else e.error_code}") from None
