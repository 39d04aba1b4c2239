# Copyright (c) 2026 The TDGAN bundle authors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""A federated participant's own settings (data, work folder, keys, policy) and the sites' signature chain.

The site decides, the job asks: a site's data folder, work folder, keys and policy come from ITS settings file,
``tdgan_site.json`` (named by ``$TDGAN_SITE_CONFIG``, else ``local/tdgan_site.json`` of the participant's NVFlare
workspace), never from the job. The policy says which visit settings a job may choose and within which bounds
(``job_settings``), which values the site sets itself whatever the job asks (``fixed``: e.g. ``local`` reminding so
no label map leaves, a bank size, augmentation on), and the limits every received hand-off is checked against.

Authenticity without a trusted server: every site holds its own Ed25519 signing key; every participant holds the
federation file (``federation.json``: the federation's name, the relay order and each site's PUBLIC key). A site
signs a statement binding the federation, the job, the visit's position, itself, the hand-off's sha256 and the
sha256 of the hand-off it started from; the statements travel as a chain beside the hand-off. The server forwards
them unchanged and can check them, but holds no private key, so it cannot forge one. Ed25519 from the
``cryptography`` package (an NVFlare dependency): NVFlare's provisioned identities authenticate connections to the
server, not a payload from one site to the next, so they cannot serve here.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from scripts.data.checks import InputError, check_label_mapping
from scripts.files import center_name_problem, owner_only_problem
from scripts.fl.overrides import JOB_SETTINGS, OverrideError, Setting, job_overrides
from scripts.handoff import HandoffError, Limits

__all__ = [
    "SITE_CONFIG_ENV",
    "SITE_FILE",
    "CHAIN_LIMIT",
    "SiteError",
    "Federation",
    "SiteSettings",
    "settings_path",
    "load_site_settings",
    "load_federation",
    "sign_link",
    "verify_chain",
    "chain_check",
    "generate_key",
]

SITE_CONFIG_ENV = "TDGAN_SITE_CONFIG"
"""Environment variable naming a participant's settings file (a path); unset: ``local/tdgan_site.json`` of the
participant's NVFlare workspace (the working folder of its processes)."""

SITE_FILE = "tdgan_site.json"
CHAIN_LIMIT = 4096
"""Most links a signature chain may hold (one per visit)."""

_SETTINGS_KEYS = (
    "center_dir",
    "label_mapping",
    "work_dir",
    "job_settings",
    "fixed",
    "limits",
    "federation",
    "signing_key",
    "require_authentication",
)
_LINK_KEYS = ("federation", "job", "visit", "site", "sha256", "previous")
_LINK_TAG = b"tdgan-handoff-link-v1\0"


class SiteError(HandoffError):
    """A participant's settings, a federation file, a key or a signature chain that does not hold."""


@dataclass(frozen=True)
class Federation:
    """What every participant of one federation agrees on (``federation.json``, public).

    Attributes:
        name: the federation's name, bound into every signature (hand-offs of another federation are refused).
        sites: site name -> Ed25519 public key.
        order: the relay order (site names); None: any order of the listed sites.
    """

    name: str
    sites: Mapping[str, Any]
    order: tuple[str, ...] | None = None

    def expected_site(self, position: int) -> str | None:
        """The site that must make visit ``position`` (0-based), or None without an agreed order."""
        return self.order[position % len(self.order)] if self.order else None


