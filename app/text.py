"""Text from a run (names, ids, task names, device, error messages that quote them) shown as plain
text: Streamlit renders markdown in titles, captions and alerts, so an image link in a run's name
would make the browser fetch it. Every character that markdown (or Streamlit's :icon: and :colour[]
syntax) gives a meaning is backslash-escaped, which CommonMark shows as the character itself."""

import re

_MARKUP = re.compile(r"([\\`*_{}\[\]()#+!<>|~$:&]|^[-=.])")


def plain(text) -> str:
    return _MARKUP.sub(r"\\\1", str(text))
