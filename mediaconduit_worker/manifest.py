"""Provider and service manifests: as tolerant as the real published ones, strict about types."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .capabilities import MediaCapability, parse_capability
from .errors import InvalidInputError, ManifestError, MediaConduitError

PROVIDER_MANIFEST = "MediaConduit.provider.yml"
SERVICE_MANIFEST = "MediaConduit.service.yml"
#: Manifests and compose files are small; a bigger one is refused before it is parsed.
MAX_YAML_BYTES = 1 << 20
#: Deeper nesting would exhaust the YAML composer's recursion.
MAX_YAML_DEPTH = 64
_PEP440_OP = re.compile(r"^\s*(==|>=|<=|~=|!=|>|<|===)")
_BARE_VERSION = re.compile(r"^\s*\d+(\.\d+)*\s*$")
_PACKAGE_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML without anchors or aliases (an alias bomb expands without limit, an alias to its own
    anchor never ends) and with nesting capped (the composer recurses)."""

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self.name = name  # error marks say which file
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not supported",
                                              event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels",
                                              event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(path: Path, where: str, error: type[MediaConduitError] = ManifestError) -> Any:
    """The one YAML reader of provider manifests, service manifests and compose files: at most
    ``MAX_YAML_BYTES`` of UTF-8, safe tags only, no anchors or aliases; every failure is ``error``
    naming ``where`` (the origin and the file)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise error(f"{where} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise error(f"{where} is larger than {MAX_YAML_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None
    loader = _StrictLoader(text, path.name)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise error(f"{where} is not valid YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a scalar the constructor cannot build
        raise error(f"{where} is not valid YAML: {type(exc).__name__}: {exc}") from None
    finally:
        loader.dispose()


def _name_not_path(value: str) -> str:
    """An ``id`` names things (modules, images, containers) and must never steer a path."""
    if not value.strip() or len(value) > 200 or value.startswith((".", "-")) or any(
            c in "/\\" or ord(c) < 32 for c in value):
        raise ValueError(f"{value!r} must be a name, not a path (no '/', '\\', control characters, "
                         "leading '.' or '-')")
    return value


ManifestId = Annotated[str, AfterValidator(_name_not_path)]


def requirement(name: str, spec: str) -> str:
    """A manifest dependency as a pip requirement: a PEP 508 name and a version specifier, nothing
    pip would read as an option, a URL, a path or a direct reference."""
    if not _PACKAGE_NAME.match(name):
        raise ValueError(f"field 'dependencies.{name}': {name!r} is not a Python package name")
    spec = spec.strip()
    if spec in ("", "*", "latest"):
        text = name
    elif _BARE_VERSION.match(spec):
        text = f"{name}=={spec.strip()}"
    elif _PEP440_OP.match(spec):
        text = f"{name}{spec}"
    else:
        raise ValueError(f"field 'dependencies.{name}': {spec!r} is not a Python version specifier")
    try:
        req = Requirement(text)
    except InvalidRequirement:
        raise ValueError(f"field 'dependencies.{name}': {spec!r} is not a Python version specifier") from None
    if req.url or req.name != name:
        raise ValueError(f"field 'dependencies.{name}': {spec!r} is not a Python version specifier")
    return str(req)


def _split_capabilities(values: Any) -> tuple[list[MediaCapability], list[str]]:
    """Known capabilities (any spelling) and the other words, kept apart."""
    if values is None:
        return [], []
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise ValueError("field 'capabilities': must be a list of capability names")
    known: list[MediaCapability] = []
    other: list[str] = []
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"field 'capabilities': {v!r} is not a string")
        cap = parse_capability(v)
        if cap is None:
            other.append(v)
        elif cap not in known:
            known.append(cap)
    return known, other


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _capabilities(cls, data: Any) -> Any:
        if isinstance(data, dict) and "capabilities" in data:
            data = dict(data)
            known, other = _split_capabilities(data["capabilities"])
            data["capabilities"], data["other_capabilities"] = known, other
        return data


class ModelEntry(_Tolerant):
    id: str
    name: str | None = None
    description: str | None = None
    capabilities: list[MediaCapability] = Field(default_factory=list)
    other_capabilities: list[str] = Field(default_factory=list)
    input_types: list[str] = Field(default_factory=list, alias="inputTypes")
    output_types: list[str] = Field(default_factory=list, alias="outputTypes")
    parameters: dict[str, Any] = Field(default_factory=dict)
    cache: bool = False
    """Deterministic: the worker may answer an identical job from its result cache."""
    digital_source_type: str | None = Field(default=None, alias="digitalSourceType")
    """This model's IPTC digital source type for Content Credentials, over the provider's."""
    c2pa_action: Literal["c2pa.edited", "c2pa.transcoded", "c2pa.converted"] | None = Field(default=None, alias="c2paAction")
    """The C2PA action its output of an input medium records (else ``c2pa.edited`` for the same kind of
    media, ``c2pa.converted`` for another); output made from no media is ``c2pa.created``."""


class ProviderManifest(_Tolerant):
    id: ManifestId
    name: str
    description: str | None = None
    version: str | None = None
    author: str | None = None
    type: str = "local"
    capabilities: list[MediaCapability] = Field(default_factory=list)
    other_capabilities: list[str] = Field(default_factory=list)
    models: list[ModelEntry] = Field(default_factory=list)
    dynamic_models: bool = False
    model_defaults: dict[str, Any] = Field(default_factory=dict)
    service_url: str | None = Field(default=None, alias="serviceUrl")
    main: str | None = None
    export_name: str | None = Field(default=None, alias="exportName")
    dependencies: dict[str, str] = Field(default_factory=dict)
    digital_source_type: str | None = Field(default=None, alias="digitalSourceType")
    """IPTC digital source type its outputs' Content Credentials declare (a term such as
    ``algorithmicMedia``, or ``none``); unset means ``trainedAlgorithmicMedia``, the AI models' own."""

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in ("local", "remote"):
                raise ValueError(f"must be 'local' or 'remote', not {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _models_and_dependencies(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        models = data.get("models")
        if isinstance(models, dict):
            if "dynamic" in models or not all(isinstance(v, dict) for v in models.values()):
                # Ollama style: `models: {dynamic: true, capabilities: [...], parameters: {...}}`.
                data["dynamic_models"] = bool(models.get("dynamic", True))
                data["model_defaults"] = {k: v for k, v in models.items() if k != "dynamic"}
                data["models"] = []
            else:
                data["models"] = [{"id": k, **v} for k, v in models.items()]
        elif models is None:
            data.pop("models", None)
        deps = data.get("dependencies")
        if isinstance(deps, list):
            merged: dict[str, Any] = {}
            for item in deps:
                if isinstance(item, dict):
                    merged.update(item)
                elif isinstance(item, str):
                    name = item.split(";")[0]
                    for op in ("==", ">=", "<=", "~=", "!=", ">", "<", "["):
                        name = name.split(op)[0]
                    merged[name.strip()] = item[len(name.strip()) :].strip()
                else:
                    raise ValueError(f"dependencies: entry {item!r} is neither a string nor a map")
            data["dependencies"] = merged
        elif deps is None:
            data.pop("dependencies", None)
        if isinstance(data.get("dependencies"), dict):
            data["dependencies"] = {k: "" if v is None else str(v) for k, v in data["dependencies"].items()}
        return data

    def requirements(self, origin: str) -> list[str]:
        """The ``dependencies`` as pip requirements, sorted; checked when installing, so a manifest with
        npm-style entries (as some published ones have) still loads."""
        try:
            return sorted(requirement(name, spec) for name, spec in self.dependencies.items())
        except ValueError as exc:
            raise ManifestError(f"{origin}: {PROVIDER_MANIFEST}: {exc}") from None

    def model_entry(self, model_id: str) -> ModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)

    def model_cached(self, model_id: str) -> bool:
        """Whether the model's entry (or, for dynamic models, the ``models`` defaults) says ``cache: true``."""
        entry = self.model_entry(model_id)
        return entry.cache if entry is not None else self.model_defaults.get("cache") is True

    def source_type_of(self, model_id: str) -> str:
        """The IPTC digital source type the model's outputs declare (its entry's, the provider's, else
        ``trainedAlgorithmicMedia``); ``none`` means none is declared."""
        entry = self.model_entry(model_id)
        own = entry.digital_source_type if entry is not None else None
        return own or self.digital_source_type or "trainedAlgorithmicMedia"

    def action_of(self, model_id: str) -> str | None:
        """The C2PA action the model's manifest entry declares for a transform of media, if any."""
        entry = self.model_entry(model_id)
        return entry.c2pa_action if entry is not None else None

    def parameters_of(self, model_id: str) -> dict[str, dict[str, Any]]:
        """The options a model declares (its entry's ``parameters``, else the ``models`` defaults'), each a
        spec such as ``{type: string, enum: [...]}``; empty when it declares none."""
        entry = self.model_entry(model_id)
        declared = entry.parameters if entry is not None else self.model_defaults.get("parameters")
        return {k: v for k, v in (declared or {}).items() if isinstance(v, dict)} if isinstance(declared, dict) else {}

    def capability_of(self, model_id: str) -> MediaCapability | None:
        """The queue a model's jobs go to: its entry's first capability, else the provider's first."""
        entry = self.model_entry(model_id)
        if entry is not None and entry.capabilities:
            return entry.capabilities[0]
        caps = _split_capabilities(self.model_defaults.get("capabilities"))[0] or self.capabilities
        return caps[0] if caps else None