@dataclass
class SiteSettings:
    """A participant's own settings (see the module docstring; every key is documented in docs/federated.md).

    Attributes:
        path: the settings file, or None (environment and bundle defaults only).
        center_dir: the site's data folder.
        label_mapping: the site's label value -> the bundle's class (its data's convention, so the site's to set,
            never a job's), or None: the label values are the classes.
        work_dir: where the site's visits go; None: ``tdgan_<site>`` in the working folder.
        job_settings: the visit settings a job may choose, each with the site's bounds.
        fixed: visit settings the site sets itself; a job may not send another value.
        limits: what a received hand-off may hold.
        federation: the federation file's content, or None (no authentication).
        signing_key: this site's Ed25519 private key, or None.
        require_authentication: refuse every hand-off that the federation's signatures do not authenticate.
    """

    path: Path | None = None
    center_dir: Path | None = None
    label_mapping: dict[str, int] | None = None
    work_dir: Path | None = None
    job_settings: dict[str, Setting] = field(default_factory=lambda: dict(JOB_SETTINGS))
    fixed: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    federation: Federation | None = None
    signing_key: Any = None
    require_authentication: bool = False

    @property
    def authenticated(self) -> bool:
        """Whether this participant checks (and, at a site, makes) the federation's signatures."""
        return self.federation is not None

    def visit_overrides(self, requested: str | Mapping[str, Any] | None) -> dict[str, Any]:
        """The visit settings of a job's request under this site's policy: the bundle's allow-list first
        (:py:func:`scripts.fl.overrides.job_overrides`), then the site's bounds, then its fixed values and its
        ``label_mapping``.

        Raises:
            OverrideError: a setting the site does not let a job choose, out of the site's bounds, or another value
                than the site's fixed one (one line).
        """
        checked = job_overrides(requested)
        for key, value in checked.items():
            if key in self.fixed:
                if value != self.fixed[key]:
                    raise OverrideError(
                        f"job override {key!r}={json.dumps(value)[:80]}: this site sets {key} to "
                        f"{json.dumps(self.fixed[key])[:80]} itself ({self.source}); remove it from the job."
                    )
                continue
            setting = self.job_settings.get(key)
            if setting is None:
                raise OverrideError(
                    f"job override {key!r}: this site does not let a job choose it ({self.source}: job_settings "
                    f"allows {', '.join(self.job_settings) or 'nothing'}); remove it from the job."
                )
            if not setting.accepts(value):
                raise OverrideError(
                    f"job override {key!r}={json.dumps(value)[:80]}: this site allows {setting.expected()} "
                    f"({self.source}); fix it in the job."
                )
        mapping = {} if self.label_mapping is None else {"label_mapping": dict(self.label_mapping)}
        return {**checked, **self.fixed, **mapping}

    @property
    def source(self) -> str:
        return f"site settings {self.path}" if self.path else "the bundle's default site policy"


def settings_path(site: str | None = None, cwd: str | os.PathLike | None = None) -> Path | None:
    """The participant's settings file: ``$TDGAN_SITE_CONFIG``, else ``local/tdgan_site.json`` of the working
    folder (an NVFlare participant's workspace) when it exists, else None.

    Where several participants share one environment (the simulator, POC mode on one machine),
    ``$TDGAN_SITE_CONFIG`` may hold ``{site}``, replaced by the participant's name (``server`` for the server).

    Raises:
        SiteError: ``$TDGAN_SITE_CONFIG`` names a file that does not exist.
    """
    named = os.environ.get(SITE_CONFIG_ENV, "").strip()
    if named:
        named = named.replace("{site}", site or "server")
        if not Path(named).is_file():
            raise SiteError(f"${SITE_CONFIG_ENV}: {named}: no such file; point it at this participant's {SITE_FILE}.")
        return Path(named).resolve()
    local = Path(cwd or os.getcwd()) / "local" / SITE_FILE
    return local.resolve() if local.is_file() else None


def _private_file(path: Path, what: str, source: str) -> Path:
    if not path.is_file():
        raise SiteError(f"{source}: {what} {path} not found.")
    problem = owner_only_problem(path)
    if problem:
        raise SiteError(f"{source}: {what} {path} is {problem}.")
    return path


