"""Test-only: what a web page would fetch when a browser opens it."""

from html.parser import HTMLParser


class _Loads(HTMLParser):
    """Collects the URLs that a page's tags make the browser fetch on load."""

    ATTRIBUTES = {"script": "src", "img": "src", "iframe": "src", "source": "src",
                  "embed": "src", "audio": "src", "video": "src", "link": "href", "object": "data"}

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        url = dict(attrs).get(self.ATTRIBUTES.get(tag, ""))
        if url and not url.startswith(("data:", "blob:", "#")):
            self.urls.append(url)


def external_references(html: str) -> list:
    """The URLs (network or file) that ``html`` loads through its tags; [] for a standalone page."""
    parser = _Loads()
    parser.feed(html)
    return parser.urls