class HealthCheck(_Tolerant):
    endpoint: str | None = None
    url: str | None = None
    startup_timeout: float | None = Field(default=None, alias="startupTimeout")


class DockerSection(_Tolerant):
    compose_file: str | None = Field(default=None, alias="composeFile")
    service_name: str | None = Field(default=None, alias="serviceName")
    image: str | None = None
    build: str | dict[str, Any] | None = None
    ports: list[int | str] = Field(default_factory=list)
    health_check: HealthCheck | None = Field(default=None, alias="healthCheck")
    environment: dict[str, Any] | list[str] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    """Container limits: ``memory`` (``1g``), ``cpus`` (cores), ``pids``; unset ones come from settings."""


class ServiceManifest(_Tolerant):
    id: ManifestId
    name: str
    description: str | None = None
    version: str | None = None
    capabilities: list[MediaCapability] = Field(default_factory=list)
    other_capabilities: list[str] = Field(default_factory=list)
    docker: DockerSection

    @model_validator(mode="before")
    @classmethod
    def _id_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "id" not in data and isinstance(data.get("name"), str):
            data = {**data, "id": data["name"]}
        return data


def _format_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': {msg}" if loc else msg)
    return "; ".join(parts)


def _load(model: type[BaseModel], root: Path, name: str, origin: str) -> Any:
    path = Path(root) / name
    if not path.is_file():
        raise ManifestError(f"{origin}: no {name} at the repository root")
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise ManifestError(f"{origin}: {name} is a link to a file outside the repository")
    data = load_yaml(path, f"{origin}: {name}")
    if not isinstance(data, dict):
        raise ManifestError(f"{origin}: {name} must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{origin}: {name}: {_format_errors(exc)}") from None


