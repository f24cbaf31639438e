"""``tpi-cds report OUT_DIR``: a static HTML page for a CDS governance committee.

One self-contained file (styles and the chart inline, no scripts, no requests) that opens
from disk: the card gallery (every rule, as an EHR shows the cards), the rule catalogue
with its value sets, and feedback analytics from the service's store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import ChainableUndefined, Environment, PackageLoader
from markdown_it import MarkdownIt
from markupsafe import Markup

from cards.card import TOPICS
from cards.policy import PROFILE_NAMES, PROFILES, policies_for
from cds_service.report.analytics import NOT_REMEMBERED, Analytics, read_analytics
from cds_service.report.catalogue import RULES, RULES_BY_ID, value_set_rows
from cds_service.report.gallery import EXAMPLES_TODAY, GalleryError, build_gallery
from cds_service.settings import EngineSettings, load_terminology

__all__ = ["GalleryError", "ReportInput", "build_report", "render_markdown", "write_report"]

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def render_markdown(text: str) -> Markup:
    """A card's detail as an EHR renders it; raw HTML in the text stays text."""
    return Markup(_MARKDOWN.render(text or ""))


def safe_url(url: Any) -> str | None:
    """Only http(s) links become links: a card's URL is data, not trusted markup."""
    if not isinstance(url, str):
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


def setting_text(value: Any) -> str:
    """A setting as a TOML file writes it (``true``, ``0.3``), so a reader can copy it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class ReportInput:
    """What the page needs: the engine settings in force and the feedback store's URL."""

    settings: EngineSettings
    store_url: str
    config_file: str | None = None


def build_report(source: ReportInput, generated: datetime | None = None) -> str:
    """The whole page as HTML text; raises GalleryError when a rule is never shown."""
    settings = source.settings
    gallery = build_gallery(settings)
    terminology = load_terminology(settings.valueset_dir)
    policies = policies_for(settings.profile, settings.policy_overrides)
    analytics: Analytics = read_analytics(source.store_url)
    environment = Environment(
        loader=PackageLoader("cds_service.report", "templates"),
        autoescape=True,
        undefined=ChainableUndefined,  # card fields are optional
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["markdown"] = render_markdown
    environment.filters["safe_url"] = safe_url
    environment.filters["setting"] = setting_text
    template = environment.get_template("index.html.j2")
    return template.render(
        generated=(generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        settings=settings,
        config_file=source.config_file,
        default_profile=PROFILE_NAMES.get(settings.profile, settings.profile),
        overrides=_overrides(settings),
        examples_today=EXAMPLES_TODAY.isoformat(),
        gallery=gallery,
        rules=RULES,
        rules_by_id=RULES_BY_ID,
        topics=TOPICS,
        value_sets=value_set_rows(terminology, settings.valueset_dir),
        policies={name: asdict(policies.profiles[name]) for name in PROFILES},
        analytics=analytics,
        not_remembered=NOT_REMEMBERED,
    )


def write_report(out_dir: Path, source: ReportInput) -> Path:
    """Build first, then write OUT_DIR/index.html: a failed build leaves no half page."""
    html = build_report(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(html, encoding="utf-8")
    return path


def _overrides(settings: EngineSettings) -> list[tuple[str, str, Any]]:
    """The site's policy overrides as (applies to, setting, value) rows."""
    rows = []
    for key, value in settings.policy_overrides.items():
        if key in PROFILES and isinstance(value, dict):
            rows += [(PROFILE_NAMES[key], name, v) for name, v in value.items()]
        else:
            rows.append(("every profile", key, value))
    return rows
