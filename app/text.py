"""Text from a run (names, ids, task names, device, error messages that quote them) shown as plain
text: Streamlit renders markdown in titles, captions and alerts, so an image link in a run's name
would make the browser fetch it. Every ASCII punctuation character is backslash-escaped, which
CommonMark shows as itself."""

import re

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text) -> str:
    return _PUNCTUATION.sub(r"\\\1", str(text))
