"""The one exception type for user errors: the CLI prints it as a single `error:` line, exit 2."""

import difflib


class LobellError(Exception):
    """A problem with the user's input (data, config, model name), not a bug in lobell."""


def nearest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' (did you mean X?)' suffix naming the closest valid choice, or '' when none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
