"""Which models and versions to serve: TF Serving's flags and config file.

Two ways, like TF Serving:

- `--model_name NAME --model_base_path DIR`: one model; DIR holds numbered
  version folders. TF Serving serves only the latest version then; so does
  this server unless `--serve_all_versions` is given.
- `--model_config_file FILE`: a `ModelServerConfig` in protobuf text format
  (`model_config_list { config { name base_path model_version_policy
  version_labels } }`), parsed with the official
  `tensorflow_serving.config.model_server_config_pb2`. A relative
  `base_path` is taken relative to the config file's folder.

Everything is checked before anything is loaded, and every problem raises
`ConfigError` with one line naming the file, model or field. TF Serving
would keep waiting for a missing version; a test stand-in should fail fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


class ConfigError(Exception):
    """The models to serve are described wrongly (one-line message)."""


@dataclass(frozen=True)
class ModelConfig:
    """One model to serve.

    base_path: folder with numbered version folders, each a SavedModel.
    versions: the version numbers to load (resolved from the policy).
    labels: version label -> version number.
    """

    name: str
    base_path: Path
    versions: tuple[int, ...]
    labels: dict[str, int] = field(default_factory=dict)


_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _version_dirs(base_path: Path) -> list[int]:
    """Numbered version folders under base_path, ascending."""
    return sorted(int(p.name) for p in base_path.iterdir()
                  if p.is_dir() and p.name.isdigit())


def _check_base_path(name: str, base_path: Path, where: str) -> list[int]:
    if not base_path.exists():
        raise ConfigError(f"{where}: base_path of model {name!r} does not exist: {base_path}")
    if not base_path.is_dir():
        raise ConfigError(f"{where}: base_path of model {name!r} is not a folder: {base_path}")
    found = _version_dirs(base_path)
    if not found:
        raise ConfigError(f"{where}: no numbered version folders (e.g. {base_path}/1) "
                          f"in base_path of model {name!r}")
    for v in found:
        if not (base_path / str(v) / "saved_model.pb").is_file():
            raise ConfigError(f"{where}: {base_path / str(v)} is not a SavedModel "
                              f"(no saved_model.pb) for model {name!r}")
    return found


def _check_name(name: str, where: str) -> None:
    if not name:
        raise ConfigError(f"{where}: model name is empty")
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: model name {name!r} may only hold letters, digits, '_', '.', '-'")


def single_model(name: str, base_path: str | Path, all_versions: bool = False) -> list[ModelConfig]:
    """The `--model_name/--model_base_path` form: latest version, or all of them."""
    where = "--model_base_path"
    _check_name(name, "--model_name")
    path = Path(base_path).expanduser().resolve()
    found = _check_base_path(name, path, where)
    versions = tuple(found) if all_versions else (found[-1],)
    return [ModelConfig(name=name, base_path=path, versions=versions)]


def parse_config_text(text: str, source: str = "<config>",
                      relative_to: Path | None = None) -> list[ModelConfig]:
    """Parse a ModelServerConfig in text format into ModelConfigs.

    source names the file in messages; relative_to resolves relative base paths.
    """
    msg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise ConfigError(f"{source}: not a valid ModelServerConfig: {e}") from None
    if msg.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: expected a model_config_list block")
    configs = list(msg.model_config_list.config)
    if not configs:
        raise ConfigError(f"{source}: model_config_list has no config entries")

    out: list[ModelConfig] = []
    seen: set[str] = set()
    for i, c in enumerate(configs):
        where = f"{source}: config #{i + 1}"
        _check_name(c.name, where)
        if c.name in seen:
            raise ConfigError(f"{where}: model {c.name!r} appears twice")
        seen.add(c.name)
        where = f"{source}: model {c.name!r}"
        if c.model_platform and c.model_platform != "tensorflow":
            raise ConfigError(f"{where}: model_platform {c.model_platform!r} is not supported "
                              "(only \"tensorflow\")")
        if not c.base_path:
            raise ConfigError(f"{where}: base_path is missing")
        path = Path(c.base_path).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        path = path.resolve()
        found = _check_base_path(c.name, path, where)

        policy = c.model_version_policy.WhichOneof("policy_choice")
        if policy == "specific":
            wanted = sorted(set(int(v) for v in c.model_version_policy.specific.versions))
            if not wanted:
                raise ConfigError(f"{where}: model_version_policy.specific lists no versions")
            missing = [v for v in wanted if v not in found]
            if missing:
                raise ConfigError(f"{where}: version(s) {missing} in model_version_policy "
                                  f"not found under {path} (found {found})")
            versions = tuple(wanted)
        elif policy == "all":
            versions = tuple(found)
        else:
            n = c.model_version_policy.latest.num_versions if policy == "latest" else 0
            n = n or 1  # TF Serving's default policy: the latest version
            versions = tuple(found[-n:])

        labels = {str(k): int(v) for k, v in c.version_labels.items()}
        for label, version in labels.items():
            if not label:
                raise ConfigError(f"{where}: empty version label")
            if version not in versions:
                # TF Serving also refuses labels on versions it does not serve.
                raise ConfigError(f"{where}: version label {label!r} points to version {version}, "
                                  f"which is not served (served: {list(versions)})")
        out.append(ModelConfig(name=c.name, base_path=path, versions=versions, labels=labels))
    return out


def load_config_file(path: str | Path) -> list[ModelConfig]:
    """Read and check a `--model_config_file`."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--model_config_file: no such file: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--model_config_file: cannot read {p}: {e}") from None
    return parse_config_text(text, source=str(p), relative_to=p.resolve().parent)
