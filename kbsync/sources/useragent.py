"""The User-Agent kbsync sends, and the check Wikimedia's policy asks for.

Wikimedia (wikidata.org, wikimedia.org, wikipedia.org hosts: WDQS, the API, EventStreams,
Special:EntityData) asks every client for a User-Agent that names a way to reach its operator:
a URL or an e-mail address. A placeholder contact (example.org/.com/.net, localhost) is no
contact. Other hosts (your own Oxigraph, a test server) take any User-Agent.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from kbsync import __version__
from kbsync.errors import ConfigError

DEFAULT_USER_AGENT = f"kbsync/{__version__}"  # no contact: refused by Wikimedia hosts until one is set
WIKIMEDIA_HOSTS = ("wikidata.org", "wikimedia.org", "wikipedia.org")
_CONTACT = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+|https?://[^\s;)]+")
_PLACEHOLDER = re.compile(r"(^|[@./])(example\.(org|com|net)|localhost)([/:;)\s]|$)", re.IGNORECASE)


def wikimedia_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in WIKIMEDIA_HOSTS)


def real_contacts(user_agent: str) -> list[str]:
    """The URLs and e-mail addresses in `user_agent` that are not placeholders."""
    return [m.group(0) for m in _CONTACT.finditer(user_agent) if not _PLACEHOLDER.search(m.group(0))]


def check_user_agent(url: str, user_agent: str, setting: str = "[kb] user_agent") -> str:
    """`user_agent`, or ConfigError in one line when `url` is a Wikimedia host and it names no real contact."""
    if wikimedia_host(url) and not real_contacts(user_agent):
        raise ConfigError(
            f"the User-Agent {user_agent!r} has no contact (a URL or e-mail that is not a placeholder), which "
            f"{urlsplit(url).hostname} requires; set {setting}, e.g. 'kbsync/{__version__} "
            "(https://your.site/kbsync; you@your.site)'"
        )
    return user_agent