def load_provider_manifest(root: Path, origin: str | None = None) -> ProviderManifest:
    return _load(ProviderManifest, root, PROVIDER_MANIFEST, origin or str(root))


def load_service_manifest(root: Path, origin: str | None = None) -> ServiceManifest:
    return _load(ServiceManifest, root, SERVICE_MANIFEST, origin or str(root))


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "object": (dict,),
    "array": (list, tuple), "null": (type(None),)}


def _type_ok(value: Any, names: list[str]) -> bool:
    for name in names:
        kinds = _JSON_TYPES.get(name)
        if kinds is None:  # a type this check does not know: the provider's to judge
            return True
        if isinstance(value, kinds) and not (isinstance(value, bool) and name in ("integer", "number")):
            return True
    return False


def refuse_bad_options(parameters: dict[str, dict[str, Any]], options: dict[str, Any], who: str) -> None:
    """A declared option of the wrong ``type``, outside its ``enum`` or its ``minimum``/``maximum`` is refused
    (``InvalidInputError`` naming the option and what the manifest declares) before the model is called.
    A null value means "the default" and passes; a model that declares nothing takes anything."""
    for name, spec in parameters.items():
        value = options.get(name)
        if value is None:
            continue
        kind = spec.get("type")
        names = [kind] if isinstance(kind, str) else [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []
        if names and not _type_ok(value, names):
            raise InvalidInputError(f"option {name!r} of {who} must be {' or '.join(names)} (its manifest's parameters), "
                                    f"got {type(value).__name__} {value!r}"[:300])
        if isinstance(spec.get("enum"), list) and value not in spec["enum"]:
            raise InvalidInputError(f"option {name!r} of {who} must be one of {spec['enum']!r}, got {value!r}"[:300])
        for bound, outside in (("minimum", lambda v, b: v < b), ("maximum", lambda v, b: v > b)):
            limit = spec.get(bound)
            if isinstance(limit, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and outside(value, limit):
                raise InvalidInputError(f"option {name!r} of {who} must be at {'least' if bound == 'minimum' else 'most'} "
                                        f"{limit}, got {value!r}")


def undeclared_options(parameters: dict[str, dict[str, Any]], options: dict[str, Any], who: str) -> list[str]:
    """A warning per option a model that declares its parameters does not declare (a misspelling, most often;
    but providers also read aliases and keys they do not list, so these are passed on, not refused)."""
    if not parameters:
        return []
    from difflib import get_close_matches

    warnings = []
    for name in options:
        if name in parameters:
            continue
        close = get_close_matches(name, list(parameters), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warnings.append(f"option {name!r} is not a declared parameter of {who} ({', '.join(parameters)}), passed on "
                        f"as given{hint}")
    return warnings
