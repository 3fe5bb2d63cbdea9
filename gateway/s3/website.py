"""Static website hosting as S3's website endpoints do it, the subset of index and error
documents: which key a website path names, and the HTML of an error page.

A path ending in "/" (the root included) names the index document under it; any other path
names its key as is. Routing rules and whole-site redirects are not implemented.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from gateway.s3.errors import InvalidArgument


@dataclass(frozen=True)
class WebsiteConfiguration:
    # IndexDocument/Suffix: the document a path ending in "/" serves.
    index_suffix: str
    # ErrorDocument/Key: served (with the error's status) when a path names nothing readable.
    error_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index_suffix": self.index_suffix, "error_key": self.error_key}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> WebsiteConfiguration:
        return cls(index_suffix=value["index_suffix"], error_key=value.get("error_key"))

    def key_of(self, path_key: str) -> str:
        """The object key a website path (without its leading "/") names."""
        if not path_key or path_key.endswith("/"):
            return path_key + self.index_suffix
        return path_key

    def directory_index(self, path_key: str) -> str | None:
        """The index document of ``path_key`` taken as a folder: if it exists, a request for
        ``path_key`` is redirected to ``path_key/``. None for a path that is a folder already."""
        if not path_key or path_key.endswith("/"):
            return None
        return f"{path_key}/{self.index_suffix}"


def validate(config: WebsiteConfiguration) -> None:
    """Raise what PutBucketWebsite answers for a configuration S3 refuses."""
    if not config.index_suffix or "/" in config.index_suffix:
        raise InvalidArgument(
            "The IndexDocument Suffix is not well formed: it must be a file name, not empty"
            " and without '/'",
            ArgumentName="IndexDocument",
            ArgumentValue=config.index_suffix,
        )
    if config.error_key is not None and not config.error_key:
        raise InvalidArgument(
            "The ErrorDocument Key is not well formed: it must not be empty",
            ArgumentName="ErrorDocument",
        )


def error_page(status: int, code: str, message: str, request_id: str, **extra: str) -> str:
    """The HTML page a website endpoint answers an error with (as S3's does: title, code,
    message, request id)."""
    title = f"{status} {HTTPStatus(status).phrase}"
    items = [("Code", code), ("Message", message), *extra.items(), ("RequestId", request_id)]
    rows = "".join(f"<li>{html.escape(name)}: {html.escape(value)}</li>" for name, value in items)
    return (
        f"<html>\n<head><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n"
        f"<ul>\n{rows}\n</ul>\n<hr/>\n</body>\n</html>\n"
    )