def _folder(value: Any, base: Path, key: str, source: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise SiteError(f"{source}: {key} must be a folder path (a non-empty string), got {value!r:.80}.")
    return (base / value).resolve()


def _narrowed(name: str, rule: Any, source: str) -> Setting:
    """The site's bound for one job setting: ``true`` (the bundle's), ``{"low", "high"}`` or ``{"choices"}``, never
    wider than the bundle's."""
    bundle = JOB_SETTINGS[name]
    if rule is True:
        return bundle
    if not isinstance(rule, Mapping) or not rule or not set(rule) <= {"low", "high", "choices"}:
        raise SiteError(
            f"{source}: job_settings[{name!r}] must be true, {{'low': x, 'high': y}} or {{'choices': [...]}}, "
            f"got {rule!r:.80}."
        )
    if "choices" in rule:
        choices = rule["choices"]
        if not isinstance(choices, list) or not choices or not all(bundle.accepts(c) for c in choices):
            raise SiteError(
                f"{source}: job_settings[{name!r}].choices={choices!r:.80}: each must be {bundle.expected()}."
            )
        return Setting("enum", choices=tuple(choices))
    if bundle.kind not in ("int", "float", "int_list"):
        raise SiteError(f"{source}: job_settings[{name!r}] is {bundle.kind}: bound it with 'choices'.")
    low, high = rule.get("low", bundle.low), rule.get("high", bundle.high)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or low < bundle.low or high > bundle.high or low > high:
        raise SiteError(
            f"{source}: job_settings[{name!r}] bounds [{low!r}, {high!r}] must lie within the bundle's "
            f"[{bundle.low:g}, {bundle.high:g}]."
        )
    return Setting(bundle.kind, low, high, bundle.low_open and low == bundle.low, length=bundle.length)


def _load_public_key(text: Any, where: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise SiteError(f"{where}: not an Ed25519 public key (base64 of 32 bytes): {e}") from e


def load_federation(path: str | os.PathLike, source: str = "federation file") -> Federation:
    """Read ``federation.json``: ``{"federation": name, "order": [site, ...] (optional), "sites": {site: public key
    (base64)}}``.

    Raises:
        SiteError: missing, not JSON, or any field not as described (one line).
    """
    path = Path(path)
    where = f"{source} {path}"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SiteError(f"{where}: not readable JSON ({e}).") from e
    if not isinstance(data, dict) or not {"federation", "sites"} <= set(data) <= {"federation", "sites", "order"}:
        raise SiteError(f"{where}: expected keys 'federation', 'sites' and optionally 'order'.")
    name, sites, order = data["federation"], data["sites"], data.get("order")
    if center_name_problem(name):
        raise SiteError(f"{where}: federation name: {center_name_problem(name)}.")
    if not isinstance(sites, dict) or not sites or any(center_name_problem(s) for s in sites):
        raise SiteError(f"{where}: 'sites' must map site names to public keys.")
    keys = {s: _load_public_key(k, f"{where}: key of site {s!r}") for s, k in sites.items()}
    if order is not None:
        if not isinstance(order, list) or not order or set(order) - set(sites) or len(set(order)) != len(order):
            raise SiteError(f"{where}: 'order' must list distinct sites of 'sites', got {order!r:.120}.")
        order = tuple(order)
    return Federation(name=name, sites=keys, order=order)


def _load_private_key(path: Path, source: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    _private_file(path, "signing key", source)
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise SiteError(f"{source}: signing key {path} is not an unencrypted PEM private key ({e}).") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SiteError(f"{source}: signing key {path} is a {type(key).__name__}, expected Ed25519.")
    return key


def _public_bytes(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_site_settings(site: str | None = None, path: str | os.PathLike | None = None) -> SiteSettings:
    """This participant's settings: the file (see :py:func:`settings_path`) or, without one, the bundle's default
    policy with the data folder from ``$TDGAN_CENTER_DIR``.

    Args:
        site: this participant's name (checks that the federation lists its key); None for the server.
        path: the settings file; default :py:func:`settings_path`.

    Raises:
        SiteError: the file or anything it names does not hold (one line naming the file and the key).
    """
    path = Path(path).resolve() if path else settings_path(site)
    env_center = os.environ.get("TDGAN_CENTER_DIR") or None
    if path is None:
        return SiteSettings(center_dir=Path(env_center).resolve() if env_center else None)
    source = f"site settings {path}"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SiteError(f"{source}: not readable JSON ({e}).") from e
    if not isinstance(data, dict) or set(data) - set(_SETTINGS_KEYS):
        extra = sorted(set(data) - set(_SETTINGS_KEYS)) if isinstance(data, dict) else type(data).__name__
        raise SiteError(f"{source}: unknown keys {extra}; allowed: {list(_SETTINGS_KEYS)}.")
    base = path.parent
    settings = SiteSettings(path=path)
    if "center_dir" in data:
        settings.center_dir = _folder(data["center_dir"], base, "center_dir", source)
    elif env_center:
        settings.center_dir = Path(env_center).resolve()
    if data.get("label_mapping") is not None:
        try:
            checked = check_label_mapping(data["label_mapping"])
        except InputError as e:
            raise SiteError(f"{source}: {e}") from e
        settings.label_mapping = {str(k): v for k, v in checked.items()}  # JSON's form: the visit identity's
    if "work_dir" in data:
        settings.work_dir = _folder(data["work_dir"], base, "work_dir", source)
    if "job_settings" in data:
        rules = data["job_settings"]
        if not isinstance(rules, dict) or set(rules) - set(JOB_SETTINGS):
            unknown = sorted(set(rules) - set(JOB_SETTINGS)) if isinstance(rules, dict) else rules
            raise SiteError(f"{source}: job_settings names {unknown!r:.120}, which are not job settings.")
        settings.job_settings = {k: _narrowed(k, v, source) for k, v in rules.items()}
    if "fixed" in data:
        try:
            settings.fixed = job_overrides(data["fixed"])
        except OverrideError as e:
            raise SiteError(f"{source}: fixed: {e}") from e
    if "limits" in data:
        allowed = {f.name for f in fields(Limits)}
        if not isinstance(data["limits"], dict) or set(data["limits"]) - allowed:
            raise SiteError(f"{source}: limits may set {sorted(allowed)}, got {data['limits']!r:.120}.")
        try:
            settings.limits = Limits(**data["limits"])
        except ValueError as e:
            raise SiteError(f"{source}: {e}") from e
    auth = data.get("require_authentication", False)
    if not isinstance(auth, bool):
        raise SiteError(f"{source}: require_authentication must be true or false, got {auth!r:.40}.")
    settings.require_authentication = auth
    if "federation" in data:
        settings.federation = load_federation(_folder(data["federation"], base, "federation", source), source)
    if "signing_key" in data:
        settings.signing_key = _load_private_key(_folder(data["signing_key"], base, "signing_key", source), source)
    if auth and settings.federation is None:
        raise SiteError(f"{source}: require_authentication is true but no 'federation' file is set.")
    if site is not None and settings.federation is not None:
        if settings.signing_key is None:
            raise SiteError(f"{source}: a site of a federation needs its 'signing_key'.")
        listed = settings.federation.sites.get(site)
        if listed is None or _public_bytes(listed) != _public_bytes(settings.signing_key.public_key()):
            raise SiteError(
                f"{source}: the federation file does not list this site's public key under {site!r} "
                "(python -m scripts.fl.site public <signing key> prints it)."
            )
    return settings


def _link_bytes(statement: Mapping[str, Any]) -> bytes:
    return _LINK_TAG + json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def sign_link(
    key: Any, federation: str, job: str, visit: int, site: str, sha256: str, previous: str | None
) -> dict[str, Any]:
    """One link of the chain: this site's signature of the statement "in federation F, job J, visit V (0-based)
    was made by site S, gave the hand-off with sha256 H, and started from the hand-off with sha256 P (None: from
    scratch)"."""
    statement = {
        "federation": federation,
        "job": str(job),
        "visit": int(visit),
        "site": site,
        "sha256": sha256,
        "previous": previous,
    }
    signature = base64.b64encode(key.sign(_link_bytes(statement))).decode()
    return {"statement": statement, "signature": signature}


def verify_chain(
    chain: Any, sha256: str, visits: int, federation: Federation, job: str, source: str
) -> list[dict[str, Any]]:
    """Check a hand-off's signature chain: one link per visit, each signed by a site of the federation with its
    own key, for this federation and this job, at its position (and by the agreed site, when the federation fixes
    the order), each starting from the hand-off of the link before (the first from scratch), the last naming this
    hand-off's sha256. Rollback (an older authentic hand-off), replay into another job, a swap between federations
    sharing keys, a skipped or reordered site and a link signed by anyone else are refused.

    Returns:
        the chain (as received).

    Raises:
        SiteError: the first link that does not hold (one line).
    """
    from cryptography.exceptions import InvalidSignature

    if not isinstance(chain, list) or not chain:
        raise SiteError(f"{source}: no signature chain, but this participant authenticates hand-offs; refused.")
    if len(chain) > CHAIN_LIMIT or len(chain) != visits:
        raise SiteError(
            f"{source}: the signature chain has {len(chain)} links for {visits} visit(s); refused (one per visit)."
        )
    previous = None
    for i, link in enumerate(chain):
        where = f"{source}: signature of visit {i + 1}"
        statement = link.get("statement") if isinstance(link, dict) else None
        if (
            not isinstance(link, dict)
            or set(link) != {"statement", "signature"}
            or not isinstance(statement, dict)
            or set(statement) != set(_LINK_KEYS)
        ):
            raise SiteError(f"{where}: malformed link; refused.")
        expected = {"federation": federation.name, "job": str(job), "visit": i, "previous": previous}
        wrong = {k: statement[k] for k, v in expected.items() if statement[k] != v}
        if wrong:
            raise SiteError(
                f"{where}: signed for {wrong} where this hand-off needs { ({k: expected[k] for k in wrong}) }: a "
                "hand-off of another federation, job or position (replayed, rolled back or swapped); refused."
            )
        site = statement["site"]
        key = federation.sites.get(site) if isinstance(site, str) else None
        if key is None:
            raise SiteError(f"{where}: signer {site!r:.40} is not a site of federation {federation.name}; refused.")
        if federation.expected_site(i) not in (None, site):
            raise SiteError(
                f"{where}: made by {site}, but the federation's order gives visit {i + 1} to "
                f"{federation.expected_site(i)}; refused."
            )
        try:
            key.verify(base64.b64decode(str(link["signature"]), validate=True), _link_bytes(statement))
        except (InvalidSignature, ValueError) as e:
            raise SiteError(f"{where}: the signature of {site} does not verify; refused (forged or altered).") from e
        previous = statement["sha256"]
    if previous != sha256:
        raise SiteError(
            f"{source}: the last signature names the hand-off {str(previous)[:12]}..., this one is {sha256[:12]}...: "
            "not the hand-off that was signed; refused."
        )
    return chain


def chain_check(chain: Any, settings: SiteSettings, job: str, source: str) -> Callable[[str, int], str] | None:
    """The ``authenticate`` step of :py:func:`scripts.fl.message.message_to_handoff` for this participant: the
    chain checked against its federation; None when it has none (the hand-off is then read with one line saying it
    is unauthenticated)."""
    federation = settings.federation
    if federation is None:
        return None

    def authenticate(sha256: str, visits: int) -> str:
        verify_chain(chain, sha256, visits, federation, job, source)
        return f"the signatures of federation {federation.name}"

    return authenticate


def generate_key(path: str | os.PathLike) -> str:
    """Write a new Ed25519 private key (PEM, owner-only) to ``path``; returns its public key (base64), the value a
    federation file lists for the site.

    Raises:
        SiteError: ``path`` exists (a key is never overwritten).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    path = Path(path)
    if path.exists():
        raise SiteError(f"{path} exists; a signing key is never overwritten (remove it first if you mean to).")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key_text(path)


def public_key_text(path: str | os.PathLike) -> str:
    """The public key (base64) of the private key file ``path``."""
    return base64.b64encode(_public_bytes(_load_private_key(Path(path), "key").public_key())).decode()


def _main(argv: Sequence[str]) -> int:
    usage = (
        "usage: python -m scripts.fl.site keygen <key file>   (new signing key; prints its public key)\n"
        "       python -m scripts.fl.site public <key file>   (prints the public key)\n"
        "       python -m scripts.fl.site check <tdgan_site.json> [site]   (checks a participant's settings)"
    )
    if len(argv) < 2 or argv[0] not in ("keygen", "public", "check"):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "keygen":
            print(generate_key(argv[1]))
        elif argv[0] == "public":
            print(public_key_text(argv[1]))
        else:
            s = load_site_settings(argv[2] if len(argv) > 2 else None, argv[1])
            print(
                f"{s.path}: data {s.center_dir}, labels {s.label_mapping or 'as the classes'}, "
                f"work {s.work_dir or './tdgan_<site>'}, job may choose "
                f"{sorted(s.job_settings)}, fixed {s.fixed}, "
                f"{'authenticated by federation ' + s.federation.name if s.federation else 'UNAUTHENTICATED'}"
            )
    except SiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
