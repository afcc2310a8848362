"""What a bash completion script offers for a command line, asked of a real bash.

The script is sourced as bash-completion would load it, and the function it registered with
``complete -F`` for the command is called the way readline calls it on TAB: COMP_WORDS and
COMP_CWORD set, the command, the word being completed and the word before it as arguments.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_ASK = r"""
source "$1"; shift
spec=$(complete -p "$1") || exit 3
func=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
[ -n "$func" ] || { echo "no -F function in: $spec" >&2; exit 3; }
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
"$func" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def offered(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """The completions ``script`` offers for the command line ``words``, whose last word is the
    one being completed ("" for a TAB after a space)."""
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", _ASK, "bash", str(script), *words],
                            capture_output=True, text=True, cwd=cwd, timeout=30)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]
