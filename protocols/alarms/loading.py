"""Loading rule sets from YAML, checking them against their profile, and applying overrides.

Every problem is a ConfigError naming the file (or override) and the place inside it:
``rules[2].condition.above`` in a rule-set file, ``rules.door-open-long.for_s`` in an
override (overrides name rules by id, so their places do too).

Overrides are per site and per device. Each names rules by id and holds, for each, a JSON
Merge Patch (RFC 7396) of that rule: mappings merge key by key, ``null`` removes a key,
anything else (numbers, lists) replaces. A patch whose ``condition.kind`` differs from the
rule's replaces the whole condition. A patch for an id the rule set does not have adds a
rule (it must then be complete). ``enabled: false`` disables a rule. Layers apply in order:
profile rules, then the site's, then the device's; the result of each layer is validated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.alarms.model import (
    CONDITION_KINDS,
    FaultBits,
    FaultCode,
    Flags,
    Range,
    RuleId,
    RuleSet,
    Threshold,
)
from protocols.errors import ConfigError
from protocols.profile import Profile, load_profiles, read_yaml
from protocols.registers import DataType

RULES_DIR = Path(__file__).parent / "rules"
OVERRIDES_SCHEMA = "wuye.alarm-overrides/1"
_INTEGER = {
    DataType.INT16,
    DataType.UINT16,
    DataType.INT32,
    DataType.UINT32,
    DataType.INT64,
    DataType.UINT64,
}
_BITS = {DataType.BOOL, DataType.BIT}


def _place(loc: Iterable[Any], ids: Sequence[str] | None = None) -> str:
    """``rules[2].condition.above`` from a pydantic location.

    The tag pydantic inserts after ``condition`` (the condition's kind) and its ``[key]``
    marker are dropped; with ``ids``, a rule index is shown as its id
    (``rules.door-open-long``).
    """
    out = ""
    prev: Any = None
    for part in loc:
        if (prev == "condition" and part in CONDITION_KINDS) or part == "[key]":
            prev = part
            continue
        if isinstance(part, int):
            if prev == "rules" and ids is not None and part < len(ids):
                out += f".{ids[part]}"
            elif prev in ("codes", "bits"):  # a mapping keyed by numbers
                out += f".{part}"
            else:
                out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
        prev = part
    return out


def _config_error(
    source: str, exc: ValidationError, ids: Sequence[str] | None = None
) -> ConfigError:
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    return ConfigError(source, _place(err["loc"], ids), msg)


def parse_rule_set(data: Any, source: str) -> RuleSet:
    """``data`` (parsed YAML or JSON) as a rule set; ConfigError naming ``source`` and place."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "", "a rule set must be a mapping")
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        raise _config_error(source, exc) from exc


def check_rule_set(rules: RuleSet, profile: Profile, source: str, *, by_id: bool = False) -> None:
    """Refuse rules that read points ``profile`` lacks, or points of the wrong type.

    Thresholds and ranges need numbers, fault codes and bits need integers (and bits that
    fit), flags need bool or bit points.
    """
    if rules.profile != profile.name:
        raise ConfigError(source, "profile", f"{rules.profile!r} is not profile {profile.name!r}")
    types = {p.name: p.type for p in profile.points}
    for i, rule in enumerate(rules.rules):
        where = f"rules.{rule.id}.condition" if by_id else f"rules[{i}].condition"
        c = rule.condition
        if isinstance(c, Flags):
            for name in c.points:
                if name not in types:
                    raise ConfigError(source, f"{where}.points.{name}", _unknown(name, profile))
                if types[name] not in _BITS:
                    raise ConfigError(
                        source,
                        f"{where}.points.{name}",
                        f"a flag must be a bool or bit point, not {types[name]}",
                    )
            continue
        point = getattr(c, "point", None)
        if point is None:
            continue
        if point not in types:
            raise ConfigError(source, f"{where}.point", _unknown(point, profile))
        t = types[point]
        if isinstance(c, Threshold | Range) and t in _BITS:
            raise ConfigError(source, f"{where}.point", f"{c.kind} needs a number, not a {t}")
        if isinstance(c, FaultCode | FaultBits) and t not in _INTEGER:
            raise ConfigError(source, f"{where}.point", f"{c.kind} needs an integer, not {t}")
        if isinstance(c, FaultBits):
            width = 16 * t.width
            too_high = [b for b in c.bits if b >= width]
            if too_high:
                raise ConfigError(
                    source, f"{where}.bits", f"bit {too_high[0]} is past the {width} bits of {t}"
                )


def _unknown(name: str, profile: Profile) -> str:
    return f"profile {profile.name!r} has no point {name!r}"


def load_rule_set(path: Path, profile: Profile | None = None) -> RuleSet:
    """The rule set in ``path`` (named after its profile), checked against ``profile``."""
    rules = parse_rule_set(read_yaml(path), str(path))
    if rules.profile != path.stem:
        raise ConfigError(str(path), "profile", f"{rules.profile!r} must match the file name")
    if profile is not None:
        check_rule_set(rules, profile, str(path))
    return rules


def load_rule_sets(
    *dirs: Path, profiles: Mapping[str, Profile] | None = None
) -> dict[str, RuleSet]:
    """Every ``*.yaml`` rule set of the shipped directory and of ``dirs``; later ones win.

    Each is checked against its profile in ``profiles`` (default: the shipped profiles); a
    rule set for a profile that does not exist is refused.
    """
    known = load_profiles() if profiles is None else profiles
    found: dict[str, RuleSet] = {}
    for d in (RULES_DIR, *dirs):
        for path in sorted(d.glob("*.yaml")):
            if path.stem not in known:
                raise ConfigError(str(path), "profile", f"there is no profile {path.stem!r}")
            found[path.stem] = load_rule_set(path, known[path.stem])
    return found


# --- overrides -------------------------------------------------------------------------


class _OverridesDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: Literal["wuye.alarm-overrides/1"] = Field(alias="schema")
    profile: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    rules: dict[RuleId, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-rule merge patches of one profile's rule set, from one site or one device.

    ``source`` names where they came from (a file, ``site sunny-garden``) in errors.
    """

    profile: str
    patches: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "overrides"


def parse_overrides(data: Any, source: str) -> Overrides:
    """``data`` (parsed YAML or JSON) as overrides; ConfigError naming ``source`` and place."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "", "overrides must be a mapping")
    rules = data.get("rules")
    if isinstance(rules, Mapping):
        for rid, patch in rules.items():
            if patch is None:
                raise ConfigError(source, f"rules.{rid}", "use {enabled: false} to disable a rule")
    try:
        doc = _OverridesDoc.model_validate(data)
    except ValidationError as exc:
        raise _config_error(source, exc) from exc
    patches = {rid: _json_keys(patch) for rid, patch in doc.rules.items()}
    return Overrides(profile=doc.profile, patches=patches, source=source)


def load_overrides(path: Path) -> Overrides:
    return parse_overrides(read_yaml(path), str(path))


def _json_keys(value: Any) -> Any:
    """Mapping keys as strings, as in JSON, so ``{12: ...}`` from YAML patches ``"12"``."""
    if isinstance(value, Mapping):
        return {str(k): _json_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_keys(v) for v in value]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch of ``target`` by ``patch``; neither is modified."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _patch_rule(rule: Mapping[str, Any], patch: Mapping[str, Any]) -> Any:
    cond = patch.get("condition")
    base = dict(rule)
    if (
        isinstance(cond, Mapping)
        and cond.get("kind", base["condition"]["kind"]) != base["condition"]["kind"]
    ):
        base["condition"] = {}  # another kind of condition: nothing of the old one applies
    return merge_patch(base, patch)


def apply_overrides(base: RuleSet, overrides: Overrides, profile: Profile | None = None) -> RuleSet:
    """``base`` with ``overrides`` merged in, validated (and checked against ``profile``)."""
    source = overrides.source
    if overrides.profile != base.profile:
        raise ConfigError(
            source,
            "profile",
            f"overrides for {overrides.profile!r} cannot apply to {base.profile!r}",
        )
    doc = base.model_dump(mode="json", by_alias=True)
    rules: list[Any] = list(doc["rules"])
    index = {r["id"]: i for i, r in enumerate(rules)}
    for rid, patch in overrides.patches.items():
        if patch.get("id", rid) != rid:
            raise ConfigError(source, f"rules.{rid}.id", "cannot change a rule's id")
        if rid in index:
            rules[index[rid]] = _patch_rule(rules[index[rid]], patch)
        else:
            rules.append(merge_patch({"id": rid}, patch))
    ids = [r.get("id", "?") if isinstance(r, Mapping) else "?" for r in rules]
    try:
        merged = RuleSet.model_validate({**doc, "rules": rules})
    except ValidationError as exc:
        raise _config_error(source, exc, ids) from exc
    if profile is not None:
        check_rule_set(merged, profile, source, by_id=True)
    return merged


def resolve_rules(
    base: RuleSet,
    site: Overrides | None = None,
    device: Overrides | None = None,
    *,
    profile: Profile | None = None,
) -> RuleSet:
    """The rules of one device: its profile's ``base``, then ``site``, then ``device`` overrides.

    Raises ConfigError naming the override (and the rule and field) that made a layer
    invalid: each layer must be valid on its own.
    """
    rules = base
    for layer in (site, device):
        if layer is not None:
            rules = apply_overrides(rules, layer, profile)
    return rules
